//! HTTP/1 stage behaviour, event by event.

mod common;

use common::{Driver, s};
use sessionwatch_http::Protocol;
use sessionwatch_http::h1::Limits;
use sessionwatch_streams::{ConnectionId, Direction, Timestamp};

const UP: Direction = Direction::ToServer;
const DOWN: Direction = Direction::ToClient;

#[test]
fn simple_exchange_fields() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 10, b"GET /account?x=1 HTTP/1.1\r\nHost: Shop.Example\r\nCookie: sessionid=abc\r\nUser-Agent: curl/8.5.0\r\n\r\n")
        .resp(
            1,
            20,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=b; HttpOnly\r\nSet-Cookie: c=d\r\n\r\nhello",
        )
        .close(1, 30);
    let ex = d.exchanges();
    assert_eq!(ex.len(), 1);
    let e = &ex[0];
    assert_eq!(e.conn.id, ConnectionId(1));
    assert_eq!(e.protocol, Protocol::Http1);
    assert_eq!(&*e.request.method, "GET");
    assert_eq!(&*e.request.target, "/account?x=1");
    assert_eq!(e.request.host.as_deref(), Some("Shop.Example"));
    assert_eq!(e.request.ts, Timestamp(10));
    assert_eq!(e.request.headers.get("cookie"), Some(&b"sessionid=abc"[..]));
    assert_eq!(e.request.headers.get_str("user-agent"), Some("curl/8.5.0"));
    let r = e.response.as_ref().unwrap_or_else(|| panic!("no response"));
    assert_eq!(r.status, 200);
    assert_eq!(r.ts, Timestamp(20));
    let cookies: Vec<&[u8]> = r.headers.get_all("set-cookie").collect();
    assert_eq!(cookies, vec![&b"a=b; HttpOnly"[..], &b"c=d"[..]]);
    assert_eq!(d.stats().exchanges, [1, 0]);
    assert_eq!(d.stats().unanswered, 0);
    assert!(
        d.stats().parse_errors.is_empty(),
        "{:?}",
        d.stats().parse_errors
    );
    assert_eq!(d.stage.connections(), 0);
}

#[test]
fn pipelined_requests_pair_in_order() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nPOST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz")
        .resp(1, 2, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\naaHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\nHTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        d.summary(),
        vec![
            s("GET /a", Some(200)),
            s("GET /b", Some(404)),
            s("POST /c", Some(302))
        ]
    );
}

#[test]
fn bodies_are_skipped_not_parsed() {
    let mut d = Driver::new();
    let body = b"line1\r\nGET /not-a-request HTTP/1.1\r\n\r\nHTTP/1.1 500 fake\r\n\r\n";
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut resp = format!(
        "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    resp.extend_from_slice(body);
    d.open(1)
        .req(1, 1, &req)
        .resp(1, 2, &resp)
        .req(1, 3, b"GET /next HTTP/1.1\r\n\r\n")
        .resp(1, 4, b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        d.summary(),
        vec![s("POST /upload", Some(201)), s("GET /next", Some(204))]
    );
    assert!(d.stats().parse_errors.is_empty());
}

#[test]
fn chunked_bodies_split_everywhere() {
    let req: &[u8] = b"POST /api HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4;x=y\r\nabcd\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\nGET /after HTTP/1.1\r\n\r\n";
    let resp: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nZ";
    for cut in 0..req.len().max(resp.len()) {
        let mut d = Driver::new();
        d.open(1);
        let (a, b) = req.split_at(cut.min(req.len()));
        d.req(1, 1, a).req(1, 1, b);
        let (a, b) = resp.split_at(cut.min(resp.len()));
        d.resp(1, 2, a).resp(1, 2, b);
        assert_eq!(
            d.summary(),
            vec![s("POST /api", Some(200)), s("GET /after", Some(200))],
            "cut {cut}"
        );
        assert!(
            d.stats().parse_errors.is_empty(),
            "cut {cut}: {:?}",
            d.stats().parse_errors
        );
    }
}

#[test]
fn head_204_304_have_no_body() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"HEAD /big HTTP/1.1\r\n\r\nGET /gone HTTP/1.1\r\n\r\nGET /cached HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n")
        .resp(1, 2, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        .resp(1, 3, b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n")
        .resp(1, 4, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n")
        .resp(1, 5, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        d.summary(),
        vec![
            s("HEAD /big", Some(200)),
            s("GET /gone", Some(204)),
            s("GET /cached", Some(304)),
            s("GET /x", Some(200))
        ]
    );
}

#[test]
fn continue_and_early_hints_are_interim() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"POST /login HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n")
        .resp(1, 2, b"HTTP/1.1 100 Continue\r\n\r\n")
        .req(1, 3, b"user=bob&")
        .resp(1, 4, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 302 Found\r\nSet-Cookie: sid=new\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.summary(), vec![s("POST /login", Some(302))]);
    let r = d.exchanges()[0]
        .response
        .as_ref()
        .unwrap_or_else(|| panic!("response"));
    assert_eq!(r.headers.get("set-cookie"), Some(&b"sid=new"[..]));
    assert_eq!(r.ts, Timestamp(4));
}

