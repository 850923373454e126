//! The agent's TOML configuration.
//!
//! Every key is optional; the defaults are embedded in the binary
//! (`default-config.toml`, printed by `sessionwatch check-config`). Unknown
//! keys are errors, reported with line and column, so a typo never silently
//! turns a policy off.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sessionwatch_sessions::AnalysisConfig;
use sessionwatch_sessions::config::{
    DetectorsConfig, NetworkConfig, PolicyConfig, RoutesConfig, ServiceConfig, SessionsConfig,
};

use crate::capture::CaptureConfig;

/// The configuration shipped inside the binary: every key with its default
/// and a comment. `run` without `--config` uses exactly this.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default-config.toml");

/// Errors loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the
    /// wrong type. The message carries line and column.
    #[error("{path}: {message}")]
    Parse {
        /// The config file (or `<embedded>`).
        path: PathBuf,
        /// The parser's message, with line, column and the offending text.
        message: String,
    },
    /// A value parsed but is not acceptable (bad CIDR, empty list, …).
    #[error("{path}: invalid value for {key}: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Dotted key, e.g. `network.trusted_proxies`.
        key: String,
        /// Why it is rejected.
        reason: String,
    },
}

/// `[admin]`: the HTTP endpoint with `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address of the admin endpoint (`--metrics-listen` overrides).
    pub listen: SocketAddr,
    /// Web configuration file in the Prometheus exporter-toolkit format
    /// (TLS, mTLS, basic auth, security headers); `--web.config.file`
    /// overrides. Unset: plain HTTP without authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_config_file: Option<PathBuf>,
}

impl AdminConfig {
    /// Design default: every interface, port 9477.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9477);
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Self::DEFAULT_LISTEN,
            web_config_file: None,
        }
    }
}

/// `[agent]`: identity of this agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Node name written into findings. Unset: `$NODE_NAME` (set from the
    /// Kubernetes downward API), else the host name.
    pub node_name: Option<String>,
    /// After the probes are attached and the admin endpoint is bound, drop
    /// every capability the running agent does not need (see
    /// `capture::privileges`), clear the bounding set and set
    /// `no_new_privs`.
    pub drop_capabilities: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: None,
            drop_capabilities: true,
        }
    }
}

/// `[alerting]`: where findings go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// JSON-lines destination: `-` for stdout or a file path (appended).
    /// `--alerts` overrides.
    pub json: String,
    /// Alertmanager base URL (`http://host:9093`); findings are pushed to
    /// `<url>/api/v2/alerts`. Unset: no push.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertmanager_url: Option<String>,
    /// Findings waiting for delivery at most; beyond it (Alertmanager down
    /// for long) new findings are dropped and counted in
    /// `sessionwatch_alerts_dropped_total{sink="alertmanager",reason="queue_full"}`.
    pub queue_size: usize,
    /// Timeout of one push request.
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub timeout: Duration,
    /// Longest wait between retries of a failed push (the backoff doubles
    /// from 250ms up to this).
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub max_backoff: Duration,
    /// One alert per (session, detector) within this window of event time.
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub dedup_window: Duration,
    /// A pushed alert resolves this long after it was sent (`endsAt`):
    /// findings are events, so the alert expires unless sent again.
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub resolve_after: Duration,
    /// Base of the alerts' `runbook_url`; `#<detector id>` is appended.
    pub runbook_base: String,
}

