//! The analysis configuration compiled for the hot path: route patterns
//! parsed, CIDRs parsed, cookie names indexed, detector switches resolved.
//! Every error names the config key it came from.

use std::time::Duration;

use crate::config::{AnalysisConfig, PolicyConfig, ServiceConfig};
use crate::cookie::split_prefix;
use crate::detectors::DetectorId;
use crate::net::{Cidr, CidrError, ForwardedHeader, ProxyTrust};
use crate::route::{RouteError, RouteSet};

/// Errors in the analysis configuration. Each names the dotted key (with
/// the list index) so `check-config` output points at the line to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A `[routes]` pattern is malformed.
    #[error("{key}: {source}")]
    Route {
        /// E.g. `routes.login[2]`.
        key: String,
        /// What is wrong.
        #[source]
        source: RouteError,
    },
    /// A `network.trusted_proxies` entry is not a CIDR.
    #[error("{key}: invalid CIDR {value:?}: {source}")]
    Cidr {
        /// E.g. `network.trusted_proxies[0]`.
        key: String,
        /// The entry.
        value: String,
        /// What is wrong.
        #[source]
        source: CidrError,
    },
    /// A cookie name is empty, too long, has characters a cookie name
    /// cannot have, or repeats.
    #[error("{key}: invalid cookie name {value:?}: {reason}")]
    CookieName {
        /// E.g. `sessions.cookie_names[3]`.
        key: String,
        /// The name.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A detector id in `detectors.disabled` does not exist.
    #[error("{key}: unknown detector {value:?} (see docs/detectors.md for the ids)")]
    UnknownDetector {
        /// E.g. `detectors.disabled[0]`.
        key: String,
        /// The id given.
        value: String,
    },
    /// A `network.client_ip_headers` entry is not a supported header.
    #[error("{key}: unsupported header {value:?} (use x-forwarded-for, forwarded or x-real-ip)")]
    ClientIpHeader {
        /// E.g. `network.client_ip_headers[1]`.
        key: String,
        /// The header given.
        value: String,
    },
    /// Any other out-of-range value.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Most configured session cookie names (indices are stored as `u8`).
pub const MAX_COOKIE_NAMES: usize = 64;
/// Index of the first learned session cookie name (configured names and
/// URL-only parameter names stay below it).
pub const LEARNED_BASE: u8 = 128;
/// Most learned session cookie names (over all services).
pub const MAX_LEARNED: usize = 64;

/// Session cookie names, indexed.
#[derive(Debug, Clone, Default)]
pub struct SessionNames {
    names: Vec<Box<str>>,
    /// Names `[0, cookies)` are configured cookie names; later ones are
    /// URL-only parameter names (`jsessionid` when `JSESSIONID` is not
    /// configured: servlet URL rewriting always uses it).
    cookies: usize,
    /// Names learned from the traffic ([`crate::learning`]), per service;
    /// index `LEARNED_BASE + position`.
    learned: Vec<(u16, Box<str>)>,
    /// Bit `n` set when a configured cookie name is `n` bytes long (names
    /// are at most 128): most cookies a browser sends (analytics, consent,
    /// preferences) have a length no session name has, and are rejected by
    /// one bit test instead of a compare with every name.
    cookie_lengths: [u64; 3],
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

impl SessionNames {
    fn compile(list: &[String]) -> Result<SessionNames, ConfigError> {
        if list.len() > MAX_COOKIE_NAMES {
            return Err(ConfigError::Invalid {
                key: "sessions.cookie_names".into(),
                reason: format!("at most {MAX_COOKIE_NAMES} names, found {}", list.len()),
            });
        }
        let mut names: Vec<Box<str>> = Vec::with_capacity(list.len() + 1);
        for (i, n) in list.iter().enumerate() {
            let err = |reason| ConfigError::CookieName {
                key: format!("sessions.cookie_names[{i}]"),
                value: n.clone(),
                reason,
            };
            if n.is_empty() || n.len() > 128 {
                return Err(err("must be 1 to 128 characters"));
            }
            if !n.bytes().all(is_token_char) {
                return Err(err(
                    "cookie names are HTTP tokens: no spaces, controls or ()<>@,;:\\\"/[]?={}",
                ));
            }
            if split_prefix(n.as_bytes()).0.is_some() {
                return Err(err(
                    "configure the bare name; __Host-/__Secure- prefixed forms match it",
                ));
            }
            if names.iter().any(|m| **m == **n) {
                return Err(err("listed twice"));
            }
            names.push(n.as_str().into());
        }
        let cookies = names.len();
        if !names.iter().any(|n| n.eq_ignore_ascii_case("jsessionid")) {
            names.push("JSESSIONID".into());
        }
        let mut cookie_lengths = [0u64; 3];
        for n in &names[..cookies] {
            if let Some(word) = cookie_lengths.get_mut(n.len() / 64) {
                *word |= 1 << (n.len() % 64);
            }
        }
        Ok(SessionNames {
            names,
            cookies,
            learned: Vec::new(),
            cookie_lengths,
        })
    }

    /// Index of a session cookie name as sent by a client of `service`:
    /// a configured name, or one learned for that service.
    pub fn match_cookie_for(&self, service: u16, name: &[u8]) -> Option<u8> {
        self.match_cookie(name).or_else(|| {
            if self.learned.is_empty() {
                return None;
            }
            let (_, bare) = split_prefix(name);
            self.learned
                .iter()
                .position(|(s, n)| *s == service && n.as_bytes() == bare)
                .map(|i| LEARNED_BASE + i as u8)
        })
    }

    /// Index of a URL parameter naming a session ID of `service`
    /// (case-insensitive): a configured name, or one learned for it.
    pub fn match_param_for(&self, service: u16, name: &str) -> Option<u8> {
        self.match_param(name).or_else(|| {
            self.learned
                .iter()
                .position(|(s, n)| *s == service && n.eq_ignore_ascii_case(name))
                .map(|i| LEARNED_BASE + i as u8)
        })
    }

    /// Adds a learned session cookie name (bare, without `__Host-` /
    /// `__Secure-`) for `service`; from then on it matches like a configured
    /// one for that service. `None` when [`MAX_LEARNED`] names are learned
    /// already. Adding a name twice returns its index.
    pub fn add_learned(&mut self, service: u16, name: &str) -> Option<u8> {
        if let Some(i) = self.match_cookie_for(service, name.as_bytes()) {
            return Some(i);
        }
        if self.learned.len() >= MAX_LEARNED {
            return None;
        }
        self.learned.push((service, name.into()));
        Some(LEARNED_BASE + (self.learned.len() - 1) as u8)
    }

    /// Learned names: `(service id, name)`.
    pub fn learned(&self) -> impl Iterator<Item = (u16, &str)> {
        self.learned.iter().map(|(s, n)| (*s, &**n))
    }

    /// Index of a session cookie name as sent (exact match, after stripping
    /// a `__Host-`/`__Secure-` prefix).
    pub fn match_cookie(&self, name: &[u8]) -> Option<u8> {
        let (_, bare) = split_prefix(name);
        let length_known = self
            .cookie_lengths
            .get(bare.len() / 64)
            .is_some_and(|word| word >> (bare.len() % 64) & 1 == 1);
        if !length_known {
            return None;
        }
        self.names[..self.cookies]
            .iter()
            .position(|n| n.as_bytes() == bare)
            .map(|i| i as u8)
    }

    /// Index of a URL parameter naming a session ID (case-insensitive:
    /// `jsessionid`, `PHPSESSID`, `sid`, …).
    pub fn match_param(&self, name: &str) -> Option<u8> {
        self.names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| i as u8)
    }

    /// The configured or learned name at `idx`.
    pub fn name(&self, idx: u8) -> &str {
        if let Some(l) = idx.checked_sub(LEARNED_BASE) {
            return self.learned.get(usize::from(l)).map_or("unknown", |s| &s.1);
        }
        self.names.get(usize::from(idx)).map_or("unknown", |s| s)
    }

    /// Configured cookie names.
    pub fn cookie_names(&self) -> impl Iterator<Item = &str> {
        self.names[..self.cookies].iter().map(|s| &**s)
    }
}

/// Compiled `[routes]`.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// `routes.login`.
    pub login: RouteSet,
    /// `routes.logout`.
    pub logout: RouteSet,
    /// `routes.privilege`.
    pub privilege: RouteSet,
    /// `routes.sensitive`.
    pub sensitive: RouteSet,
    /// `routes.reauth`.
    pub reauth: RouteSet,
    /// `routes.ignore`.
    pub ignore: RouteSet,
}