#[test]
fn response_until_close() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET / HTTP/1.0\r\n\r\n")
        .resp(
            1,
            2,
            b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\n\r\n<html>",
        )
        .resp(1, 3, b"HTTP/1.1 999 not a head, body bytes\r\n\r\n")
        .close(1, 4);
    assert_eq!(d.summary(), vec![s("GET /", Some(200))]);
    assert!(d.stats().parse_errors.is_empty());
}

#[test]
fn connection_close_then_close_event() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n")
        .resp(
            1,
            2,
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        )
        .close(1, 3);
    assert_eq!(d.summary(), vec![s("GET /a", Some(200))]);
    assert_eq!(d.stats().unanswered, 0);
}

#[test]
fn websocket_upgrade_stops_parsing() {
    let mut d = Driver::new();
    d.open(1)
        .req(
            1,
            1,
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .req(1, 2, b"\x81\x85frame-bytes")
        .resp(
            1,
            3,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello",
        )
        .req(1, 4, b"\x81\x85more")
        .close(1, 5);
    assert_eq!(d.summary(), vec![s("GET /ws", Some(101))]);
    assert_eq!(d.errors("upgrade"), 1);
    assert_eq!(d.errors("invalid_head"), 0);
}

#[test]
fn upgrade_refused_continues_http() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
        .resp(
            1,
            2,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        )
        .req(1, 3, b"GET /next HTTP/1.1\r\n\r\n")
        .resp(1, 4, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        d.summary(),
        vec![s("GET /ws", Some(400)), s("GET /next", Some(200))]
    );
}

