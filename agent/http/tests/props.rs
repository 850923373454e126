//! Property tests: segmentation never changes the exchanges; no input
//! panics the HTTP/1 stage or the whole replay pipeline.

mod common;

use std::io::Cursor;

use common::Driver;
use proptest::prelude::*;
use sessionwatch_http::h1::{H1Stage, Limits};
use sessionwatch_http::{Exchange, ExchangeSink};
use sessionwatch_streams::pcap::PcapReader;
use sessionwatch_streams::reassembly::{Reassembler, ReassemblyConfig};
use sessionwatch_streams::synth::{self, Conversation};
use sessionwatch_streams::{Direction, Timestamp};

#[derive(Debug, Clone)]
enum Body {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Ex {
    method: &'static str,
    path: String,
    req_headers: Vec<(String, String)>,
    req_body: Body,
    interim: bool,
    status: u16,
    resp_body: Body,
}

fn body_strategy() -> impl Strategy<Value = Body> {
    // Bodies full of things that look like message starts.
    let bytes =
        proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\r'),], 0..60)
            .prop_map(|mut v| {
                v.extend_from_slice(b"\r\nHTTP/1.1 200 OK\r\nGET / HTTP/1.1\r\n\r\n");
                v
            });
    prop_oneof![
        Just(Body::None),
        bytes.clone().prop_map(Body::Length),
        proptest::collection::vec(bytes, 0..4)
            .prop_map(|cs| Body::Chunked(cs.into_iter().filter(|c| !c.is_empty()).collect())),
    ]
}

fn ex_strategy() -> impl Strategy<Value = Ex> {
    (
        prop_oneof![
            Just("GET"),
            Just("POST"),
            Just("HEAD"),
            Just("PUT"),
            Just("DELETE")
        ],
        "[a-z0-9/]{0,12}",
        proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}"), 0..5),
        body_strategy(),
        any::<bool>(),
        prop_oneof![
            Just(200u16),
            Just(201),
            Just(204),
            Just(302),
            Just(304),
            Just(404),
            Just(500)
        ],
        body_strategy(),
    )
        .prop_map(
            |(method, path, req_headers, req_body, interim, status, resp_body)| Ex {
                method,
                path: format!("/{path}"),
                req_headers: req_headers
                    .into_iter()
                    .filter(|(n, _)| {
                        let n = n.to_ascii_lowercase();
                        n != "content-length" && n != "transfer-encoding" && n != "upgrade"
                    })
                    .collect(),
                req_body,
                interim,
                status,
                resp_body,
            },
        )
}

fn render_body(out: &mut Vec<u8>, body: &Body) {
    match body {
        Body::None => out.extend_from_slice(b"\r\n"),
        Body::Length(b) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        Body::Chunked(chunks) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in chunks {
                out.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\nTrailer-Field: x\r\n\r\n");
        }
    }
}

