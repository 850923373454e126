//! Capture counters: kernel per-CPU counters plus the agent's own, read at
//! scrape time through a cloneable [`StatsHandle`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aya::maps::{MapData, PerCpuArray};
use sessionwatch_common::{NUM_COUNTERS, counter};
use sessionwatch_streams::Source;

/// Why captured bytes (or a capture event) were lost. Label values of
/// `sessionwatch_capture_lost_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// The kernel → agent ring buffer was full (the agent fell behind).
    RingBufferFull,
    /// The kernel could not copy the bytes (user page not resident), or
    /// they never were in user memory (`sendfile`, iovecs past the limit).
    NotCopyable,
    /// A kernel table was full (in-flight SSL calls).
    TableFull,
    /// TLS bytes whose socket could not be determined.
    NoFd,
    /// The socket was gone before the agent could learn its addresses.
    Unresolved,
    /// A record failed validation.
    Malformed,
}

impl LossReason {
    /// Stable label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            LossReason::RingBufferFull => "ringbuf_full",
            LossReason::NotCopyable => "not_copyable",
            LossReason::TableFull => "table_full",
            LossReason::NoFd => "no_fd",
            LossReason::Unresolved => "unresolved",
            LossReason::Malformed => "malformed",
        }
    }
}

/// Per-source counts (`source` label: `tls`, `plain`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerSource {
    /// TLS-library captures.
    pub tls: u64,
    /// Plain-socket captures.
    pub plain: u64,
}

impl PerSource {
    /// (source, value) pairs, for exporters.
    pub fn iter(&self) -> [(Source, u64); 2] {
        [
            (Source::TlsLibrary, self.tls),
            (Source::PlainSocket, self.plain),
        ]
    }
}

/// A snapshot of every capture counter. All counters are monotonic except
/// `attached_targets` and `open_connections` (gauges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Data events captured (`sessionwatch_capture_events_total{source}`).
    pub events: PerSource,
    /// Data events cut by the payload cap
    /// (`sessionwatch_capture_truncated_total{source}`).
    pub truncated: PerSource,
    /// Losses by (source, reason) (`sessionwatch_capture_lost_total`);
    /// every combination is present, zero or not, so label sets are stable.
    pub lost: Vec<(Source, LossReason, u64)>,
    /// Bytes lost to a full ring buffer (reported as stream gaps).
    pub lost_bytes: PerSource,
    /// Body bytes the kernel left out on the agent's request
    /// (`capture.skip_bodies_above`): not copied, not lost
    /// (`sessionwatch_capture_body_skipped_bytes_total`).
    pub body_skipped_bytes: u64,
    /// Data events those bytes were in.
    pub body_skipped_events: u64,
    /// Control events (open/close/exec/exit) lost to a full ring buffer;
    /// the agent recovers connections from /proc, so no bytes are lost.
    pub control_lost: u64,
    /// Connections the kernel could not record (table full); their bytes
    /// are still captured and resolved through /proc.
    pub conn_table_full: u64,
    /// TLS events dropped because the socket is client side (a local
    /// client linking the same libssl).
    pub client_side_filtered: u64,
    /// TLS files hooked (`sessionwatch_attached_targets`).
    pub attached_targets: u64,
    /// Connections currently tracked by the agent.
    pub open_connections: u64,
    /// Connections evicted from the agent's table (capacity).
    pub evicted_connections: u64,
    /// Rescans of /proc done.
    pub rescans: u64,
}

impl CaptureStats {
    /// Sum of every loss counter (0 means nothing was lost).
    pub fn lost_total(&self) -> u64 {
        self.lost.iter().map(|(_, _, n)| n).sum::<u64>() + self.control_lost
    }

    /// Count for one (source, reason).
    pub fn lost_for(&self, source: Source, reason: LossReason) -> u64 {
        self.lost
            .iter()
            .filter(|(s, r, _)| *s == source && *r == reason)
            .map(|(_, _, n)| n)
            .sum()
    }
}