#[test]
fn connect_tunnel_and_refusal() {
    let mut d = Driver::new();
    d.open(1)
        .req(
            1,
            1,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        )
        .resp(1, 2, b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .req(1, 3, b"\x16\x03\x01\x00\x05hello")
        .resp(1, 4, b"\x16\x03\x03\x00\x02hi");
    assert_eq!(d.summary(), vec![s("CONNECT example.com:443", Some(200))]);
    assert_eq!(d.errors("connect"), 1);
    assert_eq!(d.errors("invalid_head"), 0);
    assert_eq!(
        d.exchanges()[0].request.host.as_deref(),
        Some("example.com:443")
    );

    let mut d = Driver::new();
    d.open(2)
        .req(2, 1, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        .resp(
            2,
            2,
            b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n",
        )
        .req(2, 3, b"GET http://example.com/ HTTP/1.1\r\n\r\n")
        .resp(2, 4, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        d.summary(),
        vec![
            s("CONNECT example.com:443", Some(407)),
            s("GET http://example.com/", Some(200))
        ]
    );
    assert_eq!(
        d.exchanges()[1].request.host.as_deref(),
        Some("example.com")
    );
}

#[test]
fn gap_inside_known_length_body_is_subtracted() {
    let mut d = Driver::new();
    d.open(1)
        .req(
            1,
            1,
            b"POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .gap(1, UP, 2, 80)
        .req(1, 3, b"0123456789GET /b HTTP/1.1\r\n\r\n")
        .resp(1, 4, b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
        .gap(1, DOWN, 5, 50)
        .resp(1, 6, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        d.summary(),
        vec![s("POST /a", Some(200)), s("GET /b", Some(201))]
    );
    assert_eq!(d.errors("resync"), 0);
    assert_eq!(d.errors("gap"), 0);
}

#[test]
fn gap_inside_chunk_data_is_subtracted() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /a HTTP/1.1\r\n\r\n")
        .resp(
            1,
            2,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\nabc",
        )
        .gap(1, DOWN, 3, 1018)
        .resp(1, 4, b"xyz\r\n0\r\n\r\n")
        .req(1, 5, b"GET /b HTTP/1.1\r\n\r\n")
        .resp(1, 6, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        d.summary(),
        vec![s("GET /a", Some(200)), s("GET /b", Some(200))]
    );
    assert_eq!(d.errors("resync"), 0);
}

#[test]
fn lost_request_does_not_steal_the_next_response() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /one HTTP/1.1\r\n\r\n")
        .resp(1, 2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        // A whole request lost in the capture...
        .gap(1, UP, 3, 200)
        // ...whose response (a successful login) arrives before the next
        // request: it must not be paired with anything.
        .resp(
            1,
            4,
            b"HTTP/1.1 302 Found\r\nSet-Cookie: sid=x\r\nContent-Length: 0\r\n\r\n",
        )
        .req(1, 5, b"GET /three HTTP/1.1\r\n\r\n")
        .resp(1, 6, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        d.summary(),
        vec![s("GET /one", Some(200)), s("GET /three", Some(403))]
    );
    assert_eq!(d.stats().orphan_responses, 1);
    assert_eq!(d.errors("gap"), 1);
    assert_eq!(d.errors("resync"), 1);
}

#[test]
fn resync_mid_line_after_gap_in_head() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /one HTTP/1.1\r\nHost: h\r\nX-Long: aaaa")
        .gap(1, UP, 2, 30)
        // Rest of the lost head, then a request whose method is split.
        .req(1, 3, b"bbbb\r\nCookie: c\r\n\r\nGE")
        .req(1, 4, b"T /two HTTP/1.1\r\n\r\n")
        .resp(1, 5, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.summary(), vec![s("GET /two", Some(200))]);
    assert_eq!(d.errors("resync"), 1);
}

#[test]
fn lost_response_leaves_request_unanswered() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /a HTTP/1.1\r\n\r\n")
        .gap(1, DOWN, 2, 120)
        .resp(
            1,
            3,
            b"tail of something\r\nHTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        )
        .req(1, 4, b"GET /b HTTP/1.1\r\n\r\n")
        .resp(1, 5, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.summary(), vec![s("GET /a", None), s("GET /b", Some(200))]);
    assert_eq!(d.stats().unanswered, 1);
    assert_eq!(d.stats().orphan_responses, 1);
}

#[test]
fn gap_in_chunked_framing_resyncs() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /a HTTP/1.1\r\n\r\n")
        .resp(
            1,
            2,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        )
        .gap(1, DOWN, 3, 40)
        .resp(1, 4, b"garbage\r\n0\r\n\r\n")
        .req(1, 5, b"GET /b HTTP/1.1\r\n\r\n")
        .resp(1, 6, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        d.summary(),
        vec![s("GET /a", Some(200)), s("GET /b", Some(200))]
    );
    assert_eq!(d.errors("gap"), 1);
    assert_eq!(d.errors("resync"), 1);
}

#[test]
fn head_size_and_header_count_limits() {
    let limits = Limits {
        max_head_bytes: 1024,
        max_headers: 8,
        ..Limits::default()
    };
    let mut d = Driver::with_limits(limits.clone());
    let mut big = b"GET /big HTTP/1.1\r\nX: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 600));
    d.open(1).req(1, 1, &big).req(1, 2, &[b'b'; 600]).req(
        1,
        3,
        b"\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
    );
    d.resp(1, 4, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.errors("head_too_large"), 1);
    assert_eq!(d.summary(), vec![s("GET /ok", Some(200))]);
    assert!(d.stage.buffered_bytes() == 0);

    let mut d = Driver::with_limits(limits);
    let mut many = b"GET /many HTTP/1.1\r\n".to_vec();
    for i in 0..20 {
        many.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    d.open(1).req(1, 1, &many);
    assert_eq!(d.errors("too_many_headers"), 1);
    assert!(d.exchanges().is_empty());
}

#[test]
fn unanswered_requests_at_close() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
        .resp(1, 2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.exchanges().len(), 1);
    d.close(1, 3);
    assert_eq!(d.summary(), vec![s("GET /a", Some(200)), s("GET /b", None)]);
    assert_eq!(d.stats().unanswered, 1);
    assert_eq!(d.stats().exchanges, [2, 0]);
}

#[test]
fn partial_head_at_close_is_counted() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /a HTTP/1.1\r\nHost: h")
        .close(1, 2);
    assert_eq!(d.errors("truncated_head"), 1);
    assert!(d.exchanges().is_empty());
    assert_eq!(d.stage.buffered_bytes(), 0);
}

