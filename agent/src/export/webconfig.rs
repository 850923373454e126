//! TLS and basic authentication of the admin endpoint, configured by a web
//! configuration file in the format of the Prometheus exporter-toolkit
//! (`--web.config.file` of node_exporter and friends), so the same file and
//! the same Prometheus `scrape_config` (`scheme: https`, `tls_config`,
//! `basic_auth`) work for sessionwatch:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/sessionwatch/tls.crt
//!   key_file: /etc/sessionwatch/tls.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional (mTLS)
//!   client_ca_file: /etc/sessionwatch/ca.crt
//!   min_version: TLS12
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...   # bcrypt (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Differences from the Go toolkit, each rejected with a clear message
//! rather than silently ignored: TLS 1.0/1.1 (rustls implements neither),
//! `cipher_suites` and `curve_preferences` (rustls offers only AEAD suites
//! and modern groups), `RequestClientCert`/`RequireAnyClientCert` (an
//! unverified client certificate authenticates nothing) and
//! `client_allowed_sans`. HTTP/2 is not served (`http2: true` is accepted
//! and logged; the admin endpoint speaks HTTP/1.1, which Prometheus uses).
//!
//! The certificate and key files are re-read when their modification time
//! changes (checked at most every [`CERT_RECHECK`] on new handshakes), so a
//! rotated certificate (cert-manager, a mounted Secret) is served without a
//! restart; users and the client CA are read once at start.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use ring::hmac;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio::sync::Semaphore;

/// How often, at most, the certificate files' modification times are
/// checked for a rotation.
pub const CERT_RECHECK: Duration = Duration::from_secs(5);

/// Verified credentials remembered at most (results of bcrypt checks);
/// the cache is emptied when full.
const AUTH_CACHE_MAX: usize = 1024;

/// Longest `Authorization` header value considered; longer ones are
/// rejected without decoding.
const MAX_AUTH_HEADER: usize = 4096;

/// Response headers `http_server_config.headers` may set (the toolkit's
/// list: security headers only, never ones that change the protocol).
const ALLOWED_HEADERS: &[&str] = &[
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "x-xss-protection",
    "content-security-policy",
];

