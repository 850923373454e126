//! Alertmanager API v2 push: each finding becomes one alert posted to
//! `<alertmanager_url>/api/v2/alerts`.
//!
//! The analysis pipeline must never wait on the network, so the sink side
//! ([`AlertmanagerSink`], called synchronously from the pipeline) only
//! de-duplicates and hands the alert to a bounded queue with `try_send`. A
//! background tokio task ([`AlertmanagerTask`]) batches the queue, posts it,
//! and retries failed posts with a doubling backoff while the queue keeps
//! filling. When Alertmanager is away long enough for the queue to fill, new
//! findings are dropped and counted
//! (`sessionwatch_alerts_dropped_total{sink="alertmanager",reason="queue_full"}`);
//! when it returns the task catches up with what is queued.
//!
//! Labels are bounded and identify the alert to Alertmanager: `alertname`
//! (`SessionWatch` + the detector id in CamelCase), `severity`, `detector`,
//! `service`, `node` and `session` (the keyed session hash, never the raw
//! ID), so two sessions hit by one detector stay two alerts. Annotations
//! carry the human part: `summary`, `description` (with the evidence) and
//! `runbook_url` (the detector's section of docs/detectors.md).
//!
//! Only plain `http://` is supported for now; a TLS Alertmanager is reached
//! through a local relay.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::IntCounter;
use serde_json::{Map, Value};
use sessionwatch_sessions::{Finding, FindingSink};
use tokio::sync::{mpsc, watch};

use crate::config::AlertingConfig;
use crate::export::metrics::Metrics;

/// `sink` label value of this sink's counters.
pub const SINK: &str = "alertmanager";
/// Alerts per POST at most (Alertmanager accepts any number; this bounds
/// one request body and the work redone by a retry). Never more than the
/// queue size, so the alerts held at once (queue plus the batch in flight)
/// stay within twice `queue_size`.
const MAX_BATCH: usize = 256;
/// First retry delay; it doubles up to `max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// (session, detector) pairs remembered for de-duplication at most.
const MAX_DEDUP_KEYS: usize = 65_536;

/// Errors setting up the push.
#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    /// `alerting.alertmanager_url` is not a usable `http://` URL.
    #[error("alerting.alertmanager_url: {0}")]
    Url(String),
}

/// Why one POST failed.
#[derive(Debug, thiserror::Error)]
enum PostError {
    /// Connection refused, reset, DNS, …: retried.
    #[error("request failed: {0}")]
    Transport(String),
    /// No answer within `timeout`: retried.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// 5xx or 429: retried.
    #[error("Alertmanager answered {0}")]
    Unavailable(u16),
    /// Another 4xx: the payload is refused and retrying cannot help.
    #[error("Alertmanager rejected the alerts: {0}")]
    Rejected(u16),
}

/// Checks an Alertmanager base URL; the reason is for the config error.
pub fn validate_url(url: &str) -> Result<(), String> {
    endpoint(url).map(|_| ())
}

/// `<base>/api/v2/alerts` as a URI.
fn endpoint(base: &str) -> Result<Uri, String> {
    let uri: Uri = base
        .parse()
        .map_err(|e| format!("{base:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "{base:?}: https is not supported yet; use http:// to a local Alertmanager or relay"
            ));
        }
        _ => return Err(format!("{base:?}: expected http://host:port")),
    }
    if uri.authority().is_none() {
        return Err(format!("{base:?}: no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{base:?}: a base URL takes no query string"));
    }
    let path = uri.path().trim_end_matches('/');
    format!(
        "http://{}{path}/api/v2/alerts",
        uri.authority().map(|a| a.as_str()).unwrap_or_default()
    )
    .parse()
    .map_err(|e| format!("{base:?}: {e}"))
}

/// What the push needs from `[alerting]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertmanagerOptions {
    /// Base URL (`http://host:9093`).
    pub url: String,
    /// Queue bound.
    pub queue_size: usize,
    /// Timeout of one POST.
    pub timeout: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// One alert per (session, detector) within this window of event time.
    pub dedup_window: Duration,
    /// `endsAt` = send time + this.
    pub resolve_after: Duration,
    /// `runbook_url` = this + `#<detector>`.
    pub runbook_base: String,
}

