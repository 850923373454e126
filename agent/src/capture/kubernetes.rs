//! Kubernetes enrichment (`[kubernetes]`, cargo feature `kubernetes`): which
//! pod a captured process's container belongs to.
//!
//! The cgroup path already names the container (see [`super::container`]);
//! the pod it belongs to is only known to the API server. The agent lists
//! the pods scheduled on its own node (`fieldSelector=spec.nodeName=<node>`,
//! so each agent holds at most that node's `maxPods` pods), then watches that
//! list from the returned `resourceVersion`, and relists every
//! `resync_interval` (or at once when the watch reports `410 Gone`). Each pod
//! is indexed by its UID (the kubelet names the pod's cgroup after it) and by
//! every container id in `status.containerStatuses`,
//! `initContainerStatuses` and `ephemeralContainerStatuses`
//! (`containerd://<64 hex>`, `cri-o://…`, `docker://…`). Every relist
//! builds a new client, re-reading the token and CA files, so the kubelet's
//! token rotation is followed.
//!
//! The sync runs on its own thread with its own single-threaded runtime, so
//! the API server's latency never reaches capture or analysis. Readers take
//! the index's read lock with `try_read`: a lookup that would wait while
//! the sync swaps in a new list is skipped and retried on the next
//! exchange. API errors are counted, logged on the transition to "down",
//! and retried with a backoff; the agent keeps running without enrichment
//! meanwhile and picks it up again as soon as a list succeeds.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use sessionwatch_http::Exchange;
use sessionwatch_streams::ConnectionMeta;
pub use sessionwatch_streams::PodInfo;

use super::container::{ContainerRef, is_id};
use crate::config::KubernetesConfig;

/// Label whose value names the service (the Kubernetes recommended label
/// for the application's name).
pub const APP_LABEL: &str = "app.kubernetes.io/name";

/// Container ids indexed per pod at most (a pod with more containers is
/// unusual; the rest are not indexed, the pod still is by UID).
pub const MAX_CONTAINERS_PER_POD: usize = 64;

/// Longest pod name (a DNS subdomain), namespace and label value kept.
const MAX_NAME_LEN: usize = 253;
const MAX_NAMESPACE_LEN: usize = 63;
const MAX_LABEL_LEN: usize = 63;

/// Errors starting the pod sync. API errors after the start are not
/// errors of the agent: they are counted and retried.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// `[kubernetes] enabled = true` in a binary built without the feature.
    #[error(
        "kubernetes.enabled: this binary was built without the `kubernetes` cargo feature \
         (rebuild with `--features kubernetes`)"
    )]
    NotCompiled,
    /// No `api_server` configured and the in-cluster variables are unset.
    #[error(
        "kubernetes.api_server is unset and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT \
         are not in the environment (not running in a pod?)"
    )]
    NoApiServer,
    /// The API server URL does not parse.
    #[error("kubernetes.api_server {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// The parser's message.
        reason: String,
    },
    /// The sync thread could not be spawned.
    #[error("kubernetes: cannot start the pod sync thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// The container id of a `containerStatuses[].containerID`
/// (`<runtime>://<id>`), when it is the 64-hex-digit form the cgroup path
/// carries; `None` for an empty id (container not started yet) or another
/// format.
pub fn parse_container_id(s: &str) -> Option<&str> {
    let (scheme, id) = s.split_once("://")?;
    (!scheme.is_empty() && is_id(id)).then_some(id)
}

fn bounded(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// One pod as the index takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRecord {
    /// `metadata.uid`.
    pub uid: String,
    /// Name, namespace and app label.
    pub info: PodInfo,
    /// Container ids (64 hex digits) of its containers.
    pub container_ids: Vec<String>,
}