/// The compiled analysis configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[policy]`.
    pub policy: PolicyConfig,
    /// Session cookie names.
    pub names: SessionNames,
    /// Routes.
    pub routes: Routes,
    /// Trusted proxies and client-IP headers.
    pub proxies: ProxyTrust,
    /// Detectors switched off, by [`DetectorId::index`].
    pub disabled: [bool; DetectorId::COUNT],
    /// `[[services]]`.
    pub services: Vec<ServiceConfig>,
    /// Node name for findings.
    pub node: String,
    /// `sessions.max_sessions`.
    pub max_sessions: usize,
    /// Session TTL in the table.
    pub session_ttl: Duration,
    /// `sessions.suppression_window`.
    pub suppression_window: Duration,
    /// `detectors.stale_grace`.
    pub stale_grace: Duration,
    /// `detectors.bruteforce_threshold`.
    pub bruteforce_threshold: u32,
    /// `detectors.bruteforce_window`.
    pub bruteforce_window: Duration,
    /// `detectors.id_sample_size`.
    pub id_sample_size: u32,
    /// `detectors.id_min_sample`.
    pub id_min_sample: u32,
    /// `sessions.learn_cookie_names` and its thresholds.
    pub learning: crate::learning::LearnSettings,
}

fn routes(key: &str, list: &[String]) -> Result<RouteSet, ConfigError> {
    RouteSet::parse(list).map_err(|(i, source)| ConfigError::Route {
        key: format!("routes.{key}[{i}]"),
        source,
    })
}