impl AlertmanagerOptions {
    /// The push options, or `None` when `alertmanager_url` is unset.
    pub fn from_config(c: &AlertingConfig) -> Option<AlertmanagerOptions> {
        c.alertmanager_url.as_ref().map(|url| AlertmanagerOptions {
            url: url.clone(),
            queue_size: c.queue_size.max(1),
            timeout: c.timeout,
            max_backoff: c.max_backoff.max(INITIAL_BACKOFF),
            dedup_window: c.dedup_window,
            resolve_after: c.resolve_after,
            runbook_base: c.runbook_base.clone(),
        })
    }
}

/// The sink's counters, cloned out of [`Metrics`] so neither side takes the
/// metrics lock per alert.
#[derive(Clone)]
struct Counters {
    sent: IntCounter,
    queue_full: IntCounter,
    rejected: IntCounter,
    shutdown: IntCounter,
}

impl Counters {
    fn new(m: &Metrics) -> Counters {
        Counters {
            sent: m.alerts_sent.with_label_values(&[SINK]),
            queue_full: m.alerts_dropped.with_label_values(&[SINK, "queue_full"]),
            rejected: m.alerts_dropped.with_label_values(&[SINK, "rejected"]),
            shutdown: m.alerts_dropped.with_label_values(&[SINK, "shutdown"]),
        }
    }
}

/// One queued alert; `endsAt` is added when it is sent, so a retried alert
/// still ends `resolve_after` after it actually reached Alertmanager.
#[derive(Debug, Clone)]
struct QueuedAlert {
    labels: Map<String, Value>,
    annotations: Map<String, Value>,
    starts_at: String,
}

impl QueuedAlert {
    fn to_json(&self, ends_at: &str) -> Value {
        let mut o = Map::new();
        o.insert("labels".into(), Value::Object(self.labels.clone()));
        o.insert(
            "annotations".into(),
            Value::Object(self.annotations.clone()),
        );
        o.insert("startsAt".into(), Value::String(self.starts_at.clone()));
        o.insert("endsAt".into(), Value::String(ends_at.to_owned()));
        Value::Object(o)
    }
}

/// `SessionWatch` + the detector id in CamelCase
/// (`session_fingerprint_change` → `SessionWatchSessionFingerprintChange`).
pub fn alert_name(detector: &str) -> String {
    let mut name = String::with_capacity(12 + detector.len());
    name.push_str("SessionWatch");
    for part in detector.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    name
}

/// The alert for one finding.
fn alert_for(finding: &Finding, runbook_base: &str) -> QueuedAlert {
    let s = |v: &str| Value::String(v.to_owned());
    let mut labels = Map::new();
    labels.insert(
        "alertname".into(),
        Value::String(alert_name(&finding.detector)),
    );
    labels.insert("severity".into(), s(finding.severity.as_str()));
    labels.insert("detector".into(), s(&finding.detector));
    labels.insert("service".into(), s(&finding.service));
    labels.insert("node".into(), s(&finding.node));
    if let Some(session) = &finding.session {
        labels.insert("session".into(), s(session));
    }
    let mut description = String::with_capacity(256);
    description.push_str(&finding.message);
    let evidence = serde_json::to_string(&finding.evidence).unwrap_or_else(|_| "{}".into());
    let _ = write!(description, "\nEvidence: {evidence}");
    let _ = write!(
        description,
        "\nRequest: {} {}{}",
        finding.request.method,
        finding.request.host.as_deref().unwrap_or(""),
        finding.request.path
    );
    if let Some(status) = finding.request.status {
        let _ = write!(description, " → {status}");
    }
    let _ = write!(
        description,
        "\nClient: {} ({})",
        finding.client.ip.as_deref().unwrap_or("unknown address"),
        finding
            .client
            .user_agent
            .as_deref()
            .unwrap_or("no User-Agent")
    );
    if let Some(session) = &finding.session {
        let _ = write!(
            description,
            "\nSession: {session} (cookie {})",
            finding.cookie.as_deref().unwrap_or("?")
        );
    }
    let _ = write!(
        description,
        "\n{} · event time {} · node {}",
        finding.cwe, finding.time, finding.node
    );
    let mut annotations = Map::new();
    annotations.insert(
        "summary".into(),
        Value::String(format!(
            "{} on {}: {}",
            finding.detector, finding.service, finding.message
        )),
    );
    annotations.insert("description".into(), Value::String(description));
    annotations.insert(
        "runbook_url".into(),
        Value::String(format!(
            "{}#{}",
            runbook_base.trim_end_matches('#'),
            finding.detector
        )),
    );
    QueuedAlert {
        labels,
        annotations,
        starts_at: finding.time.clone(),
    }
}

