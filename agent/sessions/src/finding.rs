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

impl Finding {
    /// Appends the finding's JSON object to `out`, byte for byte what
    /// `serde_json::to_writer` writes for it (same field order, same
    /// escaping), without the serializer's per-byte escape loop: the
    /// strings of a finding (a User-Agent, the message) are long and almost
    /// never need escaping, so runs of eight clean bytes are copied at once.
    /// The evidence map goes through serde_json (its values are any JSON).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"time\":");
        json_str(out, &self.time);
        out.extend_from_slice(b",\"detector\":");
        json_str(out, &self.detector);
        out.extend_from_slice(b",\"severity\":\"");
        out.extend_from_slice(self.severity.as_str().as_bytes());
        out.extend_from_slice(b"\",\"service\":");
        json_str(out, &self.service);
        out.extend_from_slice(b",\"node\":");
        json_str(out, &self.node);
        out.extend_from_slice(b",\"session\":");
        json_opt_str(out, self.session.as_deref());
        out.extend_from_slice(b",\"cookie\":");
        json_opt_str(out, self.cookie.as_deref());
        out.extend_from_slice(b",\"client\":{\"ip\":");
        json_opt_str(out, self.client.ip.as_deref());
        out.extend_from_slice(b",\"user_agent\":");
        json_opt_str(out, self.client.user_agent.as_deref());
        out.extend_from_slice(b"},\"request\":{\"method\":");
        json_str(out, &self.request.method);
        out.extend_from_slice(b",\"host\":");
        json_opt_str(out, self.request.host.as_deref());
        out.extend_from_slice(b",\"path\":");
        json_str(out, &self.request.path);
        out.extend_from_slice(b",\"status\":");
        match self.request.status {
            Some(code) => {
                let mut digits = [0u8; 5];
                let mut n = digits.len();
                let mut v = code;
                loop {
                    n -= 1;
                    digits[n] = b'0' + (v % 10) as u8;
                    v /= 10;
                    if v == 0 {
                        break;
                    }
                }
                out.extend_from_slice(&digits[n..]);
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"},\"cwe\":");
        json_str(out, &self.cwe);
        out.extend_from_slice(b",\"message\":");
        json_str(out, &self.message);
        out.extend_from_slice(b",\"evidence\":");
        serde_json::to_writer(&mut *out, &self.evidence)?;
        if let Some(c) = &self.container {
            out.extend_from_slice(b",\"container\":{\"id\":");
            json_str(out, &c.id);
            if let Some(pod) = &c.pod {
                out.extend_from_slice(b",\"pod\":");
                json_str(out, pod);
            }
            if let Some(ns) = &c.namespace {
                out.extend_from_slice(b",\"namespace\":");
                json_str(out, ns);
            }
            out.push(b'}');
        }
        out.push(b'}');
        Ok(())
    }
}

/// A JSON string or `null`.
fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends `s` as a JSON string with serde_json's escaping: `"` and `\`
/// backslash-escaped, the control characters below 0x20 as `\b \t \n \f
/// \r` or `\u00XX` (lower-case hex), everything else (DEL, non-ASCII UTF-8)
/// as is.
fn json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    match first_escape(bytes) {
        // Nearly always: the whole string at once.
        None => out.extend_from_slice(bytes),
        Some(first) => {
            out.extend_from_slice(&bytes[..first]);
            let mut start = first;
            for (i, b) in bytes.iter().enumerate().skip(first) {
                if let Some(esc) = escape(*b) {
                    out.extend_from_slice(&bytes[start..i]);
                    out.extend_from_slice(esc.as_slice());
                    start = i + 1;
                }
            }
            out.extend_from_slice(&bytes[start..]);
        }
    }
    out.push(b'"');
}

/// Offset of the first byte JSON must escape, testing eight bytes at a
/// time (a word per step, no per-byte branch) and the last few one by one.
fn first_escape(bytes: &[u8]) -> Option<usize> {
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for w in &mut words {
        let word = u64::from_le_bytes(<[u8; 8]>::try_from(w).unwrap_or([b'a'; 8]));
        if word_needs_escape(word) {
            return w
                .iter()
                .position(|b| escape(*b).is_some())
                .map(|i| offset + i);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| escape(*b).is_some())
        .map(|i| offset + i)
}

/// serde_json's escape of one byte, or `None` when it stands as is.
fn escape(b: u8) -> Option<Escaped> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = |c: u8| {
        Some(Escaped {
            bytes: [b'\\', c, 0, 0, 0, 0],
            len: 2,
        })
    };
    match b {
        b'"' => short(b'"'),
        b'\\' => short(b'\\'),
        0x08 => short(b'b'),
        0x09 => short(b't'),
        0x0a => short(b'n'),
        0x0c => short(b'f'),
        0x0d => short(b'r'),
        0x00..=0x1f => Some(Escaped {
            bytes: [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            len: 6,
        }),
        _ => None,
    }
}

/// An escape sequence: `\x` or `\u00XX`.
struct Escaped {
    bytes: [u8; 6],
    len: usize,
}

impl Escaped {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len.min(6)]
    }
}