#[test]
fn orphan_response_mid_stream() {
    let mut d = Driver::new();
    d.open(1)
        .resp(1, 1, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        .req(1, 2, b"GET /a HTTP/1.1\r\n\r\n")
        .resp(1, 3, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.summary(), vec![s("GET /a", Some(200))]);
    assert_eq!(d.stats().orphan_responses, 1);
}

#[test]
fn http2_preface_hands_the_connection_to_http2() {
    // Client preface + SETTINGS; server SETTINGS ACK. Split everywhere.
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    for cut in 1..preface.len() {
        let mut d = Driver::new();
        d.open(1)
            .req(1, 1, &preface[..cut])
            .req(1, 2, &preface[cut..])
            .resp(1, 3, b"\x00\x00\x00\x04\x01\x00\x00\x00\x00");
        assert!(
            d.stats().parse_errors.is_empty(),
            "cut {cut}: {:?}",
            d.stats().parse_errors
        );
        assert!(d.exchanges().is_empty());
        assert_eq!(d.stage.buffered_bytes(), 0);
    }
}

#[test]
fn tls_on_a_plain_connection_is_not_http() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .resp(1, 2, b"\x16\x03\x03");
    assert_eq!(d.errors("not_http"), 1);
    assert_eq!(d.stats().parse_errors.len(), 1);
}

#[test]
fn invalid_heads_resync_to_the_next_request() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET / HTTP/1.1\r\n\r\n")
        .resp(1, 2, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .req(
            1,
            3,
            b"G@T /bad HTTP/1.1\r\nfoo\r\n\r\nGET /good HTTP/1.1\r\n\r\n",
        )
        .resp(1, 4, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.errors("invalid_head"), 1);
    assert_eq!(d.errors("resync"), 1);
    assert_eq!(
        d.summary(),
        vec![s("GET /", Some(200)), s("GET /good", Some(200))]
    );
}

#[test]
fn invalid_content_length_in_response() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET /a HTTP/1.1\r\n\r\n")
        .resp(
            1,
            2,
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        )
        .req(1, 3, b"GET /b HTTP/1.1\r\n\r\n")
        .resp(1, 4, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.errors("invalid_content_length"), 1);
    assert_eq!(
        d.summary(),
        vec![s("GET /a", Some(200)), s("GET /b", Some(200))]
    );
}

#[test]
fn invalid_request_framing() {
    let mut d = Driver::new();
    d.open(1)
        .req(
            1,
            1,
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nbinary",
        )
        .resp(
            1,
            2,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        );
    assert_eq!(d.errors("invalid_framing"), 1);
    assert_eq!(d.summary(), vec![s("POST /a", Some(400))]);
}

