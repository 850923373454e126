//! Test helpers: a recording sink that also checks the stream contract.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use sessionwatch_streams::{
    CloseReason, ConnectionId, ConnectionMeta, Direction, StreamEvent, StreamSink,
};

/// One recorded event, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Open(ConnectionMeta),
    Data(ConnectionId, Direction, Vec<u8>),
    Gap(ConnectionId, Direction, u64),
    Close(ConnectionId, CloseReason),
}

/// A chunk of one direction's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    Bytes(Vec<u8>),
    Gap(u64),
}

/// Records events and panics on any violation of the `StreamEvent`
/// contract (Open first, nothing after Close, Close at most once).
#[derive(Debug, Default)]
pub struct Recorder {
    pub events: Vec<Ev>,
    state: HashMap<ConnectionId, bool>,
}

impl StreamSink for Recorder {
    fn on_event(&mut self, event: StreamEvent<'_>) {
        match event {
            StreamEvent::Open(meta) => {
                assert!(
                    !self.state.contains_key(&meta.id),
                    "second Open for {}",
                    meta.id
                );
                self.state.insert(meta.id, false);
                self.events.push(Ev::Open(meta.clone()));
            }
            StreamEvent::Data {
                conn, dir, bytes, ..
            } => {
                assert_eq!(
                    self.state.get(&conn),
                    Some(&false),
                    "Data outside Open..Close"
                );
                assert!(!bytes.is_empty(), "empty Data event");
                self.events.push(Ev::Data(conn, dir, bytes.to_vec()));
            }
            StreamEvent::Gap { conn, dir, len, .. } => {
                assert_eq!(
                    self.state.get(&conn),
                    Some(&false),
                    "Gap outside Open..Close"
                );
                assert!(len > 0, "empty Gap");
                self.events.push(Ev::Gap(conn, dir, len));
            }
            StreamEvent::Close { conn, reason, .. } => {
                assert_eq!(
                    self.state.get(&conn),
                    Some(&false),
                    "Close without Open or twice"
                );
                self.state.insert(conn, true);
                self.events.push(Ev::Close(conn, reason));
            }
        }
    }
}

impl Recorder {
    /// Connections in Open order.
    pub fn opens(&self) -> Vec<ConnectionMeta> {
        self.events
            .iter()
            .filter_map(|e| {
                if let Ev::Open(m) = e {
                    Some(m.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    /// Close reasons by connection.
    pub fn closes(&self) -> BTreeMap<ConnectionId, CloseReason> {
        self.events
            .iter()
            .filter_map(|e| {
                if let Ev::Close(c, r) = e {
                    Some((*c, *r))
                } else {
                    None
                }
            })
            .collect()
    }

    /// One direction's stream as chunks, adjacent bytes merged.
    pub fn chunks(&self, conn: ConnectionId, dir: Direction) -> Vec<Chunk> {
        let mut out: Vec<Chunk> = Vec::new();
        for e in &self.events {
            match e {
                Ev::Data(c, d, b) if *c == conn && *d == dir => match out.last_mut() {
                    Some(Chunk::Bytes(v)) => v.extend_from_slice(b),
                    _ => out.push(Chunk::Bytes(b.clone())),
                },
                Ev::Gap(c, d, n) if *c == conn && *d == dir => match out.last_mut() {
                    Some(Chunk::Gap(m)) => *m += n,
                    _ => out.push(Chunk::Gap(*n)),
                },
                _ => {}
            }
        }
        out
    }

    /// One direction's bytes, gaps left out.
    pub fn bytes(&self, conn: ConnectionId, dir: Direction) -> Vec<u8> {
        let mut v = Vec::new();
        for c in self.chunks(conn, dir) {
            if let Chunk::Bytes(b) = c {
                v.extend_from_slice(&b);
            }
        }
        v
    }

    /// Total gap length of one direction.
    pub fn gap_total(&self, conn: ConnectionId, dir: Direction) -> u64 {
        self.chunks(conn, dir)
            .iter()
            .map(|c| if let Chunk::Gap(n) = c { *n } else { 0 })
            .sum()
    }
}
