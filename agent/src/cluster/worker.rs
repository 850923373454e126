//! The Redis side: one task on a dedicated thread (its own single-threaded
//! Tokio runtime, so neither replay — which has no runtime — nor the live
//! pipeline's runtime is ever blocked by, or blocks, Redis I/O).
//!
//! The task connects (with backoff), then serves two bounded queues: state
//! changes, drained in batches and written as pipelines (one pipeline for
//! a standalone/Sentinel primary; one per session key, concurrently, on a
//! Cluster, because a pipeline must stay in one slot), and fetch requests,
//! answered with `HGETALL` of each session's key. A timeout or I/O error
//! drops the connection: `sessionwatch_cluster_up` goes to 0, the batch in
//! hand is counted as dropped, and the task reconnects with backoff while
//! the queues keep (and, when full, drop and count) new work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisError, RedisResult};
use sessionwatch_sessions::SessionHash;
use sessionwatch_sessions::shared::{Change, RemoteView};
use tokio::sync::mpsc;

use super::ClusterMetrics;
use super::codec::{self, Write};
use super::config::{self, ClusterConfig, RedisMode, redact_url};

/// Most changes written per batch.
const WRITE_BATCH: usize = 512;
/// Most fetches served concurrently per batch.
const FETCH_BATCH: usize = 64;
/// First reconnect delay.
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// Work for the task.
#[derive(Debug)]
pub(crate) enum Request {
    /// A state change of a session.
    Write(SessionHash, Change),
    /// Acknowledge once everything queued before it was written (or given
    /// up on).
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// The answer to a fetch.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The session.
    pub hash: SessionHash,
    /// What Redis holds (`None` when the fetch failed).
    pub view: Option<RemoteView>,
}

/// The task's state and queues.
pub(crate) struct Worker {
    pub cfg: ClusterConfig,
    /// From `password_file` (never logged).
    pub password: Option<String>,
    /// From the `tls_*_file` settings, read at start (never logged: the
    /// type's `Debug` redacts them).
    pub tls: Option<redis::TlsCertificates>,
    pub node: String,
    pub ttl_secs: i64,
    pub metrics: ClusterMetrics,
    pub up: Arc<AtomicBool>,
    pub tried: Arc<AtomicBool>,
    pub writes: mpsc::Receiver<Request>,
    pub fetches: mpsc::Receiver<SessionHash>,
    pub answers: std::sync::mpsc::Sender<Answer>,
}

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn pipe(&mut self, p: &redis::Pipeline) -> RedisResult<()> {
        match self {
            Conn::Single(c) => p.query_async::<()>(c).await,
            Conn::Cluster(c) => p.query_async::<()>(c).await,
        }
    }

    async fn hgetall(&mut self, key: &str) -> RedisResult<Vec<(String, String)>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(key);
        let map: std::collections::HashMap<String, String> = match self {
            Conn::Single(c) => cmd.query_async(c).await?,
            Conn::Cluster(c) => cmd.query_async(c).await?,
        };
        Ok(map.into_iter().collect())
    }
}

/// Why a round trip failed (the `kind` label).
fn error_kind(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        "io"
    } else {
        "response"
    }
}

/// Whether the connection must be rebuilt after this error.
fn is_fatal(e: &RedisError) -> bool {
    e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

fn no_url() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "cluster.redis_url is empty",
    ))
}

fn timeout_error() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "round trip timed out",
    ))
}

/// The CA and client certificate of `[cluster]` (`None` when no file is
/// set: the system store, no client certificate). Read once at start so a
/// bad file is a start-up error (`Err(key, reason)`), not a reconnect loop.
pub(crate) fn tls_certificates(
    cfg: &ClusterConfig,
) -> Result<Option<redis::TlsCertificates>, (&'static str, String)> {
    let root_cert = match &cfg.tls_ca_file {
        Some(p) => Some(
            config::read_pem("cluster.tls_ca_file", p, false)
                .map_err(|e| ("cluster.tls_ca_file", e))?,
        ),
        None => None,
    };
    let client_tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: config::read_pem("cluster.tls_cert_file", cert, false)
                .map_err(|e| ("cluster.tls_cert_file", e))?,
            client_key: config::read_pem("cluster.tls_key_file", key, true)
                .map_err(|e| ("cluster.tls_key_file", e))?,
        }),
        _ => None,
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

