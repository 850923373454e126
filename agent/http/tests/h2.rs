//! HTTP/2 through the HTTP stage: hand-built frames (HPACK blocks from
//! `loona_hpack`'s encoder or literal bytes), arbitrary input, and a real
//! capture of curl ↔ nginx over h2c (`tests/data/record-h2-fixture.sh`).

mod common;

use std::path::PathBuf;

use common::Driver;
use loona_hpack::Encoder;
use proptest::prelude::*;
use sessionwatch_http::h1::{H1Stage, Limits};
use sessionwatch_http::h2::hpack::{HpackDecoder, HpackError};
use sessionwatch_http::h2::{H2Limits, PREFACE};
use sessionwatch_http::{Exchange, Protocol};
use sessionwatch_streams::Direction;
use sessionwatch_streams::reassembly::ReassemblyConfig;
use sessionwatch_streams::replay::replay;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in entries {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

fn block(enc: &mut Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
    enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
}

fn headers(stream: u32, flags: u8, blk: &[u8]) -> Vec<u8> {
    frame(HEADERS, flags | END_HEADERS, stream, blk)
}

fn client_start() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(settings(&[(0x3, 100), (0x4, 65535)]));
    v
}

fn get(enc: &mut Encoder<'_>, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut f = vec![
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "shop.example"),
        (":path", path),
    ];
    f.extend_from_slice(extra);
    block(enc, &f)
}

fn status(enc: &mut Encoder<'_>, code: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut f = vec![(":status", code)];
    f.extend_from_slice(extra);
    block(enc, &f)
}

fn err(d: &Driver, kind: &str) -> u64 {
    d.stats()
        .parse_errors
        .get(&("http2", kind))
        .copied()
        .unwrap_or(0)
}

fn summary(ex: &[Exchange]) -> Vec<(String, String, Option<u16>)> {
    ex.iter()
        .map(|e| {
            (
                e.request.method.to_string(),
                e.request.target.to_string(),
                e.response.as_ref().map(|r| r.status),
            )
        })
        .collect()
}

fn want(items: &[(&str, &str, Option<u16>)]) -> Vec<(String, String, Option<u16>)> {
    items
        .iter()
        .map(|(m, t, s)| (m.to_string(), t.to_string(), *s))
        .collect()
}