impl AlertingConfig {
    /// Default `queue_size`.
    pub const DEFAULT_QUEUE_SIZE: usize = 4096;
    /// Default `timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `max_backoff`.
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);
    /// Default `dedup_window`.
    pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(3600);
    /// Default `resolve_after`.
    pub const DEFAULT_RESOLVE_AFTER: Duration = Duration::from_secs(3600);
    /// Default `runbook_base`.
    pub const DEFAULT_RUNBOOK_BASE: &str =
        "https://example.invalid/sessionwatch/blob/main/docs/detectors.md";
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            json: "-".into(),
            alertmanager_url: None,
            queue_size: Self::DEFAULT_QUEUE_SIZE,
            timeout: Self::DEFAULT_TIMEOUT,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            dedup_window: Self::DEFAULT_DEDUP_WINDOW,
            resolve_after: Self::DEFAULT_RESOLVE_AFTER,
            runbook_base: Self::DEFAULT_RUNBOOK_BASE.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[policy]`: the session policy (timeouts, cookie lifetime, entropy).
    pub policy: PolicyConfig,
    /// `[sessions]`: session cookie names and session-table bounds.
    pub sessions: SessionsConfig,
    /// `[routes]`: login, logout, privilege and sensitive routes.
    pub routes: RoutesConfig,
    /// `[network]`: trusted proxies.
    pub network: NetworkConfig,
    /// `[detectors]`: detectors switched off.
    pub detectors: DetectorsConfig,
    /// `[[services]]`: service names by host.
    pub services: Vec<ServiceConfig>,
    /// `[capture]`: what live capture attaches to.
    pub capture: CaptureConfig,
    /// `[alerting]`: finding sinks.
    pub alerting: AlertingConfig,
    /// `[admin]`: metrics and health endpoint.
    pub admin: AdminConfig,
    /// `[agent]`: node identity.
    pub agent: AgentConfig,
    /// `[cluster]`: cross-node correlation through Redis.
    pub cluster: crate::cluster::ClusterConfig,
    /// `[kubernetes]`: pod name, namespace and app label for containerised
    /// processes (cargo feature `kubernetes`).
    pub kubernetes: KubernetesConfig,
}

/// `[kubernetes]`: enrich containerised processes with their pod from the
/// API server's pod list for this node. Needs the cargo feature
/// `kubernetes` (the container image has it) and RBAC `get`/`list`/`watch`
/// on pods (deploy/kubernetes/components/kubernetes-enrichment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Look pods up. Off by default: the agent then never talks to the API
    /// server and needs no RBAC.
    pub enabled: bool,
    /// API server URL (`https://host:port`). Unset: in-cluster, from
    /// `KUBERNETES_SERVICE_HOST` and `KUBERNETES_SERVICE_PORT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_server: Option<String>,
    /// Bearer token file, re-read at every relist (the kubelet rotates
    /// projected service-account tokens; surrounding whitespace is
    /// ignored).
    pub token_file: PathBuf,
    /// CA bundle the API server's certificate must chain to.
    pub ca_file: PathBuf,
    /// Node whose pods are listed (`spec.nodeName`). Unset: the agent's
    /// node name (`[agent] node_name`, else `$NODE_NAME`, which the
    /// DaemonSet sets from `spec.nodeName`, else the host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Full relist period; between relists a watch keeps the cache current.
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub resync_interval: Duration,
    /// Timeout of one list request (connect included).
    #[serde(with = "sessionwatch_sessions::config::human_duration")]
    pub request_timeout: Duration,
    /// Pods cached at most; pods beyond it are not indexed and counted
    /// (a node runs at most `maxPods`, 110 by default).
    pub max_pods: usize,
}

impl KubernetesConfig {
    /// Service-account token mounted into every pod that automounts one.
    pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    /// The cluster CA mounted next to the token.
    pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
    /// Default full relist period.
    pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(300);
    /// Default list timeout.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default pod bound.
    pub const DEFAULT_MAX_PODS: usize = 1024;

    /// Whether this binary can do enrichment at all.
    pub const fn compiled_in() -> bool {
        cfg!(feature = "kubernetes")
    }

