//! Prometheus metrics (names and labels are the design's stable contract).
//!
//! The pipeline stages keep plain cumulative counters (no Prometheus
//! dependency below this module); [`Metrics::apply`] turns their snapshots
//! into counter increments. Labels are bounded: never IDs, IPs, paths or user
//! agents — `service` is already capped by the analysis stage.

use std::collections::HashMap;

use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metric namespace.
const NS: &str = "sessionwatch";

/// One service's histogram (session age, idle gap), as the analysis stage
/// keeps it (cumulative bucket counts by upper bound, sum, count).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgeSnapshot {
    /// `service` label.
    pub service: String,
    /// (upper bound in seconds, cumulative count).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of observed values, seconds.
    pub sum: f64,
    /// Observations.
    pub count: u64,
}

/// `table` label values of `sessionwatch_analysis_table_full_total`: the
/// analysis stage's fixed-size tables that, when full, make it keep going
/// with less detail instead of growing.
///
/// - `services`: exchanges counted under service `other` because the
///   per-service table (which bounds every `service` label) was full;
/// - `user_agents`: User-Agent families not interned, so a fingerprint
///   compares the family as unknown;
/// - `suppression`: finding-suppression generations turned over early, so
///   a repeat of a recent finding may be reported again;
/// - `detector_state`: inputs a stateful detector could not track
///   (`session_id_bruteforce` clients, `session_id_weak` samples).
pub const ANALYSIS_TABLES: [&str; 4] = ["services", "user_agents", "suppression", "detector_state"];