/// A complete client and server byte stream for one exchange with cookie
/// crumbs and two Set-Cookie fields.
fn login_conversation() -> (Vec<u8>, Vec<u8>) {
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    let mut c = client_start();
    c.extend(headers(
        1,
        0,
        &block(
            &mut ce,
            &[
                (":method", "POST"),
                (":scheme", "https"),
                (":path", "/login?next=%2F"),
                (":authority", "shop.example"),
                ("cookie", "csrftoken=abc"),
                ("user-agent", "test/1"),
                ("cookie", "theme=dark"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        ),
    ));
    c.extend(frame(DATA, END_STREAM, 1, b"user=alice&password=secret"));
    let mut s = settings(&[(0x3, 128)]);
    s.extend(frame(SETTINGS, 0x1, 0, &[]));
    s.extend(headers(
        1,
        0,
        &status(
            &mut se,
            "302",
            &[
                ("location", "/"),
                ("set-cookie", "sessionid=s1; Path=/; HttpOnly"),
                ("set-cookie", "csrftoken=def; Path=/"),
            ],
        ),
    ));
    s.extend(frame(DATA, END_STREAM, 1, &[b'x'; 300]));
    (c, s)
}

fn check_login(d: &Driver) {
    let ex = d.exchanges();
    assert_eq!(ex.len(), 1, "{:?}", d.stats());
    let e = &ex[0];
    assert_eq!(e.protocol, Protocol::Http2);
    assert_eq!(&*e.request.method, "POST");
    assert_eq!(&*e.request.target, "/login?next=%2F");
    assert_eq!(e.request.host.as_deref(), Some("shop.example"));
    assert_eq!(
        e.request.headers.get("cookie"),
        Some(&b"csrftoken=abc; theme=dark"[..])
    );
    assert_eq!(e.request.headers.get_all("cookie").count(), 1);
    assert!(
        e.request
            .headers
            .iter()
            .all(|(name, _)| !name.starts_with(':'))
    );
    assert_eq!(e.request.headers.get_str("user-agent"), Some("test/1"));
    let r = e.response.as_ref().expect("response");
    assert_eq!(r.status, 302);
    let sc: Vec<&[u8]> = r.headers.get_all("set-cookie").collect();
    assert_eq!(
        sc,
        vec![
            &b"sessionid=s1; Path=/; HttpOnly"[..],
            b"csrftoken=def; Path=/"
        ]
    );
    assert_eq!(d.stats().exchanges, [0, 1]);
    assert_eq!(d.stats().unanswered, 0);
    assert!(d.stats().parse_errors.is_empty(), "{:?}", d.stats());
}

#[test]
fn prior_knowledge_exchange_with_cookie_crumbs() {
    let (c, s) = login_conversation();
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c).resp(1, 2, &s).close(1, 3);
    check_login(&d);
    assert_eq!(d.stage.buffered_bytes(), 0);
}

#[test]
fn every_split_point_gives_the_same_result() {
    let (c, s) = login_conversation();
    for cut in 1..c.len().max(s.len()) {
        let mut d = Driver::new();
        let (c1, c2) = c.split_at(cut.min(c.len()));
        let (s1, s2) = s.split_at(cut.min(s.len()));
        d.open(1)
            .req(1, 1, c1)
            .req(1, 2, c2)
            .resp(1, 3, s1)
            .resp(1, 4, s2)
            .close(1, 5);
        check_login(&d);
    }
    // Byte by byte.
    let mut d = Driver::new();
    d.open(1);
    for b in c.chunks(1) {
        d.req(1, 1, b);
    }
    for b in s.chunks(1) {
        d.resp(1, 2, b);
    }
    d.close(1, 3);
    check_login(&d);
}

#[test]
fn server_settings_before_the_client_preface() {
    // Over TLS both peers speak as soon as the handshake ends: the server's
    // SETTINGS may be captured before the client preface.
    let (c, s) = login_conversation();
    let settings_len = 9 + 6;
    for cut in 1..=settings_len + 3 {
        let mut d = Driver::new();
        d.open(1)
            .resp(1, 1, &s[..cut])
            .req(1, 2, &c[..10])
            .req(1, 3, &c[10..])
            .resp(1, 4, &s[cut..])
            .close(1, 5);
        check_login(&d);
    }
    // HTTP/1 after server bytes that only looked like SETTINGS: they are
    // parsed (and rejected) as HTTP/1, the exchange still pairs.
    let mut d = Driver::new();
    d.open(1)
        .resp(1, 1, &[0, 0, 0, 4])
        .req(1, 2, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .resp(1, 3, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .close(1, 4);
    assert_eq!(d.exchanges().len(), 1);
    assert_eq!(d.exchanges()[0].protocol, Protocol::Http1);
    assert_eq!(d.stage.buffered_bytes(), 0);
}

#[test]
fn joining_mid_connection_counts_skips_then_decodes() {
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    // Before the capture starts: two exchanges fill both dynamic tables
    // (the encoder indexes fields whose name is not in the static table).
    let mut before_c = client_start();
    let mut before_s = settings(&[]);
    for id in [1u32, 3] {
        before_c.extend(headers(
            id,
            END_STREAM,
            &get(
                &mut ce,
                "/old",
                &[("cookie", "sessionid=s1"), ("x-csrf", "t1")],
            ),
        ));
        before_s.extend(headers(
            id,
            END_STREAM,
            &status(&mut se, "200", &[("x-srv", "a")]),
        ));
    }
    let _ = (before_c, before_s);
    // Seen: the capture starts inside a DATA payload of each direction.
    let mut c = b"tail of an upload body".to_vec();
    // Stream 5 reuses the table (cookie, authority): unresolvable.
    c.extend(headers(
        5,
        END_STREAM,
        &get(
            &mut ce,
            "/old",
            &[("cookie", "sessionid=s1"), ("x-csrf", "t1")],
        ),
    ));
    c.extend(frame(0x8, 0, 0, &1000u32.to_be_bytes()));
    // Stream 7: the encoder's table is reset by a size update to 0 (and
    // back), then everything is literal again.
    let mut ce = Encoder::new();
    let mut b = vec![0x20, 0x3f, 0xe1, 0x1f];
    b.extend(get(
        &mut ce,
        "/new",
        &[("cookie", "sessionid=s2"), ("x-csrf", "t2")],
    ));
    c.extend(headers(7, END_STREAM, &b));
    // Stream 9: references entries inserted after the join: resolvable.
    c.extend(headers(
        9,
        END_STREAM,
        &get(
            &mut ce,
            "/new",
            &[("cookie", "sessionid=s2"), ("x-csrf", "t2")],
        ),
    ));
    let mut s = b"\x00\x01 end of a response body".to_vec();
    s.extend(headers(
        5,
        END_STREAM,
        &status(&mut se, "200", &[("x-srv", "a")]),
    ));
    let mut se = Encoder::new();
    let mut b = vec![0x20, 0x3f, 0xe1, 0x1f];
    b.extend(status(
        &mut se,
        "302",
        &[("set-cookie", "sessionid=s3"), ("x-srv", "b")],
    ));
    s.extend(headers(7, END_STREAM, &b));
    s.extend(headers(
        9,
        END_STREAM,
        &status(
            &mut se,
            "302",
            &[("set-cookie", "sessionid=s3"), ("x-srv", "b")],
        ),
    ));

    let mut d = Driver::new();
    d.open(1).req(1, 1, &c).resp(1, 2, &s).close(1, 3);
    assert_eq!(err(&d, "midstream_join"), 1);
    assert_eq!(
        err(&d, "hpack_index"),
        2,
        "{:?} {:?}",
        d.stats(),
        summary(d.exchanges())
    );
    let ex = d.exchanges();
    assert_eq!(
        summary(ex),
        want(&[("GET", "/new", Some(302)), ("GET", "/new", Some(302))])
    );
    for e in ex {
        assert_eq!(e.request.headers.get_str("cookie"), Some("sessionid=s2"));
        assert_eq!(e.request.headers.get_str("x-csrf"), Some("t2"));
        assert_eq!(e.request.host.as_deref(), Some("shop.example"));
        let r = e
            .response
            .as_ref()
            .and_then(|r| r.headers.get_str("set-cookie"));
        assert_eq!(r, Some("sessionid=s3"));
    }
    assert_eq!(d.stats().parse_errors.len(), 2, "{:?}", d.stats());
}

/// A long-lived connection joined where every event is exactly one frame
/// (a `GET` is one `HEADERS` frame with `END_STREAM`, read by one
/// `SSL_read`): found by the live test with hyper-h2 against nginx.
#[test]
fn joining_mid_connection_on_single_frame_events() {
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    // `x-csrf` is not in the static table, so the encoder indexes it and
    // refers to the table on the next request; so does the server's
    // `x-srv`.
    let fields = [("cookie", "sessionid=s1-long-enough"), ("x-csrf", "t1")];
    // Unseen: the tables are filled.
    let _ = get(&mut ce, "/account", &fields);
    let _ = status(&mut se, "200", &[("x-srv", "a")]);
    // Seen, one frame per event: stream 5 is all table references.
    let c5 = headers(5, END_STREAM, &get(&mut ce, "/account", &fields));
    let s5 = headers(5, END_STREAM, &status(&mut se, "200", &[("x-srv", "a")]));
    // Stream 7 starts with a table size update to 0 and back.
    let mut ce = Encoder::new();
    let mut b = vec![0x20, 0x3f, 0xe1, 0x1f];
    b.extend(get(&mut ce, "/account", &fields));
    let c7 = headers(7, END_STREAM, &b);
    let s7 = headers(7, END_STREAM, &status(&mut se, "302", &[]));
    // Stream 9 references what stream 7 inserted.
    let c9 = headers(9, END_STREAM, &get(&mut ce, "/account", &fields));
    let s9 = headers(9, END_STREAM, &status(&mut se, "200", &[]));

    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, &c5)
        .resp(1, 2, &s5)
        .req(1, 3, &c7)
        .resp(1, 4, &s7)
        .req(1, 5, &c9)
        .resp(1, 6, &s9)
        .close(1, 7);
    assert_eq!(err(&d, "midstream_join"), 1, "{:?}", d.stats());
    // Stream 5: the request block and its response are both skipped, and
    // nothing is emitted for the stream (no unanswered request, no
    // orphan response).
    assert_eq!(err(&d, "hpack_index"), 2, "{:?}", d.stats());
    assert_eq!(
        summary(d.exchanges()),
        want(&[
            ("GET", "/account", Some(302)),
            ("GET", "/account", Some(200))
        ])
    );
    for e in d.exchanges() {
        assert_eq!(e.protocol, Protocol::Http2);
        assert_eq!(
            e.request.headers.get_str("cookie"),
            Some("sessionid=s1-long-enough")
        );
    }
}

/// One frame is enough only when it fills the event exactly, from its
/// first byte: a frame cut by the event's end, or followed or preceded by
/// other bytes, is not taken for frame sync.
#[test]
fn single_frame_sync_needs_an_exact_fit() {
    use sessionwatch_http::h2::find_frames;
    let mut enc = Encoder::new();
    let f = headers(5, END_STREAM, &get(&mut enc, "/x", &[]));
    assert_eq!(find_frames(&f), Some(0));
    assert_eq!(find_frames(&f[..f.len() - 1]), None, "cut");
    let mut junk_after = f.clone();
    junk_after.push(0);
    assert_eq!(find_frames(&junk_after), None, "trailing byte");
    let mut junk_before = vec![0x42];
    junk_before.extend(&f);
    assert_eq!(find_frames(&junk_before), None, "leading byte");
    // Two frames still sync after leading junk, as before.
    let mut two = vec![0x42];
    two.extend(&f);
    two.extend(frame(0x8, 0, 0, &1000u32.to_be_bytes()));
    assert_eq!(find_frames(&two), Some(1));
    // Nor does HTTP/1 ever look like one.
    assert_eq!(find_frames(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
}

#[test]
fn http1_mid_stream_is_not_taken_for_http2() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"dy bytes\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        .resp(1, 2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .close(1, 3);
    assert_eq!(err(&d, "midstream_join"), 0);
    assert_eq!(d.exchanges().len(), 1);
    assert_eq!(d.exchanges()[0].protocol, Protocol::Http1);
}

#[test]
fn padding_priority_and_continuation() {
    let mut ce = Encoder::new();
    let blk = get(
        &mut ce,
        "/cart",
        &[("cookie", "sessionid=s1"), ("accept", "*/*")],
    );
    let (a, rest) = blk.split_at(5);
    let (b, c) = rest.split_at(7);
    // HEADERS with PADDED and PRIORITY, the block continued twice.
    let mut p = vec![3u8];
    p.extend_from_slice(&[0x80, 0, 0, 0, 200]);
    p.extend_from_slice(a);
    p.extend_from_slice(&[0, 0, 0]);
    let mut cs = client_start();
    cs.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &p));
    cs.extend(frame(CONTINUATION, 0, 1, b));
    cs.extend(frame(CONTINUATION, END_HEADERS, 1, c));
    let mut se = Encoder::new();
    let mut ss = settings(&[]);
    // Padded response HEADERS.
    let sb = status(&mut se, "200", &[("content-type", "text/html")]);
    let mut p = vec![2u8];
    p.extend_from_slice(&sb);
    p.extend_from_slice(&[0, 0]);
    ss.extend(frame(HEADERS, PADDED | END_HEADERS, 1, &p));
    let mut d = Driver::new();
    d.open(1).req(1, 1, &cs).resp(1, 2, &ss);
    let ex = d.exchanges();
    assert_eq!(summary(ex), want(&[("GET", "/cart", Some(200))]));
    assert_eq!(
        ex[0].request.headers.get("cookie"),
        Some(&b"sessionid=s1"[..])
    );
    assert_eq!(
        ex[0]
            .response
            .as_ref()
            .and_then(|r| r.headers.get_str("content-type")),
        Some("text/html")
    );
    assert!(d.stats().parse_errors.is_empty(), "{:?}", d.stats());
}

#[test]
fn interleaved_streams_pair_by_id_and_interim_is_skipped() {
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    let mut c = client_start();
    for (id, path) in [(1, "/a"), (3, "/b"), (5, "/c")] {
        c.extend(headers(
            id,
            END_STREAM,
            &get(&mut ce, path, &[("cookie", "sid=1")]),
        ));
    }
    let mut s = settings(&[]);
    s.extend(headers(
        3,
        0,
        &status(&mut se, "103", &[("link", "</s.css>")]),
    ));
    s.extend(headers(5, 0, &status(&mut se, "404", &[])));
    s.extend(headers(3, 0, &status(&mut se, "200", &[])));
    s.extend(frame(DATA, 0, 3, b"partial"));
    s.extend(headers(1, END_STREAM, &status(&mut se, "204", &[])));
    // Trailers on stream 3: no :status, END_STREAM.
    s.extend(headers(
        3,
        END_STREAM,
        &block(&mut se, &[("grpc-status", "0")]),
    ));
    // A pushed response on a server-initiated stream (promised first).
    let mut pp = 2u32.to_be_bytes().to_vec();
    pp.extend(get(&mut se, "/pushed.css", &[]));
    s.extend(frame(0x5, END_HEADERS, 1, &pp));
    s.extend(headers(2, END_STREAM, &status(&mut se, "200", &[])));
    s.extend(headers(
        5,
        END_STREAM,
        &block(&mut se, &[("x-after", "push")]),
    ));
    let mut d = Driver::new();
    // HEADERS on stream 0 or an even stream from the client: not requests.
    c.extend(headers(0, END_STREAM, &get(&mut ce, "/zero", &[])));
    c.extend(headers(4, END_STREAM, &get(&mut ce, "/even", &[])));
    d.open(1).req(1, 1, &c).resp(1, 2, &s).close(1, 3);
    assert_eq!(err(&d, "invalid_head"), 2);
    assert_eq!(d.stats().parse_errors.len(), 1);
    assert_eq!(
        summary(d.exchanges()),
        want(&[
            ("GET", "/c", Some(404)),
            ("GET", "/b", Some(200)),
            ("GET", "/a", Some(204))
        ])
    );
    assert_eq!(d.stats().orphan_responses, 0);
}

#[test]
fn reset_goaway_and_close_leave_requests_unanswered() {
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    let mut c = client_start();
    for (id, path) in [(1, "/reset"), (3, "/ok"), (5, "/refused"), (7, "/open")] {
        c.extend(headers(id, END_STREAM, &get(&mut ce, path, &[])));
    }
    c.extend(frame(RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    let mut s = settings(&[]);
    s.extend(headers(3, END_STREAM, &status(&mut se, "200", &[])));
    // GOAWAY: last processed stream 3 (stream 5 and 7 refused).
    let mut g = 3u32.to_be_bytes().to_vec();
    g.extend_from_slice(&0u32.to_be_bytes());
    g.extend_from_slice(b"debug data is skipped");
    s.extend(frame(GOAWAY, 0, 0, &g));
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c).resp(1, 2, &s);
    assert_eq!(
        summary(d.exchanges()),
        want(&[
            ("GET", "/reset", None),
            ("GET", "/ok", Some(200)),
            ("GET", "/refused", None),
            ("GET", "/open", None)
        ])
    );
    // Close emits nothing more.
    d.close(1, 3);
    assert_eq!(d.exchanges().len(), 4);
    assert_eq!(d.stats().unanswered, 3);

    // Stream open at close.
    let mut ce = Encoder::new();
    let mut c = client_start();
    c.extend(headers(1, END_STREAM, &get(&mut ce, "/slow", &[])));
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c);
    assert!(d.exchanges().is_empty());
    d.close(1, 2);
    assert_eq!(summary(d.exchanges()), want(&[("GET", "/slow", None)]));
    assert_eq!(d.stats().unanswered, 1);
}

#[test]
fn dynamic_table_across_blocks_and_unresolvable_index() {
    // Literal with incremental indexing of `cookie: sid=42` (62), then a
    // block that references it.
    let base = [0x82u8, 0x86, 0x84, 0x41, 0x01, b'h']; // GET http / authority h
    let mut b1 = base.to_vec();
    b1.extend_from_slice(&[0x60, 0x06]);
    b1.extend_from_slice(b"sid=42");
    // In b2, `:authority: h` is 63 now and the cookie 62.
    let b2 = [0x82u8, 0x86, 0x84, 0xbf, 0xbe];
    // 0xc6 = index 70: beyond the table.
    let bad = [0x82u8, 0x86, 0x84, 0xc6];
    let mut c = client_start();
    c.extend(headers(1, END_STREAM, &b1));
    c.extend(headers(3, END_STREAM, &bad));
    c.extend(headers(5, END_STREAM, &b2));
    let mut s = settings(&[]);
    s.extend(headers(1, END_STREAM, &[0x88])); // :status 200
    s.extend(headers(5, END_STREAM, &[0x88]));
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c).resp(1, 2, &s);
    let ex = d.exchanges();
    assert_eq!(
        summary(ex),
        want(&[("GET", "/", Some(200)), ("GET", "/", Some(200))])
    );
    for e in ex {
        assert_eq!(e.request.headers.get("cookie"), Some(&b"sid=42"[..]));
        assert_eq!(e.request.host.as_deref(), Some("h"));
    }
    assert_eq!(err(&d, "hpack_index"), 1);
    assert_eq!(d.stats().parse_errors.len(), 1);
}