impl PodRecord {
    /// A record from raw fields: strings bounded, container ids parsed
    /// from their `<runtime>://<id>` form (others skipped).
    pub fn new<'a>(
        uid: String,
        name: String,
        namespace: String,
        app: Option<String>,
        container_ids: impl IntoIterator<Item = &'a str>,
    ) -> PodRecord {
        let mut ids: Vec<String> = Vec::new();
        for id in container_ids.into_iter().filter_map(parse_container_id) {
            if ids.len() >= MAX_CONTAINERS_PER_POD {
                break;
            }
            if !ids.iter().any(|i| i == id) {
                ids.push(id.to_owned());
            }
        }
        PodRecord {
            uid: bounded(uid, 64),
            info: PodInfo {
                name: bounded(name, MAX_NAME_LEN),
                namespace: bounded(namespace, MAX_NAMESPACE_LEN),
                app: app
                    .filter(|a| !a.is_empty())
                    .map(|a| bounded(a, MAX_LABEL_LEN)),
            },
            container_ids: ids,
        }
    }
}

#[derive(Debug)]
struct IndexedPod {
    info: Arc<PodInfo>,
    containers: Vec<String>,
}

/// Pods by UID and by container id, at most `max_pods` of them.
#[derive(Debug)]
pub struct PodIndex {
    pods: HashMap<String, IndexedPod>,
    by_container: HashMap<String, Arc<PodInfo>>,
    max_pods: usize,
    /// Pods not indexed because the index was full (cumulative).
    skipped: u64,
}

impl PodIndex {
    /// An empty index holding at most `max_pods` pods.
    pub fn new(max_pods: usize) -> PodIndex {
        PodIndex {
            pods: HashMap::new(),
            by_container: HashMap::new(),
            max_pods: max_pods.max(1),
            skipped: 0,
        }
    }

    /// Adds or replaces a pod (watch `ADDED`/`MODIFIED`). `false` when the
    /// index is full and the pod is new (counted in [`PodIndex::skipped`]).
    pub fn upsert(&mut self, rec: PodRecord) -> bool {
        let info = match self.pods.remove(&rec.uid) {
            Some(old) => {
                for c in &old.containers {
                    self.by_container.remove(c);
                }
                // Keep the shared allocation when nothing changed (status
                // updates are the common `MODIFIED`).
                if *old.info == rec.info {
                    old.info
                } else {
                    Arc::new(rec.info)
                }
            }
            None if self.pods.len() >= self.max_pods => {
                self.skipped += 1;
                return false;
            }
            None => Arc::new(rec.info),
        };
        for c in &rec.container_ids {
            self.by_container.insert(c.clone(), info.clone());
        }
        self.pods.insert(
            rec.uid,
            IndexedPod {
                info,
                containers: rec.container_ids,
            },
        );
        true
    }

    /// Removes a pod (watch `DELETED`).
    pub fn remove(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for c in &old.containers {
                self.by_container.remove(c);
            }
        }
    }

    /// The pod of a container id.
    pub fn by_container(&self, id: &str) -> Option<&Arc<PodInfo>> {
        self.by_container.get(id)
    }

    /// The pod with a UID.
    pub fn by_uid(&self, uid: &str) -> Option<&Arc<PodInfo>> {
        self.pods.get(uid).map(|p| &p.info)
    }

    /// Pods indexed.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is indexed.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Container ids indexed.
    pub fn containers(&self) -> usize {
        self.by_container.len()
    }

    /// Pods not indexed because the index was full, since it was made.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Pod-sync counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodCacheStats {
    /// The last list (or the watch after it) succeeded.
    pub up: bool,
    /// Pods in the cache.
    pub pods: u64,
    /// Container ids in the cache.
    pub containers: u64,
    /// Successful full lists.
    pub lists: u64,
    /// Failed list or watch requests (connection, TLS, HTTP status,
    /// decoding, timeout).
    pub sync_errors: u64,
    /// Pods not cached because `max_pods` was reached.
    pub pods_skipped: u64,
}

#[derive(Debug)]
struct Shared {
    index: RwLock<PodIndex>,
    up: AtomicBool,
    lists: AtomicU64,
    sync_errors: AtomicU64,
    /// Skips of indexes replaced by a relist.
    skipped_before: AtomicU64,
}

