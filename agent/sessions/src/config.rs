//! Analysis configuration: the `[policy]`, `[sessions]`, `[routes]`,
//! `[network]`, `[detectors]` and `[[services]]` sections of the agent's TOML
//! config. Every key is optional; defaults are the design's.
//!
//! The doc comment of each field is the config reference
//! (`sessionwatch check-config` prints the effective values).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Serde adapter for human durations (`"30m"`, `"24h"`, `"1h 30m"`).
pub mod human_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as a humantime string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parses a humantime string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

/// `[policy]`: the session policy the application is held to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// A session used again after this idle gap must be rejected
    /// (`idle_timeout_not_enforced`).
    #[serde(with = "human_duration")]
    pub idle_timeout: Duration,
    /// A session must be rejected this long after it was first issued
    /// (`absolute_timeout_not_enforced`).
    #[serde(with = "human_duration")]
    pub absolute_timeout: Duration,
    /// A sensitive route needs a login within this window
    /// (`sensitive_action_without_reauth`).
    #[serde(with = "human_duration")]
    pub reauth_window: Duration,
    /// Longest acceptable `Max-Age`/`Expires` of a session cookie
    /// (`cookie_persistent`).
    #[serde(with = "human_duration")]
    pub max_cookie_lifetime: Duration,
    /// Minimum estimated entropy of a session ID, in bits (`session_id_weak`).
    pub min_entropy_bits: u32,
    /// Path the session cookie must be scoped to (`cookie_loose_scope`): a
    /// `Path` attribute outside it (wider, e.g. `/` when this is `/shop`) or
    /// not `/`-rooted is reported. Default `/` (any rooted path is fine).
    pub cookie_path: String,
}

impl PolicyConfig {
    /// Design default: 30 minutes.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
    /// Design default: 24 hours.
    pub const DEFAULT_ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
    /// Design default: 15 minutes.
    pub const DEFAULT_REAUTH_WINDOW: Duration = Duration::from_secs(15 * 60);
    /// Design default: 24 hours.
    pub const DEFAULT_MAX_COOKIE_LIFETIME: Duration = Duration::from_secs(24 * 3600);
    /// Design default: 128 bits.
    pub const DEFAULT_MIN_ENTROPY_BITS: u32 = 128;
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            absolute_timeout: Self::DEFAULT_ABSOLUTE_TIMEOUT,
            reauth_window: Self::DEFAULT_REAUTH_WINDOW,
            max_cookie_lifetime: Self::DEFAULT_MAX_COOKIE_LIFETIME,
            min_entropy_bits: Self::DEFAULT_MIN_ENTROPY_BITS,
            cookie_path: "/".into(),
        }
    }
}

/// `[sessions]`: which cookies are sessions and how they are tracked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Cookie names that carry a session ID (exact, case-sensitive as cookies
    /// are; `__Host-`/`__Secure-` prefixes are matched on the bare name too).
    pub cookie_names: Vec<String>,
    /// Most sessions held in the table; the least recently used is evicted
    /// beyond it (`sessionwatch_sessions_evicted_total{reason="capacity"}`).
    pub max_sessions: usize,
    /// File holding the key for the session-ID hash (so several agents hash
    /// alike). Unset: a random key per agent run.
    pub hash_key_file: Option<std::path::PathBuf>,
    /// One finding per (session, detector) within this window. Cookie
    /// attribute findings (which describe the application, not one session)
    /// are suppressed per (service, cookie, detector) instead.
    #[serde(with = "human_duration")]
    pub suppression_window: Duration,
    /// A session not seen for `max(idle_timeout, absolute_timeout) ×
    /// ttl_factor` of event time is dropped from the table
    /// (`sessionwatch_sessions_evicted_total{reason="ttl"}`).
    pub ttl_factor: u32,
    /// Learn session cookie names that are not in `cookie_names` from the
    /// traffic: a cookie the server sets anew on successful logins, that
    /// requests need to be accepted on paths where the server rejects
    /// requests without it (401 or a redirect to the login route). Learned
    /// names are then treated like configured ones by every detector for
    /// that service (docs/detectors.md, "Which cookie is the session").
    pub learn_cookie_names: bool,
    /// Evidence needed before a name is learned: distinct sessions issued
    /// on successful logins, and distinct clients (IP, User-Agent family)
    /// accepted with it, each at least this many (1 to 8).
    pub learn_min_clients: u32,
    /// Most candidate cookie names under observation (least recently seen
    /// dropped beyond it).
    pub learn_max_candidates: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            cookie_names: [
                "JSESSIONID",
                "PHPSESSID",
                "connect.sid",
                "sessionid",
                "_session_id",
                "laravel_session",
                "ASP.NET_SessionId",
                "session",
                "sid",
            ]
            .map(String::from)
            .to_vec(),
            max_sessions: 1_000_000,
            hash_key_file: None,
            suppression_window: Duration::from_secs(3600),
            ttl_factor: 2,
            learn_cookie_names: true,
            learn_min_clients: 2,
            learn_max_candidates: 256,
        }
    }
}

