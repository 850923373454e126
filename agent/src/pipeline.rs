//! The analysis pipeline shared by `replay` and `run`:
//! `StreamEvent` → HTTP stage → analyzer → findings.
//!
//! Replay feeds it from pcap files through TCP reassembly; live capture feeds
//! it the same stream events from the ring buffer. One `Pipeline` holds all
//! analysis state, so it is driven from one task.

use std::path::Path;
use std::sync::{Arc, Mutex};

use sessionwatch_http::h1::{H1Stage, Limits};
use sessionwatch_http::{Exchange, ExchangeSink};
use sessionwatch_sessions::{Analyzer, EvictReason, HashKey};
use sessionwatch_streams::pcap::{PcapReader, ReadError};
use sessionwatch_streams::reassembly::{Reassembler, ReassemblyConfig};
use sessionwatch_streams::replay::replay_into;
use sessionwatch_streams::{ConnectionId, Direction, StreamEvent, StreamSink};

use crate::capture::{CaptureError, LiveCapture, StatsHandle};
use crate::config::Config;
use crate::export::alerts::FindingFanout;
use crate::export::metrics::{AgeSnapshot, Metrics};
use crate::export::summary::Summary;

/// Errors building or driving the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The session-ID hash key could not be made or read.
    #[error("session hash key: {0}")]
    HashKey(#[from] sessionwatch_sessions::HashKeyError),
    /// The analysis configuration is invalid (the message names the key).
    #[error("config: {0}")]
    Config(#[from] sessionwatch_sessions::ConfigError),
    /// A capture file is unreadable or corrupt (the message names the file
    /// and the byte offset).
    #[error("{0}")]
    Input(#[from] ReadError),
    /// Live capture failed.
    #[error("{0}")]
    Capture(#[from] CaptureError),
    /// Cross-node correlation (`[cluster]`) could not be started.
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// The analysis stage behind the HTTP stage: each exchange goes through the
/// analyzer, each finding to the fan-out.
pub struct AnalysisStage {
    analyzer: Analyzer,
    findings: FindingFanout,
    /// Learned session cookie names already logged.
    learned_logged: usize,
    /// Pod cache (`[kubernetes]`), when enrichment is on.
    pods: Option<crate::capture::kubernetes::PodCache>,
}

impl ExchangeSink for AnalysisStage {
    fn on_exchange(&mut self, exchange: &mut Exchange) {
        // Connections opened before the pod cache knew their container
        // get the pod as soon as it does.
        if let Some(pods) = &self.pods {
            pods.enrich_exchange(exchange);
        }
        self.analyzer.on_exchange(exchange, &mut self.findings);
        // A name learned by this exchange (rare): say so once.
        while let Some((service, l)) = self.analyzer.learned_cookies().nth(self.learned_logged) {
            self.learned_logged += 1;
            let e = &l.evidence;
            tracing::info!(
                cookie = %l.name,
                service,
                login_sessions = e.login_sessions,
                accepted_clients = e.accepted_clients,
                rejected_without = e.rejected_without,
                "learned a session cookie name (sessions.learn_cookie_names); add it to \
                 sessions.cookie_names to keep it across restarts"
            );
        }
    }
}

/// Replay-side totals across files.
#[derive(Debug, Default)]
struct InputTotals {
    files: u64,
    packets: u64,
    connections: u64,
    bytes_missing: u64,
    skipped: std::collections::BTreeMap<&'static str, u64>,
    truncated_files: u64,
    /// "FILE: byte offset N: …" of each truncated file, for the exit status.
    truncated: Vec<String>,
}

/// Stream events → exchanges → findings.
pub struct Pipeline {
    http: H1Stage<AnalysisStage>,
    reassembler: Reassembler,
    totals: InputTotals,
}

impl Pipeline {
    /// Checks the analysis part of a config without building a pipeline
    /// (for `check-config`): routes, CIDRs, detector ids, services, the hash
    /// key file.
    pub fn validate(config: &Config) -> Result<(), PipelineError> {
        sessionwatch_sessions::validate(&config.analysis())?;
        if let Some(path) = &config.sessions.hash_key_file {
            HashKey::from_file(path)?;
        }
        Ok(())
    }

    /// Builds the pipeline; findings go to `findings`.
    pub fn new(config: &Config, findings: FindingFanout) -> Result<Pipeline, PipelineError> {
        let key = match &config.sessions.hash_key_file {
            Some(path) => HashKey::from_file(path)?,
            None => HashKey::random()?,
        };
        let mut analyzer = Analyzer::new(config.analysis(), key)?;
        if config.cluster.enabled {
            if config.sessions.hash_key_file.is_none() {
                return Err(crate::cluster::ClusterError::NoHashKey.into());
            }
            // Keys expire with the session table's TTL: a session past its
            // absolute lifetime must still be known when it is accepted.
            let p = &config.policy;
            let ttl = p.idle_timeout.max(p.absolute_timeout) * config.sessions.ttl_factor.max(1);
            let registry = match findings.metrics.lock() {
                Ok(m) => m.registry().clone(),
                Err(poisoned) => poisoned.into_inner().registry().clone(),
            };
            let shared =
                crate::cluster::start(&config.cluster, config.node_name(), ttl, &registry)?;
            analyzer.set_shared(Box::new(shared));
        }
        Ok(Pipeline {
            http: H1Stage::new(
                AnalysisStage {
                    analyzer,
                    findings,
                    learned_logged: 0,
                    pods: None,
                },
                Limits::default(),
            ),
            reassembler: Reassembler::new(ReassemblyConfig::default()),
            totals: InputTotals::default(),
        })
    }

    /// Analyses one capture file. Files replayed one after another form one
    /// timeline (rotated captures stay joined). On a corrupt file the
    /// findings up to the bad spot are kept and the error names the file and
    /// byte offset.
    pub fn replay_file(&mut self, path: &Path) -> Result<(), PipelineError> {
        self.totals.files += 1;
        let mut reader = PcapReader::open(path)?;
        let result = replay_into(&mut reader, &mut self.reassembler, &mut self.http);
        let read = reader.stats();
        self.totals.packets += read.packets;
        for (reason, n) in read.skipped.iter() {
            if n > 0 {
                *self.totals.skipped.entry(reason.as_str()).or_default() += n;
            }
        }
        if let Some(tail) = &read.truncated_tail {
            self.totals.truncated_files += 1;
            let msg = format!(
                "{}: byte offset {}: file ends inside a record (truncated capture; the records before it were analysed)",
                path.display(),
                tail.offset
            );
            tracing::warn!("{msg}");
            self.totals.truncated.push(msg);
        }
        result?;
        Ok(())
    }

    /// Files that ended inside a record: analysed up to the cut, but bad
    /// input all the same (replay exits 2 after reporting their findings).
    pub fn truncated_inputs(&self) -> &[String] {
        &self.totals.truncated
    }

    /// Ends the input: closes every open stream and session so the last
    /// exchanges and session ages are counted. Safe to call twice.
    pub fn finish(&mut self) {
        self.reassembler.finish(&mut self.http);
        self.http.finish();
        self.http.sink_mut().analyzer.finish();
        self.http.sink_mut().findings.json.flush();
    }

    /// The analysis stage (learned cookie names, counters).
    pub fn analyzer(&self) -> &sessionwatch_sessions::Analyzer {
        &self.http.sink().analyzer
    }

    /// Enriches live connections with their Kubernetes pod
    /// (`[kubernetes]`): pod name and namespace in findings, the pod's
    /// `app.kubernetes.io/name` label as service.
    pub fn set_pods(&mut self, pods: crate::capture::kubernetes::PodCache) {
        self.http.sink_mut().pods = Some(pods);
    }

    /// Copies the stage counters into the metrics.
    pub fn sync_metrics(&self, m: &mut Metrics) {
        if let Some(pods) = &self.http.sink().pods {
            m.sync_kubernetes(&pods.stats());
        }
        let stats = self.http.sink().analyzer.stats();
        for (service, protocol, tls, n) in stats.exchanges() {
            let tls = if tls { "true" } else { "false" };
            let c = m.http_exchanges.clone();
            m.apply_cumulative("http_exchanges", &c, &[service, protocol, tls], n);
        }
        let mut learned: std::collections::BTreeMap<&str, i64> = Default::default();
        for (service, _) in self.http.sink().analyzer.learned_cookies() {
            *learned.entry(service).or_default() += 1;
        }
        for (service, n) in learned {
            m.session_cookies_learned
                .with_label_values(&[service])
                .set(n);
        }
        for (service, n) in stats.sessions_tracked() {
            m.sessions_tracked
                .with_label_values(&[service])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        for reason in EvictReason::ALL {
            let c = m.sessions_evicted.clone();
            m.apply_cumulative(
                "sessions_evicted",
                &c,
                &[reason.as_str()],
                stats.evicted(reason),
            );
        }
        m.session_ages = stats
            .services
            .iter()
            .filter(|s| s.session_ages.count > 0)
            .map(|s| AgeSnapshot {
                service: s.name.clone(),
                buckets: s.session_ages.cumulative().collect(),
                sum: s.session_ages.sum,
                count: s.session_ages.count,
            })
            .collect();
        m.idle_gaps = stats
            .services
            .iter()
            .filter(|s| s.idle_gaps.count > 0)
            .map(|s| AgeSnapshot {
                service: s.name.clone(),
                buckets: s.idle_gaps.cumulative().collect(),
                sum: s.idle_gaps.sum,
                count: s.idle_gaps.count,
            })
            .collect();
        let cookies = &stats.cookies;
        let c = m.session_cookies.clone();
        m.apply_cumulative("session_cookies", &c, &[], cookies.session_set_cookies);
        let c = m.session_cookies_compliant.clone();
        for (attribute, n) in [
            ("secure", cookies.secure),
            ("httponly", cookies.http_only),
            ("samesite", cookies.same_site_strict_or_lax),
            ("all", cookies.compliant),
        ] {
            m.apply_cumulative("session_cookies_compliant", &c, &[attribute], n);
        }
        let c = m.parse_errors.clone();
        for ((protocol, kind), n) in &self.http.stats().parse_errors {
            m.apply_cumulative("parse_errors", &c, &[protocol, kind], *n);
        }
        // Cookie input the analysis skipped or capped (bounded work per
        // message; values no browser or server accepts) is counted under
        // protocol "cookie", every kind from the first sync on.
        for (kind, n) in cookie_skips(&stats.input) {
            m.apply_cumulative("parse_errors", &c, &["cookie", kind], n);
        }
        // Bounded analysis tables that were full: every table from the
        // first sync on, so alerts on `> 0` have their series.
        let c = m.analysis_table_full.clone();
        for (table, n) in analysis_tables_full(&stats.input) {
            m.apply_cumulative("analysis_table_full", &c, &[table], n);
        }
        let c = m.parse_errors.clone();
        // Packet-level skips of replay (non-TCP frames, unsupported link
        // types…) are counted under protocol "capture".
        let rs = self.reassembler.stats();
        let mut skipped = self.totals.skipped.clone();
        for (reason, n) in rs.skipped.iter() {
            if n > 0 {
                *skipped.entry(reason.as_str()).or_default() += n;
            }
        }
        for (kind, n) in skipped {
            m.apply_cumulative("parse_errors", &c, &["capture", kind], n);
        }
        if rs.bytes_missing > 0 || rs.gaps > 0 {
            let lost = m.capture_lost.clone();
            m.apply_cumulative(
                "capture_lost",
                &lost,
                &["pcap", "gap_bytes"],
                rs.bytes_missing,
            );
        }
        if rs.packets > 0 {
            let ev = m.capture_events.clone();
            m.apply_cumulative("capture_events", &ev, &["pcap"], rs.packets);
        }
    }

    /// The run's figures for the summary table.
    pub fn summary(&self) -> Summary {
        let stage = self.http.sink();
        let stats = stage.analyzer.stats();
        let rs = self.reassembler.stats();
        let mut s = stage.findings.summary.clone();
        s.files = self.totals.files;
        s.packets = self.totals.packets.max(rs.packets);
        s.connections = rs.flows_opened.max(self.totals.connections);
        s.exchanges = stats.exchanges_total();
        s.sessions = stats.sessions_seen();
        s.bytes_missing = rs.bytes_missing.max(self.totals.bytes_missing);
        s.learned_cookies = stage
            .analyzer
            .learned_cookies()
            .map(|(service, l)| (service.to_owned(), l.name.clone()))
            .collect();
        for ((protocol, kind), n) in &self.http.stats().parse_errors {
            *s.parse_errors
                .entry((protocol.to_string(), kind.to_string()))
                .or_default() += n;
        }
        for (reason, n) in self.totals.skipped.iter() {
            *s.parse_errors
                .entry(("capture".into(), reason.to_string()))
                .or_default() += n;
        }
        for (reason, n) in rs.skipped.iter() {
            if n > 0 {
                *s.parse_errors
                    .entry(("capture".into(), reason.as_str().into()))
                    .or_default() += n;
            }
        }
        if self.totals.truncated_files > 0 {
            s.parse_errors.insert(
                ("capture".into(), "truncated_file".into()),
                self.totals.truncated_files,
            );
        }
        for (kind, n) in cookie_skips(&stats.input) {
            if n > 0 {
                s.parse_errors.insert(("cookie".into(), kind.into()), n);
            }
        }
        s.tables_full = analysis_tables_full(&stats.input)
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        s
    }
}

/// Cookie input the analysis skipped or capped, as `(kind, count)` of
/// `parse_errors_total{protocol="cookie"}`: pairs beyond the per-request
/// cap, `Set-Cookie`s beyond the per-response cap or malformed (control
/// characters, oversized), presented IDs beyond the per-request cap, and
/// session cookie values no server accepts (control characters).
fn cookie_skips(input: &sessionwatch_sessions::stats::InputStats) -> [(&'static str, u64); 5] {
    [
        ("pairs_capped", input.cookie_pairs_capped),
        ("set_cookies_capped", input.set_cookies_capped),
        ("set_cookie_invalid", input.set_cookies_invalid),
        ("presented_capped", input.presented_capped),
        ("id_invalid", input.ids_skipped),
    ]
}

/// Inputs the analysis handled with less detail because a bounded table
/// was full, as `(table, count)` of `analysis_table_full_total`, in the
/// order of [`crate::export::metrics::ANALYSIS_TABLES`].
fn analysis_tables_full(
    input: &sessionwatch_sessions::stats::InputStats,
) -> [(&'static str, u64); 4] {
    let [services, user_agents, suppression, detector_state] =
        crate::export::metrics::ANALYSIS_TABLES;
    [
        (services, input.services_overflow),
        (user_agents, input.user_agent_overflow),
        (suppression, input.suppression_turnovers),
        (detector_state, input.detector_untracked),
    ]
}

impl StreamSink for Pipeline {
    fn on_event(&mut self, event: StreamEvent<'_>) {
        // `[kubernetes]`: the pod goes into the connection's metadata once,
        // at open, so its exchanges share it.
        if let (StreamEvent::Open(meta), Some(pods)) = (&event, &self.http.sink().pods)
            && let Some(enriched) = pods.enrich_meta(meta)
        {
            self.http.on_event(StreamEvent::Open(&enriched));
            return;
        }
        self.http.on_event(event);
    }

    fn body_remaining(&mut self, conn: ConnectionId, dir: Direction) -> Option<u64> {
        self.http.body_remaining(conn, dir)
    }
}

/// Copies live-capture counters (read from the BPF maps) into the metrics.
pub fn sync_capture_metrics(handle: &StatsHandle, m: &mut Metrics) {
    let snap = handle.snapshot();
    let events = m.capture_events.clone();
    for (source, n) in snap.events.iter() {
        m.apply_cumulative("capture_events", &events, &[source.as_str()], n);
    }
    let truncated = m.capture_truncated.clone();
    for (source, n) in snap.truncated.iter() {
        m.apply_cumulative("capture_truncated", &truncated, &[source.as_str()], n);
    }
    let lost = m.capture_lost.clone();
    for (source, reason, n) in &snap.lost {
        m.apply_cumulative(
            "capture_lost",
            &lost,
            &[source.as_str(), reason.as_str()],
            *n,
        );
    }
    // Open/close records lost to a full ring: no payload bytes are lost
    // (connections are recovered from /proc), but the loss is exported.
    m.apply_cumulative(
        "capture_lost",
        &lost,
        &["control", "ringbuf_full"],
        snap.control_lost,
    );
    let skipped = m.capture_body_skipped.clone();
    m.apply_cumulative(
        "capture_body_skipped",
        &skipped,
        &[],
        snap.body_skipped_bytes,
    );
    m.attached_targets
        .set(i64::try_from(snap.attached_targets).unwrap_or(i64::MAX));
}

/// Adapter: locks the shared pipeline per event batch. The capture task is
/// the only writer; the admin endpoint only takes the lock to read stats.
struct SharedPipeline {
    pipeline: Arc<Mutex<Pipeline>>,
}

impl StreamSink for SharedPipeline {
    fn on_event(&mut self, event: StreamEvent<'_>) {
        match self.pipeline.lock() {
            Ok(mut p) => p.on_event(event),
            Err(poisoned) => poisoned.into_inner().on_event(event),
        }
    }

    fn body_remaining(&mut self, conn: ConnectionId, dir: Direction) -> Option<u64> {
        match self.pipeline.lock() {
            Ok(mut p) => p.body_remaining(conn, dir),
            Err(poisoned) => poisoned.into_inner().body_remaining(conn, dir),
        }
    }
}

/// Drives live capture into the pipeline until `shutdown` resolves, syncing
/// the analysis metrics once a second.
pub async fn run_live(
    capture: &mut LiveCapture,
    pipeline: Arc<Mutex<Pipeline>>,
    metrics: Arc<Mutex<Metrics>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), PipelineError> {
    let syncer = {
        let pipeline = pipeline.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (Ok(p), Ok(mut m)) = (pipeline.lock(), metrics.lock()) else {
                    continue;
                };
                p.sync_metrics(&mut m);
            }
        })
    };
    let mut sink = SharedPipeline { pipeline };
    let result = capture.run(&mut sink, shutdown).await;
    syncer.abort();
    result.map_err(PipelineError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::alerts::JsonLinesSink;

    #[test]
    fn every_analysis_table_series_exists_from_the_first_sync() {
        let metrics = Arc::new(Mutex::new(Metrics::new().expect("metrics")));
        let findings = FindingFanout {
            json: JsonLinesSink::from_writer(Box::new(std::io::sink())),
            alertmanager: None,
            metrics: metrics.clone(),
            summary: Summary::default(),
        };
        let pipeline = Pipeline::new(&Config::default(), findings).expect("pipeline");
        let mut m = metrics.lock().expect("metrics lock");
        pipeline.sync_metrics(&mut m);
        let text = m.render();
        for table in crate::export::metrics::ANALYSIS_TABLES {
            let series = format!("sessionwatch_analysis_table_full_total{{table=\"{table}\"}} 0");
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        assert!(pipeline.summary().tables_full.is_empty());
    }
}
