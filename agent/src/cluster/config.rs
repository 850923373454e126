//! `[cluster]`: cross-node correlation through Redis.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// How `redis_url` is to be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis server (or a proxy/load balancer in front of a primary).
    #[default]
    Standalone,
    /// Redis Cluster: `redis_url` is a comma-separated seed list; keys of
    /// one session share a hash tag, so each session lives in one slot.
    Cluster,
    /// Redis Sentinel: `redis_url` lists the sentinels; the primary of
    /// `sentinel_master` is looked up through them on every (re)connect.
    Sentinel,
}

impl RedisMode {
    /// Stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

/// `[cluster]`: share session sightings with the agents on other nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Share sightings through Redis. Requires `sessions.hash_key_file`
    /// (every agent must hash session IDs with the same key).
    pub enabled: bool,
    /// `redis://[user:pass@]host:port[/db]`, `rediss://…` for TLS; for
    /// `mode = "cluster"` or `"sentinel"` a comma-separated list of seeds or
    /// sentinels. Printed with any password masked.
    #[serde(serialize_with = "serialize_redacted")]
    pub redis_url: String,
    /// File holding the Redis password (trailing newline trimmed), so it
    /// stays out of `redis_url`, of the config file and of `check-config`
    /// output. Overrides a password in the URL. Must not be world-readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign the Redis servers'
    /// certificates (`rediss://` only), trusted instead of the system store:
    /// the usual set-up for an in-cluster Redis with a private CA. Without
    /// it the system store is used (`SSL_CERT_FILE` / `SSL_CERT_DIR` are
    /// honoured).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate presented to Redis (`rediss://` only), for
    /// servers with `tls-auth-clients yes`. Needs `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`. Must not be world-readable.
    pub tls_key_file: Option<PathBuf>,
    /// Standalone, Cluster or Sentinel.
    pub mode: RedisMode,
    /// Sentinel: name of the monitored primary.
    pub sentinel_master: String,
    /// Prefix of every key (`<prefix>:s:{<session hash>}`), so several
    /// deployments can share one Redis.
    pub key_prefix: String,
    /// Timeout of one connection attempt.
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub connect_timeout: Duration,
    /// Timeout of one round trip (a pipeline of writes or one fetch).
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub command_timeout: Duration,
    /// Longest wait of the analysis for a fetch on a session's first local
    /// sight (zero: never wait; the answer is used from the next exchange).
    /// Never waited while Redis is down.
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub lookup_timeout: Duration,
    /// A cached remote view is fetched again when a session is used this
    /// long (event time) after the last fetch: the longest delay before a
    /// logout or a new client seen on another node is noticed for a session
    /// this node already knows, traded against Redis load (a session new to
    /// this node is always looked up on first sight).
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub cache_ttl: Duration,
    /// Sessions whose remote view is cached at most (oldest dropped first).
    pub cache_size: usize,
    /// State changes waiting to be written at most; beyond it new ones are
    /// dropped and counted (`sessionwatch_cluster_dropped_total{reason="queue_full"}`).
    pub queue_size: usize,
    /// Longest wait between reconnect attempts (the backoff doubles from
    /// 250ms up to this).
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub max_backoff: Duration,
}

impl ClusterConfig {
    /// Default `redis_url`.
    pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
    /// Default `key_prefix`.
    pub const DEFAULT_PREFIX: &str = "sessionwatch";
    /// Default `sentinel_master`.
    pub const DEFAULT_SENTINEL_MASTER: &str = "mymaster";

    /// The seeds of `redis_url`, trimmed, empty entries dropped.
    pub fn urls(&self) -> Vec<String> {
        self.redis_url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Checks the values (`Err(key, reason)`); URLs are parsed by the Redis
    /// client so `check-config` rejects what `run` would.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        let urls = self.urls();
        if urls.is_empty() {
            return Err(("cluster.redis_url", "empty".into()));
        }
        if self.mode == RedisMode::Standalone && urls.len() > 1 {
            return Err((
                "cluster.redis_url",
                "several URLs need mode = \"cluster\" or \"sentinel\"".into(),
            ));
        }
        for u in &urls {
            let scheme_ok = u.starts_with("redis://") || u.starts_with("rediss://");
            if !scheme_ok {
                return Err((
                    "cluster.redis_url",
                    format!("{}: only redis:// and rediss:// URLs", redact_url(u)),
                ));
            }
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(u.as_str()) {
                return Err(("cluster.redis_url", format!("{}: {e}", redact_url(u))));
            }
        }
        let tls_files = self.tls_ca_file.is_some()
            || self.tls_cert_file.is_some()
            || self.tls_key_file.is_some();
        if tls_files && !urls.iter().all(|u| u.starts_with("rediss://")) {
            return Err((
                "cluster.tls_ca_file",
                "TLS files need rediss:// URLs (every seed or sentinel)".into(),
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err((
                "cluster.tls_cert_file",
                "tls_cert_file and tls_key_file go together (client certificate and its key)"
                    .into(),
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 {
            return Err(("cluster.key_prefix", "1 to 64 characters".into()));
        }
        if self.mode == RedisMode::Sentinel && self.sentinel_master.is_empty() {
            return Err(("cluster.sentinel_master", "empty".into()));
        }
        if self.connect_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err((
                "cluster",
                "connect_timeout and command_timeout must be longer than zero".into(),
            ));
        }
        if self.cache_ttl.is_zero() {
            return Err(("cluster.cache_ttl", "must be longer than zero".into()));
        }
        if self.cache_size == 0 || self.queue_size == 0 {
            return Err((
                "cluster",
                "cache_size and queue_size must be at least 1".into(),
            ));
        }
        if self.max_backoff.is_zero() {
            return Err(("cluster.max_backoff", "must be longer than zero".into()));
        }
        Ok(())
    }
}

fn serialize_redacted<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    let list: Vec<String> = url.split(',').map(|u| redact_url(u.trim())).collect();
    s.serialize_str(&list.join(","))
}

/// Reads `password_file`: refused when world-readable (like the hash key).
pub fn read_password(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "{}: world-readable; chmod o-r (mode {:o})",
            path.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let pw = text.trim_end_matches(['\n', '\r']);
    if pw.is_empty() {
        return Err(format!("{}: empty", path.display()));
    }
    Ok(pw.to_owned())
}

/// Reads a PEM file of `[cluster]` (`key` names it in errors): it must
/// hold at least one PEM block; a private key (`secret`) is refused when
/// world-readable, like the password file.
pub fn read_pem(key: &str, path: &std::path::Path, secret: bool) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if secret && meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "{key} {}: world-readable; chmod o-r (mode {:o})",
            path.display(),
            meta.permissions().mode() & 0o7777
        ));
    }
    let pem = std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{key} {}: no PEM block", path.display()));
    }
    Ok(pem)
}