async fn connect(
    cfg: &ClusterConfig,
    password: Option<&str>,
    tls: Option<&redis::TlsCertificates>,
) -> RedisResult<Conn> {
    let mut urls = Vec::new();
    for u in cfg.urls() {
        let info = u.as_str().into_connection_info()?;
        urls.push(match password {
            Some(pw) => {
                let redis = info.redis_settings().clone().set_password(pw);
                info.set_redis_settings(redis)
            }
            None => info,
        });
    }
    let scheme_tls = cfg
        .urls()
        .first()
        .is_some_and(|u| u.starts_with("rediss://"));
    let conf = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout))
        .set_response_timeout(Some(cfg.command_timeout));
    match cfg.mode {
        RedisMode::Standalone => {
            let Some(info) = urls.into_iter().next() else {
                return Err(no_url());
            };
            let client = match tls {
                Some(certs) => redis::Client::build_with_tls(info, certs.clone())?,
                None => redis::Client::open(info)?,
            };
            Ok(Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&conf)
                    .await?,
            ))
        }
        RedisMode::Cluster => {
            let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.command_timeout);
            if let Some(certs) = tls {
                builder = builder.certs(certs.clone());
            }
            Ok(Conn::Cluster(
                builder.build()?.get_async_connection().await?,
            ))
        }
        RedisMode::Sentinel => {
            // The sentinels are asked for the primary of `sentinel_master`
            // on every (re)connect, so a failover is followed. The primary
            // is reached with the first URL's credentials and database, and
            // over TLS (with the same certificates) when the sentinels are.
            let Some(first) = urls.first() else {
                return Err(no_url());
            };
            let settings = first.redis_settings().clone();
            let mut builder = redis::sentinel::SentinelClientBuilder::new(
                urls.iter().map(|i| i.addr().clone()),
                cfg.sentinel_master.as_str(),
                redis::sentinel::SentinelServerType::Master,
            )?
            .set_client_to_redis_db(settings.db());
            if let Some(user) = settings.username() {
                builder = builder
                    .set_client_to_redis_username(user)
                    .set_client_to_sentinel_username(user);
            }
            if let Some(pw) = settings.password() {
                builder = builder
                    .set_client_to_redis_password(pw)
                    .set_client_to_sentinel_password(pw);
            }
            if scheme_tls {
                builder = builder
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                if let Some(certs) = tls {
                    builder = builder
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_certificates(certs.clone());
                }
            }
            let mut client = builder.build()?;
            Ok(Conn::Single(
                client.get_async_connection_with_config(&conf).await?,
            ))
        }
    }
}