/// Read side of the pod cache; cheap to clone.
#[derive(Debug, Clone)]
pub struct PodCache {
    shared: Arc<Shared>,
}

impl PodCache {
    /// An empty cache holding at most `max_pods` pods (filled by
    /// [`PodSync`], or by hand in tests).
    pub fn new(max_pods: usize) -> PodCache {
        PodCache {
            shared: Arc::new(Shared {
                index: RwLock::new(PodIndex::new(max_pods)),
                up: AtomicBool::new(false),
                lists: AtomicU64::new(0),
                sync_errors: AtomicU64::new(0),
                skipped_before: AtomicU64::new(0),
            }),
        }
    }

    /// The pod of a container id. Never waits: `None` while the sync holds
    /// the write lock (a few microseconds per list or event).
    pub fn lookup(&self, container_id: &str) -> Option<Arc<PodInfo>> {
        let index = self.shared.index.try_read().ok()?;
        index.by_container(container_id).cloned()
    }

    /// The pod of a container: by container id, else by the pod UID of its
    /// cgroup path (a container the kubelet has not reported yet).
    pub fn lookup_container(&self, c: &ContainerRef) -> Option<Arc<PodInfo>> {
        let index = self.shared.index.try_read().ok()?;
        index
            .by_container(&c.id)
            .or_else(|| c.pod_uid.as_deref().and_then(|u| index.by_uid(u)))
            .cloned()
    }

    /// A copy of `meta` with its process's pod filled in, when the process
    /// runs in a container this cache knows and has no pod yet; `None`
    /// otherwise (nothing to do, no allocation).
    pub fn enrich_meta(&self, meta: &ConnectionMeta) -> Option<ConnectionMeta> {
        let p = meta.process.as_ref()?;
        if p.pod.is_some() {
            return None;
        }
        let pod = self.lookup(p.container_id.as_deref()?)?;
        let mut meta = meta.clone();
        if let Some(p) = meta.process.as_mut() {
            p.pod = Some(pod);
        }
        Some(meta)
    }

    /// Fills in the pod of an exchange whose connection was opened before
    /// the cache knew its container (the connection's metadata is copied
    /// only then; enriched connections cost one failed `is_none`).
    pub fn enrich_exchange(&self, ex: &mut Exchange) {
        if let Some(enriched) = self.enrich_meta(&ex.conn) {
            ex.conn = Arc::new(enriched);
        }
    }

