//! The detectors: one small module each, behind the [`Detector`] trait.
//!
//! The analyzer decodes an exchange once into a [`View`] — the client, the
//! outcome ("success" as the design defines it), the route classes, the
//! session IDs the request presented and the session cookies the response
//! set, each with its session record *as it was before this exchange* — and
//! hands it to every enabled detector. Detectors only read; the analyzer
//! applies the exchange to the session table afterwards. A detector reports
//! [`Hit`]s; the analyzer suppresses repeats, turns hits into findings and
//! counts them.
//!
//! Detectors never see a raw session ID except through [`RawId`], which has
//! no `Debug`/`Display` and only offers the per-ID estimates.

use std::cell::OnceCell;
use std::str::FromStr;

use serde_json::{Map, Value};
use sessionwatch_http::Exchange;
use sessionwatch_streams::Timestamp;

use crate::clientside::ClientSide;
use crate::cookie::{DeletionReason, SetCookie};
use crate::entropy::IdEstimate;
use crate::finding::Severity;
use crate::hash::SessionHash;
use crate::net::ClientNet;
use crate::settings::Settings;
use crate::store::{Fingerprint, SessionRecord, SessionState};
use crate::suppress::{ScopeKey, Suppressor};
use crate::url::UrlLocation;
use crate::useragent::UaTable;

pub mod absolute_timeout_not_enforced;
pub mod client_side_session;
pub mod cookie_loose_scope;
pub mod cookie_missing_httponly;
pub mod cookie_missing_secure;
pub mod cookie_persistent;
pub mod cookie_prefix_violation;
pub mod cookie_samesite_weak;
pub mod idle_timeout_not_enforced;
pub mod no_rotation_after_login;
pub mod no_rotation_after_privilege_change;
pub mod no_rotation_after_tls_upgrade;
pub mod sensitive_action_without_reauth;
pub mod session_accepted_after_logout;
pub mod session_cleartext;
pub mod session_fingerprint_change;
pub mod session_id_bruteforce;
pub mod session_id_in_url;
pub mod session_id_weak;
pub mod stale_session_accepted;

#[cfg(test)]
pub(crate) mod testkit;

macro_rules! detector_ids {
    ($( $variant:ident = $id:literal, $cwe:literal; )*) => {
        /// Stable detector ids (the `detector` field and label value).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DetectorId {
            $(
                #[doc = concat!("`", $id, "` (", $cwe, ").")]
                $variant,
            )*
        }

        impl DetectorId {
            /// Every detector, in the design table's order.
            pub const ALL: &'static [DetectorId] = &[$(DetectorId::$variant),*];
            /// Number of detectors.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable id.
            pub const fn as_str(self) -> &'static str {
                match self { $(DetectorId::$variant => $id,)* }
            }

            /// CWE (or other reference) id written into findings.
            pub const fn cwe(self) -> &'static str {
                match self { $(DetectorId::$variant => $cwe,)* }
            }
        }
    };
}

detector_ids! {
    CookieMissingSecure = "cookie_missing_secure", "CWE-614";
    CookieMissingHttponly = "cookie_missing_httponly", "CWE-1004";
    CookieSamesiteWeak = "cookie_samesite_weak", "CWE-1275";
    CookiePersistent = "cookie_persistent", "CWE-539";
    CookieLooseScope = "cookie_loose_scope", "CWE-565";
    CookiePrefixViolation = "cookie_prefix_violation", "RFC 6265bis";
    SessionIdWeak = "session_id_weak", "CWE-331";
    SessionIdInUrl = "session_id_in_url", "CWE-598";
    SessionCleartext = "session_cleartext", "CWE-319";
    NoRotationAfterLogin = "no_rotation_after_login", "CWE-384";
    NoRotationAfterPrivilegeChange = "no_rotation_after_privilege_change", "CWE-384";
    NoRotationAfterTlsUpgrade = "no_rotation_after_tls_upgrade", "CWE-384";
    StaleSessionAccepted = "stale_session_accepted", "CWE-613";
    SessionAcceptedAfterLogout = "session_accepted_after_logout", "CWE-613";
    IdleTimeoutNotEnforced = "idle_timeout_not_enforced", "CWE-613";
    AbsoluteTimeoutNotEnforced = "absolute_timeout_not_enforced", "CWE-613";
    SensitiveActionWithoutReauth = "sensitive_action_without_reauth", "ASVS 3.7.1";
    SessionFingerprintChange = "session_fingerprint_change", "CWE-294";
    SessionIdBruteforce = "session_id_bruteforce", "CWE-307";
    ClientSideSession = "client_side_session", "CWE-613";
}

