//! Cross-node correlation: agents share session sightings through Redis,
//! so a hijack whose two halves reach proxy replicas on different nodes is
//! still caught (see docs/cluster.md).
//!
//! [`ClusterSightings`] is the analyzer's synchronous
//! [`SharedSightings`]: `publish` puts a state change in a bounded queue
//! (drops counted), `lookup` answers from a bounded local cache and asks
//! the worker ([`worker`]) to fetch missing or stale entries — waiting for
//! the answer at most `lookup_timeout`, and never while Redis is down. The
//! worker runs on its own thread and runtime; nothing in the pipeline waits
//! on the network except that bounded first-sight lookup.

pub mod codec;
pub mod config;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use sessionwatch_sessions::SessionHash;
use sessionwatch_sessions::shared::{Change, RemoteView, SharedSightings};
use sessionwatch_streams::Timestamp;
use tokio::sync::mpsc;

pub use config::{ClusterConfig, RedisMode};
use worker::{Answer, Request, Worker};

/// Errors starting cross-node correlation.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `[cluster] enabled` without `[sessions] hash_key_file`: agents with
    /// random keys would never match one another's session hashes.
    #[error(
        "cluster.enabled requires sessions.hash_key_file: every agent must hash session IDs with the same key"
    )]
    NoHashKey,
    /// A `[cluster]` value is invalid.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The cluster metrics could not be registered.
    #[error("cluster metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The worker thread or its runtime could not be started.
    #[error("cluster worker: {0}")]
    Worker(#[from] std::io::Error),
}

/// `sessionwatch_cluster_*` metrics, updated by the worker and the
/// analysis side directly (lock-free Prometheus handles).
#[derive(Clone)]
pub struct ClusterMetrics {
    /// `sessionwatch_cluster_up`: 1 while connected to Redis.
    pub up: IntGauge,
    /// `sessionwatch_cluster_operations_total{op}`: Redis commands sent
    /// (`hset`, `hsetnx`, `expire`, `hgetall`).
    pub operations: IntCounterVec,
    /// `sessionwatch_cluster_errors_total{kind}`: `connect`, `io`,
    /// `timeout`, `response`, `malformed` (fields skipped when decoding),
    /// `lookup_timeout` (an answer came after `lookup_timeout`).
    pub errors: IntCounterVec,
    /// `sessionwatch_cluster_queue_depth`: state changes waiting.
    pub queue_depth: IntGauge,
    /// `sessionwatch_cluster_dropped_total{reason}`: `queue_full`,
    /// `fetch_queue_full`, `write_failed` (batch lost with the connection).
    pub dropped: IntCounterVec,
    /// `sessionwatch_cluster_lookups_total{result}`: `cached`, `fetched`
    /// (a fetch was requested), `skipped_down` (Redis down: local state only).
    pub lookups: IntCounterVec,
    /// `sessionwatch_cluster_roundtrip_seconds`: one pipeline or fetch.
    pub roundtrip: Histogram,
}

impl ClusterMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<ClusterMetrics, prometheus::Error> {
        let ns = "sessionwatch";
        let counter = |name: &str, help: &str, label: &str, values: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help).namespace(ns), &[label])?;
            for v in values {
                c.with_label_values(&[*v]);
            }
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let up = IntGauge::with_opts(
            Opts::new(
                "cluster_up",
                "1 while the agent is connected to the shared Redis.",
            )
            .namespace(ns),
        )?;
        registry.register(Box::new(up.clone()))?;
        let queue_depth = IntGauge::with_opts(
            Opts::new(
                "cluster_queue_depth",
                "Session state changes waiting to be written to Redis.",
            )
            .namespace(ns),
        )?;
        registry.register(Box::new(queue_depth.clone()))?;
        let roundtrip = Histogram::with_opts(
            HistogramOpts::new(
                "cluster_roundtrip_seconds",
                "Round-trip time of one Redis pipeline or fetch.",
            )
            .namespace(ns)
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        registry.register(Box::new(roundtrip.clone()))?;
        Ok(ClusterMetrics {
            up,
            operations: counter(
                "cluster_operations_total",
                "Redis commands sent for cross-node correlation, by command.",
                "op",
                &["hset", "hsetnx", "expire", "hgetall"],
            )?,
            errors: counter(
                "cluster_errors_total",
                "Cross-node correlation errors, by kind.",
                "kind",
                &[
                    "connect",
                    "io",
                    "timeout",
                    "response",
                    "malformed",
                    "lookup_timeout",
                ],
            )?,
            queue_depth,
            dropped: counter(
                "cluster_dropped_total",
                "Session state changes or fetches not sent to Redis, by reason.",
                "reason",
                &["queue_full", "fetch_queue_full", "write_failed"],
            )?,
            lookups: counter(
                "cluster_lookups_total",
                "Remote-view lookups of presented session IDs, by result.",
                "result",
                &["cached", "fetched", "skipped_down"],
            )?,
            roundtrip,
        })
    }
}