#[test]
fn table_size_update_is_bounded_by_settings() {
    // Size update to 8192 without the server allowing it: the direction
    // stops (the real server would fail the connection).
    let upd8192 = [0x3fu8, 0xe1, 0x3f]; // 31 + 8161
    let mut b = upd8192.to_vec();
    b.extend_from_slice(&[0x82, 0x86, 0x84, 0x41, 0x01, b'h']);
    let mut c = client_start();
    c.extend(headers(1, END_STREAM, &b));
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c).resp(1, 2, &settings(&[]));
    assert_eq!(err(&d, "hpack_table_size"), 1);
    assert!(d.exchanges().is_empty());

    // The server advertised 8192 first: accepted.
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, &client_start())
        .resp(1, 2, &settings(&[(0x1, 8192)]))
        .req(1, 3, &headers(1, END_STREAM, &b))
        .resp(1, 4, &headers(1, END_STREAM, &[0x88]));
    assert_eq!(summary(d.exchanges()), want(&[("GET", "/", Some(200))]));
    assert!(d.stats().parse_errors.is_empty(), "{:?}", d.stats());

    // A size update to 0 empties the table: a later reference to 62 is
    // unresolvable (counted, skipped), then decoding goes on.
    let mut b1 = vec![0x82u8, 0x86, 0x84, 0x41, 0x01, b'h'];
    b1.extend_from_slice(&[0x60, 0x03]);
    b1.extend_from_slice(b"s=1");
    let mut c = client_start();
    c.extend(headers(1, END_STREAM, &b1));
    c.extend(headers(3, END_STREAM, &[0x20, 0x82, 0x86, 0x84, 0xbe]));
    c.extend(headers(
        5,
        END_STREAM,
        &[0x82, 0x86, 0x84, 0x41, 0x01, b'h'],
    ));
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c).close(1, 2);
    assert_eq!(
        summary(d.exchanges()),
        want(&[("GET", "/", None), ("GET", "/", None)])
    );
    assert_eq!(err(&d, "hpack_index"), 1);
}