/// Whether any of the eight bytes of `w` is below 0x20, `"` or `\`
/// (exact: the classic "has a byte less than n" and "has a zero byte" bit
/// tricks have no false positives for the question "any byte?").
#[inline]
const fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let q = w ^ (ONES * b'"' as u64);
    let quote = q.wrapping_sub(ONES) & !q & HIGH;
    let bs = w ^ (ONES * b'\\' as u64);
    let backslash = bs.wrapping_sub(ONES) & !bs & HIGH;
    control | quote | backslash != 0
}

/// Consumer of findings (alert sinks, metrics, a test recorder).
pub trait FindingSink {
    /// Handles one finding. The finding is lent: the analyzer refills the
    /// same buffers for the next one (no allocation per finding for its
    /// fixed fields), so a sink that keeps a finding clones it.
    fn on_finding(&mut self, finding: &Finding);
}

impl FindingSink for Vec<Finding> {
    fn on_finding(&mut self, finding: &Finding) {
        self.push(finding.clone())
    }
}

impl<S: FindingSink + ?Sized> FindingSink for &mut S {
    fn on_finding(&mut self, finding: &Finding) {
        (**self).on_finding(finding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str) -> Finding {
        let mut evidence = serde_json::Map::new();
        evidence.insert("note".into(), serde_json::Value::from(text));
        evidence.insert("count".into(), serde_json::Value::from(3));
        Finding {
            time: "2026-11-26T06:01:02.123Z".into(),
            detector: "session_cleartext".into(),
            severity: Severity::High,
            service: text.into(),
            node: "node-1".into(),
            session: Some("9f2c1a7e5b3d4c60".into()),
            cookie: Some(text.into()),
            client: FindingClient {
                ip: Some("203.0.113.7".into()),
                user_agent: Some(text.into()),
            },
            request: FindingRequest {
                method: "GET".into(),
                host: None,
                path: text.into(),
                status: Some(302),
            },
            cwe: "CWE-319".into(),
            message: text.into(),
            evidence,
            container: None,
        }
    }

    fn assert_same_as_serde(f: &Finding) {
        let mut ours = Vec::new();
        f.write_json(&mut ours).expect("writes");
        let theirs = serde_json::to_vec(f).expect("serialises");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    #[test]
    fn direct_json_is_serde_json_byte_for_byte() {
        // Every ASCII byte (controls, quote, backslash, DEL), multi-byte
        // UTF-8, and each special byte at every offset of an 8-byte word.
        let all_ascii: String = (0u8..=0x7f).map(char::from).collect();
        let mut texts = vec![
            String::new(),
            "plain".to_owned(),
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".to_owned(),
            all_ascii,
            "é日本\u{2028}\u{1F600}\"q\"\\".to_owned(),
        ];
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', ' ', 'é'] {
            for offset in 0..17 {
                let mut t = "a".repeat(offset);
                t.push(special);
                t.push_str("bcdefghijklmnop");
                texts.push(t);
            }
        }
        for t in &texts {
            let mut f = sample(t);
            assert_same_as_serde(&f);
            f.session = None;
            f.cookie = None;
            f.client.ip = None;
            f.client.user_agent = None;
            f.request.host = Some(t.clone());
            f.request.status = None;
            assert_same_as_serde(&f);
            for status in [0, 7, 42, 200, 1000, u16::MAX] {
                f.request.status = Some(status);
                assert_same_as_serde(&f);
            }
            f.container = Some(FindingContainer {
                id: t.clone(),
                pod: None,
                namespace: None,
            });
            assert_same_as_serde(&f);
            f.container = Some(FindingContainer {
                id: "c".into(),
                pod: Some(t.clone()),
                namespace: Some(t.clone()),
            });
            assert_same_as_serde(&f);
        }
        for sev in Severity::ALL {
            let mut f = sample("x");
            f.severity = sev;
            assert_same_as_serde(&f);
        }
    }

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
