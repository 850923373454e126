//! Replay throughput of the stream and HTTP/1 stages on a generated capture.
//!
//! `cargo run --release -p sessionwatch-http --example replay_throughput -- [EXCHANGES] [FILE]`
//! or `... -- --replay FILE` to replay an existing capture only, or
//! `... -- --replay-streams FILE` to stop after TCP reassembly (the stream
//! events are counted, no HTTP parsing): the floors under `sessionwatch
//! replay` that `cargo xtask bench replay` reports.
//!
//! Writes a pcap with EXCHANGES request/response pairs (keep-alive
//! connections of 50 exchanges, browser-sized heads with cookies, small
//! bodies, 10% chunked) to FILE (default: a temporary file), then replays it
//! through pcap reading, TCP reassembly and the HTTP/1 stage into a sink that
//! only counts, and prints exchanges per second.

use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use sessionwatch_http::h1::{H1Stage, Limits};
use sessionwatch_http::{Exchange, ExchangeSink};
use sessionwatch_streams::decode::LINKTYPE_ETHERNET;
use sessionwatch_streams::reassembly::ReassemblyConfig;
use sessionwatch_streams::replay::replay;
use sessionwatch_streams::synth::{Conversation, PcapWriter, ethernet};
use sessionwatch_streams::{StreamEvent, StreamSink, Timestamp};

#[derive(Default)]
struct Count {
    exchanges: u64,
    answered: u64,
}

impl ExchangeSink for Count {
    fn on_exchange(&mut self, e: &mut Exchange) {
        self.exchanges += 1;
        self.answered += u64::from(e.response.is_some());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--replay") {
        let path = args.nth(1).map(PathBuf::from).ok_or("--replay FILE")?;
        return run_replay(&path);
    }
    if args.peek().is_some_and(|a| a == "--replay-streams") {
        let path = args
            .nth(1)
            .map(PathBuf::from)
            .ok_or("--replay-streams FILE")?;
        return run_streams(&path);
    }
    let total: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sw-replay-bench.pcap"));

    let t0 = Instant::now();
    let file = std::fs::File::create(&path)?;
    let mut w = PcapWriter::new(
        BufWriter::with_capacity(1 << 20, file),
        LINKTYPE_ETHERNET,
        262_144,
    )?;
    let per_conn = 50u64;
    let mut ts = 1_700_000_000_000_000_000u64;
    let mut written = 0u64;
    let mut conn = 0u64;
    let body = vec![b'x'; 900];
    while written < total {
        conn += 1;
        let client: SocketAddr = format!(
            "10.{}.{}.{}:{}",
            (conn >> 16) & 255,
            (conn >> 8) & 255,
            conn & 255,
            32768 + conn % 28000
        )
        .parse()?;
        let server: SocketAddr = "10.255.0.1:8080".parse()?;
        let mut c = Conversation::new(client, server, conn as u32 * 7919, conn as u32 * 104_729);
        let mut segs = c.handshake();
        for i in 0..per_conn.min(total - written) {
            let req = format!(
                "GET /shop/item/{i}?ref=home HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\nCookie: sessionid=4f2b8c1d9e7a6b5c3d2e1f0a9b8c7d6e; csrftoken=abcdef0123456789\r\nConnection: keep-alive\r\n\r\n"
            );
            segs.push(c.client_data(req.as_bytes()));
            let resp = if i % 10 == 0 {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\nVary: Cookie\r\n\r\n".to_vec();
                r.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                r.extend_from_slice(&body);
                r.extend_from_slice(b"\r\n0\r\n\r\n");
                r
            } else {
                let mut r = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nSet-Cookie: csrftoken=abcdef0123456789; Path=/; SameSite=Lax\r\nVary: Cookie\r\n\r\n", body.len()).into_bytes();
                r.extend_from_slice(&body);
                r
            };
            segs.push(c.server_data(&resp));
            segs.push(c.client_ack());
            written += 1;
        }
        segs.extend(c.close());
        for s in &segs {
            ts += 20_000;
            w.write(Timestamp(ts), &ethernet(&s.ip_packet(), None))?;
        }
    }
    drop(w.into_inner());
    let size = std::fs::metadata(&path)?.len();
    eprintln!(
        "generated {written} exchanges, {conn} connections, {} MiB in {:.1?}",
        size >> 20,
        t0.elapsed()
    );

    run_replay(&path)
}

/// Counts stream events: pcap reading and TCP reassembly only.
#[derive(Default)]
struct Events {
    data: u64,
    bytes: u64,
}

impl StreamSink for Events {
    fn on_event(&mut self, event: StreamEvent<'_>) {
        if let StreamEvent::Data { bytes, .. } = event {
            self.data += 1;
            self.bytes += bytes.len() as u64;
        }
    }
}

fn run_streams(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let t1 = Instant::now();
    let mut sink = Events::default();
    let stats = replay(path, &ReassemblyConfig::default(), &mut sink)?;
    let dt = t1.elapsed();
    println!(
        "reassembled {} data events ({} bytes) from {} packets in {:.3}s",
        sink.data,
        sink.bytes,
        stats.reassembly.packets,
        dt.as_secs_f64()
    );
    Ok(())
}

fn run_replay(path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let size = std::fs::metadata(path)?.len();
    let t1 = Instant::now();
    let mut stage = H1Stage::new(Count::default(), Limits::default());
    let stats = replay(path, &ReassemblyConfig::default(), &mut stage)?;
    let dt = t1.elapsed();
    let count = stage.sink();
    println!(
        "replayed {} exchanges ({} answered) from {} packets in {:.3}s: {:.0} exchanges/s, {:.0} MiB/s",
        count.exchanges,
        count.answered,
        stats.reassembly.packets,
        dt.as_secs_f64(),
        count.exchanges as f64 / dt.as_secs_f64(),
        size as f64 / dt.as_secs_f64() / 1048576.0
    );
    Ok(())
}