impl DetectorId {
    /// Position in [`DetectorId::ALL`] (array index for counters).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }

    /// Anchor of the detector's section in docs/detectors.md (alert
    /// `runbook_url`s point there).
    pub fn doc_anchor(self) -> &'static str {
        self.as_str()
    }
}

impl FromStr for DetectorId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL
            .iter()
            .copied()
            .find(|d| d.as_str() == s)
            .ok_or(())
    }
}

impl std::fmt::Display for DetectorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// "Success" as the design defines it, decided from the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, or 3xx not pointing at the login route, and no cookie-clearing
    /// `Set-Cookie`: the server accepted the session.
    Accepted,
    /// 401 / 419 (Laravel "page expired") / 440 (IIS login timeout), a 3xx to
    /// the login route, or a response clearing the session cookie: the
    /// server refused the session.
    Rejected,
    /// Any other status (403, 404, 5xx, …): says nothing about the session.
    Neutral,
    /// No response was paired with the request.
    NoResponse,
}

impl Outcome {
    /// Stable evidence value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Rejected => "rejected",
            Outcome::Neutral => "neutral",
            Outcome::NoResponse => "no_response",
        }
    }
}

/// Route classes of the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteFlags {
    /// `routes.login` matches.
    pub login: bool,
    /// `routes.logout` matches.
    pub logout: bool,
    /// `routes.privilege` matches.
    pub privilege: bool,
    /// `routes.sensitive` matches.
    pub sensitive: bool,
    /// `routes.reauth` matches.
    pub reauth: bool,
    /// `routes.ignore` matches, or it is the login/logout page requested
    /// with another method: the response says nothing about the session.
    pub ignored: bool,
}

/// A raw session ID, available to detectors only for per-ID estimates.
/// Deliberately neither `Debug` nor `Display`.
#[derive(Clone, Copy)]
pub struct RawId<'a>(&'a [u8]);

impl<'a> RawId<'a> {
    /// Wraps a raw value (crate-internal).
    pub(crate) fn new(v: &'a [u8]) -> RawId<'a> {
        RawId(v)
    }
    /// Strength estimate from alphabet, length and patterns.
    pub fn estimate(&self) -> IdEstimate {
        crate::entropy::estimate(self.0)
    }
    /// Client-side session classification.
    pub fn client_side(&self) -> Option<ClientSide> {
        crate::clientside::classify(self.0)
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A session ID an exchange shows for the first time: what several
/// detectors judge from its raw bytes (strength, client-side format) is
/// derived at most once, on first use.
pub struct FirstSeen<'a> {
    /// Keyed hash.
    pub hash: SessionHash,
    /// Session-cookie index.
    pub cookie: u8,
    /// Cookie or parameter name.
    pub name: &'a str,
    /// The raw ID.
    pub raw: RawId<'a>,
    estimate: OnceCell<IdEstimate>,
    client_side: OnceCell<Option<ClientSide>>,
}

impl<'a> FirstSeen<'a> {
    fn new(hash: SessionHash, cookie: u8, name: &'a str, raw: RawId<'a>) -> FirstSeen<'a> {
        FirstSeen {
            hash,
            cookie,
            name,
            raw,
            estimate: OnceCell::new(),
            client_side: OnceCell::new(),
        }
    }

    /// [`RawId::estimate`], computed once.
    pub fn estimate(&self) -> &IdEstimate {
        self.estimate.get_or_init(|| self.raw.estimate())
    }

    /// [`RawId::client_side`], computed once.
    pub fn client_side(&self) -> Option<&ClientSide> {
        self.client_side
            .get_or_init(|| self.raw.client_side())
            .as_ref()
    }
}

/// IDs seen for the first time in this exchange that the server stands
/// behind: newly issued ones, and unknown presented ones it accepted
/// (issued before we watched, or adopted). Attacker-supplied IDs that
/// the server rejects are not included (they say nothing about the
/// server's generator).
pub fn first_seen_ids<'a>(
    issued: &[Issued<'a>],
    presented: &[Presented<'a>],
    outcome: Outcome,
) -> Vec<FirstSeen<'a>> {
    let mut out: Vec<FirstSeen<'a>> = Vec::new();
    for i in issued.iter().filter(|i| i.is_live() && i.record.is_none()) {
        if let Some(h) = i.hash
            && !out.iter().any(|o| o.hash == h)
        {
            out.push(FirstSeen::new(h, i.cookie, i.name, i.raw));
        }
    }
    if outcome == Outcome::Accepted {
        for p in presented.iter().filter(|p| p.record.is_none()) {
            if !out.iter().any(|o| o.hash == p.hash) {
                out.push(FirstSeen::new(p.hash, p.cookie, p.name, p.raw));
            }
        }
    }
    out
}

/// Where the request carried a presented session ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// A `Cookie` header.
    Cookie,
    /// The URL.
    Url(UrlLocation),
}