/// The pipeline side: de-duplicates and enqueues without ever waiting.
pub struct AlertmanagerSink {
    tx: mpsc::Sender<QueuedAlert>,
    counters: Counters,
    runbook_base: String,
    dedup_window: Duration,
    /// Event time of the last alert per (session or client, detector).
    last_sent: HashMap<(String, String), SystemTime>,
    /// Findings not pushed because the same (session, detector) was pushed
    /// within the window.
    pub deduplicated: u64,
}

impl AlertmanagerSink {
    /// Whether this finding repeats one pushed within the window; records it
    /// otherwise.
    fn is_repeat(&mut self, finding: &Finding) -> bool {
        let who = match (&finding.session, &finding.client.ip) {
            (Some(s), _) => format!("s:{s}"),
            (None, Some(ip)) => format!("c:{}:{ip}", finding.service),
            (None, None) => format!("v:{}", finding.service),
        };
        let at = humantime::parse_rfc3339_weak(&finding.time).unwrap_or_else(|_| SystemTime::now());
        let key = (who, finding.detector.clone());
        if let Some(prev) = self.last_sent.get(&key)
            && at.duration_since(*prev).unwrap_or_default() < self.dedup_window
        {
            return true;
        }
        if self.last_sent.len() >= MAX_DEDUP_KEYS && !self.last_sent.contains_key(&key) {
            // Keep memory bounded: forget pairs outside the window, and if
            // the table is still full, start over (a repeat may then be
            // pushed twice, which Alertmanager merges by labels anyway).
            let window = self.dedup_window;
            self.last_sent
                .retain(|_, t| at.duration_since(*t).unwrap_or_default() < window);
            if self.last_sent.len() >= MAX_DEDUP_KEYS {
                self.last_sent.clear();
            }
        }
        self.last_sent.insert(key, at);
        false
    }
}

impl AlertmanagerSink {
    /// Queues the alert for `finding` unless it repeats one within the
    /// window; never waits (a full queue drops and counts).
    pub fn push(&mut self, finding: &Finding) {
        if self.is_repeat(finding) {
            self.deduplicated += 1;
            return;
        }
        let alert = alert_for(finding, &self.runbook_base);
        match self.tx.try_send(alert) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.counters.queue_full.get() == 0 {
                    tracing::warn!(
                        "Alertmanager queue full; findings are dropped and counted until it drains"
                    );
                }
                self.counters.queue_full.inc();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.counters.shutdown.inc(),
        }
    }
}

impl FindingSink for AlertmanagerSink {
    fn on_finding(&mut self, finding: &Finding) {
        self.push(finding);
    }
}

/// The background delivery task; stop it with [`AlertmanagerTask::shutdown`].
pub struct AlertmanagerTask {
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

impl AlertmanagerTask {
    /// Stops taking new alerts, makes one last attempt to deliver what is
    /// queued, and gives up after `grace` (the rest counts as dropped,
    /// reason `shutdown`).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let abort = self.join.abort_handle();
        if tokio::time::timeout(grace, self.join).await.is_err() {
            tracing::warn!(
                ?grace,
                "Alertmanager delivery did not finish in time; abandoned"
            );
            abort.abort();
        }
    }
}

