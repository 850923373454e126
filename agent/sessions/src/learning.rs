//! Session-cookie learning: finds the session cookie of an application whose
//! cookie name is not in `sessions.cookie_names` (`app_auth`, `_myapp_key`,
//! `SESS7f3a…`), from how the server treats it.
//!
//! A cookie the server sets is a *candidate*. It is promoted to a session
//! cookie of its service when the traffic shows the two things that make a
//! cookie a session cookie, each from at least `learn_min_clients` distinct
//! sessions or clients (so one odd request or one scripted client cannot
//! teach it):
//!
//! 1. **Issued at login.** A successful login response sets it to a value the
//!    request did not carry (a replaced value, or the first one). Distinct
//!    issued values count, not responses.
//! 2. **It gates access.** On *protected paths* — paths where the server
//!    rejected a request (401/419/440, or a redirect to the login route) —
//!    requests carrying the cookie are accepted from distinct clients, at
//!    least one request lacking it was rejected there, and requests lacking
//!    it are (almost) never accepted there. A cookie that is merely present
//!    in logged-in browsers (a flash message, a preference) is contradicted
//!    by the accepted requests that lack it.
//!
//! A cookie that a successful login leaves unchanged while the same
//! response issues an identifier under another name is never learned: it
//! outlives logins (a device or visitor ID), and the session is what the
//! login issued. Learned, it would make every login a
//! `no_rotation_after_login`. A script whose very first request is the
//! login gets such a cookie *issued* at login, indistinguishable from a
//! session until that client logs in again; `learn_min_clients` is the
//! guard against one such client.
//!
//! Some cookies are never learned, whatever the traffic: a denylist of
//! well-known non-session names (CSRF tokens, analytics, consent, load
//! balancer stickiness, locale and theme preferences) and any cookie whose
//! value does not look like an identifier (shorter than 16 characters or
//! below 64 bits of estimated entropy: `theme=dark`, `lang=en`). The second
//! rule means a session cookie with a weak ID is not learned either; name
//! it in `sessions.cookie_names` to have `session_id_weak` judge it.
//!
//! Requests carrying an `Authorization` header authenticate another way and
//! are not evidence; nor are ignored routes (static assets, health checks)
//! or the login and logout routes themselves.
//!
//! Learning happens after the exchange that completes the evidence has been
//! analysed; from the next exchange on, the name is a session cookie name
//! of its service exactly like a configured one (see
//! [`SessionNames::add_learned`]). Traffic before that moment is not
//! re-analysed: sessions seen then are picked up when next used (as
//! adopted sessions).
//!
//! Memory is bounded: at most `learn_max_candidates` candidates (least
//! recently seen evicted first; only server `Set-Cookie` headers create
//! candidates, so clients cannot flood the table with made-up names), a
//! fixed ring of protected paths per service, and
//! [`MAX_LEARNED`](crate::settings::MAX_LEARNED) learned names.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use sessionwatch_http::Exchange;

use crate::cookie::{CookieLimits, SetCookie, parse_cookie_header, split_prefix, unquote};
use crate::detectors::{Outcome, RouteFlags};
use crate::settings::SessionNames;
use crate::store::Fingerprint;

/// Shortest value taken for an identifier.
pub const MIN_VALUE_LEN: usize = 16;
/// Least estimated entropy, in bits, of a value taken for an identifier.
pub const MIN_VALUE_BITS: f64 = 64.0;
/// Protected paths remembered per service (a ring: the oldest is forgotten).
pub const PROTECTED_PATHS: usize = 64;
/// Distinct sessions/clients remembered per evidence kind (the threshold
/// `learn_min_clients` is at most this).
pub const MAX_SOURCES: usize = 8;
/// Candidate cookies examined per request.
const MAX_PRESENT: usize = 16;
/// Contradictions tolerated: requests lacking the cookie accepted on a
/// protected path may be at most this fraction of the accepted requests
/// carrying it (a path that is public for some methods or query strings).
const CONTRADICTION_RATIO: u32 = 10;

/// `[sessions]` learning settings, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LearnSettings {
    /// `sessions.learn_cookie_names`.
    pub enabled: bool,
    /// `sessions.learn_min_clients`: distinct sessions issued at login and
    /// distinct clients accepted with the cookie, each, before promotion.
    pub min_clients: u8,
    /// `sessions.learn_max_candidates`.
    pub max_candidates: usize,
}

impl Default for LearnSettings {
    fn default() -> Self {
        LearnSettings {
            enabled: true,
            min_clients: 2,
            max_candidates: 256,
        }
    }
}