    /// Replaces the whole index (a full list). The new index is built
    /// before the write lock is taken.
    pub fn replace(&self, records: impl IntoIterator<Item = PodRecord>) {
        let max = self.with_index(|i| i.max_pods).unwrap_or(1);
        let mut fresh = PodIndex::new(max);
        for r in records {
            fresh.upsert(r);
        }
        if let Ok(mut index) = self.shared.index.write() {
            self.shared
                .skipped_before
                .fetch_add(index.skipped, Ordering::Relaxed);
            *index = fresh;
        }
        self.shared.lists.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies one watch event's pod.
    pub fn upsert(&self, rec: PodRecord) {
        if let Ok(mut index) = self.shared.index.write() {
            index.upsert(rec);
        }
    }

    /// Applies one watch `DELETED`.
    pub fn remove(&self, uid: &str) {
        if let Ok(mut index) = self.shared.index.write() {
            index.remove(uid);
        }
    }

    fn with_index<T>(&self, f: impl FnOnce(&PodIndex) -> T) -> Option<T> {
        self.shared.index.read().ok().map(|i| f(&i))
    }

    /// Marks the API reachable or not.
    pub fn set_up(&self, up: bool) {
        self.shared.up.store(up, Ordering::Relaxed);
    }

    /// Counts a failed request.
    pub fn count_error(&self) {
        self.shared.sync_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether at least one list succeeded.
    pub fn synced(&self) -> bool {
        self.shared.lists.load(Ordering::Relaxed) > 0
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> PodCacheStats {
        let (pods, containers, skipped) = self
            .with_index(|i| (i.len() as u64, i.containers() as u64, i.skipped()))
            .unwrap_or_default();
        PodCacheStats {
            up: self.shared.up.load(Ordering::Relaxed),
            pods,
            containers,
            lists: self.shared.lists.load(Ordering::Relaxed),
            sync_errors: self.shared.sync_errors.load(Ordering::Relaxed),
            pods_skipped: self.shared.skipped_before.load(Ordering::Relaxed) + skipped,
        }
    }
}

/// The API server URL: `api_server`, else in-cluster from
/// `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` (what client-go
/// does; the host is an IP, IPv6 in brackets).
pub fn api_server_url(cfg: &KubernetesConfig) -> Result<String, KubernetesError> {
    if let Some(url) = cfg.api_server.as_ref().filter(|u| !u.is_empty()) {
        return Ok(url.clone());
    }
    let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
    if host.is_empty() || port.is_empty() {
        return Err(KubernetesError::NoApiServer);
    }
    Ok(if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    })
}

/// The running pod sync: a thread listing and watching this node's pods
/// into a [`PodCache`]. Dropping it stops the thread.
#[derive(Debug)]
pub struct PodSync {
    cache: PodCache,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodSync {
    /// Starts listing the pods of `node`. Fails only on configuration
    /// problems (feature missing, no API server URL); an unreachable API
    /// server is retried in the background.
    pub fn start(cfg: &KubernetesConfig, node: &str) -> Result<PodSync, KubernetesError> {
        #[cfg(feature = "kubernetes")]
        {
            sync::start(cfg, node)
        }
        #[cfg(not(feature = "kubernetes"))]
        {
            let _ = (cfg, node);
            Err(KubernetesError::NotCompiled)
        }
    }

    /// The cache this sync fills.
    pub fn cache(&self) -> PodCache {
        self.cache.clone()
    }

    /// Waits until the first list succeeded or `timeout` passed (for
    /// one-shot commands such as `targets`); whether it succeeded.
    pub fn wait_synced(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while !self.cache.synced() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }

    /// Stops the thread and waits for it.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PodSync {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

#[cfg(feature = "kubernetes")]
mod sync {
    //! The list/watch loop (kube-rs).

    use std::time::{Duration, Instant};

    use futures_util::StreamExt as _;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, WatchEvent, WatchParams};
    use tokio::sync::watch;

    use super::{KubernetesError, PodCache, PodRecord, PodSync, api_server_url};
    use crate::config::KubernetesConfig;

    /// Longest server-side watch (the API server caps `timeoutSeconds`
    /// at its `--min-request-timeout` jitter; client-go uses 5–10 min).
    const MAX_WATCH_SECS: u64 = 290;
    /// Shortest spacing of two watch requests, so a server that ends
    /// watches at once is not hammered.
    const MIN_WATCH_SPACING: Duration = Duration::from_secs(1);
    /// Retry backoff after a failed list: doubles from 1 s up to this.
    const MAX_BACKOFF: Duration = Duration::from_secs(30);

    /// The index record of an API pod; `None` without UID or name.
    pub(super) fn record(pod: &Pod) -> Option<PodRecord> {
        let m = &pod.metadata;
        let uid = m.uid.clone()?;
        let name = m.name.clone()?;
        let namespace = m.namespace.clone().unwrap_or_else(|| "default".into());
        let app = m
            .labels
            .as_ref()
            .and_then(|l| l.get(super::APP_LABEL))
            .cloned();
        let status = pod.status.as_ref();
        let ids = status
            .into_iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
                    .chain(s.ephemeral_container_statuses.iter().flatten())
            })
            .filter_map(|c| c.container_id.as_deref());
        Some(PodRecord::new(uid, name, namespace, app, ids))
    }

    pub(super) fn start(cfg: &KubernetesConfig, node: &str) -> Result<PodSync, KubernetesError> {
        let url = api_server_url(cfg)?;
        let uri = url
            .parse::<hyper::Uri>()
            .map_err(|e| KubernetesError::BadUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let mut kc = kube::Config::new(uri);
        kc.root_cert_file = Some(cfg.ca_file.clone());
        kc.connect_timeout = Some(cfg.request_timeout);
        // Watches are long-lived reads: no read timeout on the connection;
        // lists are bounded by `request_timeout` around the call.
        kc.read_timeout = None;
        let cache = PodCache::new(cfg.max_pods);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = Task {
            config: kc,
            token_file: cfg.token_file.clone(),
            ca_file: cfg.ca_file.clone(),
            selector: format!("spec.nodeName={node}"),
            cache: cache.clone(),
            resync: cfg.resync_interval,
            timeout: cfg.request_timeout,
            stop: stop_rx,
        };
        let thread = std::thread::Builder::new()
            .name("sw-kubernetes".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "kubernetes: cannot start the sync runtime; no pod enrichment");
                        return;
                    }
                };
                rt.block_on(task.run());
            })
            .map_err(KubernetesError::Spawn)?;
        tracing::info!(api_server = %url, node, "kubernetes: pod enrichment on");
        Ok(PodSync {
            cache,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    struct Task {
        config: kube::Config,
        token_file: std::path::PathBuf,
        ca_file: std::path::PathBuf,
        selector: String,
        cache: PodCache,
        resync: Duration,
        timeout: Duration,
        stop: watch::Receiver<bool>,
    }

    /// Why a watch ended.
    enum WatchEnd {
        /// Time for a full relist (resync due, or `410 Gone`).
        Relist,
        /// Stop requested.
        Stop,
    }

    impl Task {
        async fn run(mut self) {
            let mut backoff = Duration::from_secs(1);
            let mut api: Option<Api<Pod>> = None;
            loop {
                if *self.stop.borrow() {
                    return;
                }
                let result = match &api {
                    Some(a) => self.list_and_watch(a).await,
                    None => match self.client() {
                        Ok(a) => {
                            let r = self.list_and_watch(&a).await;
                            api = Some(a);
                            r
                        }
                        Err(e) => Err(e),
                    },
                };
                match result {
                    Ok(WatchEnd::Stop) => return,
                    Ok(WatchEnd::Relist) => {
                        backoff = Duration::from_secs(1);
                        // A new client per relist re-reads the token and CA
                        // files (the kubelet rotates projected tokens).
                        api = None;
                    }
                    Err(e) => {
                        // A client that could not be built (bad token or
                        // CA file) is built again on the next round: the
                        // files may have been fixed meanwhile.
                        self.failed(&e);
                        if self.sleep(backoff).await {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF).min(self.resync);
                    }
                }
            }
        }

        fn client(&self) -> Result<Api<Pod>, String> {
            // The token is read here rather than by kube's `token_file`,
            // which sends the file verbatim: a token written with a
            // trailing newline (by hand, by a Secret) must still work.
            let token = std::fs::read_to_string(&self.token_file)
                .map_err(|e| format!("client: {}: {e}", self.token_file.display()))?;
            let token = token.trim();
            if token.is_empty() {
                return Err(format!(
                    "client: {}: empty token",
                    self.token_file.display()
                ));
            }
            // The CA bundle is read here too (kube wants the certificates
            // up front, then re-reads the file itself for rotation).
            let pem = std::fs::read(&self.ca_file)
                .map_err(|e| format!("client: {}: {e}", self.ca_file.display()))?;
            let certs = super::pem_certs(&pem)
                .map_err(|e| format!("client: {}: {e}", self.ca_file.display()))?;
            let mut config = self.config.clone();
            config.root_cert = Some(certs);
            config.auth_info.token = Some(secrecy::SecretString::from(token.to_owned()));
            let client = kube::Client::try_from(config).map_err(|e| format!("client: {e}"))?;
            Ok(Api::all(client))
        }

        fn failed(&self, e: &str) {
            self.cache.count_error();
            let was_up = self.cache.stats().up;
            self.cache.set_up(false);
            if was_up || self.cache.stats().sync_errors == 1 {
                tracing::warn!(
                    error = e,
                    "kubernetes: pod list/watch failed; new pods go unnamed until it recovers"
                );
            } else {
                tracing::debug!(error = e, "kubernetes: pod list/watch failed again");
            }
        }

        /// Sleeps; `true` when stopped meanwhile.
        async fn sleep(&mut self, d: Duration) -> bool {
            tokio::select! {
                _ = tokio::time::sleep(d) => *self.stop.borrow(),
                _ = self.stop.changed() => true,
            }
        }

        async fn list_and_watch(&mut self, api: &Api<Pod>) -> Result<WatchEnd, String> {
            let lp = ListParams::default().fields(&self.selector);
            let list = tokio::select! {
                r = tokio::time::timeout(self.timeout, api.list(&lp)) => match r {
                    Ok(Ok(l)) => l,
                    Ok(Err(e)) => return Err(format!("list: {e}")),
                    Err(_) => return Err(format!("list: no answer within {:?}", self.timeout)),
                },
                _ = self.stop.changed() => return Ok(WatchEnd::Stop),
            };
            let was_up = self.cache.stats().up;
            let version = list.metadata.resource_version.clone().unwrap_or_default();
            self.cache.replace(list.items.iter().filter_map(record));
            self.cache.set_up(true);
            let s = self.cache.stats();
            if !was_up {
                tracing::info!(
                    pods = s.pods,
                    containers = s.containers,
                    errors_before = s.sync_errors,
                    "kubernetes: pod list synced"
                );
            }
            self.watch(api, version).await
        }

        /// Follows the list until the resync is due.
        async fn watch(&mut self, api: &Api<Pod>, mut version: String) -> Result<WatchEnd, String> {
            let deadline = Instant::now() + self.resync;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(WatchEnd::Relist);
                }
                if version.is_empty() {
                    // Nothing to resume from: the next list gives one.
                    if self.sleep(deadline - now).await {
                        return Ok(WatchEnd::Stop);
                    }
                    return Ok(WatchEnd::Relist);
                }
                let secs = (deadline - now).as_secs().clamp(1, MAX_WATCH_SECS);
                let wp = WatchParams::default()
                    .fields(&self.selector)
                    .timeout(secs as u32);
                let started = Instant::now();
                let stream = tokio::select! {
                    r = tokio::time::timeout(self.timeout, api.watch(&wp, &version)) => match r {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return Err(format!("watch: {e}")),
                        Err(_) => return Err(format!("watch: no answer within {:?}", self.timeout)),
                    },
                    _ = self.stop.changed() => return Ok(WatchEnd::Stop),
                };
                let mut stream = std::pin::pin!(stream);
                // The server ends the watch after `secs`; a silent
                // connection is given a little longer before it is dropped.
                let until = tokio::time::Instant::from_std(
                    started + Duration::from_secs(secs) + self.timeout,
                );
                loop {
                    let next = tokio::select! {
                        n = tokio::time::timeout_at(until, stream.next()) => n,
                        _ = self.stop.changed() => return Ok(WatchEnd::Stop),
                    };
                    let event = match next {
                        Err(_) | Ok(None) => break,
                        Ok(Some(Err(e))) => return Err(format!("watch: {e}")),
                        Ok(Some(Ok(ev))) => ev,
                    };
                    match event {
                        WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                            if let Some(v) = &p.metadata.resource_version {
                                version.clone_from(v);
                            }
                            if let Some(r) = record(&p) {
                                self.cache.upsert(r);
                            }
                        }
                        WatchEvent::Deleted(p) => {
                            if let Some(v) = &p.metadata.resource_version {
                                version.clone_from(v);
                            }
                            if let Some(uid) = &p.metadata.uid {
                                self.cache.remove(uid);
                            }
                        }
                        WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                        // 410 Gone: the version is too old to resume from.
                        WatchEvent::Error(s) if s.code == 410 => return Ok(WatchEnd::Relist),
                        WatchEvent::Error(s) => {
                            return Err(format!("watch: {} {}", s.code, s.message));
                        }
                    }
                }
                let spent = started.elapsed();
                if spent < MIN_WATCH_SPACING && self.sleep(MIN_WATCH_SPACING - spent).await {
                    return Ok(WatchEnd::Stop);
                }
            }
        }
    }
}

