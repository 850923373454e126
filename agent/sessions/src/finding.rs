//! The finding: what a detector reports, serialised as one JSON line per the
//! contract in the design (`time`, `detector`, `severity`, `service`, `node`,
//! `session`, `cookie`, `client`, `request`, `cwe`, `message`, `evidence`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Finding severity, ordered: `info < low < medium < high < critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Stable label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown severity name.
#[derive(Debug, thiserror::Error)]
#[error("unknown severity {0:?} (expected info, low, medium, high or critical)")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownSeverity(s.to_owned()))
    }
}

/// The client as the finding reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingClient {
    /// Client IP (after trusted-proxy resolution), or `null` when unknown.
    pub ip: Option<String>,
    /// Raw `User-Agent` (truncated to a bounded length), or `null`.
    pub user_agent: Option<String>,
}

/// The request that triggered the finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRequest {
    /// Method.
    pub method: String,
    /// Host (Host header or :authority), or `null`.
    pub host: Option<String>,
    /// Path without query string (session IDs in URLs are redacted).
    pub path: String,
    /// Response status, or `null` when no response was seen.
    pub status: Option<u16>,
}

/// The container of the process that captured the exchange (live capture
/// of a containerised process only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingContainer {
    /// Container id (64 hex digits), from the process's cgroup path: the id
    /// `docker ps --no-trunc` and `crictl ps` show.
    pub id: String,
    /// Kubernetes pod name, when `[kubernetes]` enrichment knows the
    /// container (additive: absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Kubernetes namespace of that pod (absent with `pod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One finding. Field order and names are the stable JSON contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Event time, RFC 3339 UTC with milliseconds (`2026-11-26T06:01:02.123Z`).
    pub time: String,
    /// Detector id (stable, see docs/detectors.md).
    pub detector: String,
    /// Severity.
    pub severity: Severity,
    /// Service name (from `[[services]]` or the capturing process).
    pub service: String,
    /// Node name (`NODE_NAME`, else the host name).
    pub node: String,
    /// Keyed hash of the session ID (16 hex digits); never the raw ID.
    pub session: Option<String>,
    /// Session cookie name.
    pub cookie: Option<String>,
    /// The client.
    pub client: FindingClient,
    /// The request.
    pub request: FindingRequest,
    /// CWE (or other reference) id, e.g. `CWE-384`.
    pub cwe: String,
    /// Human-readable one-line message.
    pub message: String,
    /// Detector-specific evidence (never raw IDs).
    pub evidence: serde_json::Map<String, serde_json::Value>,
    /// The capturing process's container; absent for host processes and in
    /// replay (an additive field: consumers of the original contract never
    /// see it unless a container was involved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<FindingContainer>,
}

/// Consumer of findings (alert sinks, metrics, a test recorder).
pub trait FindingSink {
    /// Handles one finding.
    fn on_finding(&mut self, finding: Finding);
}

impl FindingSink for Vec<Finding> {
    fn on_finding(&mut self, finding: Finding) {
        self.push(finding)
    }
}

impl<S: FindingSink + ?Sized> FindingSink for &mut S {
    fn on_finding(&mut self, finding: Finding) {
        (**self).on_finding(finding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_is_additive() {
        let line = r#"{"time":"2026-11-26T06:01:02.123Z","detector":"no_rotation_after_login","severity":"high","service":"shop","node":"node-1","session":"9f2c1a7e5b3d4c60","cookie":"sessionid","client":{"ip":"203.0.113.7","user_agent":null},"request":{"method":"POST","host":"shop.example","path":"/login","status":302},"cwe":"CWE-384","message":"m","evidence":{}}"#;
        let mut f: Finding = serde_json::from_str(line).expect("contract JSON parses");
        assert_eq!(f.container, None);
        assert_eq!(
            serde_json::to_string(&f).expect("serialises"),
            line,
            "without a container the JSON is exactly the original contract"
        );
        let id = "3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
        f.container = Some(FindingContainer {
            id: id.into(),
            pod: None,
            namespace: None,
        });
        let text = serde_json::to_string(&f).expect("serialises");
        assert!(
            text.ends_with(&format!(r#""container":{{"id":"{id}"}}}}"#)),
            "no pod keys without enrichment: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["container"]["id"], id);
        f.container = Some(FindingContainer {
            id: id.into(),
            pod: Some("shop-7d4b9c-x2x8k".into()),
            namespace: Some("prod".into()),
        });
        let text = serde_json::to_string(&f).expect("serialises");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["container"]["pod"], "shop-7d4b9c-x2x8k");
        assert_eq!(v["container"]["namespace"], "prod");
        let back: Finding = serde_json::from_str(&text).expect("round trip");
        assert_eq!(back, f);
    }
}
