//! Ordered per-connection byte streams.
//!
//! This crate is where live capture and offline replay meet. Both produce the
//! same [`StreamEvent`]s — a connection opens, ordered bytes flow in each
//! direction (with explicit [`StreamEvent::Gap`] markers where bytes are
//! known to be missing), the connection closes — and everything after this
//! stage (HTTP parsing, sessions, detectors) is shared and tested offline.
//!
//! Events borrow their payload (`&[u8]`) so that neither the ring-buffer
//! reader nor the TCP reassembler allocates per event.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::SocketAddr;

pub mod decode;
pub mod pcap;
pub mod reassembly;
pub mod replay;
pub mod synth;
pub mod table;

/// Event time in nanoseconds since the Unix epoch.
///
/// Analysis runs on event time only (pcap record time in replay, the kernel
/// timestamp mapped to the realtime clock in live capture), never on the wall
/// clock, so a replayed pcap and a live run of the same traffic agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Nanoseconds in one second.
    pub const NANOS_PER_SEC: u64 = 1_000_000_000;

    /// Builds a timestamp from seconds and nanoseconds since the epoch.
    pub const fn from_secs_nanos(secs: u64, nanos: u32) -> Self {
        Timestamp(
            secs.saturating_mul(Self::NANOS_PER_SEC)
                .saturating_add(nanos as u64),
        )
    }

    /// Whole seconds since the epoch.
    pub const fn secs(self) -> u64 {
        self.0 / Self::NANOS_PER_SEC
    }

    /// Sub-second nanoseconds.
    pub const fn subsec_nanos(self) -> u32 {
        (self.0 % Self::NANOS_PER_SEC) as u32
    }

    /// `self - earlier`, or zero when `earlier` is later (event time can step
    /// back slightly across CPUs; a negative gap is treated as none).
    pub const fn saturating_since(self, earlier: Timestamp) -> std::time::Duration {
        let d = self.0.saturating_sub(earlier.0);
        std::time::Duration::new(d / Self::NANOS_PER_SEC, (d % Self::NANOS_PER_SEC) as u32)
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// Identifier of one connection, unique within one run of one source.
///
/// Live capture derives it from (pid, fd, generation); replay from the
/// reassembler's flow table. It is opaque: only equality matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{:x}", self.0)
    }
}

/// Which way bytes travel on a connection, seen from the HTTP roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → server: requests.
    ToServer,
    /// Server → client: responses.
    ToClient,
}

impl Direction {
    /// The other direction.
    pub const fn reverse(self) -> Self {
        match self {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        }
    }
}

/// Where a stream's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A packet capture file, reassembled from TCP segments.
    Pcap,
    /// Plaintext captured at the TLS library (`SSL_read`/`SSL_write` uprobes).
    TlsLibrary,
    /// Plaintext captured at read/write syscalls on a configured plain port.
    PlainSocket,
}

impl Source {
    /// Stable label value (`source` label of the capture metrics).
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Pcap => "pcap",
            Source::TlsLibrary => "tls",
            Source::PlainSocket => "plain",
        }
    }
}

/// The process that owns a captured socket (live capture only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Thread-group id.
    pub pid: u32,
    /// `comm` of the process (at most 16 bytes in the kernel).
    pub comm: String,
    /// Container id from `/proc/PID/cgroup`, when the process runs in one.
    pub container_id: Option<String>,
    /// Kubernetes pod of that container, when `[kubernetes]` enrichment is
    /// on and the agent's pod cache knows it. Shared with the cache (one
    /// allocation per pod, not per connection).
    pub pod: Option<std::sync::Arc<PodInfo>>,
}

/// A Kubernetes pod, as far as findings and service names need it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodInfo {
    /// Pod name (`metadata.name`).
    pub name: String,
    /// Namespace (`metadata.namespace`).
    pub namespace: String,
    /// The pod's `app.kubernetes.io/name` label, used as the service name
    /// when no `[[services]]` entry matches the request's host.
    pub app: Option<String>,
}