/// A Redis URL with any password replaced (for logs and errors).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map_or(auth, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            redis_url: Self::DEFAULT_URL.into(),
            password_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            mode: RedisMode::Standalone,
            sentinel_master: Self::DEFAULT_SENTINEL_MASTER.into(),
            key_prefix: Self::DEFAULT_PREFIX.into(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_millis(500),
            lookup_timeout: Duration::from_millis(50),
            cache_ttl: Duration::from_secs(300),
            cache_size: 100_000,
            queue_size: 65_536,
            max_backoff: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(url: &str, mode: RedisMode) -> ClusterConfig {
        ClusterConfig {
            enabled: true,
            redis_url: url.into(),
            mode,
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn urls_are_checked() {
        assert!(
            on("redis://127.0.0.1:6379", RedisMode::Standalone)
                .validate()
                .is_ok()
        );
        assert!(
            on("rediss://r.example:6380/0", RedisMode::Standalone)
                .validate()
                .is_ok()
        );
        let seeds = "redis://10.0.0.1:7000, redis://10.0.0.2:7000";
        assert!(on(seeds, RedisMode::Cluster).validate().is_ok());
        assert_eq!(
            on(seeds, RedisMode::Standalone).validate().unwrap_err().0,
            "cluster.redis_url"
        );
        let e = on("http://u:secret@x:1", RedisMode::Standalone)
            .validate()
            .unwrap_err();
        assert!(!e.1.contains("secret"), "{e:?}");
        assert!(on("", RedisMode::Standalone).validate().is_err());
        // Disabled: nothing is checked.
        let mut off = on("", RedisMode::Standalone);
        off.enabled = false;
        assert!(off.validate().is_ok());
    }

    #[test]
    fn tls_files_need_rediss_and_come_in_pairs() {
        let mut c = on("redis://r:6379", RedisMode::Standalone);
        c.tls_ca_file = Some("/ca.pem".into());
        assert_eq!(c.validate().unwrap_err().0, "cluster.tls_ca_file");
        c.redis_url = "rediss://r:6380".into();
        assert!(c.validate().is_ok());
        c.tls_cert_file = Some("/client.pem".into());
        assert_eq!(c.validate().unwrap_err().0, "cluster.tls_cert_file");
        c.tls_key_file = Some("/client.key".into());
        assert!(c.validate().is_ok());
        // One plain sentinel among TLS ones: the files could not apply.
        let mut s = on("rediss://s1:26379,redis://s2:26379", RedisMode::Sentinel);
        s.tls_ca_file = Some("/ca.pem".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn pem_files_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_pem("cluster.tls_key_file", &key, true).unwrap_err();
        assert!(e.contains("world-readable"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_pem("cluster.tls_key_file", &key, true).is_ok());
        // A CA bundle may be world-readable; it must be PEM.
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let e = read_pem("cluster.tls_ca_file", &ca, false).unwrap_err();
        assert!(
            e.contains("no PEM block") && e.contains("cluster.tls_ca_file"),
            "{e}"
        );
        let e = read_pem("cluster.tls_ca_file", &dir.path().join("missing"), false).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}

#[cfg(test)]
mod config_file_tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn clustering_without_a_shared_hash_key_is_refused() {
        let err = Config::parse(
            "[cluster]\nenabled = true\nredis_url = \"redis://127.0.0.1:6379\"\n",
            Path::new("c.toml"),
        )
        .expect_err("must refuse");
        let msg = err.to_string();
        assert!(msg.contains("cluster.enabled"), "{msg}");
        assert!(msg.contains("sessions.hash_key_file"), "{msg}");
        let ok = Config::parse(
            "[sessions]\nhash_key_file = \"/k\"\n[cluster]\nenabled = true\nmode = \"cluster\"\n\
             redis_url = \"redis://10.0.0.1:7000,redis://10.0.0.2:7000\"\n",
            Path::new("c.toml"),
        )
        .expect("valid");
        assert_eq!(ok.cluster.mode, super::RedisMode::Cluster);
        let mut shown = ok.clone();
        shown.cluster.redis_url = "redis://u:hunter2@10.0.0.1:7000,redis://u:hunter2@b:1".into();
        let text = shown.to_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("redis://u:***@10.0.0.1:7000,redis://u:***@b:1"),
            "{text}"
        );
        let typo = Config::parse("[cluster]\nredis_ulr = \"x\"\n", Path::new("c.toml"));
        assert!(typo.is_err(), "unknown keys are errors");
    }
}