/// Counters kept by the agent itself.
#[derive(Debug, Default)]
pub(crate) struct UserCounters {
    pub unresolved_tls: AtomicU64,
    pub unresolved_plain: AtomicU64,
    pub no_fd_tls: AtomicU64,
    pub malformed: AtomicU64,
    pub evicted: AtomicU64,
    pub client_filtered: AtomicU64,
    pub attached_targets: AtomicU64,
    pub open_connections: AtomicU64,
    pub rescans: AtomicU64,
}

impl UserCounters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Cheap, cloneable, thread-safe access to the capture's counters and
/// readiness, for the metrics exporter and `/readyz`.
#[derive(Clone)]
pub struct StatsHandle {
    pub(crate) kernel: Option<Arc<PerCpuArray<MapData, u64>>>,
    pub(crate) user: Arc<UserCounters>,
    pub(crate) ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsHandle")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl StatsHandle {
    /// True once programs are attached and the ring buffer is being read.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Reads every counter now (one map lookup per kernel counter).
    pub fn snapshot(&self) -> CaptureStats {
        let mut k = [0u64; NUM_COUNTERS as usize];
        if let Some(map) = &self.kernel {
            for (i, slot) in k.iter_mut().enumerate() {
                if let Ok(values) = map.get(&(i as u32), 0) {
                    *slot = values.iter().fold(0u64, |a, v| a.wrapping_add(*v));
                }
            }
        }
        let kc = |idx: u32| k.get(idx as usize).copied().unwrap_or(0);
        let u = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let user = &self.user;
        let tls = Source::TlsLibrary;
        let plain = Source::PlainSocket;
        let lost = vec![
            (
                tls,
                LossReason::RingBufferFull,
                kc(counter::RINGBUF_FULL_TLS),
            ),
            (
                plain,
                LossReason::RingBufferFull,
                kc(counter::RINGBUF_FULL_PLAIN),
            ),
            (tls, LossReason::NotCopyable, kc(counter::READ_FAULT_TLS)),
            (
                plain,
                LossReason::NotCopyable,
                kc(counter::READ_FAULT_PLAIN) + kc(counter::NO_PAYLOAD_PLAIN),
            ),
            (tls, LossReason::TableFull, kc(counter::SSL_TABLE_FULL)),
            (plain, LossReason::TableFull, 0),
            (tls, LossReason::NoFd, u(&user.no_fd_tls)),
            (plain, LossReason::NoFd, 0),
            (tls, LossReason::Unresolved, u(&user.unresolved_tls)),
            (plain, LossReason::Unresolved, u(&user.unresolved_plain)),
            (tls, LossReason::Malformed, u(&user.malformed)),
            (plain, LossReason::Malformed, 0),
        ];
        CaptureStats {
            events: PerSource {
                tls: kc(counter::EVENTS_TLS),
                plain: kc(counter::EVENTS_PLAIN),
            },
            truncated: PerSource {
                tls: kc(counter::TRUNCATED_TLS),
                plain: kc(counter::TRUNCATED_PLAIN),
            },
            lost,
            lost_bytes: PerSource {
                tls: kc(counter::LOST_BYTES_TLS),
                plain: kc(counter::LOST_BYTES_PLAIN),
            },
            body_skipped_bytes: kc(counter::BODY_SKIPPED_BYTES),
            body_skipped_events: kc(counter::BODY_SKIPPED_EVENTS),
            control_lost: kc(counter::RINGBUF_FULL_CONTROL),
            conn_table_full: kc(counter::CONN_TABLE_FULL),
            client_side_filtered: kc(counter::FILTERED_CLIENT) + u(&user.client_filtered),
            attached_targets: u(&user.attached_targets),
            open_connections: u(&user.open_connections),
            evicted_connections: u(&user.evicted),
            rescans: u(&user.rescans),
        }
    }
}