/// What is known about a connection when it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionMeta {
    /// Opaque id, repeated on every later event of this connection.
    pub id: ConnectionId,
    /// The HTTP client's address (the peer of an accepted socket).
    /// `None` when capture could not learn it.
    pub client: Option<SocketAddr>,
    /// The HTTP server's address.
    pub server: Option<SocketAddr>,
    /// Whether the client side of this hop was TLS: bytes came from the TLS
    /// library, or (replay) the caller says so. Plaintext on a plain port or
    /// in a pcap is `false`; a trusted proxy's `X-Forwarded-Proto` can still
    /// say the original client used TLS (decided in the session stage).
    pub tls: bool,
    /// Where the bytes come from.
    pub source: Source,
    /// The owning process, in live capture.
    pub process: Option<ProcessInfo>,
}

/// Why a connection's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Orderly close: FIN seen both ways, or `close(2)` on the socket.
    Closed,
    /// TCP reset.
    Reset,
    /// Evicted by a bounded table (idle or capacity); counted by its owner.
    Evicted,
    /// End of the input (end of pcap, agent shutdown).
    EndOfInput,
}

/// One step of an ordered per-connection byte stream.
///
/// Guarantees to the consumer: `Open` comes first for a connection; `Data`
/// and `Gap` per direction are in stream order; `Close` comes last and at
/// most once. Payload slices are only valid for the duration of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    /// A new connection.
    Open(&'a ConnectionMeta),
    /// The next bytes of one direction.
    Data {
        /// The connection.
        conn: ConnectionId,
        /// Which way these bytes travel.
        dir: Direction,
        /// Time the bytes were seen.
        ts: Timestamp,
        /// The bytes, in order, following the previous `Data`/`Gap`.
        bytes: &'a [u8],
    },
    /// `len` bytes of one direction are missing here (lost packets, a capture
    /// cut by the payload cap, ring-buffer loss). Parsers must resynchronise.
    Gap {
        /// The connection.
        conn: ConnectionId,
        /// Which way the missing bytes travel.
        dir: Direction,
        /// Time the gap was detected.
        ts: Timestamp,
        /// Exact number of missing bytes when known, else a lower bound.
        len: u64,
    },
    /// The connection ended; no further events follow for it.
    Close {
        /// The connection.
        conn: ConnectionId,
        /// Time of the close.
        ts: Timestamp,
        /// Why it ended.
        reason: CloseReason,
    },
}

/// Consumer of ordered stream events (the HTTP stage, or a test recorder).
pub trait StreamSink {
    /// Handles one event. Must not block.
    fn on_event(&mut self, event: StreamEvent<'_>);

    /// Bytes of a message body that are certain to follow in direction
    /// `dir` of `conn` after everything delivered so far, when the consumer
    /// is inside a body whose framing it knows (a fixed length, one chunk's
    /// data, or [`UNTIL_CLOSE`] for a body that ends with the connection).
    /// Live capture uses it to stop copying body bytes in the kernel: they
    /// then arrive as an exact-length [`StreamEvent::Gap`], which the
    /// consumer must take as body. `None` (the default): not in a body, or
    /// gaps there would cost framing.
    fn body_remaining(&mut self, _conn: ConnectionId, _dir: Direction) -> Option<u64> {
        None
    }
}

/// [`StreamSink::body_remaining`] of a body delimited by the connection's
/// close: every later byte of the direction is body.
pub const UNTIL_CLOSE: u64 = u64::MAX >> 2;

impl<S: StreamSink + ?Sized> StreamSink for &mut S {
    fn on_event(&mut self, event: StreamEvent<'_>) {
        (**self).on_event(event)
    }

    fn body_remaining(&mut self, conn: ConnectionId, dir: Direction) -> Option<u64> {
        (**self).body_remaining(conn, dir)
    }
}
