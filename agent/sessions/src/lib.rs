//! Sessions and detectors: HTTP exchanges in, findings out.
//!
//! Data flow inside this crate:
//! [`Exchange`](sessionwatch_http::Exchange) → cookies ([`cookie`]) + client
//! fingerprint ([`net`], [`useragent`]) → session table ([`store`], keyed by
//! the keyed hash of the ID, [`hash`]) → detectors ([`detectors`]) →
//! [`Finding`]s handed to a [`FindingSink`]. The entry point is
//! [`Analyzer`].
//!
//! Raw session IDs never leave this crate: findings, logs and `Debug` output
//! carry only the keyed hash ([`SessionHash`]); the table stores only the
//! hash, and the per-ID estimates (weak ID, client-side session) run on the
//! raw value while the exchange is being analysed, then it is dropped.
#![forbid(unsafe_code)]
// Tests assert with unwrap/expect; runtime code must not.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod analyzer;
pub mod clientside;
pub mod config;
pub mod cookie;
pub mod cookie_date;
pub mod detectors;
pub mod entropy;
pub mod finding;
pub mod hash;
pub mod learning;
pub mod net;
pub mod route;
pub mod service;
pub mod settings;
pub mod shared;
pub mod stats;
pub mod store;
pub mod suppress;
pub mod timefmt;
pub mod url;
pub mod useragent;

pub use analyzer::{Analyzer, AnalyzerSink, validate};
pub use config::AnalysisConfig;
pub use detectors::DetectorId;
pub use finding::{Finding, FindingSink, Severity};
pub use hash::{HashKey, HashKeyError, SessionHash};
pub use settings::ConfigError;
pub use stats::AnalysisStats;
pub use store::{EvictReason, SessionRecord, SessionStore, SessionTable};
