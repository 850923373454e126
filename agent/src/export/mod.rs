//! Export: where findings and figures leave the process — JSON lines of
//! findings, Prometheus metrics, the admin HTTP endpoint and the replay
//! summary.

pub mod admin;
pub mod alertmanager;
pub mod alerts;
pub mod metrics;
pub mod summary;
pub mod webconfig;
