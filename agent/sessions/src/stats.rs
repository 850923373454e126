//! Counters of the analysis stage, read by the exporter and the replay
//! summary. Label values are bounded: services are interned (at most
//! [`MAX_SERVICES`]), detectors and severities are enums, eviction reasons
//! are an enum. Hot-path updates index arrays; nothing allocates per
//! exchange.

use sessionwatch_http::Protocol;

use crate::detectors::DetectorId;
use crate::finding::Severity;
use crate::store::EvictReason;

/// Most distinct service names; beyond it exchanges count as `other`.
pub const MAX_SERVICES: usize = 256;

/// Upper bounds (seconds) of the session-age histogram buckets
/// (`sessionwatch_session_age_seconds`); the last bucket is `+Inf`.
pub const AGE_BUCKETS: [f64; 11] = [
    60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0, 28_800.0, 86_400.0, 172_800.0, 604_800.0,
];

/// Upper bounds (seconds) of the idle-gap histogram buckets
/// (`sessionwatch_session_idle_gap_seconds`); the last bucket is `+Inf`.
///
/// From a second (a browser's burst of sub-resource requests) to a week:
/// the middle resolves the usual idle-timeout policies (5, 15, 30 min,
/// 1 h), the tail shows sessions resumed after hours or days, which is
/// what an unenforced idle timeout looks like.
pub const IDLE_GAP_BUCKETS: [f64; 15] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14_400.0, 28_800.0,
    86_400.0, 604_800.0,
];

/// A Prometheus-style histogram with `B` fixed upper bounds (plus `+Inf`),
/// kept as plain counters so the hot path is an array index and the
/// exporter needs no Prometheus types below the agent crate.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedHistogram<const B: usize> {
    /// Upper bounds in seconds, ascending.
    bounds: &'static [f64; B],
    /// Per-bucket counts (not cumulative); `counts[i]` counts values
    /// `<= bounds[i]` and above the previous bound.
    pub counts: [u64; B],
    /// Values above every bound (the `+Inf` bucket only).
    pub above: u64,
    /// Sum of observed values in seconds.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

/// Ages of sessions when they leave the table
/// (`sessionwatch_session_age_seconds`), bounds [`AGE_BUCKETS`].
pub type AgeHistogram = FixedHistogram<{ AGE_BUCKETS.len() }>;

/// Gaps between consecutive accepted uses of a session
/// (`sessionwatch_session_idle_gap_seconds`), bounds [`IDLE_GAP_BUCKETS`].
pub type IdleGapHistogram = FixedHistogram<{ IDLE_GAP_BUCKETS.len() }>;

impl<const B: usize> FixedHistogram<B> {
    /// An empty histogram over `bounds` (ascending upper bounds, seconds).
    pub const fn new(bounds: &'static [f64; B]) -> Self {
        FixedHistogram {
            bounds,
            counts: [0; B],
            above: 0,
            sum: 0.0,
            count: 0,
        }
    }

    /// The upper bounds, seconds.
    pub fn bounds(&self) -> &'static [f64; B] {
        self.bounds
    }

    /// Records one value (seconds). NaN lands in `+Inf` and is not added to
    /// the sum, so one bad value cannot poison it.
    pub fn observe(&mut self, secs: f64) {
        match self.bounds.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i] += 1,
            None => self.above += 1,
        }
        if !secs.is_nan() {
            self.sum += secs;
        }
        self.count += 1;
    }

    /// Cumulative counts per bound, Prometheus style (`le` buckets, then
    /// `+Inf` = `count`).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let mut acc = 0;
        self.bounds.iter().zip(self.counts).map(move |(b, n)| {
            acc += n;
            (*b, acc)
        })
    }
}

impl AgeHistogram {
    /// An empty session-age histogram.
    pub const fn ages() -> Self {
        FixedHistogram::new(&AGE_BUCKETS)
    }
}

impl IdleGapHistogram {
    /// An empty idle-gap histogram.
    pub const fn idle_gaps() -> Self {
        FixedHistogram::new(&IDLE_GAP_BUCKETS)
    }
}

/// Counters of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStats {
    /// Service name (`service` label).
    pub name: String,
    /// Exchanges by `[protocol][tls]` (protocol: 0 = http1, 1 = http2;
    /// tls: 0 = no, 1 = yes — TLS at the client).
    pub exchanges: [[u64; 2]; 2],
    /// Sessions currently in the table for this service (gauge).
    pub sessions_tracked: u64,
    /// Sessions ever added to the table for this service (counter).
    pub sessions_started: u64,
    /// Findings by `[detector index][severity]`.
    pub findings: [[u64; 5]; DetectorId::COUNT],
    /// Ages of sessions that left the table (evicted, or still present at
    /// [`crate::Analyzer::finish`]): last seen − first seen.
    pub session_ages: AgeHistogram,
    /// Gaps between consecutive accepted uses of one session, observed on
    /// every accepted use that has a previous one (the first use after
    /// issuance or adoption has none).
    pub idle_gaps: IdleGapHistogram,
}

impl ServiceStats {
    pub(crate) fn new(name: String) -> ServiceStats {
        ServiceStats {
            name,
            exchanges: [[0; 2]; 2],
            sessions_tracked: 0,
            sessions_started: 0,
            findings: [[0; 5]; DetectorId::COUNT],
            session_ages: AgeHistogram::ages(),
            idle_gaps: IdleGapHistogram::idle_gaps(),
        }
    }
}