/// DER certificates of a PEM bundle.
#[cfg(feature = "kubernetes")]
fn pem_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;

    let certs = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
    const B: &str = "0000000000000000000000000000000000000000000000000000000000000abc";
    const C: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff0001";

    fn rec(uid: &str, name: &str, app: Option<&str>, ids: &[String]) -> PodRecord {
        PodRecord::new(
            uid.into(),
            name.into(),
            "prod".into(),
            app.map(Into::into),
            ids.iter().map(String::as_str),
        )
    }

    #[test]
    fn container_ids_of_every_runtime() {
        assert_eq!(parse_container_id(&format!("containerd://{A}")), Some(A));
        assert_eq!(parse_container_id(&format!("cri-o://{A}")), Some(A));
        assert_eq!(parse_container_id(&format!("docker://{A}")), Some(A));
        assert_eq!(parse_container_id(""), None, "not started yet");
        assert_eq!(parse_container_id(A), None, "no scheme");
        assert_eq!(parse_container_id(&format!("://{A}")), None);
        assert_eq!(parse_container_id("containerd://abc"), None, "short");
        assert_eq!(
            parse_container_id(&format!("containerd://{}", A.to_uppercase())),
            None,
            "the cgroup path has lowercase ids only"
        );
        assert_eq!(parse_container_id(&format!("containerd://{A}0")), None);
    }

    #[test]
    fn index_by_container_and_uid() {
        let mut i = PodIndex::new(8);
        assert!(i.upsert(rec(
            "u1",
            "shop-1",
            Some("shop"),
            &[
                format!("containerd://{A}"),
                format!("containerd://{B}"),
                String::new()
            ],
        )));
        assert_eq!(i.len(), 1);
        assert_eq!(i.containers(), 2);
        let p = i.by_container(A).expect("indexed");
        assert_eq!(p.name, "shop-1");
        assert_eq!(p.namespace, "prod");
        assert_eq!(p.app.as_deref(), Some("shop"));
        assert!(
            Arc::ptr_eq(p, i.by_container(B).expect("b")),
            "one allocation per pod"
        );
        assert_eq!(i.by_uid("u1").map(|p| p.name.as_str()), Some("shop-1"));
        // A restart: the container id changes, the old one must go.
        i.upsert(rec(
            "u1",
            "shop-1",
            Some("shop"),
            &[format!("containerd://{C}")],
        ));
        assert!(i.by_container(A).is_none());
        assert!(i.by_container(C).is_some());
        assert_eq!(i.containers(), 1);
        i.remove("u1");
        assert!(i.is_empty());
        assert!(i.by_container(C).is_none());
        assert_eq!(i.containers(), 0);
    }

    #[test]
    fn bounded_pods_and_fields() {
        let mut i = PodIndex::new(2);
        assert!(i.upsert(rec("u1", "a", None, &[])));
        assert!(i.upsert(rec("u2", "b", None, &[])));
        assert!(!i.upsert(rec("u3", "c", None, &[])), "full");
        assert_eq!(i.skipped(), 1);
        assert!(i.upsert(rec("u2", "b2", None, &[])), "updates still apply");
        assert_eq!(i.by_uid("u2").map(|p| p.name.as_str()), Some("b2"));
        let many: Vec<String> = (0..200).map(|n| format!("docker://{n:064x}")).collect();
        let r = rec("u9", &"x".repeat(1000), Some(&"é".repeat(100)), &many);
        assert_eq!(r.container_ids.len(), MAX_CONTAINERS_PER_POD);
        assert_eq!(r.info.name.len(), MAX_NAME_LEN);
        assert!(
            r.info
                .app
                .as_ref()
                .is_some_and(|a| a.len() <= MAX_LABEL_LEN)
        );
        assert_eq!(rec("u", "n", Some(""), &[]).info.app, None, "empty label");
    }

    #[test]
    fn cache_lookup_by_id_then_pod_uid() {
        let cache = PodCache::new(16);
        cache.replace([rec(
            "8e3c-uid",
            "web-0",
            Some("web"),
            &[format!("cri-o://{A}")],
        )]);
        let by_id = ContainerRef {
            id: A.into(),
            runtime: crate::capture::ContainerRuntime::CriO,
            pod_uid: None,
        };
        assert_eq!(
            cache.lookup_container(&by_id).map(|p| p.name.clone()),
            Some("web-0".into())
        );
        // Container not reported by the kubelet yet: its cgroup's pod UID.
        let by_uid = ContainerRef {
            id: B.into(),
            runtime: crate::capture::ContainerRuntime::CriO,
            pod_uid: Some("8e3c-uid".into()),
        };
        assert!(cache.lookup(B).is_none());
        assert_eq!(
            cache.lookup_container(&by_uid).map(|p| p.name.clone()),
            Some("web-0".into())
        );
        let s = cache.stats();
        assert_eq!((s.pods, s.containers, s.lists), (1, 1, 1));
        // A relist replaces everything; skips of the old index are kept.
        let small = PodCache::new(1);
        small.replace([rec("a", "a", None, &[]), rec("b", "b", None, &[])]);
        small.replace([rec("a", "a", None, &[]), rec("b", "b", None, &[])]);
        assert_eq!(small.stats().pods_skipped, 2);
        assert_eq!(small.stats().pods, 1);
    }

    #[test]
    fn in_cluster_url_needs_the_environment_or_a_setting() {
        let mut cfg = KubernetesConfig {
            api_server: Some("https://10.0.0.1:6443".into()),
            ..KubernetesConfig::default()
        };
        assert_eq!(api_server_url(&cfg).expect("set"), "https://10.0.0.1:6443");
        cfg.api_server = None;
        // Only checked when the test runner is not itself in a pod.
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            assert!(matches!(
                api_server_url(&cfg),
                Err(KubernetesError::NoApiServer)
            ));
        }
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn api_pod_to_record() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop-7d4b9c-x2x8k", "namespace": "prod", "uid": "u-1",
                         "labels": {"app.kubernetes.io/name": "shop", "app": "ignored"}},
            "status": {
                "containerStatuses": [
                    {"name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                     "containerID": format!("containerd://{A}")},
                    {"name": "pending", "image": "i", "imageID": "", "ready": false, "restartCount": 0}
                ],
                "initContainerStatuses": [
                    {"name": "init", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                     "containerID": format!("containerd://{B}")}
                ],
                "ephemeralContainerStatuses": [
                    {"name": "debug", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                     "containerID": format!("cri-o://{C}")}
                ]
            }
        }))
        .expect("pod json");
        let r = sync::record(&pod).expect("record");
        assert_eq!(r.uid, "u-1");
        assert_eq!(r.info.name, "shop-7d4b9c-x2x8k");
        assert_eq!(r.info.namespace, "prod");
        assert_eq!(r.info.app.as_deref(), Some("shop"));
        assert_eq!(
            r.container_ids,
            vec![A.to_owned(), B.to_owned(), C.to_owned()]
        );
        let nameless: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(serde_json::json!({"metadata": {"uid": "x"}})).expect("json");
        assert!(sync::record(&nameless).is_none());
    }
}