/// `[routes]`: `"METHOD path-glob"` patterns (`*` matches any run of
/// characters, method `*` any method) classifying requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutesConfig {
    /// Login routes: a success here must rotate the session ID.
    pub login: Vec<String>,
    /// Logout routes: the ID must be rejected afterwards.
    pub logout: Vec<String>,
    /// Password / role changes: a success here must rotate the session ID.
    pub privilege: Vec<String>,
    /// Sensitive actions that need a recent login.
    pub sensitive: Vec<String>,
    /// Re-authentication routes (password confirmation, "sudo mode"): a
    /// success here counts as a recent login for `sensitive`.
    pub reauth: Vec<String>,
    /// Requests that say nothing about whether the server accepted the
    /// session (static assets, health checks, public pages): they do not
    /// count as a session use and cannot trigger the timeout, stale, logout
    /// or fingerprint detectors. The login and logout pages themselves
    /// (their paths with any other method) are always treated this way.
    pub ignore: Vec<String>,
}

impl Default for RoutesConfig {
    fn default() -> Self {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
        RoutesConfig {
            login: v(&[
                "POST /login",
                "POST /signin",
                "POST /*/login",
                "POST /accounts/login/*",
                "POST /session*",
            ]),
            logout: v(&["* /logout", "* /signout", "* /*/logout"]),
            privilege: v(&["POST /password*", "POST /*/password*"]),
            sensitive: v(&["POST /pay*", "POST /checkout*"]),
            reauth: v(&[
                "POST /*confirm-password*",
                "POST /reauth*",
                "POST /*/reauth*",
                "POST /sudo*",
            ]),
            ignore: v(&[
                "* /static/*",
                "* /assets/*",
                "* /favicon.ico",
                "* /robots.txt",
                "* *.css",
                "* *.js",
                "* *.map",
                "* *.png",
                "* *.jpg",
                "* *.jpeg",
                "* *.gif",
                "* *.svg",
                "* *.ico",
                "* *.webp",
                "* *.woff",
                "* *.woff2",
                "* *.ttf",
                "* /health*",
                "* /healthz",
                "* /readyz",
                "* /livez",
                "OPTIONS *",
            ]),
        }
    }
}

/// `[network]`: whom to trust for forwarded client information.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// CIDRs whose `X-Forwarded-For` / `Forwarded` / `X-Real-IP` /
    /// `X-Forwarded-Proto` headers are believed.
    pub trusted_proxies: Vec<String>,
    /// Headers naming the original client, tried in this order when the
    /// peer is a trusted proxy: `x-forwarded-for` (rightmost untrusted hop),
    /// `forwarded` (RFC 7239), `x-real-ip`. Put first the one your edge
    /// proxy overwrites or appends to.
    pub client_ip_headers: Vec<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            trusted_proxies: vec!["127.0.0.0/8".into(), "::1/128".into()],
            client_ip_headers: vec![
                "x-forwarded-for".into(),
                "forwarded".into(),
                "x-real-ip".into(),
            ],
        }
    }
}

/// `[detectors]`: switch detectors off by id, and tune the few detectors
/// that need more than the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    /// Detector ids not to run.
    pub disabled: Vec<String>,
    /// A rotated-out or logged-out ID accepted within this time after it
    /// ended is a request that was already in flight (parallel requests of
    /// one page), not a finding (`stale_session_accepted`,
    /// `session_accepted_after_logout`).
    #[serde(with = "human_duration")]
    pub stale_grace: Duration,
    /// Distinct never-seen IDs rejected for one client IP within
    /// `bruteforce_window` that make a `session_id_bruteforce` finding.
    pub bruteforce_threshold: u32,
    /// Window of `bruteforce_threshold`.
    #[serde(with = "human_duration")]
    pub bruteforce_window: Duration,
    /// `session_id_weak`, sample stage: the last this many session IDs a
    /// service issues under one cookie name are tested together (duplicates,
    /// counters, timestamps, per-position entropy, FIPS 140-2 bit tests).
    /// At most 20000.
    pub id_sample_size: u32,
    /// No sample verdict before this many IDs, then one every this many
    /// more (evaluation is amortised). At least 50, at most `id_sample_size`.
    pub id_min_sample: u32,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        DetectorsConfig {
            disabled: Vec::new(),
            stale_grace: Duration::from_secs(5),
            bruteforce_threshold: 20,
            bruteforce_window: Duration::from_secs(60),
            id_sample_size: 1000,
            id_min_sample: 100,
        }
    }
}

/// `[[services]]`: names a service by the hosts it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Service name, used as the `service` label and in findings.
    pub name: String,
    /// Host names (exact, or `*.example.com`), without port.
    pub hosts: Vec<String>,
}

/// Everything the analysis stages need, assembled by the agent from the
/// sections above.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnalysisConfig {
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// `[sessions]`.
    pub sessions: SessionsConfig,
    /// `[routes]`.
    pub routes: RoutesConfig,
    /// `[network]`.
    pub network: NetworkConfig,
    /// `[detectors]`.
    pub detectors: DetectorsConfig,
    /// `[[services]]`.
    pub services: Vec<ServiceConfig>,
    /// Node name written into findings.
    pub node: String,
}