/// Starts the push: the sink for the pipeline and its delivery task,
/// spawned on `runtime`.
pub fn start(
    opts: &AlertmanagerOptions,
    metrics: &Metrics,
    runtime: &tokio::runtime::Handle,
) -> Result<(AlertmanagerSink, AlertmanagerTask), AlertmanagerError> {
    let uri = endpoint(&opts.url).map_err(AlertmanagerError::Url)?;
    let counters = Counters::new(metrics);
    let (tx, rx) = mpsc::channel(opts.queue_size.max(1));
    let (stop, stop_rx) = watch::channel(false);
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(opts.timeout));
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let delivery = Delivery {
        client,
        uri,
        timeout: opts.timeout,
        max_batch: MAX_BATCH.min(opts.queue_size.max(1)),
        max_backoff: opts.max_backoff,
        resolve_after: opts.resolve_after,
        counters: counters.clone(),
    };
    let join = runtime.spawn(delivery.run(rx, stop_rx));
    Ok((
        AlertmanagerSink {
            tx,
            counters,
            runbook_base: opts.runbook_base.clone(),
            dedup_window: opts.dedup_window,
            last_sent: HashMap::new(),
            deduplicated: 0,
        },
        AlertmanagerTask { stop, join },
    ))
}

struct Delivery {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    timeout: Duration,
    max_batch: usize,
    max_backoff: Duration,
    resolve_after: Duration,
    counters: Counters,
}