/// Whether `name` is on the denylist of names never learned.
///
/// The denylist holds names and name patterns that frameworks, analytics,
/// consent managers and load balancers use for cookies that are not
/// session IDs. Compared case-insensitively on the bare name (without a
/// `__Host-`/`__Secure-` prefix).
pub fn is_non_session_name(name: &str) -> bool {
    const EXACT: &[&str] = &[
        // Preferences, flash messages.
        "theme",
        "locale",
        "lang",
        "language",
        "django_language",
        "i18n_redirected",
        "timezone",
        "tz",
        "currency",
        "country",
        "region",
        "dark_mode",
        "color_scheme",
        "messages",
        "flash",
        "_flash",
        // Analytics and advertising without a recognisable prefix.
        "_ga",
        "_gid",
        "_gat",
        "_fbp",
        "_fbc",
        "muid",
        "_clck",
        "_clsk",
        "hubspotutk",
        "__hstc",
        "__hssc",
        "__hssrc",
        // CDN, bot management, load-balancer stickiness.
        "cf_clearance",
        "__cf_bm",
        "__cfruid",
        "_cfuvid",
        "awselb",
        "route",
        "serverid",
    ];
    const PREFIXES: &[&str] = &[
        "_ga_",
        "_gat_",
        "_gcl_",
        "__utm",
        "_hj",
        "_pk_",
        "amp_",
        "ajs_",
        "mp_",
        "optimizely",
        "_uet",
        "intercom-",
        "__stripe_",
        "awsalb",
        "ak_bmsc",
        "bm_sv",
        "optanon",
        "cookieconsent",
        "cookie_consent",
        "euconsent",
    ];
    const CONTAINS: &[&str] = &["csrf", "xsrf", "antiforgery", "consent", "gdpr"];
    let (_, bare) = split_prefix(name.as_bytes());
    let Ok(bare) = std::str::from_utf8(bare) else {
        return true;
    };
    let mut buf = [0u8; 64];
    if bare.len() > buf.len() {
        // Long names are not in the lists; only substrings can match.
        let lower = bare.to_ascii_lowercase();
        return CONTAINS.iter().any(|c| contains(lower.as_bytes(), c));
    }
    let lower = &mut buf[..bare.len()];
    lower.copy_from_slice(bare.as_bytes());
    lower.make_ascii_lowercase();
    let Ok(lower) = std::str::from_utf8(lower) else {
        return true;
    };
    EXACT.contains(&lower)
        || PREFIXES.iter().any(|p| lower.starts_with(p))
        || CONTAINS.iter().any(|c| contains(lower.as_bytes(), c))
}

/// Whether `needle` occurs in `hay`: a plain window compare, which on
/// cookie names (tens of bytes) and these needles (4–11 bytes) costs less
/// than setting up `str::contains`'s two-way searcher for each needle.
fn contains(hay: &[u8], needle: &str) -> bool {
    // `windows(0)` would panic; the empty needle is in every name.
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A value that could be a session identifier: long enough and random
/// enough (estimated by [`crate::entropy::estimate`]).
pub fn is_id_like(value: &[u8]) -> bool {
    value.len() >= MIN_VALUE_LEN
        && value.len() <= 4096
        && !value.iter().any(|b| b.is_ascii_whitespace())
        && crate::entropy::estimate(value).bits >= MIN_VALUE_BITS
}

/// Distinct sources (session values, client fingerprints), as keyed hashes.
#[derive(Debug, Clone, Copy, Default)]
struct Sources {
    keys: [u64; MAX_SOURCES],
    len: u8,
}

impl Sources {
    fn insert(&mut self, key: u64) {
        let n = usize::from(self.len);
        if n < MAX_SOURCES && !self.keys[..n].contains(&key) {
            self.keys[n] = key;
            self.len += 1;
        }
    }
    fn len(&self) -> u8 {
        self.len
    }
}

/// The evidence gathered for one cookie name of one service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Distinct values set on successful login responses (capped at
    /// [`MAX_SOURCES`]).
    pub login_sessions: u8,
    /// Distinct clients (IP, User-Agent family) whose requests carrying the
    /// cookie were accepted on protected paths (capped at [`MAX_SOURCES`]).
    pub accepted_clients: u8,
    /// Requests carrying it accepted on protected paths.
    pub accepted_with: u32,
    /// Requests lacking it rejected on protected paths.
    pub rejected_without: u32,
    /// Requests lacking it accepted on protected paths (contradictions).
    pub accepted_without: u32,
    /// Set-Cookie values that did not look like identifiers.
    pub odd_values: u32,
    /// Successful logins that issued an identifier (under another name)
    /// and left this cookie, carried by the request, unchanged.
    pub kept_at_login: u32,
}

/// A learned session cookie, for `check-config --learned`, the replay
/// summary and `sessionwatch_session_cookies_learned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedCookie {
    /// Service id (resolve with the analyzer's service names).
    pub service: u16,
    /// The bare cookie name.
    pub name: String,
    /// The evidence at promotion.
    pub evidence: Evidence,
}

/// A candidate not (yet) learned, with what it still lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateReport {
    /// Service id.
    pub service: u16,
    /// The bare cookie name.
    pub name: String,
    /// The evidence so far.
    pub evidence: Evidence,
    /// Why it is not a session cookie (yet).
    pub missing: &'static str,
}