#[test]
fn pipeline_overflow_stops_the_connection() {
    let mut d = Driver::with_limits(Limits {
        max_pipeline: 2,
        ..Limits::default()
    });
    d.open(1).req(
        1,
        1,
        b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
    );
    assert_eq!(d.errors("pipeline_overflow"), 1);
    assert_eq!(
        d.summary(),
        vec![s("GET /1", None), s("GET /2", None), s("GET /3", None)]
    );
    d.resp(1, 2, b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(d.exchanges().len(), 3);
}

#[test]
fn connection_table_is_bounded() {
    let mut d = Driver::with_limits(Limits {
        max_connections: 2,
        ..Limits::default()
    });
    d.open(1).req(1, 1, b"GET /1 HTTP/1.1\r\n\r\n");
    d.open(2).req(2, 2, b"GET /2 HTTP/1.1\r\n\r\n");
    d.req(1, 3, b"GET /1b HTTP/1.1\r\n\r\n");
    d.open(3);
    assert_eq!(d.errors("conn_evicted"), 1);
    // Connection 2 was the least recently active.
    assert_eq!(d.summary(), vec![s("GET /2", None)]);
    d.req(2, 4, b"GET /late HTTP/1.1\r\n\r\n");
    assert_eq!(d.errors("no_open"), 1);
    assert_eq!(d.stage.connections(), 2);
    d.stage.finish();
    assert_eq!(d.exchanges().len(), 3);
    assert_eq!(d.stage.connections(), 0);
}

#[test]
fn byte_by_byte_delivery() {
    let req: &[u8] = b"POST /login HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\nu=a&p=b";
    let resp: &[u8] = b"HTTP/1.1 302 Found\r\nLocation: /home\r\nSet-Cookie: s=1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let mut d = Driver::new();
    d.open(1);
    for b in req {
        d.req(1, 1, std::slice::from_ref(b));
    }
    for b in resp {
        d.resp(1, 2, std::slice::from_ref(b));
    }
    assert_eq!(d.summary(), vec![s("POST /login", Some(302))]);
    assert!(d.stats().parse_errors.is_empty());
    assert_eq!(d.stage.buffered_bytes(), 0);
}

#[test]
fn exchange_shares_connection_meta() {
    let mut d = Driver::new();
    d.open(7)
        .req(7, 1, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
        .close(7, 2);
    let ex = d.exchanges();
    assert!(std::sync::Arc::ptr_eq(&ex[0].conn, &ex[1].conn));
    assert_eq!(ex[0].conn.client, common::meta(7).client);
}

#[test]
fn h2c_upgrade_hands_the_connection_to_http2() {
    let mut d = Driver::new();
    d.open(1)
        .req(1, 1, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        .resp(1, 2, b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .req(1, 3, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    // The upgrade request waits for its HTTP/2 response on stream 1
    // (see tests/h2.rs); none came before the close.
    assert!(d.summary().is_empty());
    d.close(1, 4);
    assert_eq!(d.summary(), vec![s("GET /", None)]);
    assert!(
        d.stats().parse_errors.is_empty(),
        "{:?}",
        d.stats().parse_errors
    );
    assert_eq!(d.errors("upgrade"), 0);
}

#[test]
fn pending_request_budget_is_global() {
    let mut d = Driver::with_limits(Limits {
        max_pending_total: 60,
        ..Limits::default()
    });
    d.open(1).req(1, 1, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    d.open(2).req(2, 2, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(d.stage.pending_bytes(), 56);
    d.req(1, 3, b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(d.errors("pending_budget"), 1);
    // Connection 1 stopped: its queue was emitted unanswered.
    assert_eq!(d.summary(), vec![s("GET /a", None), s("GET /c", None)]);
    assert_eq!(d.stage.pending_bytes(), 28);
    d.resp(2, 4, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(d.stage.pending_bytes(), 0);
}

/// `body_remaining` names exactly the bytes a gap may stand for without
/// costing framing: what is left of a fixed-length body or of one chunk's
/// data, everything for a body delimited by the close, and nothing in a
/// head, between chunks, after a websocket upgrade or on HTTP/2.
#[test]
fn body_remaining_is_what_a_gap_may_replace() {
    use sessionwatch_streams::{StreamSink, UNTIL_CLOSE};
    let rem = |d: &mut Driver, dir| d.stage.body_remaining(ConnectionId(1), dir);
    let mut d = Driver::new();
    d.open(1);
    assert_eq!(rem(&mut d, UP), None, "before any byte");
    d.req(
        1,
        1,
        b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\nabc",
    );
    assert_eq!(rem(&mut d, UP), Some(100_000 - 3));
    assert_eq!(rem(&mut d, DOWN), None);
    // A gap of exactly the rest ends the body; the next head parses.
    d.gap(1, UP, 2, 100_000 - 3);
    assert_eq!(rem(&mut d, UP), None);
    d.req(1, 3, b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    d.resp(
        1,
        4,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n0123",
    );
    assert_eq!(rem(&mut d, DOWN), Some(0x10000 - 4));
    d.gap(1, DOWN, 5, 0x10000 - 4);
    assert_eq!(rem(&mut d, DOWN), None, "the chunk's CRLF must be seen");
    d.resp(1, 6, b"\r\n0\r\n\r\n");
    d.resp(1, 7, b"HTTP/1.0 200 OK\r\n\r\nstream");
    assert_eq!(rem(&mut d, DOWN), Some(UNTIL_CLOSE));
    d.gap(1, DOWN, 8, 1 << 30);
    d.close(1, 9);
    assert_eq!(
        d.summary(),
        vec![s("POST /up", Some(200)), s("GET /next", Some(200)),]
    );
    assert!(
        d.stats().parse_errors.is_empty(),
        "{:?}",
        d.stats().parse_errors
    );
    assert_eq!(rem(&mut d, DOWN), None, "closed");
}
