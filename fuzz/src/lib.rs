//! Shared drivers of the fuzz targets.
//!
//! A fuzz input for the stream-level targets (`h1`, `h2`) is a *script*: a
//! sequence of operations on up to four connections — bytes in either
//! direction, cut wherever the fuzzer likes, gaps, closes and re-opens. The
//! same script format is used by the committed regression inputs, so a crash
//! found by `cargo fuzz` replays byte for byte in `cargo test`.
//!
//! Besides "never panics", every run checks the HTTP stage's accounting
//! invariants: the buffer budgets and the connection table never exceed
//! their bounds after any event, and everything is released after
//! `finish()`. A budget that leaks would, on a long-running agent, end in
//! every head being refused — a silent blind spot, so it is a fuzz failure.
#![forbid(unsafe_code)]

pub mod config;
pub mod cookie;
pub mod hpack;
pub mod pipeline;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use sessionwatch_http::h1::{H1Stage, Limits};
use sessionwatch_http::h2::H2Limits;
use sessionwatch_http::{Exchange, ExchangeSink, Protocol};
use sessionwatch_streams::{
    CloseReason, ConnectionId, ConnectionMeta, Direction, Source, StreamEvent, StreamSink,
    Timestamp,
};

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most connections a script addresses (ids 0..=3).
const CONNS: usize = 4;

/// Small bounds, so that a short input reaches every limit path: head too
/// large, too many headers, pipeline full, connection eviction, the
/// stage-wide budgets.
pub fn small_limits() -> Limits {
    Limits {
        max_head_bytes: 512,
        max_headers: 8,
        max_pipeline: 3,
        max_connections: 2,
        max_buffered_total: 1024,
        max_pending_total: 768,
    }
}

/// Small HTTP/2 bounds (streams, header block, HPACK table, decoded size).
pub fn small_h2_limits() -> H2Limits {
    H2Limits {
        max_streams: 4,
        max_header_block: 512,
        max_table_size: 256,
        max_headers: 8,
        max_decoded_block: 1024,
    }
}

/// An exchange sink that checks what the parsers promise about exchanges
/// and keeps nothing (so memory stays flat over long runs).
#[derive(Debug)]
pub struct CheckingSink {
    /// Most header fields a head may carry.
    pub max_headers: usize,
    /// Exchanges seen.
    pub exchanges: u64,
}

impl ExchangeSink for CheckingSink {
    fn on_exchange(&mut self, ex: &mut Exchange) {
        self.exchanges += 1;
        // HTTP/2 joins the cookie crumbs into one `cookie` field that is
        // never dropped (it carries the session); it comes on top of the
        // regular fields the bound keeps.
        let cookie = usize::from(ex.protocol == Protocol::Http2);
        assert!(
            ex.request.headers.len() <= self.max_headers + cookie,
            "request with {} header fields, limit {}",
            ex.request.headers.len(),
            self.max_headers
        );
        for (name, _) in ex.request.headers.iter() {
            assert!(
                !name.bytes().any(|b| b.is_ascii_uppercase()),
                "header names are lower-cased"
            );
        }
        if let Some(resp) = &ex.response {
            assert!(resp.headers.len() <= self.max_headers);
            // 101 is the final response of an upgrade; other 1xx are
            // interim and skipped.
            assert!(
                resp.status == 101 || !(100..200).contains(&resp.status),
                "interim responses are skipped"
            );
        }
    }
}

/// Where the first byte of every connection's client stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prelude {
    /// Nothing: the script's bytes are the whole stream.
    None,
    /// The HTTP/2 connection preface is sent first, so every byte of the
    /// script is parsed as HTTP/2 frames.
    H2Preface,
}

/// Reads the next script byte.
fn take(data: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = data.split_first()?;
    *data = rest;
    Some(b)
}