/// Session-cookie compliance counts over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CookieCompliance {
    /// Live session `Set-Cookie`s seen.
    pub session_set_cookies: u64,
    /// ... with `Secure`.
    pub secure: u64,
    /// ... with `HttpOnly`.
    pub http_only: u64,
    /// ... with `SameSite=Strict` or `Lax`.
    pub same_site_strict_or_lax: u64,
    /// ... with all three.
    pub compliant: u64,
    /// Deletion `Set-Cookie`s of session cookies (logout signals).
    pub deletions: u64,
}

/// Input that was skipped or capped to keep work and memory bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputStats {
    /// Requests whose cookie pairs exceeded the cap (rest ignored).
    pub cookie_pairs_capped: u64,
    /// Responses whose `Set-Cookie` headers exceeded the cap.
    pub set_cookies_capped: u64,
    /// `Set-Cookie` headers browsers would ignore (malformed, oversized).
    pub set_cookies_invalid: u64,
    /// Requests presenting more session IDs than are tracked per request.
    pub presented_capped: u64,
    /// Session IDs that are not UTF-8-safe names or otherwise unusable.
    pub ids_skipped: u64,
    /// Exchanges counted under `other` because the service table was full.
    pub services_overflow: u64,
    /// User-Agent families not interned because the table was full.
    pub user_agent_overflow: u64,
    /// Suppression generations turned over early (possible repeats).
    pub suppression_turnovers: u64,
    /// Inputs stateful detectors could not track because their bounded
    /// state was full (`session_id_bruteforce` clients).
    pub detector_untracked: u64,
    /// Login / password-change POSTs answered with the form again (2xx
    /// HTML, no new session cookie): counted as failed attempts.
    pub login_form_redisplayed: u64,
}

/// Everything the analysis counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalysisStats {
    /// Per service, indexed by service id (`Finding.service` names).
    pub services: Vec<ServiceStats>,
    /// Sessions evicted, by [`EvictReason`] (`EvictReason::ALL` order).
    pub evicted: [u64; 2],
    /// Cookie compliance.
    pub cookies: CookieCompliance,
    /// Skipped or capped input.
    pub input: InputStats,
    /// Hits suppressed as repeats within the window.
    pub findings_suppressed: u64,
}

impl AnalysisStats {
    /// `(service, protocol, tls, count)` for
    /// `sessionwatch_http_exchanges_total{service,protocol,tls}`.
    pub fn exchanges(&self) -> impl Iterator<Item = (&str, &'static str, bool, u64)> + '_ {
        self.services
            .iter()
            .flat_map(|s| {
                [Protocol::Http1, Protocol::Http2]
                    .into_iter()
                    .enumerate()
                    .flat_map(move |(pi, p)| {
                        [false, true].into_iter().map(move |tls| {
                            (
                                s.name.as_str(),
                                p.as_str(),
                                tls,
                                s.exchanges[pi][usize::from(tls)],
                            )
                        })
                    })
            })
            .filter(|e| e.3 > 0)
    }

    /// `(detector, severity, service, count)` for
    /// `sessionwatch_findings_total{detector,severity,service}`.
    pub fn findings(&self) -> impl Iterator<Item = (DetectorId, Severity, &str, u64)> + '_ {
        self.services
            .iter()
            .flat_map(|s| {
                DetectorId::ALL.iter().enumerate().flat_map(move |(di, d)| {
                    Severity::ALL
                        .into_iter()
                        .enumerate()
                        .map(move |(si, sev)| (*d, sev, s.name.as_str(), s.findings[di][si]))
                })
            })
            .filter(|f| f.3 > 0)
    }

    /// Total findings emitted.
    pub fn findings_total(&self) -> u64 {
        self.services
            .iter()
            .flat_map(|s| s.findings.iter().flatten())
            .sum()
    }

    /// Distinct sessions seen over the run, all services.
    pub fn sessions_seen(&self) -> u64 {
        self.services.iter().map(|s| s.sessions_started).sum()
    }

    /// `(service, sessions)` for `sessionwatch_sessions_tracked{service}`.
    pub fn sessions_tracked(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.services
            .iter()
            .map(|s| (s.name.as_str(), s.sessions_tracked))
    }

    /// Sessions evicted for `reason`
    /// (`sessionwatch_sessions_evicted_total{reason}`).
    pub fn evicted(&self, reason: EvictReason) -> u64 {
        self.evicted[EvictReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0)]
    }

    /// Total exchanges.
    pub fn exchanges_total(&self) -> u64 {
        self.services
            .iter()
            .flat_map(|s| s.exchanges.iter().flatten())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets() {
        let mut h = AgeHistogram::ages();
        h.observe(30.0);
        h.observe(60.0);
        h.observe(61.0);
        h.observe(1e9);
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.above, 1);
        let cum: Vec<_> = h.cumulative().collect();
        assert_eq!(cum.len(), AGE_BUCKETS.len());
        assert_eq!(cum[0], (60.0, 2));
        assert_eq!(cum.last().unwrap().1, 3);
        assert_eq!(h.count, 4);
    }

    #[test]
    fn idle_gap_histogram_uses_its_own_bounds() {
        let mut h = IdleGapHistogram::idle_gaps();
        h.observe(0.2);
        h.observe(90.0);
        h.observe(f64::NAN);
        assert_eq!(h.bounds(), &IDLE_GAP_BUCKETS);
        let cum: Vec<_> = h.cumulative().collect();
        assert_eq!(cum.len(), IDLE_GAP_BUCKETS.len());
        assert_eq!(cum[0], (1.0, 1));
        assert_eq!(cum[4], (60.0, 1));
        assert_eq!(cum[5], (120.0, 2));
        assert_eq!(h.above, 1);
        assert_eq!(h.count, 3);
        assert!((h.sum - 90.2).abs() < 1e-9);
    }
}