/// Every metric the agent exports, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// `sessionwatch_findings_total{detector,severity,service}`.
    pub findings: IntCounterVec,
    /// `sessionwatch_http_exchanges_total{service,protocol,tls}`.
    pub http_exchanges: IntCounterVec,
    /// `sessionwatch_sessions_tracked{service}`.
    pub sessions_tracked: IntGaugeVec,
    /// `sessionwatch_sessions_evicted_total{reason}`.
    pub sessions_evicted: IntCounterVec,
    /// `sessionwatch_session_age_seconds{service}`: age of sessions when they
    /// leave the session table (eviction, end of input). The analysis stage
    /// keeps the histogram; it is exported as is at scrape time.
    pub session_ages: Vec<AgeSnapshot>,
    /// `sessionwatch_session_idle_gap_seconds{service}`: gaps between
    /// consecutive accepted uses of a session. Kept by the analysis stage
    /// like `session_ages`.
    pub idle_gaps: Vec<AgeSnapshot>,
    /// `sessionwatch_capture_events_total{source}`.
    pub capture_events: IntCounterVec,
    /// `sessionwatch_capture_lost_total{source,reason}`.
    pub capture_lost: IntCounterVec,
    /// `sessionwatch_capture_truncated_total{source}`.
    pub capture_truncated: IntCounterVec,
    /// `sessionwatch_capture_body_skipped_bytes_total`: message-body bytes
    /// the kernel left out on purpose (`capture.skip_bodies_above`).
    pub capture_body_skipped: IntCounterVec,
    /// `sessionwatch_parse_errors_total{protocol,kind}`.
    pub parse_errors: IntCounterVec,
    /// `sessionwatch_analysis_table_full_total{table}`: inputs the analysis
    /// handled with less detail because one of its bounded tables was full
    /// (see [`ANALYSIS_TABLES`]).
    pub analysis_table_full: IntCounterVec,
    /// `sessionwatch_attached_targets`.
    pub attached_targets: IntGauge,
    /// `sessionwatch_build_info{version}`.
    pub build_info: IntGaugeVec,
    /// `sessionwatch_session_cookies_learned{service}`: session cookie names
    /// learned from the traffic (`sessions.learn_cookie_names`).
    pub session_cookies_learned: IntGaugeVec,
    /// `sessionwatch_session_cookies_total`: live session `Set-Cookie`s
    /// (deletions excluded), the denominator of the cookie compliance ratio.
    pub session_cookies: IntCounterVec,
    /// `sessionwatch_session_cookies_compliant_total{attribute}`: session
    /// `Set-Cookie`s with `secure`, `httponly`, `samesite` (Strict or Lax),
    /// and `all` three.
    pub session_cookies_compliant: IntCounterVec,
    /// `sessionwatch_alerts_sent_total{sink}`: findings delivered by an
    /// alert sink that delivers asynchronously (`alertmanager`).
    pub alerts_sent: IntCounterVec,
    /// `sessionwatch_alerts_dropped_total{sink,reason}`: findings an alert
    /// sink gave up on (`queue_full`, `rejected`, `shutdown`).
    pub alerts_dropped: IntCounterVec,
    /// `sessionwatch_kubernetes_up`: 1 while the pod list is current
    /// (`[kubernetes]` only; absent when enrichment is off).
    pub kubernetes_up: IntGaugeVec,
    /// `sessionwatch_kubernetes_pods`: pods of this node in the cache.
    pub kubernetes_pods: IntGaugeVec,
    /// `sessionwatch_kubernetes_sync_errors_total`: failed pod list/watch
    /// requests.
    pub kubernetes_sync_errors: IntCounterVec,
    /// `sessionwatch_kubernetes_pods_skipped_total`: pods not cached
    /// because `kubernetes.max_pods` was reached.
    pub kubernetes_pods_skipped: IntCounterVec,
    /// Last cumulative value applied per (metric, labels), to turn snapshots
    /// of cumulative stage counters into increments.
    applied: HashMap<(&'static str, Vec<String>), u64>,
    /// Counter handles of `sessionwatch_findings_total` already looked up,
    /// by (detector, severity, service): `with_label_values` hashes the
    /// three strings and takes the vector's lock on every call, and findings
    /// come in runs of the same few label sets. At most
    /// [`FINDING_HANDLES`]; label sets beyond it take the lookup each time.
    finding_handles: Vec<(String, &'static str, String, IntCounter)>,
}

/// Most cached handles of `sessionwatch_findings_total` (20 detectors, a
/// few severities and services each).
const FINDING_HANDLES: usize = 64;

/// Errors registering metrics (only possible through a programming error:
/// a duplicate or invalid metric name).
#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, MetricsError> {
                let c = IntCounterVec::new(Opts::new(name, help).namespace(NS), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let findings = counter(
            "findings_total",
            "Findings reported, by detector, severity and service.",
            &["detector", "severity", "service"],
        )?;
        let http_exchanges = counter(
            "http_exchanges_total",
            "HTTP request/response exchanges analysed.",
            &["service", "protocol", "tls"],
        )?;
        let sessions_evicted = counter(
            "sessions_evicted_total",
            "Sessions dropped from the session table, by reason.",
            &["reason"],
        )?;
        let capture_events = counter(
            "capture_events_total",
            "Capture events received, by source.",
            &["source"],
        )?;
        let capture_lost = counter(
            "capture_lost_total",
            "Capture events or bytes lost before analysis, by source and reason.",
            &["source", "reason"],
        )?;
        let capture_truncated = counter(
            "capture_truncated_total",
            "Captured payloads cut at the payload cap, by source.",
            &["source"],
        )?;
        let capture_body_skipped = counter(
            "capture_body_skipped_bytes_total",
            "Message-body bytes the kernel did not copy because the agent needs heads only (capture.skip_bodies_above); not lost.",
            &[],
        )?;
        let parse_errors = counter(
            "parse_errors_total",
            "Protocol parse errors and counted skips, by protocol and kind.",
            &["protocol", "kind"],
        )?;
        let analysis_table_full = counter(
            "analysis_table_full_total",
            "Inputs the analysis handled with less detail because a bounded table was full, by table.",
            &["table"],
        )?;
        let session_cookies = counter(
            "session_cookies_total",
            "Session Set-Cookie headers issued (deletions excluded).",
            &[],
        )?;
        let session_cookies_compliant = counter(
            "session_cookies_compliant_total",
            "Session Set-Cookie headers with an attribute: secure, httponly, samesite (Strict or Lax), or all three.",
            &["attribute"],
        )?;
        let alerts_sent = counter(
            "alerts_sent_total",
            "Findings delivered by an asynchronous alert sink.",
            &["sink"],
        )?;
        let alerts_dropped = counter(
            "alerts_dropped_total",
            "Findings an alert sink dropped, by sink and reason (queue_full, rejected, shutdown).",
            &["sink", "reason"],
        )?;
        let sessions_tracked = IntGaugeVec::new(
            Opts::new(
                "sessions_tracked",
                "Sessions currently in the session table.",
            )
            .namespace(NS),
            &["service"],
        )?;
        registry.register(Box::new(sessions_tracked.clone()))?;
        let attached_targets = IntGauge::with_opts(
            Opts::new(
                "attached_targets",
                "Libraries and executables with probes attached.",
            )
            .namespace(NS),
        )?;
        registry.register(Box::new(attached_targets.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Build information; always 1.").namespace(NS),
            &["version"],
        )?;
        registry.register(Box::new(build_info.clone()))?;
        let session_cookies_learned = IntGaugeVec::new(
            Opts::new(
                "session_cookies_learned",
                "Session cookie names learned from the traffic (not configured), by service.",
            )
            .namespace(NS),
            &["service"],
        )?;
        registry.register(Box::new(session_cookies_learned.clone()))?;
        // Label-less vectors: the series appear only once enrichment runs.
        let kubernetes_up = IntGaugeVec::new(
            Opts::new(
                "kubernetes_up",
                "1 while the Kubernetes pod list is current, 0 while the API server is unreachable.",
            )
            .namespace(NS),
            &[],
        )?;
        registry.register(Box::new(kubernetes_up.clone()))?;
        let kubernetes_pods = IntGaugeVec::new(
            Opts::new(
                "kubernetes_pods",
                "Pods of this node in the enrichment cache.",
            )
            .namespace(NS),
            &[],
        )?;
        registry.register(Box::new(kubernetes_pods.clone()))?;
        let kubernetes_sync_errors = counter(
            "kubernetes_sync_errors_total",
            "Failed Kubernetes pod list or watch requests.",
            &[],
        )?;
        let kubernetes_pods_skipped = counter(
            "kubernetes_pods_skipped_total",
            "Pods not cached because kubernetes.max_pods was reached.",
            &[],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(Metrics {
            registry,
            findings,
            http_exchanges,
            sessions_tracked,
            sessions_evicted,
            session_ages: Vec::new(),
            idle_gaps: Vec::new(),
            capture_events,
            capture_lost,
            capture_truncated,
            capture_body_skipped,
            parse_errors,
            analysis_table_full,
            attached_targets,
            build_info,
            session_cookies_learned,
            session_cookies,
            session_cookies_compliant,
            alerts_sent,
            alerts_dropped,
            kubernetes_up,
            kubernetes_pods,
            kubernetes_sync_errors,
            kubernetes_pods_skipped,
            applied: HashMap::new(),
            finding_handles: Vec::new(),
        })
    }

    /// Copies the pod cache's counters (`[kubernetes]`).
    pub fn sync_kubernetes(&mut self, s: &crate::capture::kubernetes::PodCacheStats) {
        self.kubernetes_up
            .with_label_values(&[] as &[&str])
            .set(i64::from(s.up));
        self.kubernetes_pods
            .with_label_values(&[] as &[&str])
            .set(i64::try_from(s.pods).unwrap_or(i64::MAX));
        let c = self.kubernetes_sync_errors.clone();
        self.apply_cumulative("kubernetes_sync_errors", &c, &[], s.sync_errors);
        let c = self.kubernetes_pods_skipped.clone();
        self.apply_cumulative("kubernetes_pods_skipped", &c, &[], s.pods_skipped);
    }

    /// Brings `counter{labels}` up to the cumulative value `total`.
    ///
    /// Stage counters only grow; a smaller value (a stage was rebuilt) is
    /// taken as a new base rather than decrementing a Prometheus counter.
    pub fn apply_cumulative(
        &mut self,
        metric: &'static str,
        counter: &IntCounterVec,
        labels: &[&str],
        total: u64,
    ) {
        let key = (
            metric,
            labels.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        );
        let last = self.applied.entry(key).or_insert(0);
        // Touch the series even at zero, so label sets are stable from the
        // first scrape (alerts on `capture_lost_total > 0` need the series).
        let series = counter.with_label_values(labels);
        if total > *last {
            series.inc_by(total - *last);
        }
        *last = total;
    }

    /// A histogram family `sessionwatch_{name}{service}` from the analysis
    /// stage's snapshots.
    fn histogram_family(name: &str, help: &str, snapshots: &[AgeSnapshot]) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(format!("{NS}_{name}"));
        family.set_help(help.into());
        family.set_field_type(MetricType::HISTOGRAM);
        for snap in snapshots {
            let mut label = LabelPair::default();
            label.set_name("service".into());
            label.set_value(snap.service.clone());
            let mut h = Histogram::default();
            h.set_sample_count(snap.count);
            h.set_sample_sum(snap.sum);
            h.set_bucket(
                snap.buckets
                    .iter()
                    .map(|(le, n)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(*le);
                        b.set_cumulative_count(*n);
                        b
                    })
                    .collect(),
            );
            let mut m = Metric::from_label(vec![label]);
            m.set_histogram(h);
            family.mut_metric().push(m);
        }
        family
    }

    /// Counts one finding in `sessionwatch_findings_total`.
    pub fn count_finding(&mut self, detector: &str, severity: &'static str, service: &str) {
        let cached = self
            .finding_handles
            .iter()
            .find(|(d, sev, svc, _)| *sev == severity && d == detector && svc == service);
        if let Some((.., c)) = cached {
            c.inc();
            return;
        }
        let c = self
            .findings
            .with_label_values(&[detector, severity, service]);
        c.inc();
        if self.finding_handles.len() < FINDING_HANDLES {
            self.finding_handles
                .push((detector.to_owned(), severity, service.to_owned(), c));
        }
    }

    /// The registry (for tests and custom collectors).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        let mut families = self.registry.gather();
        if !self.session_ages.is_empty() {
            families.push(Self::histogram_family(
                "session_age_seconds",
                "Age of sessions (last seen − first seen) when they leave the session table (eviction, end of input).",
                &self.session_ages,
            ));
        }
        if !self.idle_gaps.is_empty() {
            families.push(Self::histogram_family(
                "session_idle_gap_seconds",
                "Gap between consecutive accepted uses of a session.",
                &self.idle_gaps,
            ));
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        if let Err(e) = encoder.encode(&families, &mut buf) {
            return format!("# encoding error: {e}\n");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_finding_counts_every_label_set() {
        let mut m = Metrics::new().unwrap();
        // More label sets than handles are cached, each counted a varying
        // number of times, interleaved.
        let n = FINDING_HANDLES + 10;
        for round in 0..3 {
            for i in 0..n {
                if i % 3 >= round {
                    m.count_finding("session_cleartext", "high", &format!("svc{i}"));
                }
            }
        }
        m.count_finding("session_cleartext", "medium", "svc0");
        for i in 0..n {
            let want = (0..3).filter(|round| i % 3 >= *round).count() as u64;
            let got = m
                .findings
                .with_label_values(&["session_cleartext", "high", &format!("svc{i}")])
                .get();
            assert_eq!(got, want, "svc{i}");
        }
        let medium = m
            .findings
            .with_label_values(&["session_cleartext", "medium", "svc0"])
            .get();
        assert_eq!(medium, 1);
    }

    #[test]
    fn exposes_contract_names() {
        let mut m = Metrics::new().unwrap();
        m.findings
            .with_label_values(&["cookie_missing_secure", "medium", "shop"])
            .inc();
        m.http_exchanges
            .with_label_values(&["shop", "http1", "true"])
            .inc();
        m.sessions_tracked.with_label_values(&["shop"]).set(3);
        m.sessions_evicted.with_label_values(&["capacity"]).inc();
        m.session_ages.push(AgeSnapshot {
            service: "shop".into(),
            buckets: vec![(60.0, 1), (300.0, 1)],
            sum: 42.0,
            count: 1,
        });
        m.idle_gaps.push(AgeSnapshot {
            service: "shop".into(),
            buckets: vec![(60.0, 0), (120.0, 1)],
            sum: 90.0,
            count: 1,
        });
        m.capture_events.with_label_values(&["tls"]).inc();
        m.capture_lost
            .with_label_values(&["tls", "ringbuf_full"])
            .inc();
        m.capture_truncated.with_label_values(&["tls"]).inc();
        m.parse_errors
            .with_label_values(&["http1", "invalid_head"])
            .inc();
        m.attached_targets.set(2);
        m.session_cookies
            .with_label_values(&[] as &[&str])
            .inc_by(4);
        m.session_cookies_compliant
            .with_label_values(&["all"])
            .inc_by(3);
        m.alerts_sent.with_label_values(&["alertmanager"]).inc();
        m.alerts_dropped
            .with_label_values(&["alertmanager", "queue_full"])
            .inc();
        let text = m.render();
        for name in [
            "sessionwatch_findings_total{detector=\"cookie_missing_secure\",service=\"shop\",severity=\"medium\"} 1",
            "sessionwatch_http_exchanges_total{protocol=\"http1\",service=\"shop\",tls=\"true\"} 1",
            "sessionwatch_sessions_tracked{service=\"shop\"} 3",
            "sessionwatch_sessions_evicted_total{reason=\"capacity\"} 1",
            "sessionwatch_session_age_seconds_bucket{service=\"shop\",le=\"60\"} 1",
            "# TYPE sessionwatch_session_idle_gap_seconds histogram",
            "sessionwatch_session_idle_gap_seconds_bucket{service=\"shop\",le=\"60\"} 0",
            "sessionwatch_session_idle_gap_seconds_bucket{service=\"shop\",le=\"120\"} 1",
            "sessionwatch_session_idle_gap_seconds_bucket{service=\"shop\",le=\"+Inf\"} 1",
            "sessionwatch_session_idle_gap_seconds_sum{service=\"shop\"} 90",
            "sessionwatch_session_idle_gap_seconds_count{service=\"shop\"} 1",
            "sessionwatch_capture_events_total{source=\"tls\"} 1",
            "sessionwatch_capture_lost_total{reason=\"ringbuf_full\",source=\"tls\"} 1",
            "sessionwatch_capture_truncated_total{source=\"tls\"} 1",
            "sessionwatch_parse_errors_total{kind=\"invalid_head\",protocol=\"http1\"} 1",
            "sessionwatch_attached_targets 2",
            "sessionwatch_build_info{version=",
            "sessionwatch_session_cookies_total 4",
            "sessionwatch_session_cookies_compliant_total{attribute=\"all\"} 3",
            "sessionwatch_alerts_sent_total{sink=\"alertmanager\"} 1",
            "sessionwatch_alerts_dropped_total{reason=\"queue_full\",sink=\"alertmanager\"} 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn cumulative_snapshots_become_increments() {
        let mut m = Metrics::new().unwrap();
        let c = m.parse_errors.clone();
        m.apply_cumulative("parse_errors", &c, &["http1", "resync"], 5);
        m.apply_cumulative("parse_errors", &c, &["http1", "resync"], 7);
        m.apply_cumulative("parse_errors", &c, &["http1", "resync"], 7);
        assert_eq!(c.with_label_values(&["http1", "resync"]).get(), 7);
    }
}
