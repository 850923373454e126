//! Sessions and detectors: HTTP exchanges in, findings out.
//!
//! Data flow inside this crate:
//! [`Exchange`](sessionwatch_http::Exchange) → cookies + client fingerprint →
//! session table (keyed hash of the ID) → detectors → [`Finding`]s handed to a
//! [`FindingSink`].
//!
//! Raw session IDs never leave this crate: findings, logs and `Debug` output
//! carry only the keyed hash ([`SessionHash`]).
#![forbid(unsafe_code)]

pub mod config;
pub mod finding;

pub use config::AnalysisConfig;
pub use finding::{Finding, FindingSink, Severity};