/// Errors loading the web configuration file.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// A file (the config, a certificate, a key, a CA) could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The web config is not valid YAML or has an unknown key.
    #[error("{path}: {message}")]
    Parse {
        /// The web config file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key has a value that is not acceptable.
    #[error("{path}: invalid {key}: {reason}")]
    Invalid {
        /// The web config file.
        path: PathBuf,
        /// Dotted key, e.g. `tls_server_config.min_version`.
        key: String,
        /// Why it is rejected (never contains a password or hash).
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    tls_server_config: Option<TlsFileConfig>,
    http_server_config: Option<HttpFileConfig>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFileConfig {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    // Known toolkit keys this implementation refuses (see the module docs).
    cipher_suites: Option<serde_yaml_ng::Value>,
    curve_preferences: Option<serde_yaml_ng::Value>,
    client_allowed_sans: Option<serde_yaml_ng::Value>,
    cert: Option<serde_yaml_ng::Value>,
    key: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFileConfig {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// The loaded web configuration: what the admin endpoint enforces.
#[derive(Clone)]
pub struct WebConfig {
    /// TLS acceptor settings; `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Basic authentication; `None`: no authentication.
    pub auth: Option<Arc<BasicAuth>>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("users", &self.auth.as_ref().map(|a| a.users.len()))
            .field("headers", &self.headers.len())
            .finish()
    }
}

impl WebConfig {
    /// Reads and validates a web configuration file. Certificates, keys,
    /// the client CA and every bcrypt hash are checked now, so a broken
    /// file stops the agent at start instead of failing scrapes later.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses web configuration text; `path` names the source in errors and
    /// relative certificate paths are resolved against its directory (as
    /// the toolkit does).
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, WebConfigError> {
        let file: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| WebConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?
        };
        let invalid = |key: &str, reason: String| WebConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match &file.tls_server_config {
            Some(t) => Some(Arc::new(tls_config(t, base, &invalid)?)),
            None => None,
        };
        let auth = match &file.basic_auth_users {
            Some(users) if !users.is_empty() => {
                if tls.is_none() {
                    tracing::warn!(
                        "web config: basic_auth_users without tls_server_config sends passwords in clear text"
                    );
                }
                Some(Arc::new(BasicAuth::new(users, &invalid)?))
            }
            _ => None,
        };
        let mut headers = Vec::new();
        if let Some(http) = &file.http_server_config {
            if http.http2 == Some(true) {
                tracing::info!("web config: http2 requested; the admin endpoint serves HTTP/1.1");
            }
            for (name, value) in http.headers.iter().flatten() {
                let lower = name.to_ascii_lowercase();
                if !ALLOWED_HEADERS.contains(&lower.as_str()) {
                    return Err(invalid(
                        "http_server_config.headers",
                        format!("{name}: only {} may be set", ALLOWED_HEADERS.join(", ")),
                    ));
                }
                let n = HeaderName::from_bytes(lower.as_bytes())
                    .map_err(|e| invalid("http_server_config.headers", format!("{name}: {e}")))?;
                let v = HeaderValue::from_str(value)
                    .map_err(|e| invalid("http_server_config.headers", format!("{name}: {e}")))?;
                headers.push((n, v));
            }
        }
        Ok(WebConfig { tls, auth, headers })
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn protocol_version(
    key: &str,
    v: &str,
    invalid: &dyn Fn(&str, String) -> WebConfigError,
) -> Result<usize, WebConfigError> {
    match v {
        "TLS12" => Ok(0),
        "TLS13" => Ok(1),
        "TLS10" | "TLS11" => Err(invalid(
            key,
            format!("{v} is not supported (rustls implements TLS 1.2 and 1.3 only)"),
        )),
        other => Err(invalid(key, format!("{other:?}: expected TLS12 or TLS13"))),
    }
}

fn tls_config(
    t: &TlsFileConfig,
    base: &Path,
    invalid: &dyn Fn(&str, String) -> WebConfigError,
) -> Result<rustls::ServerConfig, WebConfigError> {
    for (key, set) in [
        ("cipher_suites", t.cipher_suites.is_some()),
        ("curve_preferences", t.curve_preferences.is_some()),
        ("client_allowed_sans", t.client_allowed_sans.is_some()),
        ("cert", t.cert.is_some()),
        ("key", t.key.is_some()),
    ] {
        if set {
            return Err(invalid(
                &format!("tls_server_config.{key}"),
                "not supported by sessionwatch (see RELIABILITY.md, Metrics endpoint security)"
                    .into(),
            ));
        }
    }
    let (Some(cert_file), Some(key_file)) = (&t.cert_file, &t.key_file) else {
        return Err(invalid(
            "tls_server_config",
            "cert_file and key_file are both required".into(),
        ));
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let min = protocol_version(
        "tls_server_config.min_version",
        t.min_version.as_deref().unwrap_or("TLS12"),
        invalid,
    )?;
    let max = protocol_version(
        "tls_server_config.max_version",
        t.max_version.as_deref().unwrap_or("TLS13"),
        invalid,
    )?;
    // Ordered oldest first; min/max are indexes into it.
    let all: [&'static rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS12, &rustls::version::TLS13];
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        all.get(min..=max).map(<[_]>::to_vec).unwrap_or_default();
    if versions.is_empty() {
        return Err(invalid(
            "tls_server_config.min_version",
            "min_version is above max_version".into(),
        ));
    }
    let resolver = ReloadingCert::new(
        resolve(base, cert_file),
        resolve(base, key_file),
        provider.clone(),
    )
    .map_err(|reason| invalid("tls_server_config.cert_file", reason))?;

    let auth_type = t.client_auth_type.as_deref().unwrap_or("");
    let auth_type = match (auth_type, &t.client_ca_file) {
        // The toolkit's default with a CA file: verify and require.
        ("", Some(_)) => "RequireAndVerifyClientCert",
        ("", None) => "NoClientCert",
        (other, _) => other,
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| invalid("tls_server_config.min_version", e.to_string()))?;
    let builder = match auth_type {
        "NoClientCert" => {
            if t.client_ca_file.is_some() {
                return Err(invalid(
                    "tls_server_config.client_ca_file",
                    "set, but client_auth_type is NoClientCert".into(),
                ));
            }
            builder.with_no_client_auth()
        }
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let Some(ca) = &t.client_ca_file else {
                return Err(invalid(
                    "tls_server_config.client_ca_file",
                    format!("required with client_auth_type {auth_type}"),
                ));
            };
            let ca = resolve(base, ca);
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(&ca)? {
                roots
                    .add(c)
                    .map_err(|e| invalid("tls_server_config.client_ca_file", e.to_string()))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if auth_type == "VerifyClientCertIfGiven" {
                v = v.allow_unauthenticated();
            }
            let v = v
                .build()
                .map_err(|e| invalid("tls_server_config.client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(v)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(invalid(
                "tls_server_config.client_auth_type",
                format!(
                    "{auth_type} accepts unverified certificates, which authenticate nothing; \
                     use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
                ),
            ));
        }
        other => {
            return Err(invalid(
                "tls_server_config.client_auth_type",
                format!(
                    "{other:?}: expected NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
                ),
            ));
        }
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(false);
    Ok(cfg)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, WebConfigError> {
    let bytes = std::fs::read(path).map_err(|source| WebConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| WebConfigError::Invalid {
            path: path.to_owned(),
            key: "certificate".into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(WebConfigError::Invalid {
            path: path.to_owned(),
            key: "certificate".into(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// Serves the certificate in `cert_file`/`key_file`, re-reading both when
/// either's modification time changes. A rotation that fails to load (a
/// half-written file, a key that does not match) keeps the previous pair
/// and logs a warning, so a bad rotation never takes the endpoint down.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<CertState>,
}

#[derive(Debug)]
struct CertState {
    checked: Instant,
    mtimes: (Option<SystemTime>, Option<SystemTime>),
    current: Arc<CertifiedKey>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    fn new(
        cert_file: PathBuf,
        key_file: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCert, String> {
        let mtimes = (mtime(&cert_file), mtime(&key_file));
        let current = Arc::new(Self::load(&cert_file, &key_file, &provider)?);
        Ok(ReloadingCert {
            cert_file,
            key_file,
            provider,
            state: Mutex::new(CertState {
                checked: Instant::now(),
                mtimes,
                current,
            }),
        })
    }

    fn load(
        cert_file: &Path,
        key_file: &Path,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, String> {
        let certs = read_certs(cert_file).map_err(|e| e.to_string())?;
        let key_bytes = std::fs::read(key_file)
            .map_err(|e| format!("{}: cannot read: {e}", key_file.display()))?;
        // The parse error of a key file names the PEM problem, never the key.
        let key = PrivateKeyDer::from_pem_slice(&key_bytes)
            .map_err(|e| format!("{}: no usable private key: {e}", key_file.display()))?;
        CertifiedKey::from_der(certs, key, provider).map_err(|e| {
            format!(
                "{} / {}: certificate and key unusable: {e}",
                cert_file.display(),
                key_file.display()
            )
        })
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let mut st = self.state.lock().ok()?;
        if st.checked.elapsed() >= CERT_RECHECK {
            st.checked = Instant::now();
            let now = (mtime(&self.cert_file), mtime(&self.key_file));
            if now != st.mtimes {
                match Self::load(&self.cert_file, &self.key_file, &self.provider) {
                    Ok(k) => {
                        tracing::info!(cert = %self.cert_file.display(), "admin endpoint certificate reloaded");
                        st.current = Arc::new(k);
                        st.mtimes = now;
                    }
                    Err(e) => {
                        // Retried at the next check: the mtimes stay old.
                        tracing::warn!(error = %e, "admin endpoint certificate not reloaded; serving the previous one");
                    }
                }
            }
        }
        Some(st.current.clone())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// Outcome of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Valid user and password.
    Allowed,
    /// No `Authorization: Basic` header, a malformed one, or wrong
    /// credentials (not distinguished in the response).
    Denied,
}

/// `basic_auth_users`: user → bcrypt hash, with a cache of checked
/// credentials so a scrape does not cost a bcrypt computation (tens of
/// milliseconds of CPU at cost 10) every time.
///
/// The cache key is an HMAC-SHA256 of user and password under a random
/// per-process key: the cache never holds a password, and its contents are
/// useless outside this process. bcrypt runs off the async threads, one at
/// a time, so a flood of wrong passwords costs at most one core.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// Checked against when the user is unknown, so the response time does
    /// not tell which user names exist.
    dummy_hash: String,
    key: hmac::Key,
    cache: Mutex<HashMap<[u8; 32], bool>>,
    bcrypt_slots: Semaphore,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    fn new(
        users: &BTreeMap<String, String>,
        invalid: &dyn Fn(&str, String) -> WebConfigError,
    ) -> Result<BasicAuth, WebConfigError> {
        let mut max_cost = 4;
        for (user, hash) in users {
            if user.is_empty() || user.contains(':') {
                return Err(invalid(
                    "basic_auth_users",
                    format!("user name {user:?}: must be non-empty and contain no ':'"),
                ));
            }
            let parts: bcrypt::HashParts = hash.parse().map_err(|_| {
                // The hash itself is not echoed.
                invalid(
                    "basic_auth_users",
                    format!("user {user:?}: not a bcrypt hash ($2a$/$2b$/$2y$)"),
                )
            })?;
            max_cost = max_cost.max(parts.get_cost());
        }
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| invalid("basic_auth_users", "no randomness for the cache key".into()))?;
        let mut filler = [0u8; 16];
        ring::rand::SecureRandom::fill(&rng, &mut filler)
            .map_err(|_| invalid("basic_auth_users", "no randomness".into()))?;
        let dummy_hash = bcrypt::hash(filler, max_cost)
            .map_err(|e| invalid("basic_auth_users", format!("bcrypt: {e}")))?;
        Ok(BasicAuth {
            users: users.iter().map(|(u, h)| (u.clone(), h.clone())).collect(),
            dummy_hash,
            key,
            cache: Mutex::new(HashMap::new()),
            bcrypt_slots: Semaphore::new(1),
        })
    }

    /// Number of configured users.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Checks an `Authorization` header value.
    pub async fn check(&self, header: Option<&HeaderValue>) -> AuthOutcome {
        let Some((user, password)) = header.and_then(parse_basic) else {
            return AuthOutcome::Denied;
        };
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&(user.len() as u64).to_le_bytes());
        ctx.update(user.as_bytes());
        ctx.update(&password);
        let tag = ctx.sign();
        let mut cache_key = [0u8; 32];
        cache_key.copy_from_slice(tag.as_ref());
        if let Some(ok) = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&cache_key).copied())
        {
            return if ok {
                AuthOutcome::Allowed
            } else {
                AuthOutcome::Denied
            };
        }
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return AuthOutcome::Denied;
        };
        // bcrypt compares in constant time; the dummy hash keeps an unknown
        // user as slow as a known one.
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        let ok = verified && known;
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= AUTH_CACHE_MAX {
                c.clear();
            }
            c.insert(cache_key, ok);
        }
        if ok {
            AuthOutcome::Allowed
        } else {
            AuthOutcome::Denied
        }
    }
}

/// `Basic base64(user:password)` → (user, password bytes).
fn parse_basic(v: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let v = v.as_bytes();
    if v.len() > MAX_AUTH_HEADER || v.len() < 6 || !v[..6].eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v[6..].trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_owned();
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(text, Path::new("/nonexistent/web.yml"))
    }

    fn basic(user: &str, pass: &str) -> HeaderValue {
        let enc = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        HeaderValue::from_str(&format!("Basic {enc}")).unwrap()
    }

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        let c = parse("").unwrap();
        assert!(c.tls.is_none() && c.auth.is_none());
        let c = parse("{}\n").unwrap();
        assert!(c.tls.is_none() && c.auth.is_none());
    }

    #[test]
    fn unknown_and_refused_keys_are_errors() {
        let e = parse("tls_server_config:\n  cert_fil: x\n").unwrap_err();
        assert!(e.to_string().contains("cert_fil"), "{e}");
        let e = parse("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [X]\n")
            .unwrap_err();
        assert!(e.to_string().contains("cipher_suites"), "{e}");
        let e = parse("tls_server_config:\n  key_file: b\n").unwrap_err();
        assert!(e.to_string().contains("cert_file and key_file"), "{e}");
    }

    #[test]
    fn bad_hash_is_rejected_without_echoing_it() {
        let e = parse("basic_auth_users:\n  alice: notahash-secret\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("alice") && msg.contains("bcrypt"), "{msg}");
        assert!(!msg.contains("notahash-secret"), "{msg}");
        let e = parse("basic_auth_users:\n  'a:b': $2y$04$abcdefghijklmnopqrstuu5yVXFKzo2DSuYn6IvE0vfcVrDpcUSBm\n")
            .unwrap_err();
        assert!(e.to_string().contains("':'"), "{e}");
    }

    #[test]
    fn headers_are_limited_to_security_headers() {
        let c = parse("http_server_config:\n  headers:\n    X-Frame-Options: deny\n").unwrap();
        assert_eq!(c.headers.len(), 1);
        let e =
            parse("http_server_config:\n  headers:\n    Content-Type: text/html\n").unwrap_err();
        assert!(e.to_string().contains("only"), "{e}");
    }

    #[test]
    fn basic_header_parsing() {
        assert_eq!(
            parse_basic(&basic("u", "p:q")),
            Some(("u".into(), b"p:q".to_vec()))
        );
        assert_eq!(parse_basic(&HeaderValue::from_static("Bearer x")), None);
        assert_eq!(parse_basic(&HeaderValue::from_static("Basic !!!")), None);
        // No colon: no user/password split.
        let enc = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert_eq!(
            parse_basic(&HeaderValue::from_str(&format!("basic {enc}")).unwrap()),
            None
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn auth_checks_and_caches() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let c = parse(&format!("basic_auth_users:\n  prom: '{hash}'\n")).unwrap();
        let auth = c.auth.unwrap();
        assert_eq!(auth.users(), 1);
        let good = basic("prom", "s3cret");
        assert_eq!(auth.check(Some(&good)).await, AuthOutcome::Allowed);
        // Cached: the second check does not run bcrypt again.
        assert_eq!(auth.cache.lock().unwrap().len(), 1);
        assert_eq!(auth.check(Some(&good)).await, AuthOutcome::Allowed);
        assert_eq!(auth.cache.lock().unwrap().len(), 1);
        for bad in [
            basic("prom", "wrong"),
            basic("nobody", "s3cret"),
            basic("prom", ""),
            HeaderValue::from_static("Basic"),
        ] {
            assert_eq!(auth.check(Some(&bad)).await, AuthOutcome::Denied);
        }
        assert_eq!(auth.check(None).await, AuthOutcome::Denied);
    }
}