/// Learning counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LearnStats {
    /// Candidates dropped to make room (least recently seen first).
    pub candidates_evicted: u64,
    /// `Set-Cookie`s of denylisted names seen (never candidates).
    pub denied: u64,
    /// Promotions refused because [`MAX_LEARNED`](crate::settings::MAX_LEARNED)
    /// names are already learned.
    pub learned_overflow: u64,
}

#[derive(Debug, Clone)]
struct Candidate {
    service: u16,
    name_hash: u64,
    name: Box<str>,
    /// Recency tick (LRU eviction).
    seen: u64,
    logins: Sources,
    clients: Sources,
    ev: Evidence,
    /// Refused at promotion (the learned-name table is full).
    overflow: bool,
}

impl Candidate {
    fn missing(&self, min: u8) -> Option<&'static str> {
        let e = &self.ev;
        if e.odd_values > 0 {
            return Some("value does not look like an identifier");
        }
        if e.accepted_without > 0
            && e.accepted_without.saturating_mul(CONTRADICTION_RATIO) > e.accepted_with
        {
            return Some("requests without it are accepted on protected paths");
        }
        if e.kept_at_login > 0 {
            return Some("left unchanged by logins that issued another identifier");
        }
        if self.logins.len() < min {
            return Some("not (yet) issued on successful logins from enough sessions");
        }
        if e.rejected_without == 0 {
            return Some("no request without it rejected on a protected path yet");
        }
        if self.clients.len() < min {
            return Some("not (yet) accepted on protected paths from enough clients");
        }
        if self.overflow {
            return Some("learned-name table full");
        }
        None
    }
}

/// Ring of protected path hashes of one service.
#[derive(Debug, Clone)]
struct PathRing {
    hashes: [u64; PROTECTED_PATHS],
    len: usize,
    next: usize,
}

impl PathRing {
    fn new() -> PathRing {
        PathRing {
            hashes: [0; PROTECTED_PATHS],
            len: 0,
            next: 0,
        }
    }
    fn contains(&self, h: u64) -> bool {
        self.hashes[..self.len].contains(&h)
    }
    fn insert(&mut self, h: u64) {
        if self.contains(h) {
            return;
        }
        self.hashes[self.next] = h;
        self.next = (self.next + 1) % PROTECTED_PATHS;
        self.len = (self.len + 1).min(PROTECTED_PATHS);
    }
}

/// One analysed exchange, as the learner needs it.
#[derive(Clone, Copy)]
pub struct Observation<'a> {
    /// The exchange.
    pub ex: &'a Exchange,
    /// Resolved service.
    pub service: u16,
    /// Client fingerprint.
    pub fp: Fingerprint,
    /// Outcome ("success") of the exchange.
    pub outcome: Outcome,
    /// Route classes.
    pub routes: RouteFlags,
    /// A login route, before the analyzer discounted a 2xx HTML answer
    /// without a (known) session cookie as the form shown again: whether
    /// the answer set an identifier is exactly what the learner looks at.
    pub login_route: bool,
    /// Route path (normalised).
    pub path: &'a str,
    /// Reference time for cookie expiry (the response's `Date`).
    pub reference_secs: i64,
    /// The response's `Set-Cookie` headers as the analyzer parsed them:
    /// the first `max_set_cookies`, `None` where one did not parse.
    pub set_cookies: &'a [Option<SetCookie<'a>>],
}

/// The learner. See the module docs.
pub struct Learner {
    settings: LearnSettings,
    hasher: RandomState,
    candidates: Vec<Candidate>,
    index: HashMap<(u16, u64), usize>,
    protected: HashMap<u16, PathRing>,
    /// Candidates per service id (the gate evidence is skipped for services
    /// without any, which is most traffic once names are learned).
    per_service: Vec<u32>,
    learned: Vec<LearnedCookie>,
    tick: u64,
    stats: LearnStats,
}

impl std::fmt::Debug for Learner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Learner")
            .field("enabled", &self.settings.enabled)
            .field("candidates", &self.candidates.len())
            .field("learned", &self.learned)
            .finish_non_exhaustive()
    }
}

impl Learner {
    /// A learner with these settings (disabled: observes nothing).
    pub fn new(settings: LearnSettings) -> Learner {
        Learner {
            settings,
            hasher: RandomState::new(),
            candidates: Vec::new(),
            index: HashMap::new(),
            protected: HashMap::new(),
            per_service: Vec::new(),
            learned: Vec::new(),
            tick: 0,
            stats: LearnStats::default(),
        }
    }

    /// `sessions.learn_cookie_names`.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Names learned so far, in the order they were learned.
    pub fn learned(&self) -> &[LearnedCookie] {
        &self.learned
    }