/// What the response did to the cookie of a presented ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing: no `Set-Cookie` for that cookie name.
    None,
    /// Set the same ID again (frameworks that re-issue on every response).
    Reissued,
    /// Set a different ID.
    Rotated(SessionHash),
    /// Cleared the cookie.
    Deleted(DeletionReason),
}

/// A session ID the request presented.
pub struct Presented<'a> {
    /// Its hash.
    pub hash: SessionHash,
    /// Cookie name index.
    pub cookie: u8,
    /// Name as sent (`__Host-sessionid`, `jsessionid`, …).
    pub name: &'a str,
    /// Where it was first found.
    pub source: IdSource,
    /// Where in the URL it was (also) carried, if anywhere.
    pub url: Option<UrlLocation>,
    /// The URL parameter name, when `url` is set.
    pub url_name: &'a str,
    /// The raw value (estimates only).
    pub raw: RawId<'a>,
    /// The session before this exchange; `None` when never seen (or evicted).
    pub record: Option<SessionRecord>,
    /// What the response did to this cookie name.
    pub effect: Effect,
    /// The same cookie name was sent with several different values (path
    /// shadowing): which one the server used is unknown, so outcome-based
    /// detectors skip it.
    pub ambiguous: bool,
}

impl Presented<'_> {
    /// The response replaced this ID with another or cleared it: the server
    /// did not carry this session forward.
    pub fn replaced(&self) -> bool {
        matches!(self.effect, Effect::Rotated(_) | Effect::Deleted(_))
    }
}

/// A session cookie the response set.
pub struct Issued<'a> {
    /// The parsed `Set-Cookie`.
    pub cookie_attrs: SetCookie<'a>,
    /// Cookie name index.
    pub cookie: u8,
    /// Name as sent.
    pub name: &'a str,
    /// Hash of the new value (`None` for a deletion).
    pub hash: Option<SessionHash>,
    /// Deletion, if it clears the cookie.
    pub deletion: Option<DeletionReason>,
    /// The session with this value before the exchange, if known.
    pub record: Option<SessionRecord>,
    /// Lifetime in seconds from the response time (`None`: session cookie).
    pub lifetime: Option<i64>,
    /// The raw value (estimates only).
    pub raw: RawId<'a>,
    /// The last `Set-Cookie` of this name in the response (the one that
    /// takes effect).
    pub last_for_name: bool,
}

impl Issued<'_> {
    /// A live (non-deletion) session cookie.
    pub fn is_live(&self) -> bool {
        self.deletion.is_none() && self.hash.is_some()
    }
}

/// One exchange as the detectors see it.
pub struct View<'a> {
    /// The exchange.
    pub ex: &'a Exchange,
    /// Compiled settings.
    pub settings: &'a Settings,
    /// Decision time (response time, else request time).
    pub now: Timestamp,
    /// Reference time for cookie expiry, seconds since the epoch (the
    /// response's `Date` header, else `now`).
    pub reference_secs: i64,
    /// Service id.
    pub service: u16,
    /// Client network identity.
    pub client: ClientNet,
    /// Client fingerprint.
    pub fp: Fingerprint,
    /// User-Agent families (for evidence).
    pub ua: &'a UaTable,
    /// Success as the design defines it.
    pub outcome: Outcome,
    /// Route classes.
    pub routes: RouteFlags,
    /// Request path (no query, path parameters removed).
    pub path: &'a str,
    /// Request host without port, if known.
    pub host: Option<&'a str>,
    /// Session IDs presented by the request.
    pub presented: &'a [Presented<'a>],
    /// Session cookies set by the response.
    pub issued: &'a [Issued<'a>],
    /// Session IDs this exchange shows for the first time (see
    /// [`first_seen_ids`]).
    pub first_seen: &'a [FirstSeen<'a>],
}

