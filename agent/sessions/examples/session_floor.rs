//! The least session analysis per exchange, as a floor under
//! `sessionwatch replay` (`cargo xtask bench replay`, floor G).
//!
//! `cargo run --release -p sessionwatch-sessions --example session_floor -- FILE [COOKIE]`
//!
//! Reads the capture with the same pcap reader and TCP reassembly as the
//! agent (floor D), then does per data event only what any analysis of
//! session IDs must do: parse the message head in place (httparse, no copy,
//! no pairing of requests and responses, no body framing: a data event that
//! does not start with a head is skipped), find the session cookie
//! (`COOKIE`, default `sessionid`) in the request's `Cookie` header, hash
//! its value with the keyed hash and count the session in a table. No
//! fingerprint, route, cookie attribute, detector or output. Prints what it
//! saw so that a run can be checked against the agent's summary.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::Instant;

use sessionwatch_sessions::hash::{HashKey, SessionHash, SessionHasher};
use sessionwatch_streams::reassembly::ReassemblyConfig;
use sessionwatch_streams::replay::replay;
use sessionwatch_streams::{Direction, StreamEvent, StreamSink};

/// Heads per direction and the sessions seen.
struct Floor {
    cookie: Vec<u8>,
    hasher: SessionHasher,
    requests: u64,
    responses: u64,
    skipped: u64,
    ids: u64,
    sessions: HashMap<SessionHash, u32, foldhash::fast::RandomState>,
}

impl Floor {
    fn request(&mut self, data: &[u8]) -> bool {
        let mut hdrs = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
        let mut req = httparse::Request::new(&mut []);
        let Ok(httparse::Status::Complete(_)) = httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, data, &mut hdrs)
        else {
            return false;
        };
        self.requests += 1;
        for h in req.headers.iter() {
            if !h.name.eq_ignore_ascii_case("cookie") {
                continue;
            }
            for pair in h.value.split(|b| *b == b';') {
                let pair = pair.trim_ascii_start();
                let Some(value) = pair
                    .strip_prefix(self.cookie.as_slice())
                    .and_then(|rest| rest.strip_prefix(b"="))
                else {
                    continue;
                };
                let hash = self.hasher.hash(value);
                self.ids += 1;
                *self.sessions.entry(hash).or_default() += 1;
            }
        }
        true
    }

    fn response(&mut self, data: &[u8]) -> bool {
        let mut hdrs = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
        let mut resp = httparse::Response::new(&mut []);
        let ok = matches!(
            httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut resp, data, &mut hdrs),
            Ok(httparse::Status::Complete(_))
        );
        self.responses += u64::from(ok);
        ok
    }
}

impl StreamSink for Floor {
    fn on_event(&mut self, event: StreamEvent<'_>) {
        if let StreamEvent::Data { dir, bytes, .. } = event {
            let parsed = match dir {
                Direction::ToServer => self.request(bytes),
                Direction::ToClient => self.response(bytes),
            };
            self.skipped += u64::from(!parsed);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .map(PathBuf::from)
        .ok_or("usage: session_floor FILE [COOKIE]")?;
    let cookie = args.next().unwrap_or_else(|| "sessionid".to_owned());
    let mut floor = Floor {
        cookie: cookie.into_bytes(),
        hasher: SessionHasher::new(&HashKey::random()?),
        requests: 0,
        responses: 0,
        skipped: 0,
        ids: 0,
        sessions: HashMap::default(),
    };
    let t = Instant::now();
    let stats = replay(&path, &ReassemblyConfig::default(), &mut floor)?;
    let dt = t.elapsed().as_secs_f64();
    println!(
        "floor: {} request heads, {} response heads, {} other data events, {} session IDs hashed, {} sessions, from {} packets in {dt:.3}s: {:.0} requests/s",
        floor.requests,
        floor.responses,
        floor.skipped,
        floor.ids,
        floor.sessions.len(),
        stats.reassembly.packets,
        floor.requests as f64 / dt
    );
    Ok(())
}