    /// Candidates not learned, most evidence first.
    pub fn candidates(&self) -> Vec<CandidateReport> {
        let min = self.settings.min_clients;
        let mut v: Vec<CandidateReport> = self
            .candidates
            .iter()
            .filter_map(|c| {
                c.missing(min).map(|missing| CandidateReport {
                    service: c.service,
                    name: c.name.to_string(),
                    evidence: c.ev,
                    missing,
                })
            })
            .collect();
        v.sort_by(|a, b| {
            let score = |e: &Evidence| {
                (
                    u32::from(e.login_sessions) + u32::from(e.accepted_clients),
                    e.accepted_with,
                )
            };
            score(&b.evidence)
                .cmp(&score(&a.evidence))
                .then_with(|| a.name.cmp(&b.name))
        });
        v
    }

    /// Candidates in the table.
    pub fn candidate_count(&self) -> usize {
        self.candidates.len()
    }

    /// Counters.
    pub fn stats(&self) -> LearnStats {
        self.stats
    }

    fn name_hash(&self, bare: &[u8]) -> u64 {
        self.hasher.hash_one(bare)
    }

    fn find(&self, service: u16, name_hash: u64) -> Option<usize> {
        self.index.get(&(service, name_hash)).copied()
    }

    fn get_or_create(&mut self, service: u16, name_hash: u64, bare: &str) -> usize {
        if let Some(i) = self.find(service, name_hash) {
            return i;
        }
        if self.candidates.len() >= self.settings.max_candidates.max(1) {
            // Least recently seen goes.
            if let Some((victim, _)) = self
                .candidates
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.seen)
            {
                self.remove(victim);
                self.stats.candidates_evicted += 1;
            }
        }
        self.candidates.push(Candidate {
            service,
            name_hash,
            name: bare.into(),
            seen: self.tick,
            logins: Sources::default(),
            clients: Sources::default(),
            ev: Evidence::default(),
            overflow: false,
        });
        let i = self.candidates.len() - 1;
        self.index.insert((service, name_hash), i);
        let s = usize::from(service);
        if self.per_service.len() <= s {
            self.per_service.resize(s + 1, 0);
        }
        self.per_service[s] += 1;
        i
    }

    fn has_candidates(&self, service: u16) -> bool {
        self.per_service
            .get(usize::from(service))
            .is_some_and(|n| *n > 0)
    }

    fn remove(&mut self, i: usize) {
        let c = self.candidates.swap_remove(i);
        self.index.remove(&(c.service, c.name_hash));
        if let Some(n) = self.per_service.get_mut(usize::from(c.service)) {
            *n = n.saturating_sub(1);
        }
        if let Some(moved) = self.candidates.get(i) {
            self.index.insert((moved.service, moved.name_hash), i);
        }
    }

    /// Feeds one analysed exchange. Names promoted by it are added to
    /// `names` (effective from the next exchange).
    pub fn observe(
        &mut self,
        o: &Observation<'_>,
        names: &mut SessionNames,
        limits: &CookieLimits,
    ) {
        if !self.settings.enabled || o.ex.response.is_none() {
            return;
        }
        self.tick += 1;
        let mut touched = [usize::MAX; MAX_PRESENT];
        let mut n_touched = 0usize;
        self.observe_set_cookies(o, names, limits, &mut touched, &mut n_touched);
        self.observe_gate(o, limits, &mut touched, &mut n_touched);
        // Promotions, highest index first so removals do not move the
        // indices still to visit.
        let mut list = touched;
        list[..n_touched].sort_unstable();
        let mut last = usize::MAX;
        for &i in list[..n_touched].iter().rev() {
            if i == last || i >= self.candidates.len() {
                continue;
            }
            last = i;
            self.maybe_promote(i, names);
        }
    }

    fn touch(touched: &mut [usize; MAX_PRESENT], n: &mut usize, i: usize) {
        if *n < MAX_PRESENT && !touched[..*n].contains(&i) {
            touched[*n] = i;
            *n += 1;
        }
    }

    /// Candidates come from the server's `Set-Cookie`s; a successful login
    /// setting a fresh identifier is evidence 1.
    fn observe_set_cookies(
        &mut self,
        o: &Observation<'_>,
        names: &SessionNames,
        limits: &CookieLimits,
        touched: &mut [usize; MAX_PRESENT],
        n_touched: &mut usize,
    ) {
        if o.ex.response.is_none() {
            return;
        }
        let login_ok = o.login_route && o.outcome == Outcome::Accepted;
        // Names this response sets (any value), and whether it issued a
        // fresh identifier under any non-denylisted name, known or not.
        let mut set_names = [0u64; MAX_PRESENT];
        let mut n_set = 0usize;
        let mut issued_fresh = false;
        for sc in o.set_cookies.iter().flatten() {
            let (_, bare) = split_prefix(sc.name);
            let h = self.name_hash(bare);
            if n_set < MAX_PRESENT {
                set_names[n_set] = h;
                n_set += 1;
            }
            let Ok(bare_str) = std::str::from_utf8(bare) else {
                continue;
            };
            if is_non_session_name(bare_str) {
                self.stats.denied += 1;
                continue;
            }
            if sc.deletion(o.reference_secs).is_some() {
                continue;
            }
            let value = sc.unquoted_value();
            let fresh =
                login_ok && is_id_like(value) && request_value(o.ex, bare, limits) != Some(value);
            issued_fresh |= fresh;
            if names.match_cookie_for(o.service, sc.name).is_some() {
                continue;
            }
            if !is_id_like(value) {
                // Only an existing candidate is marked; a preference cookie
                // does not take a slot.
                if let Some(i) = self.find(o.service, h) {
                    self.candidates[i].ev.odd_values += 1;
                    self.candidates[i].seen = self.tick;
                }
                continue;
            }
            let i = self.get_or_create(o.service, h, bare_str);
            self.candidates[i].seen = self.tick;
            Self::touch(touched, n_touched, i);
            if fresh {
                let vh = self.hasher.hash_one(value);
                let c = &mut self.candidates[i];
                c.logins.insert(vh);
                c.ev.login_sessions = c.logins.len();
            }
        }
        // A successful login that issued an identifier and left a carried
        // candidate as it was: the candidate outlives logins (a visitor or
        // device ID), while the session is what the login issued. Without
        // this, such a cookie, learned, would make every login a
        // `no_rotation_after_login`.
        if issued_fresh && self.has_candidates(o.service) {
            self.kept_at_login(o, limits, &set_names[..n_set]);
        }
    }

    fn kept_at_login(&mut self, o: &Observation<'_>, limits: &CookieLimits, set_names: &[u64]) {
        let mut pairs = 0usize;
        let mut counted = [usize::MAX; MAX_PRESENT];
        let mut n_counted = 0usize;
        for v in o.ex.request.headers.get_all("cookie") {
            for pair in parse_cookie_header(v) {
                pairs += 1;
                if pairs > limits.max_request_pairs || n_counted >= MAX_PRESENT {
                    return;
                }
                if unquote(pair.value).is_empty() {
                    continue;
                }
                let h = self.name_hash(split_prefix(pair.name).1);
                if set_names.contains(&h) {
                    continue;
                }
                if let Some(i) = self.find(o.service, h)
                    && !counted[..n_counted].contains(&i)
                {
                    counted[n_counted] = i;
                    n_counted += 1;
                    let c = &mut self.candidates[i];
                    c.ev.kept_at_login = c.ev.kept_at_login.saturating_add(1);
                }
            }
        }
    }

    /// Evidence 2: what happens on protected paths with and without each
    /// candidate.
    fn observe_gate(
        &mut self,
        o: &Observation<'_>,
        limits: &CookieLimits,
        touched: &mut [usize; MAX_PRESENT],
        n_touched: &mut usize,
    ) {
        let r = o.routes;
        if r.ignored || o.login_route || r.logout {
            return;
        }
        let rejected = match o.outcome {
            Outcome::Rejected => true,
            Outcome::Accepted => false,
            Outcome::Neutral | Outcome::NoResponse => return,
        };
        // Fast path: an accepted request says nothing while its service
        // has no candidate; a rejection still marks its path protected.
        let has_candidates = self.has_candidates(o.service);
        if !rejected && !has_candidates {
            return;
        }
        if o.ex.request.headers.get("authorization").is_some() {
            return;
        }
        let ph = self.hasher.hash_one(o.path.as_bytes());
        let ring = self
            .protected
            .entry(o.service)
            .or_insert_with(PathRing::new);
        if rejected {
            ring.insert(ph);
        } else if !ring.contains(ph) {
            return;
        }
        if !has_candidates {
            return;
        }
        // Candidates the request carries.
        let mut present = [usize::MAX; MAX_PRESENT];
        let mut n_present = 0usize;
        for (k, v) in o.ex.request.headers.get_all("cookie").enumerate() {
            if k >= limits.max_request_pairs {
                break;
            }
            for (j, pair) in parse_cookie_header(v).enumerate() {
                if j >= limits.max_request_pairs || n_present >= MAX_PRESENT {
                    break;
                }
                if unquote(pair.value).is_empty() {
                    continue;
                }
                let (_, bare) = split_prefix(pair.name);
                let h = self.name_hash(bare);
                if let Some(i) = self.find(o.service, h)
                    && !present[..n_present].contains(&i)
                {
                    present[n_present] = i;
                    n_present += 1;
                }
            }
        }
        let fph = self.hasher.hash_one(o.fp);
        for i in 0..self.candidates.len() {
            if self.candidates[i].service != o.service {
                continue;
            }
            let carried = present[..n_present].contains(&i);
            let c = &mut self.candidates[i];
            match (rejected, carried) {
                (false, true) => {
                    c.ev.accepted_with = c.ev.accepted_with.saturating_add(1);
                    c.clients.insert(fph);
                    c.ev.accepted_clients = c.clients.len();
                    c.seen = self.tick;
                }
                (false, false) => c.ev.accepted_without = c.ev.accepted_without.saturating_add(1),
                (true, false) => c.ev.rejected_without = c.ev.rejected_without.saturating_add(1),
                // Carried and rejected: an expired or logged-out session
                // behaves like this too; no evidence either way.
                (true, true) => continue,
            }
            Self::touch(touched, n_touched, i);
        }
    }

    fn maybe_promote(&mut self, i: usize, names: &mut SessionNames) {
        let c = &self.candidates[i];
        if c.missing(self.settings.min_clients).is_some() {
            return;
        }
        match names.add_learned(c.service, &c.name) {
            Some(_) => {
                let learned = LearnedCookie {
                    service: c.service,
                    name: c.name.to_string(),
                    evidence: c.ev,
                };
                self.learned.push(learned);
                self.remove(i);
            }
            None => {
                self.stats.learned_overflow += 1;
                self.candidates[i].overflow = true;
            }
        }
    }
}