#[test]
fn gaps() {
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    // A gap inside a DATA payload is subtracted.
    let mut c = client_start();
    c.extend(headers(1, 0, &get(&mut ce, "/upload", &[])));
    let data = frame(DATA, END_STREAM, 1, &[0u8; 1000]);
    let (d1, d2) = data.split_at(100);
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, &c)
        .req(1, 2, d1)
        .gap(1, Direction::ToServer, 3, 800)
        .req(1, 4, &d2[800..])
        .req(1, 5, &headers(3, END_STREAM, &get(&mut ce, "/next", &[])))
        .resp(1, 6, &settings(&[]))
        .resp(1, 7, &headers(1, END_STREAM, &status(&mut se, "201", &[])))
        .resp(1, 8, &headers(3, END_STREAM, &status(&mut se, "200", &[])));
    assert_eq!(
        summary(d.exchanges()),
        want(&[("GET", "/upload", Some(201)), ("GET", "/next", Some(200))])
    );
    assert!(d.stats().parse_errors.is_empty(), "{:?}", d.stats());

    // A gap in the client direction outside a payload: that direction
    // stops; streams already seen still get their responses.
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    let mut c = client_start();
    c.extend(headers(1, END_STREAM, &get(&mut ce, "/a", &[])));
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, &c)
        .gap(1, Direction::ToServer, 2, 50)
        .req(1, 3, &headers(3, END_STREAM, &get(&mut ce, "/b", &[])))
        .resp(1, 4, &settings(&[]))
        .resp(1, 5, &headers(1, END_STREAM, &status(&mut se, "200", &[])))
        .close(1, 6);
    assert_eq!(summary(d.exchanges()), want(&[("GET", "/a", Some(200))]));
    assert_eq!(err(&d, "gap"), 1);

    // A gap in the server direction: waiting requests are unanswered, later
    // requests are emitted at once without a response.
    let (mut ce, mut se) = (Encoder::new(), Encoder::new());
    let mut c = client_start();
    c.extend(headers(1, END_STREAM, &get(&mut ce, "/a", &[])));
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, &c)
        .resp(1, 2, &settings(&[]))
        .gap(1, Direction::ToClient, 3, 10)
        .resp(1, 4, &headers(1, END_STREAM, &status(&mut se, "200", &[])));
    assert_eq!(summary(d.exchanges()), want(&[("GET", "/a", None)]));
    d.req(1, 5, &headers(3, END_STREAM, &get(&mut ce, "/b", &[])));
    assert_eq!(
        summary(d.exchanges()),
        want(&[("GET", "/a", None), ("GET", "/b", None)])
    );
    assert_eq!(err(&d, "gap"), 1);
    assert_eq!(d.stage.buffered_bytes(), 0);
}

