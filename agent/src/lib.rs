//! sessionwatch agent library: configuration, live capture, the analysis
//! pipeline and export. The binary (`src/main.rs`) is a thin CLI over it.
//!
//! Data flow: [`capture`] (or pcap replay) → `sessionwatch_streams` →
//! `sessionwatch_http` → `sessionwatch_sessions` → [`export`], glued by
//! [`pipeline`].

// Tests assert with unwrap/expect; runtime code must not.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod capture;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod export;
pub mod pipeline;
