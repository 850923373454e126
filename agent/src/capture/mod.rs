//! Live capture: eBPF programs in, ordered per-connection byte streams out.
//!
//! ```text
//! SSL_read/SSL_write(_ex) uprobes ─┐
//! socket syscall tracepoints ──────┼─ ring buffer ─► records ─► tracker ─► StreamSink
//! accept/connect/close, sock state ┘   + per-CPU        (parse)   (/proc fallback,
//!                                        counters                   gaps, role filter)
//! ```
//!
//! Use:
//! ```no_run
//! # async fn demo(sink: &mut dyn sessionwatch_streams::StreamSink) -> Result<(), sessionwatch::capture::CaptureError> {
//! use sessionwatch::capture::{CaptureConfig, LiveCapture, shutdown_signal};
//! let mut capture = LiveCapture::start(&CaptureConfig::default())?;
//! let stats = capture.stats_handle(); // for /metrics and /readyz
//! capture.run(sink, shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! How capture works, what it covers and what not: `docs/capture.md`.

mod body_skip;
mod config;
pub mod container;
mod error;
mod floor;
pub mod kubernetes;
mod live;
pub mod privileges;
mod procfs;
mod records;
mod sites;
mod stats;
pub mod targets;
mod tracker;

pub use config::CaptureConfig;
pub use container::{ContainerRef, Runtime as ContainerRuntime};
pub use error::CaptureError;
pub use floor::{EmptyProbes, FloorSites};
pub use live::{LiveCapture, object_embedded, shutdown_signal};
pub use stats::{CaptureStats, LossReason, PerSource, StatsHandle};
pub use targets::{ScanReport, TargetKind, TargetReport, TargetStatus, TlsFlavor, discover};