#[test]
fn malformed_frames_stop_the_direction() {
    let mut ce = Encoder::new();
    let blk = get(&mut ce, "/", &[]);
    // Frame longer than the default SETTINGS_MAX_FRAME_SIZE.
    let mut c = client_start();
    c.extend_from_slice(&[0x00, 0x40, 0x01, HEADERS, END_HEADERS, 0, 0, 0, 1]);
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c).req(1, 2, &[0u8; 20000]);
    assert_eq!(err(&d, "frame_too_large"), 1);
    assert!(d.exchanges().is_empty());

    // HEADERS without END_HEADERS followed by DATA.
    let mut c = client_start();
    c.extend(frame(HEADERS, 0, 1, &blk));
    c.extend(frame(DATA, 0, 1, b"x"));
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c).close(1, 2);
    assert_eq!(err(&d, "continuation"), 1);
    assert!(d.exchanges().is_empty());

    // Bad preface.
    let mut d = Driver::new();
    d.open(1).req(1, 1, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
    assert_eq!(err(&d, "invalid_preface"), 1);

    // Padding longer than the payload.
    let mut c = client_start();
    c.extend(frame(HEADERS, PADDED | END_HEADERS, 1, &[200, 0x82]));
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c);
    assert_eq!(err(&d, "invalid_padding"), 1);

    // Garbage HPACK (integer too long).
    let mut c = client_start();
    c.extend(headers(1, 0, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c);
    assert_eq!(err(&d, "hpack"), 1);
    assert_eq!(d.stage.buffered_bytes(), 0);
}

