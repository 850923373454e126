//! The replay summary table printed on stderr.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use sessionwatch_sessions::{Finding, Severity};

/// Figures of one run, filled by the pipeline.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Findings per (detector, severity).
    pub findings: BTreeMap<(String, Severity), u64>,
    /// Input files read.
    pub files: u64,
    /// Packets read from the input.
    pub packets: u64,
    /// TCP connections seen.
    pub connections: u64,
    /// HTTP exchanges analysed.
    pub exchanges: u64,
    /// Distinct sessions tracked.
    pub sessions: u64,
    /// Parse errors and counted skips, per (protocol or stage, kind).
    pub parse_errors: BTreeMap<(String, String), u64>,
    /// Bytes known to be missing from the streams (sum of gaps).
    pub bytes_missing: u64,
    /// Session cookie names learned from the traffic: (service, cookie).
    pub learned_cookies: Vec<(String, String)>,
    /// Inputs handled with less detail because a bounded analysis table
    /// was full: (table, count), nonzero only.
    pub tables_full: Vec<(&'static str, u64)>,
}

impl Summary {
    /// Counts one finding.
    pub fn count_finding(&mut self, f: &Finding) {
        // A handful of (detector, severity) pairs: found by a scan, the
        // detector name is copied only the first time.
        let known = self
            .findings
            .iter_mut()
            .find(|((d, s), _)| *s == f.severity && *d == f.detector);
        match known {
            Some((_, n)) => *n += 1,
            None => {
                self.findings.insert((f.detector.clone(), f.severity), 1);
            }
        }
    }

    /// Highest severity among the findings.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.keys().map(|(_, s)| *s).max()
    }

    /// Total findings.
    pub fn total_findings(&self) -> u64 {
        self.findings.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "sessionwatch replay summary");
        let _ = writeln!(
            out,
            "  files {}  packets {}  connections {}  exchanges {}  sessions {}  bytes missing {}",
            self.files,
            self.packets,
            self.connections,
            self.exchanges,
            self.sessions,
            self.bytes_missing
        );
        if self.findings.is_empty() {
            let _ = writeln!(out, "  findings: none");
        } else {
            // One row per detector, one column per severity.
            let mut rows: BTreeMap<&str, [u64; 5]> = BTreeMap::new();
            for ((det, sev), n) in &self.findings {
                let idx = Severity::ALL.iter().position(|s| s == sev).unwrap_or(0);
                rows.entry(det.as_str()).or_default()[idx] += n;
            }
            let width = rows.keys().map(|d| d.len()).max().unwrap_or(8).max(8);
            let _ = write!(out, "  {:<width$}", "detector");
            for s in Severity::ALL {
                let _ = write!(out, " {:>8}", s.as_str());
            }
            let _ = writeln!(out);
            for (det, counts) in &rows {
                let _ = write!(out, "  {det:<width$}");
                for c in counts {
                    let _ = write!(out, " {c:>8}");
                }
                let _ = writeln!(out);
            }
            let _ = writeln!(out, "  findings total {}", self.total_findings());
        }
        if !self.learned_cookies.is_empty() {
            let list: Vec<String> = self
                .learned_cookies
                .iter()
                .map(|(service, cookie)| format!("{cookie} ({service})"))
                .collect();
            let _ = writeln!(out, "  learned session cookies: {}", list.join(", "));
        }
        if self.parse_errors.is_empty() {
            let _ = writeln!(out, "  parse errors: none");
        } else {
            let _ = writeln!(out, "  parse errors / counted skips:");
            for ((proto, kind), n) in &self.parse_errors {
                let _ = writeln!(out, "    {proto}/{kind}: {n}");
            }
        }
        if !self.tables_full.is_empty() {
            let list: Vec<String> = self
                .tables_full
                .iter()
                .map(|(table, n)| format!("{table} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  analysis tables full (inputs handled with less detail): {}",
                list.join(", ")
            );
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_are_counted_per_detector_and_severity() {
        let base: Finding = serde_json::from_str(
            r#"{"time":"2026-11-26T06:01:02.123Z","detector":"session_cleartext","severity":"high","service":"shop","node":"n","session":null,"cookie":null,"client":{"ip":null,"user_agent":null},"request":{"method":"GET","host":null,"path":"/","status":200},"cwe":"CWE-319","message":"m","evidence":{}}"#,
        )
        .expect("finding");
        let mut s = Summary::default();
        let mut other = base.clone();
        other.detector = "cookie_missing_secure".into();
        let mut medium = base.clone();
        medium.severity = Severity::Medium;
        for f in [&base, &other, &base, &medium, &base] {
            s.count_finding(f);
        }
        let got: Vec<(&str, Severity, u64)> = s
            .findings
            .iter()
            .map(|((d, sev), n)| (d.as_str(), *sev, *n))
            .collect();
        assert_eq!(
            got,
            [
                ("cookie_missing_secure", Severity::High, 1),
                ("session_cleartext", Severity::Medium, 1),
                ("session_cleartext", Severity::High, 3),
            ]
        );
        assert_eq!(s.total_findings(), 5);
        assert_eq!(s.max_severity(), Some(Severity::High));
    }
}