impl Worker {
    /// Runs until the sending side is dropped.
    pub(crate) async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let attempt = tokio::time::timeout(
                self.cfg.connect_timeout * 2,
                connect(&self.cfg, self.password.as_deref(), self.tls.as_ref()),
            );
            let conn = match attempt.await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    self.down("connect");
                    tracing::warn!(url = %redact_url(&self.cfg.redis_url), error = %e, retry_in = ?backoff, "cluster: cannot connect to Redis");
                    if !self.wait(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                    continue;
                }
                Err(_) => {
                    self.down("connect");
                    tracing::warn!(url = %redact_url(&self.cfg.redis_url), retry_in = ?backoff, "cluster: connecting to Redis timed out");
                    if !self.wait(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.cfg.max_backoff);
                    continue;
                }
            };
            backoff = MIN_BACKOFF;
            self.up.store(true, Ordering::Release);
            self.tried.store(true, Ordering::Release);
            self.metrics.up.set(1);
            tracing::info!(url = %redact_url(&self.cfg.redis_url), mode = self.cfg.mode.as_str(), "cluster: connected to Redis");
            match self.serve(conn).await {
                Served::Closed => return,
                Served::Lost => {
                    tracing::warn!(
                        "cluster: lost the Redis connection; analysing with local state until it is back"
                    );
                }
            }
        }
    }

    fn down(&mut self, kind: &str) {
        self.up.store(false, Ordering::Release);
        self.tried.store(true, Ordering::Release);
        self.metrics.up.set(0);
        self.metrics.errors.with_label_values(&[kind]).inc();
    }

    /// Sleeps `d` without touching the queues: while disconnected they
    /// are the (bounded) backlog written after the reconnect; a flush waits
    /// at most its own timeout on the sending side. `false` when the
    /// sending side is gone.
    async fn wait(&mut self, d: Duration) -> bool {
        tokio::time::sleep(d).await;
        !self.writes.is_closed()
    }

    async fn serve(&mut self, mut conn: Conn) -> Served {
        loop {
            self.metrics
                .queue_depth
                .set(i64::try_from(self.writes.len()).unwrap_or(i64::MAX));
            tokio::select! {
                biased;
                req = self.writes.recv() => {
                    let Some(first) = req else { return Served::Closed };
                    let mut batch = vec![first];
                    while batch.len() < WRITE_BATCH {
                        match self.writes.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = self.write(&mut conn, batch).await
                        && is_fatal(&e)
                    {
                        self.down(error_kind(&e));
                        return Served::Lost;
                    }
                }
                h = self.fetches.recv() => {
                    let Some(first) = h else { return Served::Closed };
                    let mut batch = vec![first];
                    while batch.len() < FETCH_BATCH {
                        match self.fetches.try_recv() {
                            Ok(h) => batch.push(h),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = self.fetch(&conn, batch).await
                        && is_fatal(&e)
                    {
                        self.down(error_kind(&e));
                        return Served::Lost;
                    }
                }
            }
        }
    }

    /// Writes a batch; flush requests in it are acknowledged after the
    /// writes before them.
    async fn write(&mut self, conn: &mut Conn, batch: Vec<Request>) -> RedisResult<()> {
        let mut keys: BTreeMap<SessionHash, Vec<Write>> = BTreeMap::new();
        let mut acks = Vec::new();
        let mut n = 0u64;
        for r in batch {
            match r {
                Request::Write(h, c) => {
                    n += 1;
                    for (k, w) in codec::writes(h, &c, &self.node) {
                        keys.entry(k).or_default().push(w);
                    }
                }
                Request::Flush(ack) => acks.push(ack),
            }
        }
        let result = if keys.is_empty() {
            Ok(())
        } else {
            self.write_keys(conn, keys).await
        };
        if let Err(e) = &result {
            self.metrics
                .errors
                .with_label_values(&[error_kind(e)])
                .inc();
            self.metrics
                .dropped
                .with_label_values(&["write_failed"])
                .inc_by(n);
        }
        for a in acks {
            let _ = a.try_send(());
        }
        result
    }

    fn pipeline_for(&self, key: &str, writes: &[Write], p: &mut redis::Pipeline) {
        for w in writes {
            match w {
                Write::Set(f, v) => {
                    p.cmd("HSET").arg(key).arg(f).arg(v).ignore();
                    self.metrics.operations.with_label_values(&["hset"]).inc();
                }
                Write::SetNx(f, v) => {
                    p.cmd("HSETNX").arg(key).arg(f).arg(v).ignore();
                    self.metrics.operations.with_label_values(&["hsetnx"]).inc();
                }
            }
        }
        p.cmd("EXPIRE").arg(key).arg(self.ttl_secs).ignore();
        self.metrics.operations.with_label_values(&["expire"]).inc();
    }

    async fn write_keys(
        &self,
        conn: &mut Conn,
        keys: BTreeMap<SessionHash, Vec<Write>>,
    ) -> RedisResult<()> {
        let timeout = self.cfg.command_timeout;
        let started = Instant::now();
        match conn {
            Conn::Single(_) => {
                let mut p = redis::pipe();
                for (h, w) in &keys {
                    self.pipeline_for(&codec::key(&self.cfg.key_prefix, *h), w, &mut p);
                }
                tokio::time::timeout(timeout, conn.pipe(&p))
                    .await
                    .map_err(|_| timeout_error())??;
            }
            Conn::Cluster(_) => {
                // One pipeline per session key (one slot each), concurrently.
                let pipes: Vec<redis::Pipeline> = keys
                    .iter()
                    .map(|(h, w)| {
                        let mut p = redis::pipe();
                        self.pipeline_for(&codec::key(&self.cfg.key_prefix, *h), w, &mut p);
                        p
                    })
                    .collect();
                let runs = pipes.iter().map(|p| {
                    let mut c = conn.clone();
                    async move { c.pipe(p).await }
                });
                let results = tokio::time::timeout(timeout, futures_util::future::join_all(runs))
                    .await
                    .map_err(|_| timeout_error())?;
                for r in results {
                    r?;
                }
            }
        }
        self.metrics
            .roundtrip
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Fetches a batch concurrently; every request gets an answer (`None`
    /// on failure) so the analysis never waits for one that will not come.
    async fn fetch(&self, conn: &Conn, batch: Vec<SessionHash>) -> RedisResult<()> {
        let timeout = self.cfg.command_timeout;
        let runs = batch.iter().map(|h| {
            let mut c = conn.clone();
            let key = codec::key(&self.cfg.key_prefix, *h);
            async move {
                let started = Instant::now();
                let r = tokio::time::timeout(timeout, c.hgetall(&key))
                    .await
                    .map_err(|_| timeout_error())
                    .and_then(|r| r);
                (r, started.elapsed())
            }
        });
        self.metrics
            .operations
            .with_label_values(&["hgetall"])
            .inc_by(batch.len() as u64);
        let results = futures_util::future::join_all(runs).await;
        let mut first_err = None;
        for (h, (r, took)) in batch.iter().zip(results) {
            let view = match r {
                Ok(fields) => {
                    self.metrics.roundtrip.observe(took.as_secs_f64());
                    let (v, bad) =
                        codec::decode(fields.iter().map(|(a, b)| (a.as_str(), b.as_str())));
                    if bad > 0 {
                        self.metrics
                            .errors
                            .with_label_values(&["malformed"])
                            .inc_by(bad);
                    }
                    Some(v)
                }
                Err(e) => {
                    self.metrics
                        .errors
                        .with_label_values(&[error_kind(&e)])
                        .inc();
                    first_err.get_or_insert(e);
                    None
                }
            };
            let _ = self.answers.send(Answer { hash: *h, view });
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// How [`Worker::serve`] ended.
enum Served {
    /// The sending side is gone: stop.
    Closed,
    /// The connection failed: reconnect.
    Lost,
}
