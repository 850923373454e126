//! Test helpers: drive an `H1Stage` with stream events directly.
#![allow(dead_code)]

use sessionwatch_http::h1::{H1Stage, Limits};
use sessionwatch_http::{Exchange, HttpStats};
use sessionwatch_streams::{
    CloseReason, ConnectionId, ConnectionMeta, Direction, Source, StreamEvent, StreamSink,
    Timestamp,
};

pub struct Driver {
    pub stage: H1Stage<Vec<Exchange>>,
}

pub fn meta(id: u64) -> ConnectionMeta {
    ConnectionMeta {
        id: ConnectionId(id),
        client: Some(
            "192.0.2.10:50000"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        ),
        server: Some("192.0.2.20:80".parse().unwrap_or_else(|_| unreachable!())),
        tls: false,
        source: Source::Pcap,
        process: None,
    }
}

impl Driver {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        Driver {
            stage: H1Stage::new(Vec::new(), limits),
        }
    }

    pub fn open(&mut self, id: u64) -> &mut Self {
        let m = meta(id);
        self.stage.on_event(StreamEvent::Open(&m));
        self
    }

    pub fn req(&mut self, id: u64, t: u64, bytes: &[u8]) -> &mut Self {
        self.data(id, Direction::ToServer, t, bytes)
    }

    pub fn resp(&mut self, id: u64, t: u64, bytes: &[u8]) -> &mut Self {
        self.data(id, Direction::ToClient, t, bytes)
    }

    pub fn data(&mut self, id: u64, dir: Direction, t: u64, bytes: &[u8]) -> &mut Self {
        self.stage.on_event(StreamEvent::Data {
            conn: ConnectionId(id),
            dir,
            ts: Timestamp(t),
            bytes,
        });
        self
    }

    pub fn gap(&mut self, id: u64, dir: Direction, t: u64, len: u64) -> &mut Self {
        self.stage.on_event(StreamEvent::Gap {
            conn: ConnectionId(id),
            dir,
            ts: Timestamp(t),
            len,
        });
        self
    }

    pub fn close(&mut self, id: u64, t: u64) -> &mut Self {
        self.stage.on_event(StreamEvent::Close {
            conn: ConnectionId(id),
            ts: Timestamp(t),
            reason: CloseReason::Closed,
        });
        self
    }

    pub fn exchanges(&self) -> &[Exchange] {
        self.stage.sink()
    }

    pub fn stats(&self) -> &HttpStats {
        self.stage.stats()
    }

    pub fn errors(&self, kind: &str) -> u64 {
        self.stats()
            .parse_errors
            .get(&("http1", kind))
            .copied()
            .unwrap_or(0)
    }

    /// (method target, status) of every exchange, for compact asserts.
    pub fn summary(&self) -> Vec<(String, Option<u16>)> {
        self.exchanges()
            .iter()
            .map(|e| {
                (
                    format!("{} {}", e.request.method, e.request.target),
                    e.response.as_ref().map(|r| r.status),
                )
            })
            .collect()
    }
}

pub fn s(method_target: &str, status: Option<u16>) -> (String, Option<u16>) {
    (method_target.to_string(), status)
}