impl<'a> View<'a> {
    /// The response set a live session ID that the request did not present:
    /// a new session (rotation, when something was presented).
    pub fn new_id_issued(&self) -> bool {
        self.issued.iter().any(|i| {
            i.last_for_name && i.is_live() && !self.presented.iter().any(|p| Some(p.hash) == i.hash)
        })
    }

    /// Status code, if a response was seen.
    pub fn status(&self) -> Option<u16> {
        self.ex.response.as_ref().map(|r| r.status)
    }

    /// The response was accepted and the route says something about the
    /// session (not ignored).
    pub fn accepted_use(&self) -> bool {
        self.outcome == Outcome::Accepted && !self.routes.ignored
    }

    /// Seconds between two event times (saturating at zero).
    pub fn secs_since(&self, earlier: Timestamp) -> u64 {
        self.now.saturating_since(earlier).as_secs()
    }
}

/// Reports every live session cookie of the response that lacks a flag
/// attribute (`Secure`, `HttpOnly`): one hit per (service, cookie name)
/// per suppression window, since the flag describes the application's
/// cookie configuration rather than one session.
pub(crate) fn report_missing_flag(
    id: DetectorId,
    v: &View<'_>,
    out: &mut Hits<'_>,
    attribute: &'static str,
    lacks: impl Fn(&Issued<'_>) -> bool,
    extra: impl Fn() -> Map<String, Value>,
) {
    for i in v.issued.iter().filter(|i| i.is_live() && lacks(i)) {
        let scope = Scope::Cookie(i.cookie);
        if !out.wants(id, scope) {
            continue;
        }
        // Evidence only for a reported hit: this runs on every exchange.
        let mut evidence = extra();
        evidence.insert("attribute".into(), Value::from(attribute));
        out.push(Hit {
            detector: id,
            severity: Severity::Medium,
            scope,
            session: i.hash,
            cookie: Some(i.name.to_owned()),
            message: format!(
                "session cookie {} set without the {attribute} attribute",
                i.name
            ),
            evidence,
        });
    }
}

/// Reports each session the request presented that the server accepted
/// although `elapsed` (idle gap, age) of its record exceeds `limit`: the
/// shared core of the timeout detectors. Logins and logouts are skipped (a
/// login legitimately revives a session; a logout's acceptance is the
/// logout detector's concern), and so are sessions already rotated out or
/// logged out, which other detectors report. `render` builds the message
/// and evidence from the measured duration.
pub(crate) fn report_timeout_exceeded(
    id: DetectorId,
    v: &View<'_>,
    out: &mut Hits<'_>,
    limit: std::time::Duration,
    elapsed: impl Fn(&SessionRecord) -> std::time::Duration,
    render: impl Fn(std::time::Duration, &SessionRecord) -> (String, Map<String, Value>),
) {
    if !v.accepted_use() || v.routes.login || v.routes.logout {
        return;
    }
    for p in v.presented.iter().filter(|p| !p.ambiguous && !p.replaced()) {
        let Some(r) = p
            .record
            .filter(|r| matches!(r.state, SessionState::Active | SessionState::Expired))
        else {
            continue;
        };
        let measured = elapsed(&r);
        if measured <= limit {
            continue;
        }
        let scope = Scope::Session(p.hash);
        if !out.wants(id, scope) {
            continue;
        }
        let (message, evidence) = render(measured, &r);
        out.push(Hit {
            detector: id,
            severity: Severity::Medium,
            scope,
            session: Some(p.hash),
            cookie: Some(p.name.to_owned()),
            message,
            evidence,
        });
    }
}

/// Suppression scope of a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One finding per (session, detector) per window.
    Session(SessionHash),
    /// One finding per (service, cookie name, detector) per window: cookie
    /// attributes and ID format describe the application, not one session.
    Cookie(u8),
    /// One finding per (client, detector) per window.
    Client(u64),
    /// One finding per (service, cookie name, detector, test) per window:
    /// a sample-based test of the cookie's ID generator (the second value
    /// is the test's index).
    CookieTest(u8, u8),
}

/// A detector's report, before suppression and rendering.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Detector.
    pub detector: DetectorId,
    /// Severity.
    pub severity: Severity,
    /// Suppression scope.
    pub scope: Scope,
    /// Session concerned (hash).
    pub session: Option<SessionHash>,
    /// Cookie name as sent.
    pub cookie: Option<String>,
    /// One-line message.
    pub message: String,
    /// Evidence (never raw IDs).
    pub evidence: Map<String, Value>,
}