/// One cached remote view.
struct Entry {
    view: Option<Arc<RemoteView>>,
    /// Event time of the fetch request.
    fetched: Timestamp,
}

/// Most fetches waiting for the worker.
const FETCH_QUEUE: usize = 4096;

/// The analyzer's handle on the shared store.
pub struct ClusterSightings {
    writes: mpsc::Sender<Request>,
    fetches: mpsc::Sender<SessionHash>,
    answers: std::sync::mpsc::Receiver<Answer>,
    up: Arc<AtomicBool>,
    /// Set by the worker once its first connection attempt ended.
    tried: Arc<AtomicBool>,
    /// Start plus `lookup_timeout`: until then a lookup also waits through
    /// a failed first attempt for the retry (a Sentinel still settling
    /// after a failover, Redis still starting beside the agent).
    startup_grace_until: Instant,
    metrics: ClusterMetrics,
    /// `lookups{result="cached"}`, resolved once (hot path: every accepted
    /// request of a known session).
    lookups_cached: prometheus::IntCounter,
    cache: HashMap<SessionHash, Entry>,
    /// Insertion order of `cache` (oldest first) for bounded eviction.
    order: VecDeque<SessionHash>,
    cache_size: usize,
    cache_ttl: Duration,
    lookup_timeout: Duration,
    flush_timeout: Duration,
}

impl std::fmt::Debug for ClusterSightings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSightings")
            .field("cached", &self.cache.len())
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Starts the worker thread and returns the analyzer's handle. `node` names
/// this agent in what it writes; `ttl` is the expiry of every key written
/// (the session table's TTL). Fails only on configuration or resource
/// errors: an unreachable Redis is retried in the background.
pub fn start(
    cfg: &ClusterConfig,
    node: String,
    ttl: Duration,
    registry: &Registry,
) -> Result<ClusterSightings, ClusterError> {
    cfg.validate()
        .map_err(|(key, reason)| ClusterError::Invalid { key, reason })?;
    if cfg.urls().iter().any(|u| u.starts_with("rediss://")) {
        // rustls picks its process-wide provider here (ring, the only one
        // compiled in); an already installed one is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let password = match &cfg.password_file {
        Some(p) => Some(
            config::read_password(p).map_err(|reason| ClusterError::Invalid {
                key: "cluster.password_file",
                reason,
            })?,
        ),
        None => None,
    };
    let tls = worker::tls_certificates(cfg)
        .map_err(|(key, reason)| ClusterError::Invalid { key, reason })?;
    let metrics = ClusterMetrics::register(registry)?;
    let (wtx, wrx) = mpsc::channel(cfg.queue_size);
    let (ftx, frx) = mpsc::channel(FETCH_QUEUE);
    let (atx, arx) = std::sync::mpsc::channel();
    let up = Arc::new(AtomicBool::new(false));
    let tried = Arc::new(AtomicBool::new(false));
    let worker = Worker {
        cfg: cfg.clone(),
        password,
        tls,
        node,
        ttl_secs: i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX),
        metrics: metrics.clone(),
        up: up.clone(),
        tried: tried.clone(),
        writes: wrx,
        fetches: frx,
        answers: atx,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sessionwatch-cluster".into())
        .spawn(move || runtime.block_on(worker.run()))?;
    Ok(ClusterSightings {
        writes: wtx,
        fetches: ftx,
        answers: arx,
        up,
        tried,
        startup_grace_until: Instant::now() + cfg.lookup_timeout,
        lookups_cached: metrics.lookups.with_label_values(&["cached"]),
        metrics,
        cache: HashMap::new(),
        order: VecDeque::new(),
        cache_size: cfg.cache_size,
        cache_ttl: cfg.cache_ttl,
        lookup_timeout: cfg.lookup_timeout,
        flush_timeout: cfg.command_timeout * 4 + cfg.connect_timeout,
    })
}