#[test]
fn bounds_on_streams_and_header_blocks() {
    let limits = H2Limits {
        max_streams: 2,
        max_header_block: 200,
        ..H2Limits::default()
    };
    let stage = || Driver {
        stage: H1Stage::new(Vec::new(), Limits::default()).with_h2_limits(limits.clone()),
    };
    let mut ce = Encoder::new();
    let mut c = client_start();
    for (id, path) in [(1, "/1"), (3, "/2"), (5, "/3")] {
        c.extend(headers(id, END_STREAM, &get(&mut ce, path, &[])));
    }
    let mut d = stage();
    d.open(1).req(1, 1, &c);
    assert_eq!(summary(d.exchanges()), want(&[("GET", "/3", None)]));
    assert_eq!(err(&d, "stream_overflow"), 1);
    d.close(1, 2);
    assert_eq!(d.exchanges().len(), 3);

    let mut c = client_start();
    let big = "v".repeat(300);
    c.extend(headers(
        1,
        END_STREAM,
        &get(&mut Encoder::new(), "/", &[("x-big", &big)]),
    ));
    let mut d = stage();
    d.open(1).req(1, 1, &c);
    assert_eq!(err(&d, "header_block_too_large"), 1);
    assert!(d.exchanges().is_empty());

    // Too many fields: kept up to the bound, the rest counted.
    let limits = H2Limits {
        max_headers: 3,
        ..H2Limits::default()
    };
    let mut d = Driver {
        stage: H1Stage::new(Vec::new(), Limits::default()).with_h2_limits(limits),
    };
    let mut c = client_start();
    c.extend(headers(
        1,
        END_STREAM,
        &get(
            &mut Encoder::new(),
            "/",
            &[
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("d", "4"),
                ("cookie", "s=1"),
            ],
        ),
    ));
    d.open(1).req(1, 1, &c).close(1, 2);
    let ex = d.exchanges();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].request.headers.len(), 4); // a, b, c + joined cookie
    assert_eq!(ex[0].request.headers.get("cookie"), Some(&b"s=1"[..]));
    assert_eq!(err(&d, "too_many_headers"), 1);
}

#[test]
fn hpack_bomb_is_dropped_and_state_kept() {
    // One 1000-byte cookie entry, then a block referencing it 300 times
    // (300 bytes on the wire, 300 kB decoded).
    let mut b1 = vec![0x82u8, 0x86, 0x84, 0x41, 0x01, b'h', 0x60, 0x7f, 0xe9, 0x06];
    b1.extend(std::iter::repeat_n(b'c', 1000));
    let mut bomb = vec![0x82u8, 0x86, 0x84];
    bomb.extend(std::iter::repeat_n(0xbeu8, 300)); // the cookie (62)
    let mut c = client_start();
    c.extend(headers(1, END_STREAM, &b1));
    c.extend(headers(3, END_STREAM, &bomb));
    c.extend(headers(5, END_STREAM, &[0x82, 0x86, 0x84, 0xbf])); // :authority (63)
    let mut d = Driver::new();
    d.open(1).req(1, 1, &c);
    assert_eq!(err(&d, "headers_too_large"), 1);
    assert!(d.stage.pending_bytes() > 1000);
    d.close(1, 2);
    let ex = d.exchanges();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[1].request.host.as_deref(), Some("h"));
    assert_eq!(
        ex[0].request.headers.get("cookie").map(<[u8]>::len),
        Some(1000)
    );
    assert_eq!(d.stage.pending_bytes(), 0);
}