/// Collects hits; lets a detector ask first whether a hit would be
/// suppressed, so no evidence is built for nothing.
pub struct Hits<'s> {
    pub(crate) list: Vec<Hit>,
    pub(crate) suppressor: &'s Suppressor,
    pub(crate) service: u16,
    pub(crate) now: Timestamp,
    /// Hits a detector dropped because [`Hits::wants`] said no.
    pub(crate) suppressed: u64,
    /// Inputs detectors could not examine (see [`Hits::count_untracked`]).
    pub(crate) untracked: u64,
}

impl Hits<'_> {
    /// Whether a hit of `detector` in `scope` would be reported now (not a
    /// repeat within the suppression window, nor within this exchange). A
    /// `false` is counted as a suppressed finding.
    pub fn wants(&mut self, detector: DetectorId, scope: Scope) -> bool {
        let fresh = !self
            .suppressor
            .is_suppressed(ScopeKey::new(detector, scope, self.service), self.now)
            && !self
                .list
                .iter()
                .any(|h| h.detector == detector && h.scope == scope);
        if !fresh {
            self.suppressed += 1;
        }
        fresh
    }

    /// Counts one input a detector did not examine because its bounded
    /// state was full (exported as `detector_untracked`).
    pub fn count_untracked(&mut self) {
        self.untracked += 1;
    }

    /// Adds a hit.
    pub fn push(&mut self, hit: Hit) {
        self.list.push(hit);
    }
}

/// One detector.
pub trait Detector: Send {
    /// Its id.
    fn id(&self) -> DetectorId;
    /// Examines one exchange. A stateful detector whose bounded state is
    /// full counts each input it cannot examine with
    /// [`Hits::count_untracked`].
    fn check(&mut self, view: &View<'_>, out: &mut Hits<'_>);
}

/// Builds an evidence map from a `json!({...})` object.
pub(crate) fn evidence(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Every detector, configured.
pub fn all(settings: &Settings) -> Vec<Box<dyn Detector>> {
    let list: Vec<Box<dyn Detector>> = vec![
        Box::new(cookie_missing_secure::CookieMissingSecure),
        Box::new(cookie_missing_httponly::CookieMissingHttponly),
        Box::new(cookie_samesite_weak::CookieSamesiteWeak),
        Box::new(cookie_persistent::CookiePersistent),
        Box::new(cookie_loose_scope::CookieLooseScope),
        Box::new(cookie_prefix_violation::CookiePrefixViolation),
        Box::new(session_id_weak::SessionIdWeak::new(settings)),
        Box::new(session_id_in_url::SessionIdInUrl),
        Box::new(session_cleartext::SessionCleartext),
        Box::new(no_rotation_after_login::NoRotationAfterLogin),
        Box::new(no_rotation_after_privilege_change::NoRotationAfterPrivilegeChange),
        Box::new(no_rotation_after_tls_upgrade::NoRotationAfterTlsUpgrade),
        Box::new(stale_session_accepted::StaleSessionAccepted),
        Box::new(session_accepted_after_logout::SessionAcceptedAfterLogout),
        Box::new(idle_timeout_not_enforced::IdleTimeoutNotEnforced),
        Box::new(absolute_timeout_not_enforced::AbsoluteTimeoutNotEnforced),
        Box::new(sensitive_action_without_reauth::SensitiveActionWithoutReauth),
        Box::new(session_fingerprint_change::SessionFingerprintChange),
        Box::new(session_id_bruteforce::SessionIdBruteforce::new(settings)),
        Box::new(client_side_session::ClientSideSession),
    ];
    list.into_iter()
        .filter(|d| !settings.disabled[d.id().index()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for d in DetectorId::ALL {
            assert!(seen.insert(d.as_str()));
            assert_eq!(d.as_str().parse::<DetectorId>(), Ok(*d));
            assert_eq!(DetectorId::ALL[d.index()], *d);
        }
        assert_eq!(DetectorId::COUNT, 20);
    }

    #[test]
    fn every_detector_is_registered_once() {
        let s = Settings::compile(&crate::config::AnalysisConfig::default()).unwrap();
        let ids: Vec<_> = all(&s).iter().map(|d| d.id()).collect();
        assert_eq!(ids, DetectorId::ALL);
    }
}