/// Request and response byte streams of a conversation.
fn render(exs: &[Ex]) -> (Vec<u8>, Vec<u8>) {
    let (mut rq, mut rs) = (Vec::new(), Vec::new());
    for e in exs {
        rq.extend_from_slice(
            format!("{} {} HTTP/1.1\r\nHost: example\r\n", e.method, e.path).as_bytes(),
        );
        for (n, v) in &e.req_headers {
            rq.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        render_body(&mut rq, &e.req_body);
        if e.interim {
            rs.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        rs.extend_from_slice(format!("HTTP/1.1 {} X\r\nServer: t\r\n", e.status).as_bytes());
        if e.method == "HEAD" || e.status == 204 || e.status == 304 {
            // Framing headers are present but no body follows.
            rs.extend_from_slice(b"Content-Length: 1234\r\n\r\n");
        } else {
            render_body(
                &mut rs,
                &match &e.resp_body {
                    Body::None => Body::Length(Vec::new()),
                    b => b.clone(),
                },
            );
        }
    }
    (rq, rs)
}

fn split_at_points<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

fn run(parts_req: &[&[u8]], parts_resp: &[&[u8]]) -> Driver {
    let mut d = Driver::new();
    d.open(1);
    for p in parts_req {
        d.req(1, 1, p);
    }
    for p in parts_resp {
        d.resp(1, 1, p);
    }
    d.close(1, 2);
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn splitting_streams_never_changes_the_exchanges(
        exs in proptest::collection::vec(ex_strategy(), 1..6),
        cuts_req in proptest::collection::vec(any::<usize>(), 0..12),
        cuts_resp in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let (rq, rs) = render(&exs);
        let whole = run(&[&rq], &[&rs]);
        // The model: every request answered by its own response, in order.
        let expected: Vec<(String, Option<u16>)> =
            exs.iter().map(|e| (format!("{} {}", e.method, e.path), Some(e.status))).collect();
        prop_assert_eq!(whole.summary(), expected);
        prop_assert!(whole.stats().parse_errors.is_empty(), "{:?}", whole.stats().parse_errors);
        let split = run(&split_at_points(&rq, &cuts_req), &split_at_points(&rs, &cuts_resp));
        prop_assert_eq!(split.exchanges(), whole.exchanges());
        prop_assert_eq!(split.stats(), whole.stats());
        prop_assert_eq!(split.stage.buffered_bytes(), 0);
    }

    #[test]
    fn arbitrary_events_never_panic(
        events in proptest::collection::vec(
            (0u8..5, 1u64..3, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..80), 0u64..200),
            0..80,
        ),
        seed_stream in proptest::collection::vec(ex_strategy(), 1..3),
    ) {
        let limits = Limits { max_head_bytes: 256, max_headers: 4, max_pipeline: 3, max_connections: 2, max_buffered_total: 400, max_pending_total: 300 };
        let mut d = Driver::with_limits(limits);
        let (rq, rs) = render(&seed_stream);
        let mut t = 0;
        for (op, conn, up, bytes, n) in events {
            t += 1;
            let dir = if up { Direction::ToServer } else { Direction::ToClient };
            match op {
                0 => { d.open(conn); }
                1 => { d.data(conn, dir, t, &bytes); }
                2 => {
                    // A slice of a valid stream, to get past the heads.
                    let src = if up { &rq } else { &rs };
                    let a = (n as usize) % (src.len() + 1);
                    let b = (a + bytes.len() * 3).min(src.len());
                    d.data(conn, dir, t, &src[a..b]);
                }
                3 => { d.gap(conn, dir, t, n + 1); }
                _ => { d.close(conn, t); }
            }
            prop_assert!(d.stage.buffered_bytes() <= 400);
            prop_assert!(d.stage.pending_bytes() <= 300);
            prop_assert!(d.stage.connections() <= 2);
        }
        d.stage.finish();
        prop_assert_eq!(d.stage.connections(), 0);
        prop_assert_eq!(d.stage.buffered_bytes(), 0);
        prop_assert_eq!(d.stage.pending_bytes(), 0);
        let st = d.stats();
        prop_assert!(st.unanswered <= st.exchanges[0]);
    }

    #[test]
    fn arbitrary_capture_bytes_never_panic_the_pipeline(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..16),
        cut_to in any::<usize>(),
        exs in proptest::collection::vec(ex_strategy(), 1..3),
    ) {
        let (rq, rs) = render(&exs);
        let mut c = Conversation::new(
            "10.0.0.1:40000".parse().unwrap_or_else(|_| unreachable!()),
            "10.0.0.2:80".parse().unwrap_or_else(|_| unreachable!()),
            7,
            9,
        );
        let mut segs = c.handshake();
        segs.extend(c.client_stream(&rq, 100));
        segs.extend(c.server_stream(&rs, 100));
        segs.extend(c.close());
        let mut bytes = synth::write_pcap(Vec::new(), 1, Timestamp(1), &segs).unwrap_or_else(|e| panic!("{e}"));
        let clean = flips.is_empty() && cut_to % 2 == 0;
        for (at, v) in &flips {
            let n = bytes.len();
            bytes[24 + at % (n - 24)] = *v;
        }
        if !clean {
            let n = bytes.len();
            bytes.truncate(cut_to % (n + 1));
        }
        let mut stage = H1Stage::new(Vec::<Exchange>::new(), Limits::default());
        if let Ok(mut reader) = PcapReader::new("fuzz.pcap", Cursor::new(bytes)) {
            let mut r = Reassembler::new(ReassemblyConfig::default());
            while let Ok(Some(p)) = reader.next_packet() {
                r.process_packet(&p, &mut stage);
            }
            r.finish(&mut stage);
        }
        prop_assert_eq!(stage.connections(), 0);
        if clean {
            prop_assert_eq!(stage.sink().len(), exs.len());
            prop_assert!(stage.sink().iter().all(|e| e.response.is_some()));
        }
    }
}

/// Exchanges into a counter only (keeps the sink trait exercised).
#[derive(Default)]
struct Count(usize);

impl ExchangeSink for Count {
    fn on_exchange(&mut self, _: &mut Exchange) {
        self.0 += 1;
    }
}

#[test]
fn counting_sink_works_through_the_stage() {
    let mut stage = H1Stage::new(Count::default(), Limits::default());
    let m = common::meta(1);
    use sessionwatch_streams::{StreamEvent, StreamSink};
    stage.on_event(StreamEvent::Open(&m));
    stage.on_event(StreamEvent::Data {
        conn: m.id,
        dir: Direction::ToServer,
        ts: Timestamp(1),
        bytes: b"GET / HTTP/1.1\r\n\r\n",
    });
    stage.finish();
    assert_eq!(stage.into_sink().0, 1);
}