impl Delivery {
    async fn run(self, mut rx: mpsc::Receiver<QueuedAlert>, mut stop: watch::Receiver<bool>) {
        let mut batch: Vec<QueuedAlert> = Vec::new();
        let mut backoff = INITIAL_BACKOFF;
        let mut stopping = false;
        let mut failing_since: Option<SystemTime> = None;
        loop {
            if batch.is_empty() {
                if stopping {
                    match rx.try_recv() {
                        Ok(a) => batch.push(a),
                        Err(_) => break,
                    }
                } else {
                    tokio::select! {
                        a = rx.recv() => match a {
                            Some(a) => batch.push(a),
                            None => break,
                        },
                        _ = stop.changed() => {
                            stopping = true;
                            rx.close();
                            continue;
                        }
                    }
                }
                while batch.len() < self.max_batch {
                    match rx.try_recv() {
                        Ok(a) => batch.push(a),
                        Err(_) => break,
                    }
                }
            }
            match self.post(&batch).await {
                Ok(()) => {
                    self.counters.sent.inc_by(batch.len() as u64);
                    batch.clear();
                    backoff = INITIAL_BACKOFF;
                    if failing_since.take().is_some() {
                        tracing::info!("Alertmanager reachable again; delivering the queue");
                    }
                }
                Err(PostError::Rejected(status)) => {
                    tracing::error!(
                        status,
                        alerts = batch.len(),
                        "Alertmanager rejected alerts; dropped"
                    );
                    self.counters.rejected.inc_by(batch.len() as u64);
                    batch.clear();
                }
                Err(e) => {
                    if stopping {
                        break;
                    }
                    if failing_since.is_none() {
                        failing_since = Some(SystemTime::now());
                        tracing::warn!(error = %e, "cannot push to Alertmanager; retrying with backoff");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {
                            stopping = true;
                            rx.close();
                        }
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
        let mut left = batch.len() as u64;
        rx.close();
        while rx.try_recv().is_ok() {
            left += 1;
        }
        if left > 0 {
            tracing::warn!(alerts = left, "stopping with undelivered alerts");
            self.counters.shutdown.inc_by(left);
        }
    }

    async fn post(&self, batch: &[QueuedAlert]) -> Result<(), PostError> {
        let ends_at =
            humantime::format_rfc3339_millis(SystemTime::now() + self.resolve_after).to_string();
        let body = Value::Array(batch.iter().map(|a| a.to_json(&ends_at)).collect());
        let body = serde_json::to_vec(&body).map_err(|e| PostError::Transport(e.to_string()))?;
        let req = hyper::Request::post(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| PostError::Transport(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| PostError::Transport(e.to_string()))?;
            let status = resp.status();
            // Read the (small) answer so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok::<_, PostError>(status)
        };
        let status = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| PostError::Timeout(self.timeout))??;
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() || status.as_u16() == 429 {
            Err(PostError::Unavailable(status.as_u16()))
        } else {
            Err(PostError::Rejected(status.as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionwatch_sessions::Severity;
    use sessionwatch_sessions::finding::{FindingClient, FindingRequest};

    fn finding(session: &str, detector: &str, time: &str) -> Finding {
        let mut evidence = Map::new();
        evidence.insert("previous_ip".into(), Value::String("127.0.0.2".into()));
        Finding {
            time: time.into(),
            detector: detector.into(),
            severity: Severity::High,
            service: "shop".into(),
            node: "node-1".into(),
            session: Some(session.into()),
            cookie: Some("sessionid".into()),
            client: FindingClient {
                ip: Some("127.0.0.3".into()),
                user_agent: Some("curl/8".into()),
            },
            request: FindingRequest {
                method: "GET".into(),
                host: Some("shop.example".into()),
                path: "/account".into(),
                status: Some(200),
            },
            cwe: "CWE-384".into(),
            message: "session used from a new client".into(),
            evidence,
            container: None,
        }
    }

    #[test]
    fn alert_names_are_camel_case() {
        assert_eq!(
            alert_name("session_fingerprint_change"),
            "SessionWatchSessionFingerprintChange"
        );
        assert_eq!(
            alert_name("no_rotation_after_login"),
            "SessionWatchNoRotationAfterLogin"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            endpoint("http://127.0.0.1:9093").unwrap().to_string(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        assert_eq!(
            endpoint("http://am.local/prefix/").unwrap().to_string(),
            "http://am.local/prefix/api/v2/alerts"
        );
        assert!(
            validate_url("https://am:9093")
                .unwrap_err()
                .contains("https")
        );
        assert!(validate_url("am:9093").is_err());
        assert!(validate_url("not a url").is_err());
    }

    #[test]
    fn alert_carries_labels_annotations_and_evidence() {
        let a = alert_for(
            &finding(
                "0123456789abcdef",
                "session_fingerprint_change",
                "2026-11-26T06:01:02.123Z",
            ),
            "https://docs.example/detectors.md",
        );
        let v = a.to_json("2026-11-26T07:00:00.000Z");
        assert_eq!(
            v["labels"]["alertname"],
            "SessionWatchSessionFingerprintChange"
        );
        assert_eq!(v["labels"]["severity"], "high");
        assert_eq!(v["labels"]["session"], "0123456789abcdef");
        assert_eq!(v["labels"]["node"], "node-1");
        assert_eq!(
            v["annotations"]["runbook_url"],
            "https://docs.example/detectors.md#session_fingerprint_change"
        );
        let d = v["annotations"]["description"].as_str().unwrap();
        assert!(
            d.contains(r#"Evidence: {"previous_ip":"127.0.0.2"}"#),
            "{d}"
        );
        assert!(
            d.contains("127.0.0.3") && d.contains("GET shop.example/account → 200"),
            "{d}"
        );
        assert_eq!(v["startsAt"], "2026-11-26T06:01:02.123Z");
        assert_eq!(v["endsAt"], "2026-11-26T07:00:00.000Z");
    }

    fn opts(url: &str, queue: usize) -> AlertmanagerOptions {
        let mut c = AlertingConfig {
            alertmanager_url: Some(url.into()),
            ..AlertingConfig::default()
        };
        c.queue_size = queue;
        AlertmanagerOptions::from_config(&c).unwrap()
    }

    #[tokio::test]
    async fn repeats_within_the_window_are_pushed_once() {
        let m = Metrics::new().unwrap();
        let (mut sink, task) = start(
            &opts("http://127.0.0.1:9", 16),
            &m,
            &tokio::runtime::Handle::current(),
        )
        .unwrap();
        sink.on_finding(&finding(
            "aa",
            "stale_session_accepted",
            "2026-11-26T06:00:00.000Z",
        ));
        sink.on_finding(&finding(
            "aa",
            "stale_session_accepted",
            "2026-11-26T06:30:00.000Z",
        ));
        sink.on_finding(&finding(
            "bb",
            "stale_session_accepted",
            "2026-11-26T06:30:00.000Z",
        ));
        sink.on_finding(&finding(
            "aa",
            "session_fingerprint_change",
            "2026-11-26T06:30:00.000Z",
        ));
        sink.on_finding(&finding(
            "aa",
            "stale_session_accepted",
            "2026-11-26T07:00:00.001Z",
        ));
        assert_eq!(sink.deduplicated, 1);
        drop(sink);
        task.shutdown(Duration::from_secs(5)).await;
        // Nothing listens on port 9 (discard): all four end undelivered.
        let dropped = m
            .alerts_dropped
            .with_label_values(&[SINK, "shutdown"])
            .get();
        assert_eq!(dropped, 4);
    }
}