/// Runs one fuzz script through a fresh [`H1Stage`] and checks the
/// stage's invariants.
///
/// Script format: the first byte selects the bounds (bit 0: small limits).
/// Then operations, each starting with one byte `op`:
/// - `op & 0x03` is the connection (0..=3), opened on first use;
/// - `op >> 2 & 0x07` is the operation: 0–1 data to the server, 2–3 data to
///   the client (length: next byte, or the next two bytes little-endian
///   when `op & 0x80`), 4 gap to the server, 5 gap to the client (length:
///   next byte + 1), 6 close, 7 re-open (same id, a new connection).
pub fn run_stream_script(data: &[u8], prelude: Prelude) {
    let mut data = data;
    let small = take(&mut data).is_some_and(|b| b & 1 == 1);
    let (limits, h2_limits) = if small {
        (small_limits(), small_h2_limits())
    } else {
        (Limits::default(), H2Limits::default())
    };
    let max_headers = limits.max_headers;
    let bounds = limits.clone();
    let sink = CheckingSink {
        max_headers,
        exchanges: 0,
    };
    let mut stage = H1Stage::new(sink, limits).with_h2_limits(h2_limits);
    let mut open = [false; CONNS];
    let mut generation = [0u64; CONNS];
    let mut t: u64 = 1_700_000_000 * 1_000_000_000;

    let meta = |i: usize, generation: u64| ConnectionMeta {
        id: ConnectionId((generation << 8) | i as u64),
        client: Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 0, 1 + i as u8),
            40_000u16.wrapping_add(generation as u16),
        ))),
        server: Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 1, 1),
            80,
        ))),
        tls: i % 2 == 1,
        source: Source::Pcap,
        process: None,
    };

    let check = |stage: &H1Stage<CheckingSink>| {
        assert!(stage.connections() <= bounds.max_connections);
        assert!(stage.buffered_bytes() <= bounds.max_buffered_total);
        assert!(stage.pending_bytes() <= bounds.max_pending_total);
    };

    while let Some(op) = take(&mut data) {
        let i = usize::from(op & 0x03);
        let kind = (op >> 2) & 0x07;
        t += 1_000_000;
        let ts = Timestamp(t);
        if kind == 7 || !open[i] {
            if open[i] {
                let id = meta(i, generation[i]).id;
                stage.on_event(StreamEvent::Close {
                    conn: id,
                    ts,
                    reason: CloseReason::Reset,
                });
                generation[i] += 1;
            }
            let m = meta(i, generation[i]);
            stage.on_event(StreamEvent::Open(&m));
            open[i] = true;
            if prelude == Prelude::H2Preface {
                stage.on_event(StreamEvent::Data {
                    conn: m.id,
                    dir: Direction::ToServer,
                    ts,
                    bytes: H2_PREFACE,
                });
            }
            check(&stage);
            if kind == 7 {
                continue;
            }
        }
        let id = meta(i, generation[i]).id;
        match kind {
            0..=3 => {
                let dir = if kind < 2 {
                    Direction::ToServer
                } else {
                    Direction::ToClient
                };
                let len = if op & 0x80 != 0 {
                    let lo = take(&mut data).unwrap_or(0);
                    let hi = take(&mut data).unwrap_or(0);
                    usize::from(u16::from_le_bytes([lo, hi]))
                } else {
                    usize::from(take(&mut data).unwrap_or(0))
                };
                let (bytes, rest) = data.split_at(len.min(data.len()));
                data = rest;
                stage.on_event(StreamEvent::Data {
                    conn: id,
                    dir,
                    ts,
                    bytes,
                });
            }
            4 | 5 => {
                let dir = if kind == 4 {
                    Direction::ToServer
                } else {
                    Direction::ToClient
                };
                let len = u64::from(take(&mut data).unwrap_or(0)) + 1;
                // High bit: a gap live capture's body skipping would make,
                // at most what `body_remaining` promises; it must never
                // cost framing.
                let promised = (op & 0x80 != 0)
                    .then(|| stage.body_remaining(id, dir))
                    .flatten()
                    .filter(|r| *r > 0);
                let gap_errors = |stage: &H1Stage<CheckingSink>| {
                    stage
                        .stats()
                        .parse_errors
                        .get(&("http1", "gap"))
                        .copied()
                        .unwrap_or(0)
                };
                let before = gap_errors(&stage);
                stage.on_event(StreamEvent::Gap {
                    conn: id,
                    dir,
                    ts,
                    len: promised.map_or(len, |r| r.min(len.saturating_mul(4096))),
                });
                if promised.is_some() {
                    assert_eq!(gap_errors(&stage), before, "a promised body gap broke framing");
                }
            }
            _ => {
                stage.on_event(StreamEvent::Close {
                    conn: id,
                    ts,
                    reason: CloseReason::Closed,
                });
                open[i] = false;
                generation[i] += 1;
            }
        }
        check(&stage);
    }
    stage.finish();
    assert_eq!(stage.connections(), 0);
    assert_eq!(stage.buffered_bytes(), 0, "head buffer budget leaked");
    assert_eq!(stage.pending_bytes(), 0, "pending budget leaked");
    let stats = stage.stats();
    assert!(stats.unanswered <= stats.exchanges[0] + stats.exchanges[1]);
}

/// The `h1` target: the script's bytes as they come (HTTP/1, switching to
/// HTTP/2 on a preface or `h2c` upgrade).
pub fn h1(data: &[u8]) {
    run_stream_script(data, Prelude::None);
}

/// The `h2` target: every connection starts with the HTTP/2 preface.
pub fn h2(data: &[u8]) {
    run_stream_script(data, Prelude::H2Preface);
}

/// Runs `data` through the named target; `None` for an unknown name.
pub fn run_target(target: &str, data: &[u8]) -> Option<()> {
    match target {
        "h1" => h1(data),
        "h2" => h2(data),
        "hpack" => hpack::run(data),
        "cookie" => cookie::run(data),
        "pcap" => pipeline::run_capture(data),
        "config" => config::run(data),
        _ => return None,
    }
    Some(())
}

/// Every fuzz target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: [&str; 6] = ["h1", "h2", "hpack", "cookie", "pcap", "config"];