impl Settings {
    /// Validates and compiles `cfg`.
    pub fn compile(cfg: &AnalysisConfig) -> Result<Settings, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: key.into(),
            reason,
        };
        let p = &cfg.policy;
        if p.idle_timeout.is_zero() {
            return Err(invalid(
                "policy.idle_timeout",
                "must be longer than zero".into(),
            ));
        }
        if p.absolute_timeout.is_zero() {
            return Err(invalid(
                "policy.absolute_timeout",
                "must be longer than zero".into(),
            ));
        }
        if p.min_entropy_bits > 1024 {
            return Err(invalid(
                "policy.min_entropy_bits",
                format!("{} is above 1024", p.min_entropy_bits),
            ));
        }
        if !p.cookie_path.starts_with('/') {
            return Err(invalid(
                "policy.cookie_path",
                format!("{:?} must start with '/'", p.cookie_path),
            ));
        }
        let s = &cfg.sessions;
        if s.max_sessions == 0 {
            return Err(invalid(
                "sessions.max_sessions",
                "must be at least 1".into(),
            ));
        }
        if s.ttl_factor == 0 {
            return Err(invalid("sessions.ttl_factor", "must be at least 1".into()));
        }
        let names = SessionNames::compile(&s.cookie_names)?;
        if !(1..=crate::learning::MAX_SOURCES as u32).contains(&s.learn_min_clients) {
            return Err(invalid(
                "sessions.learn_min_clients",
                format!("must be between 1 and {}", crate::learning::MAX_SOURCES),
            ));
        }
        if !(1..=65_536).contains(&s.learn_max_candidates) {
            return Err(invalid(
                "sessions.learn_max_candidates",
                "must be between 1 and 65536".into(),
            ));
        }
        let learning = crate::learning::LearnSettings {
            enabled: s.learn_cookie_names,
            min_clients: s.learn_min_clients as u8,
            max_candidates: s.learn_max_candidates,
        };
        let r = &cfg.routes;
        let routes = Routes {
            login: routes("login", &r.login)?,
            logout: routes("logout", &r.logout)?,
            privilege: routes("privilege", &r.privilege)?,
            sensitive: routes("sensitive", &r.sensitive)?,
            reauth: routes("reauth", &r.reauth)?,
            ignore: routes("ignore", &r.ignore)?,
        };
        let mut trusted = Vec::with_capacity(cfg.network.trusted_proxies.len());
        for (i, c) in cfg.network.trusted_proxies.iter().enumerate() {
            trusted.push(c.parse::<Cidr>().map_err(|source| ConfigError::Cidr {
                key: format!("network.trusted_proxies[{i}]"),
                value: c.clone(),
                source,
            })?);
        }
        let mut headers = Vec::new();
        for (i, h) in cfg.network.client_ip_headers.iter().enumerate() {
            let fh = h
                .parse::<ForwardedHeader>()
                .map_err(|()| ConfigError::ClientIpHeader {
                    key: format!("network.client_ip_headers[{i}]"),
                    value: h.clone(),
                })?;
            if !headers.contains(&fh) {
                headers.push(fh);
            }
        }
        let mut disabled = [false; DetectorId::COUNT];
        for (i, d) in cfg.detectors.disabled.iter().enumerate() {
            let id = d
                .parse::<DetectorId>()
                .map_err(|()| ConfigError::UnknownDetector {
                    key: format!("detectors.disabled[{i}]"),
                    value: d.clone(),
                })?;
            disabled[id.index()] = true;
        }
        if cfg.detectors.bruteforce_threshold < 2 || cfg.detectors.bruteforce_threshold > 10_000 {
            return Err(invalid(
                "detectors.bruteforce_threshold",
                "must be between 2 and 10000".into(),
            ));
        }
        if cfg.detectors.bruteforce_window.is_zero() {
            return Err(invalid(
                "detectors.bruteforce_window",
                "must be longer than zero".into(),
            ));
        }
        {
            use crate::detectors::session_id_weak::{MAX_SAMPLE_SIZE, MIN_MIN_SAMPLE};
            let d = &cfg.detectors;
            if d.id_sample_size < MIN_MIN_SAMPLE || d.id_sample_size > MAX_SAMPLE_SIZE {
                return Err(invalid(
                    "detectors.id_sample_size",
                    format!(
                        "{} is outside {MIN_MIN_SAMPLE}..={MAX_SAMPLE_SIZE}",
                        d.id_sample_size
                    ),
                ));
            }
            if d.id_min_sample < MIN_MIN_SAMPLE || d.id_min_sample > d.id_sample_size {
                return Err(invalid(
                    "detectors.id_min_sample",
                    format!(
                        "{} is outside {MIN_MIN_SAMPLE}..=id_sample_size ({})",
                        d.id_min_sample, d.id_sample_size
                    ),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, svc) in cfg.services.iter().enumerate() {
            if svc.name.is_empty()
                || svc.name.len() > 64
                || !svc.name.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(invalid(
                    &format!("services[{i}].name"),
                    format!("{:?}: 1 to 64 printable characters", svc.name),
                ));
            }
            if !seen.insert(svc.name.as_str()) {
                return Err(invalid(
                    &format!("services[{i}].name"),
                    format!("{:?} appears twice", svc.name),
                ));
            }
            for (j, h) in svc.hosts.iter().enumerate() {
                let bare = h.strip_prefix("*.").unwrap_or(h);
                if bare.is_empty() || bare.contains(['*', '/', ' ', ':']) {
                    return Err(invalid(
                        &format!("services[{i}].hosts[{j}]"),
                        format!("{h:?}: a host name, or \"*.\" followed by one (no port)"),
                    ));
                }
            }
        }
        let ttl = p
            .idle_timeout
            .max(p.absolute_timeout)
            .saturating_mul(s.ttl_factor);
        Ok(Settings {
            policy: p.clone(),
            names,
            routes,
            proxies: ProxyTrust { trusted, headers },
            disabled,
            services: cfg.services.clone(),
            node: cfg.node.clone(),
            max_sessions: s.max_sessions,
            session_ttl: ttl,
            suppression_window: s.suppression_window,
            stale_grace: cfg.detectors.stale_grace,
            bruteforce_threshold: cfg.detectors.bruteforce_threshold,
            bruteforce_window: cfg.detectors.bruteforce_window,
            id_sample_size: cfg.detectors.id_sample_size,
            id_min_sample: cfg.detectors.id_min_sample,
            learning,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_compile() {
        let s = Settings::compile(&AnalysisConfig::default()).unwrap();
        assert_eq!(s.names.match_cookie(b"sessionid"), Some(3));
        assert_eq!(s.names.match_cookie(b"__Host-sessionid"), Some(3));
        assert_eq!(s.names.match_cookie(b"__Secure-PHPSESSID"), Some(1));
        assert_eq!(
            s.names.match_cookie(b"SESSIONID"),
            None,
            "cookie names are case-sensitive"
        );
        assert_eq!(s.names.match_param("jsessionid"), Some(0));
        assert_eq!(s.names.match_param("phpsessid"), Some(1));
        assert_eq!(s.session_ttl, Duration::from_secs(48 * 3600));
    }

    #[test]
    fn cookie_lookup_agrees_with_the_plain_scan() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        // Configured lists of names from 1 to 128 bytes, and cookies that
        // are those names (bare or prefixed), near them, or anything.
        let lists = proptest::collection::btree_set("[a-zA-Z0-9_.]{1,12}|[a-z]{120,128}", 1..12);
        let cookie = prop_oneof![
            "[a-zA-Z0-9_.]{0,14}",
            "(__Host-|__Secure-|__host-)[a-zA-Z0-9_.]{0,12}",
            "[a-z]{118,130}",
        ];
        let cases = (lists, proptest::collection::vec(cookie, 1..24));
        let mut runner = TestRunner::new(Config {
            cases: 512,
            ..Config::default()
        });
        runner
            .run(&cases, |(list, extra)| {
                let list: Vec<String> = list.into_iter().collect();
                let names =
                    SessionNames::compile(&list).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let plain = |cookie: &[u8]| {
                    let (_, bare) = split_prefix(cookie);
                    list.iter()
                        .position(|n| n.as_bytes() == bare)
                        .map(|i| i as u8)
                };
                let prefixed = list.iter().map(|n| format!("__Secure-{n}"));
                for c in list.iter().cloned().chain(prefixed).chain(extra) {
                    prop_assert_eq!(
                        names.match_cookie(c.as_bytes()),
                        plain(c.as_bytes()),
                        "{}",
                        c
                    );
                }
                Ok(())
            })
            .map_err(|e| e.to_string())
            .expect("the length filter only rejects what no name matches");
    }

    #[test]
    fn jsessionid_url_parameter_always_known() {
        let mut c = AnalysisConfig::default();
        c.sessions.cookie_names = vec!["sessionid".into()];
        let s = Settings::compile(&c).unwrap();
        assert_eq!(s.names.match_cookie(b"JSESSIONID"), None);
        assert_eq!(
            s.names.match_param("jsessionid").map(|i| s.names.name(i)),
            Some("JSESSIONID")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = AnalysisConfig::default();
        c.routes.login.push("GET".into());
        let e = Settings::compile(&c).unwrap_err();
        assert!(e.to_string().starts_with("routes.login[5]:"), "{e}");

        let mut c = AnalysisConfig::default();
        c.network.trusted_proxies = vec!["10.0.0.0/8".into(), "10.0.0.0/99".into()];
        assert!(
            Settings::compile(&c)
                .unwrap_err()
                .to_string()
                .starts_with("network.trusted_proxies[1]:")
        );

        let mut c = AnalysisConfig::default();
        c.sessions.cookie_names.push("bad name".into());
        assert!(
            Settings::compile(&c)
                .unwrap_err()
                .to_string()
                .starts_with("sessions.cookie_names[9]:")
        );

        let mut c = AnalysisConfig::default();
        c.sessions.cookie_names.push("sid".into());
        assert!(
            Settings::compile(&c)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );

        let mut c = AnalysisConfig::default();
        c.detectors.disabled = vec!["cookie_missing_secure".into(), "nope".into()];
        assert!(
            Settings::compile(&c)
                .unwrap_err()
                .to_string()
                .starts_with("detectors.disabled[1]:")
        );

        let mut c = AnalysisConfig::default();
        c.network.client_ip_headers = vec!["true-client-ip".into()];
        assert!(
            Settings::compile(&c)
                .unwrap_err()
                .to_string()
                .starts_with("network.client_ip_headers[0]:")
        );

        let c = AnalysisConfig {
            services: vec![ServiceConfig {
                name: "shop".into(),
                hosts: vec!["shop.example:443".into()],
            }],
            ..AnalysisConfig::default()
        };
        assert!(
            Settings::compile(&c)
                .unwrap_err()
                .to_string()
                .starts_with("services[0].hosts[0]:")
        );

        let mut c = AnalysisConfig::default();
        c.policy.cookie_path = "shop".into();
        assert!(
            Settings::compile(&c)
                .unwrap_err()
                .to_string()
                .starts_with("policy.cookie_path:")
        );
    }

    #[test]
    fn learned_names_match_per_service() {
        let mut s = Settings::compile(&AnalysisConfig::default()).unwrap();
        assert_eq!(s.names.match_cookie_for(0, b"app_auth"), None);
        let idx = s.names.add_learned(0, "app_auth").unwrap();
        assert!(idx >= LEARNED_BASE);
        assert_eq!(s.names.add_learned(0, "app_auth"), Some(idx));
        assert_eq!(s.names.match_cookie_for(0, b"app_auth"), Some(idx));
        assert_eq!(s.names.match_cookie_for(0, b"__Host-app_auth"), Some(idx));
        assert_eq!(
            s.names.match_cookie_for(1, b"app_auth"),
            None,
            "other service"
        );
        assert_eq!(s.names.match_cookie(b"app_auth"), None, "configured only");
        assert_eq!(s.names.match_param_for(0, "APP_AUTH"), Some(idx));
        assert_eq!(s.names.name(idx), "app_auth");
        assert_eq!(s.names.match_cookie_for(0, b"sessionid"), Some(3));
        for i in 1..MAX_LEARNED {
            assert!(s.names.add_learned(0, &format!("n{i}")).is_some());
        }
        assert_eq!(s.names.add_learned(0, "one_too_many"), None);
        assert_eq!(s.names.learned().count(), MAX_LEARNED);
    }

    #[test]
    fn learning_thresholds_are_validated() {
        let mut c = AnalysisConfig::default();
        c.sessions.learn_min_clients = 0;
        assert!(
            Settings::compile(&c)
                .unwrap_err()
                .to_string()
                .starts_with("sessions.learn_min_clients:")
        );
        let mut c = AnalysisConfig::default();
        c.sessions.learn_max_candidates = 0;
        assert!(
            Settings::compile(&c)
                .unwrap_err()
                .to_string()
                .starts_with("sessions.learn_max_candidates:")
        );
        let s = Settings::compile(&AnalysisConfig::default()).unwrap();
        assert!(s.learning.enabled);
        assert_eq!(s.learning.min_clients, 2);
    }

    #[test]
    fn disabled_detectors() {
        let mut c = AnalysisConfig::default();
        c.detectors.disabled = vec!["cookie_samesite_weak".into()];
        let s = Settings::compile(&c).unwrap();
        assert!(s.disabled[DetectorId::CookieSamesiteWeak.index()]);
        assert!(!s.disabled[DetectorId::CookieMissingSecure.index()]);
    }
}