    /// Checks the values; `Err((key, reason))`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if !Self::compiled_in() {
            return Err((
                "kubernetes.enabled",
                "this binary was built without the `kubernetes` cargo feature; rebuild with \
                 `cargo build --release --features kubernetes` (the container image has it) \
                 or set enabled = false"
                    .into(),
            ));
        }
        if let Some(url) = &self.api_server {
            let ok = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
            if !ok {
                return Err((
                    "kubernetes.api_server",
                    format!("{url:?}: expected https://host[:port]"),
                ));
            }
        }
        if self.resync_interval < Duration::from_secs(1) {
            return Err(("kubernetes.resync_interval", "must be at least 1s".into()));
        }
        if self.request_timeout.is_zero() {
            return Err((
                "kubernetes.request_timeout",
                "must be longer than zero".into(),
            ));
        }
        if self.max_pods == 0 {
            return Err(("kubernetes.max_pods", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: false,
            api_server: None,
            token_file: Self::DEFAULT_TOKEN_FILE.into(),
            ca_file: Self::DEFAULT_CA_FILE.into(),
            node_name: None,
            resync_interval: Self::DEFAULT_RESYNC_INTERVAL,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            max_pods: Self::DEFAULT_MAX_PODS,
        }
    }
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded() -> Result<Config, ConfigError> {
        Self::parse(DEFAULT_CONFIG_TOML, Path::new("<embedded default config>"))
    }

    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// `--config FILE` when given, else the embedded default.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Self::load(p),
            None => Self::embedded(),
        }
    }

    /// Parses TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        if self.sessions.cookie_names.iter().any(|n| n.is_empty()) {
            return Err(invalid("sessions.cookie_names", "empty cookie name".into()));
        }
        if self.sessions.max_sessions == 0 {
            return Err(invalid(
                "sessions.max_sessions",
                "must be at least 1".into(),
            ));
        }
        if self.policy.idle_timeout.is_zero() || self.policy.absolute_timeout.is_zero() {
            return Err(invalid(
                "policy",
                "timeouts must be longer than zero".into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.services {
            if s.name.is_empty() || s.name.len() > 64 {
                return Err(invalid(
                    "services.name",
                    format!("{:?}: 1 to 64 characters", s.name),
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(invalid(
                    "services.name",
                    format!("{:?} appears twice", s.name),
                ));
            }
        }
        if self.alerting.json.is_empty() {
            return Err(invalid(
                "alerting.json",
                "use \"-\" for stdout or a file path".into(),
            ));
        }
        if let Some(url) = &self.alerting.alertmanager_url
            && let Err(reason) = crate::export::alertmanager::validate_url(url)
        {
            return Err(invalid("alerting.alertmanager_url", reason));
        }
        if self.alerting.queue_size == 0 {
            return Err(invalid("alerting.queue_size", "must be at least 1".into()));
        }
        if self.alerting.timeout.is_zero() || self.alerting.max_backoff.is_zero() {
            return Err(invalid(
                "alerting",
                "timeout and max_backoff must be longer than zero".into(),
            ));
        }
        if let Err((key, reason)) = self.cluster.validate() {
            return Err(invalid(key, reason));
        }
        if self.cluster.enabled && self.sessions.hash_key_file.is_none() {
            return Err(invalid(
                "cluster.enabled",
                "requires sessions.hash_key_file: every agent must hash session IDs with the same key"
                    .into(),
            ));
        }
        if let Err((key, reason)) = self.kubernetes.validate() {
            return Err(invalid(key, reason));
        }
        // Route globs, CIDRs and detector ids are checked by the analysis
        // stage itself when it is built (`Analyzer::new`), with key names.
        Ok(())
    }

    /// The effective config as TOML (for `check-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The node name: `[agent] node_name`, `$NODE_NAME`, or the host name.
    pub fn node_name(&self) -> String {
        if let Some(n) = self.agent.node_name.as_ref().filter(|n| !n.is_empty()) {
            return n.clone();
        }
        if let Ok(n) = std::env::var("NODE_NAME")
            && !n.is_empty()
        {
            return n;
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into())
    }

    /// The node whose pods `[kubernetes]` lists: `kubernetes.node_name`,
    /// else [`Config::node_name`].
    pub fn kubernetes_node(&self) -> String {
        match self.kubernetes.node_name.as_ref().filter(|n| !n.is_empty()) {
            Some(n) => n.clone(),
            None => self.node_name(),
        }
    }

    /// The analysis stages' view of this config.
    pub fn analysis(&self) -> AnalysisConfig {
        AnalysisConfig {
            policy: self.policy.clone(),
            sessions: self.sessions.clone(),
            routes: self.routes.clone(),
            network: self.network.clone(),
            detectors: self.detectors.clone(),
            services: self.services.clone(),
            node: self.node_name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses_and_matches_code_defaults() {
        let embedded = Config::embedded().expect("embedded config must parse");
        // The embedded file documents every default; it must not drift from
        // the `Default` impls the code falls back to for missing keys.
        assert_eq!(embedded, Config::default());
    }

    #[test]
    fn unknown_key_is_an_error_with_line_and_column() {
        let err = Config::parse("[policy]\nidle_timout = \"5m\"\n", Path::new("x.toml"))
            .expect_err("typo must be rejected");
        let msg = err.to_string();
        assert!(msg.contains("x.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("idle_timout"), "{msg}");
    }

    #[test]
    fn bad_duration_is_rejected() {
        let err = Config::parse("[policy]\nidle_timeout = \"soon\"\n", Path::new("x.toml"))
            .expect_err("bad duration");
        assert!(err.to_string().contains("invalid duration"), "{err}");
    }

    #[test]
    fn partial_config_keeps_other_defaults() {
        let c = Config::parse("[policy]\nidle_timeout = \"5m\"\n", Path::new("x.toml")).unwrap();
        assert_eq!(c.policy.idle_timeout, std::time::Duration::from_secs(300));
        assert_eq!(
            c.policy.absolute_timeout,
            PolicyConfig::DEFAULT_ABSOLUTE_TIMEOUT
        );
        assert_eq!(c.sessions, SessionsConfig::default());
    }

    #[test]
    fn kubernetes_enabled_needs_the_feature() {
        let text = "[kubernetes]\nenabled = true\napi_server = \"https://10.0.0.1:6443\"\n";
        let r = Config::parse(text, Path::new("k.toml"));
        if KubernetesConfig::compiled_in() {
            let c = r.expect("valid with the feature");
            assert!(c.kubernetes.enabled);
        } else {
            let msg = r.expect_err("must not be silently ignored").to_string();
            assert!(msg.contains("kubernetes.enabled"), "{msg}");
            assert!(msg.contains("`kubernetes` cargo feature"), "{msg}");
        }
        // Off: accepted either way, whatever else is set.
        Config::parse("[kubernetes]\nenabled = false\n", Path::new("k.toml")).expect("off");
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn kubernetes_values_are_checked() {
        for (text, key) in [
            ("api_server = \"10.0.0.1:6443\"", "kubernetes.api_server"),
            ("resync_interval = \"0s\"", "kubernetes.resync_interval"),
            ("max_pods = 0", "kubernetes.max_pods"),
        ] {
            let msg = Config::parse(
                &format!("[kubernetes]\nenabled = true\n{text}\n"),
                Path::new("k.toml"),
            )
            .expect_err(text)
            .to_string();
            assert!(msg.contains(key), "{msg}");
        }
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::default();
        let again = Config::parse(&c.to_toml(), Path::new("rt.toml")).unwrap();
        assert_eq!(c, again);
    }
}