impl ClusterSightings {
    /// Whether the worker is connected.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether the first connection attempt has ended (either way).
    fn first_connect_done(&self) -> bool {
        self.tried.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for the first connection (tests, benchmarks).
    pub fn wait_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_up() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    fn store(&mut self, a: Answer, now: Timestamp) {
        let Some(view) = a.view else { return };
        let view = (!view.is_empty()).then(|| Arc::new(view));
        match self.cache.get_mut(&a.hash) {
            Some(e) => e.view = view,
            None => {
                self.insert(a.hash, Entry { view, fetched: now });
            }
        }
    }

    fn insert(&mut self, h: SessionHash, e: Entry) {
        while self.cache.len() >= self.cache_size {
            match self.order.pop_front() {
                Some(old) => {
                    self.cache.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(h);
        self.cache.insert(h, e);
        // `order` can hold hashes already evicted and re-inserted; keep it
        // bounded too.
        if self.order.len() > self.cache_size * 2 {
            let cache = &self.cache;
            self.order.retain(|h| cache.contains_key(h));
        }
    }

    fn drain(&mut self, now: Timestamp) {
        while let Ok(a) = self.answers.try_recv() {
            self.store(a, now);
        }
    }
}

impl SharedSightings for ClusterSightings {
    fn publish(&mut self, hash: SessionHash, change: Change) {
        match self.writes.try_send(Request::Write(hash, change)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics
                    .dropped
                    .with_label_values(&["queue_full"])
                    .inc();
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics
                    .dropped
                    .with_label_values(&["write_failed"])
                    .inc();
            }
        }
        let depth = self.writes.max_capacity() - self.writes.capacity();
        self.metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    fn lookup(&mut self, hash: SessionHash, now: Timestamp) -> Option<Arc<RemoteView>> {
        self.drain(now);
        if let Some(e) = self.cache.get(&hash)
            && now.saturating_since(e.fetched) < self.cache_ttl
        {
            self.lookups_cached.inc();
            return e.view.clone();
        }
        if !self.is_up() {
            // Just started: the first connection attempt is under way, or
            // it failed and its retry comes within the grace. Wait for it
            // like for an answer (bounded by lookup_timeout), so the first
            // sessions of a run are not judged on local state alone.
            let now = Instant::now();
            if !self.first_connect_done() {
                self.wait_up(self.lookup_timeout);
            } else if now < self.startup_grace_until {
                self.wait_up(self.startup_grace_until - now);
            }
        }
        if !self.is_up() {
            self.metrics
                .lookups
                .with_label_values(&["skipped_down"])
                .inc();
            return self.cache.get(&hash).and_then(|e| e.view.clone());
        }
        // Missing or stale: fetch. The entry is stamped now, so a fetch is
        // requested at most once per cache TTL however busy the session.
        match self.cache.get_mut(&hash) {
            Some(e) => e.fetched = now,
            None => self.insert(
                hash,
                Entry {
                    view: None,
                    fetched: now,
                },
            ),
        }
        if self.fetches.try_send(hash).is_err() {
            self.metrics
                .dropped
                .with_label_values(&["fetch_queue_full"])
                .inc();
            return self.cache.get(&hash).and_then(|e| e.view.clone());
        }
        self.metrics.lookups.with_label_values(&["fetched"]).inc();
        if !self.lookup_timeout.is_zero() {
            let deadline = Instant::now() + self.lookup_timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.answers.recv_timeout(left) {
                    Ok(a) => {
                        let done = a.hash == hash;
                        self.store(a, now);
                        if done {
                            break;
                        }
                    }
                    Err(_) => {
                        self.metrics
                            .errors
                            .with_label_values(&["lookup_timeout"])
                            .inc();
                        break;
                    }
                }
            }
        }
        self.cache.get(&hash).and_then(|e| e.view.clone())
    }

    fn flush(&mut self) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let deadline = Instant::now() + self.flush_timeout;
        let mut req = Request::Flush(tx);
        loop {
            match self.writes.try_send(req) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(r)) if Instant::now() < deadline => {
                    req = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        if rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_err()
        {
            tracing::warn!(
                queued = self.writes.max_capacity() - self.writes.capacity(),
                "cluster: not every session change reached Redis before the timeout"
            );
        }
    }
}