#[test]
fn pending_budget_is_shared_with_http1() {
    let limits = Limits {
        max_pending_total: 100,
        ..Limits::default()
    };
    let mut d = Driver::with_limits(limits);
    let mut ce = Encoder::new();
    let mut c = client_start();
    c.extend(headers(
        1,
        END_STREAM,
        &get(&mut ce, "/a", &[("x", &"y".repeat(40))]),
    ));
    c.extend(headers(
        3,
        END_STREAM,
        &get(&mut ce, "/b", &[("x", &"z".repeat(40))]),
    ));
    d.open(1).req(1, 1, &c);
    assert_eq!(summary(d.exchanges()), want(&[("GET", "/b", None)]));
    assert_eq!(err(&d, "pending_budget"), 1);
    d.close(1, 2);
    assert_eq!(d.stage.pending_bytes(), 0);
}

#[test]
fn h2c_upgrade_answers_the_http1_request_on_stream_1() {
    let mut se = Encoder::new();
    let mut s =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    s.extend(settings(&[]));
    s.extend(headers(
        1,
        0,
        &status(&mut se, "200", &[("set-cookie", "sid=9")]),
    ));
    s.extend(frame(DATA, END_STREAM, 1, b"hello"));
    let mut ce = Encoder::new();
    let mut c = client_start();
    c.extend(headers(3, END_STREAM, &get(&mut ce, "/second", &[])));
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /first HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        .resp(1, 2, &s)
        .req(1, 3, &c)
        .resp(1, 4, &headers(3, END_STREAM, &status(&mut se, "404", &[])));
    let ex = d.exchanges();
    assert_eq!(
        summary(ex),
        want(&[("GET", "/first", Some(200)), ("GET", "/second", Some(404))])
    );
    assert_eq!(ex[0].request.host.as_deref(), Some("h"));
    assert_eq!(
        ex[0]
            .response
            .as_ref()
            .and_then(|r| r.headers.get_str("set-cookie")),
        Some("sid=9")
    );
    assert!(d.stats().parse_errors.is_empty(), "{:?}", d.stats());
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

#[test]
fn real_capture_curl_nginx_h2c() {
    let mut stage = H1Stage::new(Vec::new(), Limits::default());
    replay(
        &fixture("h2-nginx.pcap"),
        &ReassemblyConfig::default(),
        &mut stage,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stats = stage.stats().clone();
    assert_eq!(stage.buffered_bytes(), 0);
    let ex = stage.into_sink();
    assert_eq!(
        summary(&ex),
        want(&[
            ("GET", "/account?tab=1", Some(200)),
            ("GET", "/missing", Some(404)),
            ("GET", "/big.bin", Some(200)),
            ("POST", "/login", Some(302)),
            ("GET", "/account", Some(200)),
        ])
    );
    for e in &ex {
        assert_eq!(e.protocol, Protocol::Http2);
        let host = e.request.host.as_deref().unwrap_or("");
        assert!(host.starts_with("127.0.0.1:"), "{host}");
        assert_eq!(e.request.headers.get_str("user-agent"), Some("curl/7.88.1"));
        let r = e.response.as_ref().expect("response");
        assert_eq!(r.headers.get_str("server"), Some("nginx/1.22.1"));
    }
    assert_eq!(
        ex[0].request.headers.get_str("cookie"),
        Some("sessionid=fixture-h2-not-a-secret; theme=dark")
    );
    assert_eq!(ex[1].request.headers.get("cookie"), None);
    assert_eq!(
        ex[2]
            .response
            .as_ref()
            .and_then(|r| r.headers.get_str("content-length")),
        Some("40000")
    );
    let login = ex[3].response.as_ref().expect("login response");
    let sc: Vec<&[u8]> = login.headers.get_all("set-cookie").collect();
    assert_eq!(
        sc,
        vec![
            &b"sessionid=fixture-h2-not-a-secret; Path=/; HttpOnly"[..],
            b"csrftoken=fixture-csrf; Path=/"
        ]
    );
    assert_eq!(
        login
            .headers
            .get_str("location")
            .map(|l| l.ends_with("/account")),
        Some(true)
    );
    assert_eq!(
        ex[3].request.headers.get_str("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    // Two Cookie lines become two `cookie` fields on the wire; joined here.
    assert_eq!(ex[4].request.headers.get_str("cookie"), Some("a=1; b=2"));
    assert_eq!(stats.exchanges, [0, 5]);
    assert_eq!(stats.unanswered, 0);
    assert!(stats.parse_errors.is_empty(), "{:?}", stats.parse_errors);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes after the preface (and arbitrary gaps) in both
    /// directions never panic, and every buffered byte is released at close.
    #[test]
    fn arbitrary_frames_never_panic(
        client in proptest::collection::vec(any::<u8>(), 0..600),
        server in proptest::collection::vec(any::<u8>(), 0..600),
        cuts in proptest::collection::vec(1usize..64, 1..16),
        gap_at in proptest::option::of(0usize..16),
    ) {
        let mut d = Driver::new();
        d.open(1).req(1, 0, &client_start());
        let mut ci = 0;
        let mut si = 0;
        for (k, cut) in cuts.iter().enumerate() {
            let ce = (ci + cut).min(client.len());
            let se = (si + cut).min(server.len());
            d.req(1, k as u64, &client[ci..ce]);
            d.resp(1, k as u64, &server[si..se]);
            if gap_at == Some(k) {
                d.gap(1, Direction::ToClient, k as u64, *cut as u64);
            }
            ci = ce;
            si = se;
        }
        d.req(1, 99, &client[ci..]);
        d.resp(1, 99, &server[si..]);
        d.close(1, 100);
        prop_assert_eq!(d.stage.buffered_bytes(), 0);
        prop_assert_eq!(d.stage.pending_bytes(), 0);
        prop_assert_eq!(d.stage.connections(), 0);
    }

    /// Mid-stream joins: plausible frames after arbitrary leading bytes,
    /// arbitrary payloads (HPACK garbage included), never a panic.
    #[test]
    fn arbitrary_midstream_joins_never_panic(
        lead in proptest::collection::vec(any::<u8>(), 0..20),
        frames in proptest::collection::vec(
            (0u8..10, any::<u8>(), 0u32..6, proptest::collection::vec(any::<u8>(), 0..40)),
            2..16,
        ),
        server in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut c = lead.clone();
        for (ty, flags, stream, payload) in &frames {
            c.extend(frame(*ty, *flags, *stream, payload));
        }
        let mut d = Driver::new();
        d.open(1).req(1, 1, &c).resp(1, 2, &server).req(1, 3, &c).close(1, 4);
        prop_assert_eq!(d.stage.buffered_bytes(), 0);
        prop_assert_eq!(d.stage.pending_bytes(), 0);
    }

    /// Well-formed frames with arbitrary (valid-length) HPACK garbage and
    /// random frame types: no panic, bounded output.
    #[test]
    fn arbitrary_frame_sequences_never_panic(
        frames in proptest::collection::vec(
            (0u8..12, any::<u8>(), 0u32..8, proptest::collection::vec(any::<u8>(), 0..80)),
            0..24,
        ),
    ) {
        let mut c = client_start();
        let mut s = Vec::new();
        for (i, (ty, flags, stream, payload)) in frames.iter().enumerate() {
            let f = frame(*ty, *flags, *stream, payload);
            if i % 2 == 0 { c.extend(f) } else { s.extend(f) }
        }
        let mut d = Driver::new();
        d.open(1).req(1, 1, &c).resp(1, 2, &s).close(1, 3);
        prop_assert!(d.exchanges().len() <= frames.len());
        prop_assert_eq!(d.stage.buffered_bytes(), 0);
        prop_assert_eq!(d.stage.pending_bytes(), 0);
    }
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn decode_ours(d: &mut HpackDecoder, block: &[u8]) -> Result<Fields, HpackError> {
    let mut out = Vec::new();
    d.decode(block, |n, v| out.push((n.to_vec(), v.to_vec())))?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Header lists encoded by an independent encoder (with dynamic-table
    /// indexing and evictions) decode to the same fields, block after block.
    #[test]
    fn hpack_roundtrip_against_reference_encoder(
        blocks in proptest::collection::vec(
            proptest::collection::vec(
                ("[a-z][a-z0-9-]{0,12}", proptest::collection::vec(any::<u8>(), 0..40)),
                0..12,
            ),
            1..8,
        ),
    ) {
        let mut enc = Encoder::new();
        let mut dec = HpackDecoder::new(4096);
        for fields in &blocks {
            let blk = enc.encode(fields.iter().map(|(n, v)| (n.as_bytes(), &v[..])));
            let want: Vec<(Vec<u8>, Vec<u8>)> =
                fields.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.clone())).collect();
            prop_assert_eq!(decode_ours(&mut dec, &blk), Ok(want));
        }
    }

    /// Arbitrary blocks: never a panic; when the reference decoder accepts
    /// a block and so do we, the fields agree; Huffman strings are accepted
    /// exactly when the reference accepts them.
    #[test]
    fn hpack_arbitrary_blocks_agree_with_reference(
        block in proptest::collection::vec(any::<u8>(), 0..64),
        huff in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut ours = HpackDecoder::new(4096);
        let mut reference = loona_hpack::Decoder::new();
        reference.set_max_allowed_table_size(4096);
        if let (Ok(a), Ok(b)) = (decode_ours(&mut ours, &block), reference.decode(&block)) {
            prop_assert_eq!(a, b);
        }
        // A literal field whose value is `huff` as a Huffman string.
        let mut lit = vec![0x00, 0x01, b'x', 0x80 | huff.len() as u8];
        lit.extend_from_slice(&huff);
        let a = decode_ours(&mut HpackDecoder::new(4096), &lit);
        let b = loona_hpack::Decoder::new().decode(&lit);
        prop_assert_eq!(a.is_ok(), b.is_ok(), "{:?} {:?}", a, b);
        if let (Ok(a), Ok(b)) = (a, b) {
            prop_assert_eq!(a, b);
        }
    }
}