/// The value the request carried for cookie `bare` (first occurrence).
fn request_value<'a>(ex: &'a Exchange, bare: &[u8], limits: &CookieLimits) -> Option<&'a [u8]> {
    let mut pairs = 0usize;
    for v in ex.request.headers.get_all("cookie") {
        for pair in parse_cookie_header(v) {
            pairs += 1;
            if pairs > limits.max_request_pairs {
                return None;
            }
            if split_prefix(pair.name).1 == bare {
                return Some(unquote(pair.value));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denylist() {
        for n in [
            "csrftoken",
            "XSRF-TOKEN",
            "_csrf",
            "__Host-csrf",
            ".AspNetCore.Antiforgery.x1",
            "_ga",
            "_ga_ABC123",
            "_gid",
            "__utma",
            "_hjSessionUser_1",
            "theme",
            "Locale",
            "cookieconsent_status",
            "OptanonConsent",
            "AWSALB",
            "__cf_bm",
            "messages",
        ] {
            assert!(is_non_session_name(n), "{n}");
        }
        for n in [
            "app_auth",
            "sessionid",
            "_myapp_session",
            "remember_token",
            "SESS3f2a",
        ] {
            assert!(!is_non_session_name(n), "{n}");
        }
        assert!(is_non_session_name(&format!("{}csrf", "x".repeat(80))));
        assert!(!is_non_session_name(&"x".repeat(80)));
    }

    #[test]
    fn id_like_values() {
        assert!(is_id_like(b"hZ2kq8Vx1mT0aPbR7cWd3eYf9gLs4uNo"));
        assert!(is_id_like(b"0F3A9C51B2E847D6A1C09E4F7B3D2A18"));
        assert!(!is_id_like(b"dark"));
        assert!(!is_id_like(b"en-US"));
        assert!(!is_id_like(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(!is_id_like(b"hZ2kq8Vx1mT0 aPbR7cWd3eYf9gLs4uNo"));
    }

    #[test]
    fn sources_are_bounded_and_distinct() {
        let mut s = Sources::default();
        for k in [1, 1, 2, 2, 3] {
            s.insert(k);
        }
        assert_eq!(s.len(), 3);
        for k in 0..100 {
            s.insert(k);
        }
        assert_eq!(usize::from(s.len()), MAX_SOURCES);
    }

    use crate::detectors::testkit::*;

    /// 32-character IDs (random-looking, > 64 bits estimated).
    fn id(n: u32) -> String {
        format!(
            "{:032x}",
            u128::from(n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        )
    }

    /// One user's browsing: anonymous cookie at GET /login, rotated at
    /// login, then /account accepted. Decoys: `theme=dark` (not ID-like),
    /// `csrftoken` (denylisted, rotated at login like Django does),
    /// `visitor` (random, set once, never at login).
    fn user(h: &mut Harness, t: u64, ip: &str, ua: &str, n: u32) -> String {
        let (anon, auth) = (id(n * 10), id(n * 10 + 1));
        let visitor = id(n * 10 + 2);
        h.run(
            Ex::get("/login")
                .at(t)
                .from(ip)
                .ua(ua)
                .set_cookie(&format!(
                    "app_auth={anon}; Path=/; HttpOnly; Secure; SameSite=Lax"
                ))
                .set_cookie("theme=dark; Path=/")
                .set_cookie(&format!("visitor={visitor}; Path=/; Max-Age=31536000"))
                .set_cookie(&format!("csrftoken={}; Path=/", id(n * 10 + 3))),
        );
        let jar = format!("app_auth={anon}; theme=dark; visitor={visitor}");
        h.run(
            Ex::post("/login")
                .at(t + 1)
                .from(ip)
                .ua(ua)
                .cookie(&jar)
                .status(302)
                .location("/")
                .set_cookie(&format!(
                    "app_auth={auth}; Path=/; HttpOnly; Secure; SameSite=Lax"
                ))
                .set_cookie(&format!("csrftoken={}; Path=/", id(n * 10 + 4))),
        );
        h.run(
            Ex::get("/account")
                .at(t + 2)
                .from(ip)
                .ua(ua)
                .cookie(&format!("app_auth={auth}; theme=dark; visitor={visitor}")),
        );
        auth
    }

    fn anonymous_rejected(h: &mut Harness, t: u64, ip: &str) {
        h.run(
            Ex::get("/account")
                .at(t)
                .from(ip)
                .ua(SAFARI_17)
                .cookie("theme=dark")
                .status(302)
                .location("/login?next=/account"),
        );
    }

    fn learned(h: &Harness) -> Vec<String> {
        h.an.learned_cookies()
            .map(|(_, l)| l.name.clone())
            .collect()
    }

    #[test]
    fn learns_a_session_cookie_from_logins_and_gating() {
        let mut h = Harness::new();
        anonymous_rejected(&mut h, 0, "198.51.100.9");
        user(&mut h, 10, "203.0.113.7", CHROME_120, 1);
        assert!(learned(&h).is_empty(), "one client is not enough");
        user(&mut h, 20, "198.51.100.2", FIREFOX_121, 2);
        assert!(
            learned(&h).is_empty(),
            "no rejection without it since it appeared"
        );
        anonymous_rejected(&mut h, 30, "198.51.100.9");
        assert_eq!(learned(&h), ["app_auth"]);
        let (svc, l) = h.an.learned_cookies().next().unwrap();
        assert_eq!(svc, "default");
        assert_eq!(l.evidence.login_sessions, 2);
        assert_eq!(l.evidence.accepted_clients, 2);
        assert!(l.evidence.rejected_without >= 1);
        assert_eq!(h.findings.len(), 0, "nothing before learning");

        // From now on app_auth is a session cookie for every detector:
        // a third login without rotation, then a hijack.
        let fixed = id(99);
        h.run(
            Ex::get("/login")
                .at(40)
                .set_cookie(&format!("app_auth={fixed}; Path=/; Secure; SameSite=Lax")),
        );
        assert_eq!(h.count("cookie_missing_httponly"), 1);
        let f = h.run(
            Ex::post("/login")
                .at(41)
                .cookie(&format!("app_auth={fixed}"))
                .status(302)
                .location("/"),
        );
        assert_eq!(f[0].detector, "no_rotation_after_login");
        assert_eq!(f[0].cookie.as_deref(), Some("app_auth"));
        let f = h.run(
            Ex::get("/account")
                .at(42)
                .from("192.0.2.66")
                .ua(CURL)
                .cookie(&format!("app_auth={fixed}")),
        );
        assert_eq!(f[0].detector, "session_fingerprint_change");
        // The decoys are not learned and not candidates in a way that
        // could become one: theme is not ID-like, csrftoken is
        // denylisted, visitor is never issued at login.
        let cands = h.an.learning_candidates();
        assert!(
            cands
                .iter()
                .all(|(_, c)| c.name != "theme" && c.name != "csrftoken")
        );
        let visitor = cands.iter().find(|(_, c)| c.name == "visitor").unwrap();
        assert_eq!(visitor.1.evidence.login_sessions, 0);
        assert!(h.an.learning_stats().denied >= 4);
        assert!(!format!("{:?}", h.an).contains(&fixed));

        // Also as a URL parameter: reported, and redacted in the finding.
        let in_url = id(77);
        let f = h.run(
            Ex::get(&format!("/account?app_auth={in_url}&page=2"))
                .at(50)
                .cookie(&format!("app_auth={in_url}")),
        );
        let f = f
            .iter()
            .find(|f| f.detector == "session_id_in_url")
            .expect("session_id_in_url");
        assert_eq!(f.cookie.as_deref(), Some("app_auth"));
        assert!(!f.request.path.contains(&in_url), "{}", f.request.path);
    }

    #[test]
    fn contradicted_cookie_is_not_learned() {
        // A flash-message cookie issued (random, signed) on every login
        // redirect, then cleared: logged-in requests without it are
        // accepted on the protected path.
        let mut h = Harness::with(|c| c.sessions.cookie_names = vec!["sessionid".into()]);
        anonymous_rejected(&mut h, 0, "198.51.100.9");
        for (n, ip) in [(1u32, "203.0.113.7"), (2, "198.51.100.2"), (3, "192.0.2.4")] {
            let t = u64::from(n) * 10;
            let sid = id(n * 7);
            h.run(
                Ex::post("/login")
                    .at(t)
                    .from(ip)
                    .status(302)
                    .location("/account")
                    .set_cookie(&good("sessionid", &sid))
                    .set_cookie(&format!("notice={}; Path=/", id(n * 7 + 1))),
            );
            h.run(
                Ex::get("/account")
                    .at(t + 1)
                    .from(ip)
                    .cookie(&format!("sessionid={sid}; notice={}", id(n * 7 + 1)))
                    .set_cookie("notice=; Max-Age=0; Path=/"),
            );
            for k in 0..3 {
                h.run(
                    Ex::get("/account")
                        .at(t + 2 + k)
                        .from(ip)
                        .cookie(&format!("sessionid={sid}")),
                );
            }
            anonymous_rejected(&mut h, t + 5, "198.51.100.9");
        }
        assert!(learned(&h).is_empty());
        let (_, c) = &h.an.learning_candidates()[0];
        assert_eq!(c.name, "notice");
        assert_eq!(
            c.missing,
            "requests without it are accepted on protected paths"
        );
    }

    #[test]
    fn cookie_that_outlives_logins_is_not_learned() {
        // A device ID set on whatever response comes first, which for a
        // script is the login itself; it then survives a logout and the
        // next login, which issues a new app_auth.
        let mut h = Harness::with(|c| c.sessions.learn_min_clients = 1);
        anonymous_rejected(&mut h, 0, "198.51.100.9");
        let (device, a1, a2) = (id(500), id(501), id(502));
        h.run(
            Ex::post("/login")
                .at(1)
                .status(302)
                .location("/account")
                .set_cookie(&format!("device={device}; Path=/; Max-Age=31536000"))
                .set_cookie(&format!("app_auth={a1}; Path=/; HttpOnly")),
        );
        h.run(
            Ex::get("/logout")
                .at(2)
                .cookie(&format!("device={device}; app_auth={a1}"))
                .status(302)
                .location("/login")
                .set_cookie("app_auth=; Max-Age=0; Path=/"),
        );
        h.run(
            Ex::post("/login")
                .at(3)
                .cookie(&format!("device={device}"))
                .status(302)
                .location("/account")
                .set_cookie(&format!("app_auth={a2}; Path=/; HttpOnly")),
        );
        h.run(
            Ex::get("/account")
                .at(4)
                .cookie(&format!("device={device}; app_auth={a2}")),
        );
        anonymous_rejected(&mut h, 5, "198.51.100.9");
        assert_eq!(learned(&h), ["app_auth"]);
        let cands = h.an.learning_candidates();
        let (_, device) = cands.iter().find(|(_, c)| c.name == "device").unwrap();
        assert_eq!(device.evidence.kept_at_login, 1);
        assert_eq!(
            device.missing,
            "left unchanged by logins that issued another identifier"
        );
    }

    #[test]
    fn disabled_learns_nothing() {
        let mut h = Harness::with(|c| c.sessions.learn_cookie_names = false);
        anonymous_rejected(&mut h, 0, "198.51.100.9");
        user(&mut h, 10, "203.0.113.7", CHROME_120, 1);
        user(&mut h, 20, "198.51.100.2", FIREFOX_121, 2);
        anonymous_rejected(&mut h, 30, "198.51.100.9");
        user(&mut h, 40, "192.0.2.4", SAFARI_17, 3);
        assert!(learned(&h).is_empty());
        assert!(h.an.learning_candidates().is_empty());
        assert!(h.findings.is_empty());
    }

    #[test]
    fn one_client_is_not_enough_unless_configured() {
        let mut h = Harness::new();
        anonymous_rejected(&mut h, 0, "198.51.100.9");
        for k in 0..5 {
            user(&mut h, 10 + k * 10, "203.0.113.7", CHROME_120, 1 + k as u32);
            anonymous_rejected(&mut h, 15 + k * 10, "198.51.100.9");
        }
        assert!(learned(&h).is_empty(), "five logins, one client");
        let mut h = Harness::with(|c| c.sessions.learn_min_clients = 1);
        anonymous_rejected(&mut h, 0, "198.51.100.9");
        user(&mut h, 10, "203.0.113.7", CHROME_120, 1);
        anonymous_rejected(&mut h, 15, "198.51.100.9");
        assert_eq!(learned(&h), ["app_auth"]);
    }

    #[test]
    fn candidate_table_is_bounded() {
        let mut h = Harness::with(|c| c.sessions.learn_max_candidates = 8);
        for i in 0..100u32 {
            h.run(
                Ex::get("/")
                    .at(u64::from(i))
                    .set_cookie(&format!("c{i}={}; Path=/", id(i))),
            );
        }
        assert_eq!(h.an.learning_candidates().len(), 8);
        assert_eq!(h.an.learning_stats().candidates_evicted, 92);
        // Clients cannot create candidates: only Set-Cookie does.
        let many: String = (0..200).map(|i| format!("x{i}={}; ", id(i))).collect();
        h.run(Ex::get("/account").at(200).cookie(&many).status(401));
        assert_eq!(h.an.learning_candidates().len(), 8);
    }

    #[test]
    fn path_ring_is_bounded() {
        let mut r = PathRing::new();
        for h in 0..(PROTECTED_PATHS as u64 * 3) {
            r.insert(h);
        }
        assert_eq!(r.len, PROTECTED_PATHS);
        assert!(r.contains(PROTECTED_PATHS as u64 * 3 - 1));
        assert!(!r.contains(0));
    }
}
