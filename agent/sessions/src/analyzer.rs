//! The entry point of the analysis stage: [`Analyzer::on_exchange`] turns
//! one HTTP exchange into findings and updates the session table.
//!
//! Per exchange: resolve the service and the client (IP, client-side TLS,
//! User-Agent family); parse the response's session `Set-Cookie`s and
//! decide the outcome ("success" as the design defines it); collect the
//! session IDs the request presented (cookies and URL); look up each in the
//! table; run every enabled detector on that *before* state; emit the
//! non-suppressed hits as findings; then apply the exchange to the table
//! (uses, rotations, logins, logouts) and expire old sessions. Everything
//! runs on event time.

use std::net::IpAddr;

use sessionwatch_http::{Exchange, Protocol, Response};
use sessionwatch_streams::Timestamp;

use crate::config::AnalysisConfig;
use crate::cookie::{
    CookieLimits, SetCookie, has_control, parse_cookie_header, parse_set_cookie, unquote,
};
use crate::cookie_date::parse_cookie_date;
use crate::detectors::{
    self, Detector, Effect, Hit, Hits, IdSource, Issued, Outcome, Presented, RawId, RouteFlags,
    View, first_seen_ids,
};
use crate::finding::{
    Finding, FindingClient, FindingContainer, FindingRequest, FindingSink, Severity,
};
use crate::hash::{HashKey, MemoHasher, SessionHash};
use crate::learning::{CandidateReport, LearnStats, LearnedCookie, Learner, Observation};
use crate::net::write_ip;
use crate::route::RouteMemo;
use crate::service::{ServiceResolver, bare_host};
use crate::settings::{ConfigError, Routes, Settings};
use crate::shared::{Attribution, Change, SharedFp, SharedSightings};
use crate::stats::{AnalysisStats, ServiceStats};
use crate::store::{
    EndReason, EvictReason, Eviction, Fingerprint, SessionEvent, SessionRecord, SessionState,
    SessionStore, SessionTable, flags,
};
use crate::suppress::{DEFAULT_CAPACITY, ScopeKey, Suppressor};
use crate::timefmt::write_rfc3339_millis;
use crate::url::{for_each_param, path_of, route_path, truncate_utf8, write_redacted_path};
use crate::useragent::UaTable;

/// Most session IDs tracked per request (a request carrying more is
/// hostile or broken; the rest are counted and ignored).
pub const MAX_PRESENTED: usize = 8;
/// Most session `Set-Cookie`s tracked per response.
pub const MAX_ISSUED: usize = 16;
/// URL parameters examined per request.
const MAX_URL_PARAMS: usize = 64;
/// Shortest URL parameter value taken for a session ID (`?sid=5` is not).
const MIN_URL_ID_LEN: usize = 8;
/// Longest `client.user_agent` in findings.
pub const MAX_UA_LEN: usize = 256;
/// Longest `request.path` in findings.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest `request.host` in findings.
const MAX_HOST_LEN: usize = 255;

/// The analysis stage: exchanges in, findings out.
pub struct Analyzer {
    settings: Settings,
    /// Keyed hashing of raw IDs, remembering the last ones (keep-alive
    /// connections present the same ID again and again).
    hasher: MemoHasher,
    store: Box<dyn SessionStore + Send>,
    detectors: Vec<Box<dyn Detector>>,
    suppressor: Suppressor,
    services: ServiceResolver,
    /// Session-cookie learning (`sessions.learn_cookie_names`).
    learner: Learner,
    ua: UaTable,
    /// `[routes]` classification of recent request lines.
    route_memo: RouteMemo<RouteFlags>,
    /// Sightings shared with other agents (`[cluster]`); `None` = this
    /// node's table only.
    shared: Option<Box<dyn SharedSightings>>,
    stats: AnalysisStats,
    limits: CookieLimits,
    /// Latest event time seen (the table's clock; never steps back).
    clock: Timestamp,
    finished: bool,
    /// The buffers of the last exchange's issued and presented lists,
    /// empty, reused by the next one (see [`reuse`]).
    issued_buf: Vec<Issued<'static>>,
    presented_buf: Vec<Presented<'static>>,
    set_cookies_buf: Vec<Option<SetCookie<'static>>>,
    /// The detectors' hit list of the last exchange, emptied.
    hits_buf: Vec<Hit>,
    /// The finding lent to the sink, refilled in place for the next one
    /// (see [`FindingSink::on_finding`]).
    finding: Finding,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("sessions", &self.store.len())
            .field("detectors", &self.detectors.len())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Validates an analysis config without building an analyzer
/// (`sessionwatch check-config`).
pub fn validate(config: &AnalysisConfig) -> Result<(), ConfigError> {
    Settings::compile(config).map(|_| ())
}

impl Analyzer {
    /// Builds the analysis stage with the in-memory session table.
    pub fn new(config: AnalysisConfig, key: HashKey) -> Result<Analyzer, ConfigError> {
        let settings = Settings::compile(&config)?;
        let table = SessionTable::new(settings.max_sessions, settings.session_ttl);
        Ok(Self::build(settings, key, Box::new(table)))
    }

    /// Builds the analysis stage on another [`SessionStore`].
    pub fn with_store(
        config: AnalysisConfig,
        key: HashKey,
        store: Box<dyn SessionStore + Send>,
    ) -> Result<Analyzer, ConfigError> {
        let settings = Settings::compile(&config)?;
        Ok(Self::build(settings, key, store))
    }

    fn build(settings: Settings, key: HashKey, store: Box<dyn SessionStore + Send>) -> Analyzer {
        let detectors = detectors::all(&settings);
        let services = ServiceResolver::new(&settings.services);
        let mut stats = AnalysisStats::default();
        for i in 0..services.len() {
            stats
                .services
                .push(ServiceStats::new(services.name(i as u16).to_owned()));
        }
        Analyzer {
            hasher: MemoHasher::new(&key),
            suppressor: Suppressor::new(settings.suppression_window, DEFAULT_CAPACITY),
            store,
            detectors,
            services,
            learner: Learner::new(settings.learning),
            ua: UaTable::default(),
            route_memo: RouteMemo::default(),
            shared: None,
            stats,
            limits: CookieLimits::default(),
            clock: Timestamp(0),
            finished: false,
            issued_buf: Vec::new(),
            presented_buf: Vec::new(),
            hits_buf: Vec::new(),
            set_cookies_buf: Vec::new(),
            finding: blank_finding(),
            settings,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &AnalysisStats {
        &self.stats
    }

    /// Shares session sightings with other agents: state changes are
    /// published to `shared`, and detectors that depend on history judge
    /// the local record merged with what other nodes saw.
    pub fn set_shared(&mut self, shared: Box<dyn SharedSightings>) {
        self.shared = Some(shared);
    }

    /// Session cookie names learned so far, with the service name and the
    /// evidence at promotion (`sessions.learn_cookie_names`).
    pub fn learned_cookies(&self) -> impl Iterator<Item = (&str, &LearnedCookie)> + '_ {
        self.learner
            .learned()
            .iter()
            .map(|l| (self.services.name(l.service), l))
    }

    /// Cookie names under observation but not learned, with the service
    /// name and what each still lacks (`check-config --learned`).
    pub fn learning_candidates(&self) -> Vec<(String, CandidateReport)> {
        self.learner
            .candidates()
            .into_iter()
            .map(|c| (self.services.name(c.service).to_owned(), c))
            .collect()
    }

    /// Learning counters.
    pub fn learning_stats(&self) -> LearnStats {
        self.learner.stats()
    }

    /// Sessions in the table.
    pub fn sessions(&self) -> usize {
        self.store.len()
    }

    /// The record of a session, by its hash (tests, debugging endpoints).
    pub fn session(&self, hash: SessionHash) -> Option<SessionRecord> {
        self.store.peek(hash)
    }

    /// The keyed hash of a raw ID under this analyzer's key (tests).
    pub fn hash_of(&self, raw_id: &[u8]) -> SessionHash {
        self.hasher.hash_uncached(raw_id)
    }

    /// End of input: records the ages of the sessions still in the table in
    /// the age histograms. Idempotent.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Some(shared) = self.shared.as_mut() {
            shared.flush();
        }
        let stats = &mut self.stats;
        self.store.for_each(&mut |_, r, last_seen| {
            if r.state != SessionState::Active {
                return;
            }
            if let Some(s) = stats.services.get_mut(usize::from(r.service)) {
                s.session_ages
                    .observe(last_seen.saturating_since(r.first_seen).as_secs_f64());
            }
        });
    }

    fn service_stats(&mut self, id: u16) -> &mut ServiceStats {
        while self.stats.services.len() <= usize::from(id) {
            let n = self.stats.services.len() as u16;
            self.stats
                .services
                .push(ServiceStats::new(self.services.name(n).to_owned()));
        }
        &mut self.stats.services[usize::from(id)]
    }

    fn classify_routes(&mut self, method: &str, path: &str) -> RouteFlags {
        let r = &self.settings.routes;
        self.route_memo
            .get_or(method, path, || classify_routes(r, method, path))
    }

    /// A 3xx whose `Location` points at a login route (any method): the
    /// server sends the client to log in, so it did not accept the session.
    fn redirects_to_login(&self, resp: &Response, request_path: &str) -> bool {
        let Some(loc) = resp.headers.get_str("location") else {
            return false;
        };
        let loc = loc.trim();
        let target = if loc.starts_with('/') || loc.contains("://") {
            path_of(loc).to_owned()
        } else {
            // Relative reference: resolve against the request's directory.
            let dir = &request_path[..request_path.rfind('/').map_or(0, |i| i + 1)];
            let rel = path_of(loc);
            format!(
                "{}{}",
                if dir.is_empty() { "/" } else { dir },
                rel.trim_start_matches("./")
            )
        };
        let target = route_path(&target);
        self.settings.routes.login.matches_path(&target)
    }

    /// Analyses one exchange; findings go to `out`.
    pub fn on_exchange(&mut self, ex: &Exchange, out: &mut dyn FindingSink) {
        let req = &ex.request;
        let resp = ex.response.as_ref();
        let now = resp.map_or(req.ts, |r| r.ts.max(req.ts));
        self.clock = self.clock.max(now);
        let clock = self.clock;

        let service = self.services.resolve(ex);
        let client = self.settings.proxies.resolve(&ex.conn, &req.headers);
        let ua_key = self.ua.parse(req.headers.get("user-agent"));
        let fp = Fingerprint::new(client.ip, ua_key);
        {
            let proto = usize::from(ex.protocol == Protocol::Http2);
            let s = self.service_stats(service);
            s.exchanges[proto][usize::from(client.tls)] += 1;
        }
        self.stats.input.services_overflow = self.services.overflow;
        self.stats.input.user_agent_overflow = self.ua.overflow;

        let raw_path = path_of(&req.target);
        let path = route_path(raw_path);
        let mut routes = self.classify_routes(&req.method, &path);
        let login_route = routes.login;
        let reference_secs = resp
            .and_then(|r| r.headers.get("date"))
            .and_then(parse_cookie_date)
            .unwrap_or(now.secs() as i64);

        // Every Set-Cookie, parsed once for the analysis and the learner:
        // the first `max_set_cookies` headers, `None` where one does not
        // parse; `more_set_cookies` when further headers were left.
        let mut set_cookies: Vec<Option<SetCookie<'_>>> =
            reuse(std::mem::take(&mut self.set_cookies_buf));
        let mut more_set_cookies = false;
        if let Some(r) = resp {
            for (n, v) in r.headers.get_all("set-cookie").enumerate() {
                if n >= self.limits.max_set_cookies {
                    more_set_cookies = true;
                    break;
                }
                set_cookies.push(parse_set_cookie(v, &self.limits));
            }
        }
        // Session cookies the response set.
        let mut issued: Vec<Issued<'_>> = reuse(std::mem::take(&mut self.issued_buf));
        if resp.is_some() {
            let mut stopped = false;
            for sc in &set_cookies {
                let Some(sc) = *sc else {
                    self.stats.input.set_cookies_invalid += 1;
                    continue;
                };
                let Some(idx) = self.settings.names.match_cookie_for(service, sc.name) else {
                    continue;
                };
                let Ok(name) = std::str::from_utf8(sc.name) else {
                    continue;
                };
                if issued.len() >= MAX_ISSUED {
                    self.stats.input.set_cookies_capped += 1;
                    stopped = true;
                    break;
                }
                let deletion = sc.deletion(reference_secs);
                let value = sc.unquoted_value();
                let hash = deletion.is_none().then(|| self.hasher.hash(value));
                let record = hash.and_then(|h| self.store.peek(h));
                issued.push(Issued {
                    cookie_attrs: sc,
                    cookie: idx,
                    name,
                    hash,
                    deletion,
                    record,
                    lifetime: sc.lifetime(reference_secs),
                    raw: RawId::new(value),
                    last_for_name: false,
                });
            }
            if more_set_cookies && !stopped {
                self.stats.input.set_cookies_capped += 1;
            }
            for i in 0..issued.len() {
                let later = issued[i + 1..].iter().any(|j| j.name == issued[i].name);
                issued[i].last_for_name = !later;
            }
            let c = &mut self.stats.cookies;
            for i in &issued {
                if i.deletion.is_some() {
                    c.deletions += 1;
                    continue;
                }
                let a = &i.cookie_attrs;
                let ss = matches!(
                    a.same_site,
                    crate::cookie::SameSite::Strict | crate::cookie::SameSite::Lax
                );
                c.session_set_cookies += 1;
                c.secure += u64::from(a.secure);
                c.http_only += u64::from(a.http_only);
                c.same_site_strict_or_lax += u64::from(ss);
                c.compliant += u64::from(a.secure && a.http_only && ss);
            }
        }

        let outcome = match resp {
            None => Outcome::NoResponse,
            Some(_)
                if issued
                    .iter()
                    .any(|i| i.last_for_name && i.deletion.is_some()) =>
            {
                Outcome::Rejected
            }
            Some(r) => match r.status {
                200..=299 => Outcome::Accepted,
                300..=399 if self.redirects_to_login(r, raw_path) => Outcome::Rejected,
                300..=399 => Outcome::Accepted,
                401 | 419 | 440 => Outcome::Rejected,
                _ => Outcome::Neutral,
            },
        };

        // A login or password-change POST answered 2xx with an HTML page
        // and no new session cookie is the form shown again: a failed
        // attempt (wrong password, invalid form), not a successful login.
        // Server-rendered frameworks (Django, Rails, Laravel, Spring MVC, PHP)
        // answer a successful form login with a redirect (POST-redirect-GET)
        // and a failed one with 200 and the form. JSON/API logins (SPAs) are
        // still judged by status alone.
        if (routes.login || routes.privilege)
            && outcome == Outcome::Accepted
            && resp.is_some_and(|r| (200..300).contains(&r.status) && is_html(r))
            && !issued.iter().any(|i| i.last_for_name && i.is_live())
        {
            routes.login = false;
            routes.privilege = false;
            self.stats.input.login_form_redisplayed += 1;
        }

        // Session IDs the request presented.
        let mut presented: Vec<Presented<'_>> = reuse(std::mem::take(&mut self.presented_buf));
        let mut capped = false;
        {
            let names = &self.settings.names;
            let (hasher, store) = (&mut self.hasher, &*self.store);
            let mut pairs = 0usize;
            'headers: for v in req.headers.get_all("cookie") {
                for pair in parse_cookie_header(v) {
                    pairs += 1;
                    if pairs > self.limits.max_request_pairs {
                        self.stats.input.cookie_pairs_capped += 1;
                        break 'headers;
                    }
                    let Some(idx) = names.match_cookie_for(service, pair.name) else {
                        continue;
                    };
                    let value = unquote(pair.value);
                    // Control characters are not cookie-octets (RFC 6265
                    // §4.1.1): CR/LF smuggled into a value (HTTP/2 carries
                    // them, no line syntax stops them) is no ID a server
                    // accepted. Counted, not tracked.
                    let Ok(name) = std::str::from_utf8(pair.name) else {
                        self.stats.input.ids_skipped += 1;
                        continue;
                    };
                    if has_control(value) {
                        self.stats.input.ids_skipped += 1;
                        continue;
                    }
                    if value.is_empty() {
                        continue;
                    }
                    if !add_presented(
                        &mut presented,
                        store,
                        hasher,
                        idx,
                        name,
                        value,
                        IdSource::Cookie,
                    ) {
                        capped = true;
                        break 'headers;
                    }
                }
            }
            for_each_param(&req.target, MAX_URL_PARAMS, |k, v, loc| {
                let Some(idx) = names.match_param_for(service, k) else {
                    return;
                };
                if v.len() < MIN_URL_ID_LEN || capped {
                    return;
                }
                if !add_presented(
                    &mut presented,
                    store,
                    hasher,
                    idx,
                    k,
                    v.as_bytes(),
                    IdSource::Url(loc),
                ) {
                    capped = true;
                }
            });
        }
        if capped {
            self.stats.input.presented_capped += 1;
        }
        // Path shadowing: one cookie name with several values.
        for i in 0..presented.len() {
            if presented[i].source != IdSource::Cookie {
                continue;
            }
            let dup = presented.iter().enumerate().any(|(j, q)| {
                j != i && q.source == IdSource::Cookie && q.name == presented[i].name
            });
            presented[i].ambiguous = dup;
        }
        // What the response did to each presented cookie.
        for p in &mut presented {
            let set = issued.iter().find(|i| {
                i.last_for_name
                    && match p.source {
                        IdSource::Cookie => i.name == p.name,
                        IdSource::Url(_) => i.cookie == p.cookie,
                    }
            });
            p.effect = match set {
                None => Effect::None,
                Some(i) => match (i.deletion, i.hash) {
                    (Some(d), _) => Effect::Deleted(d),
                    (None, Some(h)) if h == p.hash => Effect::Reissued,
                    (None, Some(h)) => Effect::Rotated(h),
                    (None, None) => Effect::None,
                },
            };
        }

        // Cross-node correlation: merge what other agents saw. Only for
        // accepted requests: every history-based finding is about the server
        // accepting an ID, and rejected guesses (brute force) must not turn
        // into Redis round trips.
        let cross = if outcome == Outcome::Accepted {
            self.merge_shared(&mut presented, now, service)
        } else {
            Vec::new()
        };

        // Detectors.
        let host = req.host.as_deref().map(bare_host);
        let first_seen = first_seen_ids(&issued, &presented, outcome);
        let hits = {
            let view = View {
                ex,
                settings: &self.settings,
                now,
                reference_secs,
                service,
                client,
                fp,
                ua: &self.ua,
                outcome,
                routes,
                path: &path,
                host,
                presented: &presented,
                issued: &issued,
                first_seen: &first_seen,
            };
            let mut hits = Hits {
                list: std::mem::take(&mut self.hits_buf),
                suppressor: &self.suppressor,
                service,
                now,
                suppressed: 0,
                untracked: 0,
            };
            for d in self.detectors.iter_mut() {
                d.check(&view, &mut hits);
            }
            self.stats.findings_suppressed += hits.suppressed;
            self.stats.input.detector_untracked += hits.untracked;
            hits.list
        };
        let mut hits = hits;
        for mut hit in hits.drain(..) {
            if !cross.is_empty() {
                annotate_cross_node(&mut hit, &cross, &self.settings.node);
            }
            self.emit(hit, ex, client.ip, service, now, out);
        }
        self.hits_buf = hits;

        self.apply(
            ApplyCtx {
                now,
                clock,
                service,
                fp,
                tls: client.tls,
                outcome,
                routes,
                status: resp.map(|r| r.status),
            },
            &presented,
            &issued,
        );

        if self.learner.enabled() {
            self.learner.observe(
                &Observation {
                    ex,
                    service,
                    fp,
                    outcome,
                    routes,
                    login_route,
                    path: &path,
                    reference_secs,
                    set_cookies: &set_cookies,
                },
                &mut self.settings.names,
                &self.limits,
            );
        }

        let stats = &mut self.stats;
        self.store.expire(clock, &mut |e| record_eviction(stats, e));
        self.issued_buf = reuse(issued);
        self.presented_buf = reuse(presented);
        self.set_cookies_buf = reuse(set_cookies);
    }

    fn emit(
        &mut self,
        hit: Hit,
        ex: &Exchange,
        ip: Option<IpAddr>,
        service: u16,
        now: Timestamp,
        out: &mut dyn FindingSink,
    ) {
        let key = ScopeKey::new(hit.detector, hit.scope, service);
        if self.suppressor.is_suppressed(key, now) {
            self.stats.findings_suppressed += 1;
            return;
        }
        self.suppressor.record(key, now);
        self.stats.input.suppression_turnovers = self.suppressor.early_turnovers;
        let sev_idx = Severity::ALL
            .iter()
            .position(|s| *s == hit.severity)
            .unwrap_or(0);
        self.service_stats(service).findings[hit.detector.index()][sev_idx] += 1;

        let req = &ex.request;
        let names = &self.settings.names;
        // Every fixed field is rewritten in place: the strings keep their
        // allocations from one finding to the next.
        let f = &mut self.finding;
        f.time.clear();
        write_rfc3339_millis(&mut f.time, now);
        set_str(&mut f.detector, hit.detector.as_str());
        f.severity = hit.severity;
        set_str(&mut f.service, self.services.name(service));
        if f.node != self.settings.node {
            f.node.clone_from(&self.settings.node);
        }
        set_opt(&mut f.session, hit.session, |s, h| h.write_hex(s));
        f.cookie = hit.cookie;
        set_opt(&mut f.client.ip, ip, write_ip);
        set_opt(
            &mut f.client.user_agent,
            req.headers.get("user-agent"),
            |s, u| {
                // Valid UTF-8 (nearly always) is checked by the fast
                // validator; only the rest takes the lossy conversion.
                match std::str::from_utf8(u) {
                    Ok(u) => s.push_str(u),
                    Err(_) => s.push_str(&String::from_utf8_lossy(u)),
                }
                bound(s, MAX_UA_LEN);
            },
        );
        set_str(&mut f.request.method, &req.method);
        bound(&mut f.request.method, 32);
        set_opt(&mut f.request.host, req.host.as_deref(), |s, h| {
            s.push_str(h);
            bound(s, MAX_HOST_LEN);
        });
        write_redacted_path(&mut f.request.path, &req.target, MAX_PATH_LEN, |k| {
            names.match_param_for(service, k).is_some()
        });
        bound(&mut f.request.path, MAX_PATH_LEN);
        f.request.status = ex.response.as_ref().map(|r| r.status);
        set_str(&mut f.cwe, hit.detector.cwe());
        f.message = hit.message;
        f.evidence = hit.evidence;
        f.container = ex.conn.process.as_ref().and_then(|p| {
            let id = p.container_id.clone()?;
            let pod = p.pod.as_deref();
            Some(FindingContainer {
                id,
                pod: pod.map(|k| k.name.clone()),
                namespace: pod.map(|k| k.namespace.clone()),
            })
        });
        out.on_finding(f);
    }

    fn create(&mut self, hash: SessionHash, rec: SessionRecord, clock: Timestamp) {
        let service = rec.service;
        let stats = &mut self.stats;
        self.store
            .put(hash, rec, clock, &mut |e| record_eviction(stats, e));
        if let Some(shared) = self.shared.as_mut() {
            let fp = SharedFp {
                ip: rec.last_fp.ip(),
                ua: self.ua.display(rec.last_fp.ua),
            };
            shared.publish(
                hash,
                Change::Seen {
                    origin: rec.origin,
                    fp,
                },
            );
        }
        let s = self.service_stats(service);
        s.sessions_tracked += 1;
        s.sessions_started += 1;
    }

    /// Ends an active session (logout, deletion cookie, rejection) and
    /// observes its age once; ending an already ended session changes
    /// nothing in the histogram.
    fn end_session(
        &mut self,
        hash: SessionHash,
        before: &SessionRecord,
        ev: SessionEvent,
        clock: Timestamp,
    ) {
        let already_ended = self
            .store
            .get(hash, clock)
            .is_some_and(|r| r.state != SessionState::Active);
        if let SessionEvent::Ended { at, .. } = ev
            && before.state == SessionState::Active
            && !already_ended
            && let Some(s) = self.stats.services.get_mut(usize::from(before.service))
        {
            s.session_ages
                .observe(at.saturating_since(before.first_seen).as_secs_f64());
        }
        self.event(hash, ev, clock);
    }

    fn event(&mut self, hash: SessionHash, ev: SessionEvent, clock: Timestamp) {
        // Only events that can change what other nodes know are published.
        let publishable = !matches!(
            ev,
            SessionEvent::Tls | SessionEvent::Cleartext | SessionEvent::Issued
        );
        let before = match self.shared {
            Some(_) if publishable => self.store.peek(hash),
            _ => None,
        };
        let stats = &mut self.stats;
        let applied = self
            .store
            .record_event(hash, ev, clock, &mut |e| record_eviction(stats, e));
        if applied && let Some(before) = before {
            self.publish_event(hash, &before, &ev);
        }
    }

    /// Publishes the state changes among a session's events (never one
    /// write per request: a use is published when it is the first, brings a
    /// new client, or opens a new `idle_timeout / 4` bucket of event time).
    fn publish_event(&mut self, hash: SessionHash, before: &SessionRecord, ev: &SessionEvent) {
        let Some(shared) = self.shared.as_mut() else {
            return;
        };
        let granularity = publish_granularity(&self.settings).as_nanos().max(1);
        let bucket = |t: Timestamp| u128::from(t.0) / granularity;
        match *ev {
            SessionEvent::Used { at, fp } => {
                let new_fp = !before.knows_fp(&fp);
                let shared_fp = || SharedFp {
                    ip: fp.ip(),
                    ua: self.ua.display(fp.ua),
                };
                // Bounded per session: only while the local set is filling
                // (a client cycling User-Agents cannot cause a write per
                // request).
                let new_fp =
                    new_fp && usize::from(before.seen_len) < crate::store::MAX_FINGERPRINTS;
                if new_fp {
                    shared.publish(
                        hash,
                        Change::Fingerprint {
                            at,
                            fp: shared_fp(),
                        },
                    );
                }
                let first = before.last_use.get().is_none();
                let new_bucket = before
                    .last_use
                    .get()
                    .is_none_or(|prev| bucket(prev) != bucket(at));
                if first || new_fp || new_bucket {
                    shared.publish(
                        hash,
                        Change::Use {
                            at,
                            fp: shared_fp(),
                            first,
                        },
                    );
                }
            }
            SessionEvent::Login { at } => shared.publish(hash, Change::Login { at }),
            SessionEvent::Reauth { at } => shared.publish(hash, Change::Reauth { at }),
            SessionEvent::Ended {
                at,
                state: SessionState::LoggedOut,
                reason,
            } if before.state != SessionState::LoggedOut => {
                shared.publish(hash, Change::Logout { at, reason });
            }
            SessionEvent::Rotated {
                at,
                successor,
                reason,
            } if before.successor != Some(successor) => {
                shared.publish(
                    hash,
                    Change::Rotated {
                        at,
                        successor,
                        reason,
                    },
                );
            }
            _ => {}
        }
    }

    /// Replaces each presented ID's record by its merge with what other
    /// nodes saw (one cache lookup per ID; see [`SharedSightings::lookup`]),
    /// and returns the attribution of the sessions other nodes took part in.
    fn merge_shared(
        &mut self,
        presented: &mut [Presented<'_>],
        now: Timestamp,
        service: u16,
    ) -> Vec<(SessionHash, Attribution)> {
        let mut cross = Vec::new();
        let Some(shared) = self.shared.as_mut() else {
            return cross;
        };
        let use_slack = publish_granularity(&self.settings);
        for p in presented.iter_mut().filter(|p| !p.ambiguous) {
            let Some(view) = shared.lookup(p.hash, now) else {
                continue;
            };
            let Some((record, attr)) = crate::shared::merge(
                p.record,
                &view,
                &self.settings.node,
                use_slack,
                &mut self.ua,
                service,
                p.cookie,
            ) else {
                continue;
            };
            p.record = Some(record);
            if attr.is_cross_node(&self.settings.node) {
                cross.push((p.hash, attr));
            }
        }
        cross
    }

    /// Applies the exchange to the session table.
    fn apply(&mut self, c: ApplyCtx, presented: &[Presented<'_>], issued: &[Issued<'_>]) {
        let cleartext_flag = if c.tls { 0 } else { flags::CLEARTEXT };
        let accepted = c.outcome == Outcome::Accepted;

        // New and re-issued IDs.
        for i in issued.iter().filter(|i| i.last_for_name && i.is_live()) {
            let Some(h) = i.hash else { continue };
            if self.store.get(h, c.clock).is_some() {
                self.event(h, SessionEvent::Issued, c.clock);
                if !c.tls {
                    self.event(h, SessionEvent::Cleartext, c.clock);
                }
            } else {
                let rec = SessionRecord::new(
                    c.now,
                    c.fp,
                    c.service,
                    i.cookie,
                    flags::ISSUED_SEEN | cleartext_flag,
                );
                self.create(h, rec, c.clock);
            }
        }

        let rotation_reason = if c.routes.login {
            EndReason::Login
        } else if c.routes.privilege {
            EndReason::Privilege
        } else {
            EndReason::Reissue
        };
        let counts_as_use =
            |p: &Presented<'_>| accepted && !p.ambiguous && (!c.routes.ignored || c.routes.login);

        for p in presented {
            let before = match self.store.get(p.hash, c.clock) {
                Some(r) => r,
                None if counts_as_use(p) => {
                    // First sight of an ID the server accepts: issued before
                    // we started watching, or adopted from the client.
                    let rec = SessionRecord::new(
                        c.now,
                        c.fp,
                        c.service,
                        p.cookie,
                        flags::ADOPTED | cleartext_flag,
                    );
                    self.create(p.hash, rec, c.clock);
                    rec
                }
                None => continue,
            };
            if counts_as_use(p) {
                // Idle gap since the previous accepted use; the first use
                // after issuance or adoption has none.
                if let Some(prev) = before.last_use.get()
                    && let Some(s) = self.stats.services.get_mut(usize::from(before.service))
                {
                    s.idle_gaps
                        .observe(c.now.saturating_since(prev).as_secs_f64());
                }
                self.event(
                    p.hash,
                    SessionEvent::Used {
                        at: c.now,
                        fp: c.fp,
                    },
                    c.clock,
                );
            }
            if !c.tls {
                self.event(p.hash, SessionEvent::Cleartext, c.clock);
            } else if accepted {
                self.event(p.hash, SessionEvent::Tls, c.clock);
            }
            let rejected = c.outcome == Outcome::Rejected;
            if rejected
                && !p.ambiguous
                && before.state == SessionState::Active
                && !matches!(p.effect, Effect::Deleted(_))
            {
                self.end_session(
                    p.hash,
                    &before,
                    SessionEvent::Ended {
                        at: c.now,
                        state: SessionState::Expired,
                        reason: EndReason::Rejected,
                    },
                    c.clock,
                );
            }
            match p.effect {
                Effect::Rotated(y) if !rejected => {
                    self.event(
                        p.hash,
                        SessionEvent::Rotated {
                            at: c.now,
                            successor: y,
                            reason: rotation_reason,
                        },
                        c.clock,
                    );
                    if let Some(mut yr) = self.store.get(y, c.clock) {
                        yr.inherit(p.hash, &before, c.routes.login);
                        let stats = &mut self.stats;
                        self.store
                            .put(y, yr, c.clock, &mut |e| record_eviction(stats, e));
                    }
                }
                Effect::Deleted(_) => {
                    let reason = if c.routes.logout {
                        EndReason::LogoutRoute
                    } else {
                        EndReason::DeletionCookie
                    };
                    self.end_session(
                        p.hash,
                        &before,
                        SessionEvent::Ended {
                            at: c.now,
                            state: SessionState::LoggedOut,
                            reason,
                        },
                        c.clock,
                    );
                }
                _ => {}
            }
            if c.routes.logout && c.status.is_some_and(|s| s < 400) {
                self.end_session(
                    p.hash,
                    &before,
                    SessionEvent::Ended {
                        at: c.now,
                        state: SessionState::LoggedOut,
                        reason: EndReason::LogoutRoute,
                    },
                    c.clock,
                );
            }
        }

        // Login, privilege change, re-authentication: on the new IDs when
        // the response issued any, else on the presented ones.
        if accepted && (c.routes.login || c.routes.privilege || c.routes.reauth) {
            let presented_hashes: Vec<SessionHash> = presented
                .iter()
                .filter(|p| !p.ambiguous)
                .map(|p| p.hash)
                .collect();
            let new_ids: Vec<SessionHash> = issued
                .iter()
                .filter(|i| i.last_for_name && i.is_live())
                .filter_map(|i| i.hash)
                .filter(|h| !presented.iter().any(|p| p.hash == *h))
                .collect();
            let targets = if new_ids.is_empty() {
                presented_hashes
            } else {
                new_ids
            };
            for t in targets {
                if c.routes.login {
                    self.event(t, SessionEvent::Login { at: c.now }, c.clock);
                }
                if c.routes.privilege {
                    self.event(t, SessionEvent::Privilege { at: c.now }, c.clock);
                }
                if c.routes.reauth {
                    self.event(t, SessionEvent::Reauth { at: c.now }, c.clock);
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct ApplyCtx {
    now: Timestamp,
    clock: Timestamp,
    service: u16,
    fp: Fingerprint,
    tls: bool,
    outcome: Outcome,
    routes: RouteFlags,
    status: Option<u16>,
}

/// Adds a presented ID (deduplicated by hash; an ID both in a cookie and in
/// the URL is one entry that remembers the URL location). `false` when the
/// per-request cap is reached.
fn add_presented<'a>(
    presented: &mut Vec<Presented<'a>>,
    store: &(dyn SessionStore + Send),
    hasher: &mut MemoHasher,
    cookie: u8,
    name: &'a str,
    value: &'a [u8],
    source: IdSource,
) -> bool {
    let hash = hasher.hash(value);
    let url = match source {
        IdSource::Url(l) => Some(l),
        IdSource::Cookie => None,
    };
    if let Some(p) = presented.iter_mut().find(|p| p.hash == hash) {
        if p.url.is_none() && url.is_some() {
            p.url = url;
            p.url_name = name;
        }
        return true;
    }
    if presented.len() >= MAX_PRESENTED {
        return false;
    }
    presented.push(Presented {
        hash,
        cookie,
        name,
        source,
        url,
        url_name: if url.is_some() { name } else { "" },
        raw: RawId::new(value),
        record: store.peek(hash),
        effect: Effect::None,
        ambiguous: false,
    });
    true
}

/// The `[routes]` classes of `method` and `path` (no query).
fn classify_routes(r: &Routes, method: &str, path: &str) -> RouteFlags {
    let (login, login_page) = r.login.matches_both(method, path);
    let (logout, logout_page) = r.logout.matches_both(method, path);
    let page = login_page || logout_page;
    RouteFlags {
        login,
        logout,
        privilege: r.privilege.matches(method, path),
        sensitive: r.sensitive.matches(method, path),
        reauth: r.reauth.matches(method, path),
        ignored: r.ignore.matches(method, path) || (page && !login && !logout),
    }
}

/// Accepted uses are shared once per this much event time per session
/// (`idle_timeout / 4`, at least 1 s): coarse enough to never be a write per
/// request, fine enough for idle-timeout judgement across nodes.
fn publish_granularity(settings: &Settings) -> std::time::Duration {
    (settings.policy.idle_timeout / 4).max(std::time::Duration::from_secs(1))
}

/// Names the nodes behind a finding on a session other nodes took part in:
/// `seen_on` (every node that saw it) and, per detector, the node where the
/// other side was seen (`previous_node`, `logout_node`, `rotation_node`,
/// `login_node`, `last_use_node`, `origin_node`).
fn annotate_cross_node(hit: &mut Hit, cross: &[(SessionHash, Attribution)], node: &str) {
    use crate::detectors::DetectorId as D;
    let Some(h) = hit.session else {
        return;
    };
    let Some((_, a)) = cross.iter().find(|(x, _)| *x == h) else {
        return;
    };
    let mut seen = a.seen_on.clone();
    if !seen.iter().any(|n| n == node) {
        seen.push(node.to_owned());
        seen.sort();
    }
    let name = |n: &Option<String>| {
        serde_json::Value::String(n.clone().unwrap_or_else(|| node.to_owned()))
    };
    let side = match hit.detector {
        D::SessionFingerprintChange => Some(("previous_node", name(&a.last_fp_node))),
        D::SessionAcceptedAfterLogout => Some(("logout_node", name(&a.end_node))),
        D::StaleSessionAccepted => Some(("rotation_node", name(&a.end_node))),
        D::IdleTimeoutNotEnforced => Some(("last_use_node", name(&a.last_use_node))),
        D::AbsoluteTimeoutNotEnforced => Some(("origin_node", name(&a.origin_node))),
        D::NoRotationAfterLogin | D::SensitiveActionWithoutReauth => {
            Some(("login_node", name(&a.login_node)))
        }
        _ => None,
    };
    if let Some((k, v)) = side {
        hit.evidence.insert(k.to_owned(), v);
    }
    hit.evidence.insert(
        "seen_on".to_owned(),
        serde_json::Value::Array(seen.into_iter().map(serde_json::Value::String).collect()),
    );
}

fn record_eviction(stats: &mut AnalysisStats, e: Eviction) {
    let ri = EvictReason::ALL
        .iter()
        .position(|r| *r == e.reason)
        .unwrap_or(0);
    stats.evicted[ri] += 1;
    if let Some(s) = stats.services.get_mut(usize::from(e.record.service)) {
        s.sessions_tracked = s.sessions_tracked.saturating_sub(1);
        // Ended sessions were observed when they ended; a rotated-out ID
        // lives on as its successor.
        if e.record.state == SessionState::Active {
            s.session_ages.observe(
                e.last_seen
                    .saturating_since(e.record.first_seen)
                    .as_secs_f64(),
            );
        }
    }
}

/// Adapter: an [`Analyzer`] with its finding sink is an
/// [`ExchangeSink`](sessionwatch_http::ExchangeSink), so it plugs straight
/// behind the HTTP stage.
pub struct AnalyzerSink<'a, S: FindingSink> {
    /// The analyzer.
    pub analyzer: &'a mut Analyzer,
    /// Where findings go.
    pub sink: &'a mut S,
}

impl<S: FindingSink> sessionwatch_http::ExchangeSink for AnalyzerSink<'_, S> {
    fn on_exchange(&mut self, exchange: &mut Exchange) {
        self.analyzer.on_exchange(exchange, &mut *self.sink);
    }
}

/// `v`'s allocation, emptied, as a vector of `U`: the per-exchange lists
/// borrow from their exchange, so the analyzer keeps their buffers between
/// exchanges under a `'static` element type. The standard library collects
/// a `Vec`'s `into_iter` in place when the element layouts match (here they
/// differ only in a lifetime), so no allocation happens once the buffer has
/// grown; were it not to, the result would merely be a fresh vector.
fn reuse<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// The response carries an HTML page (`Content-Type: text/html` or
/// `application/xhtml+xml`).
fn is_html(resp: &Response) -> bool {
    resp.headers.get("content-type").is_some_and(|ct| {
        let ct = ct.trim_ascii_start();
        ct.len() >= 9
            && (ct[..9].eq_ignore_ascii_case(b"text/html") || ct.starts_with(b"application/xhtml"))
    })
}

/// The finding the analyzer starts refilling from.
fn blank_finding() -> Finding {
    Finding {
        time: String::new(),
        detector: String::new(),
        severity: Severity::Info,
        service: String::new(),
        node: String::new(),
        session: None,
        cookie: None,
        client: FindingClient {
            ip: None,
            user_agent: None,
        },
        request: FindingRequest {
            method: String::new(),
            host: None,
            path: String::new(),
            status: None,
        },
        cwe: String::new(),
        message: String::new(),
        evidence: serde_json::Map::new(),
        container: None,
    }
}

/// Truncates a refilled field to `max` bytes, and gives back the room a
/// rare huge value left behind, so the lent finding's strings stay about
/// their field's bound.
fn bound(s: &mut String, max: usize) {
    truncate_utf8(s, max);
    if s.capacity() > 4 * max {
        s.shrink_to(max);
    }
}

/// `*s = v`, keeping `s`'s allocation.
fn set_str(s: &mut String, v: &str) {
    s.clear();
    s.push_str(v);
}

/// `*s = v.map(render)`, keeping the allocation of a `Some` string.
fn set_opt<T>(s: &mut Option<String>, v: Option<T>, render: impl FnOnce(&mut String, T)) {
    match v {
        Some(v) => {
            let s = s.get_or_insert_with(String::new);
            s.clear();
            render(s, v);
        }
        None => *s = None,
    }
}

#[cfg(test)]
mod tests {
    use super::reuse;
    use crate::config::ServiceConfig;
    use crate::detectors::testkit::*;
    use crate::finding::Severity;
    use crate::store::EvictReason;

    #[test]
    fn finding_json_contract() {
        let mut h = Harness::with(|c| {
            c.services = vec![ServiceConfig {
                name: "shop".into(),
                hosts: vec!["shop.example".into(), "*.shop.example".into()],
            }]
        });
        h.run(
            Ex::get("/login")
                .host("www.shop.example:443")
                .set_cookie(&good("PHPSESSID", PHP_ID)),
        );
        let f = h.run(
            Ex::post("/login")
                .host("www.shop.example")
                .at(1)
                .cookie(&format!("PHPSESSID={PHP_ID}"))
                .status(302)
                .location("/"),
        );
        let f = f
            .iter()
            .find(|f| f.detector == "no_rotation_after_login")
            .expect("finding");
        let json = serde_json::to_string(f).unwrap();
        let keys = [
            "\"time\"",
            "\"detector\"",
            "\"severity\"",
            "\"service\"",
            "\"node\"",
            "\"session\"",
            "\"cookie\"",
            "\"client\"",
            "\"request\"",
            "\"cwe\"",
            "\"message\"",
            "\"evidence\"",
        ];
        let pos: Vec<usize> = keys.iter().map(|k| json.find(k).expect(k)).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "field order: {json}");
        assert_eq!(f.time, "2026-09-21T14:13:21.270Z");
        assert_eq!(f.service, "shop");
        assert_eq!(f.node, "node-1");
        assert_eq!(f.session.as_ref().map(String::len), Some(16));
        assert_eq!(f.client.ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(f.client.user_agent.as_deref(), Some(CHROME_120));
        assert_eq!(f.request.host.as_deref(), Some("www.shop.example"));
        assert_eq!(f.request.method, "POST");
        assert!(!json.contains(PHP_ID));
    }

    #[test]
    fn reused_lists_keep_their_allocation() {
        // As on_exchange does: a 'static-typed buffer lent out under a
        // shorter lifetime, filled with borrows, emptied and kept.
        let mut buf: Vec<&'static str> = Vec::with_capacity(8);
        let at = buf.as_ptr() as usize;
        for round in 0..3 {
            let text = format!("element of round {round}");
            let mut lent: Vec<&str> = reuse(std::mem::take(&mut buf));
            assert!(lent.is_empty());
            lent.push(&text);
            assert_eq!(lent.as_ptr() as usize, at, "no new allocation");
            buf = reuse(lent);
        }
        assert_eq!(buf.capacity(), 8);
    }

    #[test]
    fn findings_are_lent_and_refilled_in_place() {
        use crate::finding::{Finding, FindingSink};
        // Where each fixed string of the lent finding lives, and what it says.
        #[derive(Default)]
        struct Addresses(Vec<([usize; 4], Finding)>);
        impl FindingSink for Addresses {
            fn on_finding(&mut self, f: &Finding) {
                let at = |s: &String| s.as_ptr() as usize;
                let ua = f.client.user_agent.as_ref().map_or(0, at);
                self.0.push((
                    [at(&f.time), at(&f.request.path), at(&f.detector), ua],
                    f.clone(),
                ));
            }
        }
        let mut h = Harness::new();
        let mut sink = Addresses::default();
        for (i, path) in ["/a", "/bb/cc"].into_iter().enumerate() {
            let ex = Ex::get(path)
                .at(i as u64)
                .ua(&format!("agent/{i}"))
                .cookie(&format!("sessionid={}", [DJANGO_ID, DJANGO_ID2][i]))
                .tls(false)
                .build();
            h.an.on_exchange(&ex, &mut sink);
        }
        let [(first_at, first), (second_at, second)] = &sink.0[..] else {
            panic!("one cleartext finding per session: {:?}", sink.0.len());
        };
        assert_eq!(first_at, second_at, "the same buffers, refilled");
        assert_eq!(first.request.path, "/a");
        assert_eq!(second.request.path, "/bb/cc");
        assert_eq!(second.client.user_agent.as_deref(), Some("agent/1"));
        assert_ne!(first.session, second.session);
        assert_ne!(first.time, second.time);
        // A huge User-Agent is cut to its bound and leaves no huge buffer.
        let ex = Ex::get("/c")
            .at(9)
            .ua(&"x".repeat(64 * 1024))
            .cookie(&format!("sessionid={}", "q8n3v5k2m9x1z7c4b6n8m2k4j6h8g0f9"))
            .tls(false)
            .build();
        h.an.on_exchange(&ex, &mut sink);
        let ua = h.an.finding.client.user_agent.as_ref().expect("user agent");
        assert_eq!(ua.len(), super::MAX_UA_LEN);
        assert!(ua.capacity() <= 4 * super::MAX_UA_LEN, "{}", ua.capacity());
    }

    #[test]
    fn service_from_process_name_else_default_and_bounded() {
        let mut h = Harness::new();
        h.run(
            Ex::get("/")
                .comm("nginx")
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .tls(false),
        );
        h.run(
            Ex::get("/")
                .host("unknown.example")
                .cookie(&format!("sessionid={DJANGO_ID2}"))
                .tls(false),
        );
        let services: Vec<_> = h.findings.iter().map(|f| f.service.as_str()).collect();
        assert_eq!(services, ["nginx", "default"]);
        for i in 0..1000 {
            h.run(Ex::get("/").comm(&format!("proc{i}")));
        }
        assert!(h.an.stats().services.len() <= crate::stats::MAX_SERVICES);
        assert!(h.an.stats().input.services_overflow > 0);
    }

    #[test]
    fn exchange_and_session_stats() {
        let mut h = Harness::with(|c| c.sessions.max_sessions = 3);
        h.run(Ex::get("/").h2().set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(Ex::get("/").tls(false).set_cookie("sessionid=abc; Path=/"));
        for (i, id) in [PHP_ID, PHP_ID2, RAILS_ID].iter().enumerate() {
            h.run(
                Ex::get("/")
                    .at(10 + i as u64)
                    .set_cookie(&good("PHPSESSID", id)),
            );
        }
        let s = h.an.stats();
        let ex: Vec<_> = s.exchanges().collect();
        assert!(ex.contains(&("default", "http2", true, 1)));
        assert!(ex.contains(&("default", "http1", false, 1)));
        assert!(ex.contains(&("default", "http1", true, 3)));
        assert_eq!(s.exchanges_total(), 5);
        assert_eq!(s.evicted(EvictReason::Capacity), 2);
        assert_eq!(s.sessions_tracked().collect::<Vec<_>>(), [("default", 3)]);
        assert_eq!(s.cookies.session_set_cookies, 5);
        assert_eq!(s.cookies.compliant, 4);
        assert_eq!(h.an.sessions(), 3);
        // Findings counted by detector, severity and service.
        let f: Vec<_> = s.findings().collect();
        assert!(
            f.iter()
                .any(|(d, sev, svc, n)| d.as_str() == "session_cleartext"
                    && *sev == Severity::High
                    && *svc == "default"
                    && *n == 1)
        );
        assert_eq!(s.findings_total() as usize, h.findings.len());
    }

    #[test]
    fn ttl_eviction_and_age_histogram() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(
            Ex::get("/a")
                .at(600)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        // 48 h TTL (24 h absolute × 2) after the last sighting.
        h.run(
            Ex::get("/")
                .at(600 + 48 * 3600 + 1)
                .set_cookie(&good("sessionid", DJANGO_ID2)),
        );
        let s = h.an.stats();
        assert_eq!(s.evicted(EvictReason::Ttl), 1);
        assert_eq!(s.services[0].session_ages.count, 1);
        assert_eq!(s.services[0].session_ages.sum.round() as u64, 600);
        h.an.finish();
        h.an.finish();
        assert_eq!(h.an.stats().services[0].session_ages.count, 2);
    }

    #[test]
    fn idle_gap_between_accepted_uses() {
        let mut h = Harness::new();
        let cookie = format!("sessionid={DJANGO_ID}");
        // Issuance is not a use; the first use has no previous one.
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(Ex::get("/a").at(10).cookie(&cookie));
        assert_eq!(h.an.stats().services[0].idle_gaps.count, 0);
        // 90 s later: one gap, in the (60, 120] bucket.
        h.run(Ex::get("/b").at(100).cookie(&cookie));
        // A rejected presentation is not a use and observes nothing.
        h.run(Ex::get("/c").at(5000).cookie(&cookie).status(401));
        let g = &h.an.stats().services[0].idle_gaps;
        assert_eq!(g.count, 1);
        assert_eq!(g.sum.round() as u64, 90);
        let cum: Vec<_> = g.cumulative().collect();
        assert!(cum.contains(&(60.0, 0)), "{cum:?}");
        assert!(cum.contains(&(120.0, 1)), "{cum:?}");
        assert_eq!(cum.last().map(|b| b.1), Some(1));
        assert_eq!(g.above, 0);
    }

    #[test]
    fn session_age_is_observed_once_when_a_session_ends() {
        let mut h = Harness::new();
        let cookie = format!("sessionid={DJANGO_ID}");
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(Ex::get("/a").at(100).cookie(&cookie));
        // Logout route answered with a deletion cookie: both end signals,
        // one observation of the age (300 s after first sight).
        h.run(
            Ex::get("/logout")
                .at(300)
                .cookie(&cookie)
                .status(302)
                .location("/")
                .set_cookie("sessionid=; Max-Age=0; Path=/"),
        );
        let ages = &h.an.stats().services[0].session_ages;
        assert_eq!(ages.count, 1);
        assert_eq!(ages.sum.round() as u64, 300);
        // The logged-out record stays (post-logout detection needs it) but
        // is not observed again at the end of input.
        h.an.finish();
        assert_eq!(h.an.stats().services[0].session_ages.count, 1);
    }

    #[test]
    fn request_without_response() {
        let mut h = Harness::new();
        h.run(
            Ex::get("/cart")
                .tls(false)
                .no_response()
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(h.count("session_cleartext"), 1);
        assert_eq!(
            h.an.sessions(),
            0,
            "an unanswered request proves nothing about the session"
        );
    }

    #[test]
    fn missing_user_agent_is_its_own_family() {
        let mut h = Harness::new();
        h.run(
            Ex::get("/")
                .no_ua()
                .set_cookie(&good("sessionid", DJANGO_ID)),
        );
        h.run(
            Ex::get("/a")
                .at(5)
                .no_ua()
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(h.count("session_fingerprint_change"), 0);
        let f = h.run(
            Ex::get("/a")
                .at(9)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(f[0].evidence["previous_user_agent"], "none");
        assert_eq!(f[0].client.user_agent.as_deref(), Some(CHROME_120));
    }

    #[test]
    fn path_shadowed_duplicates_are_ambiguous() {
        // sessionid set for / and for /app: browsers send both.
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(
            Ex::post("/accounts/login/")
                .at(5)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(302)
                .location("/")
                .set_cookie(&good("sessionid", DJANGO_ID2)),
        );
        h.run(
            Ex::get("/app/x")
                .at(600)
                .cookie(&format!("sessionid={DJANGO_ID2}; sessionid={DJANGO_ID}")),
        );
        assert_eq!(h.count("stale_session_accepted"), 0);
    }

    #[test]
    fn hostile_cookie_header_is_capped_and_counted() {
        let mut h = Harness::new();
        let mut big = String::new();
        for i in 0..100_000 {
            big.push_str(&format!("c{i}=v; "));
        }
        big.push_str(&format!("sessionid={DJANGO_ID}"));
        h.run(Ex::get("/").cookie(&big));
        assert_eq!(h.an.stats().input.cookie_pairs_capped, 1);
        let many: String = (0..50)
            .map(|i| format!("sessionid={:032x}; ", i + 1))
            .collect();
        h.run(Ex::get("/").cookie(&many));
        assert_eq!(h.an.stats().input.presented_capped, 1);
        let mut ex = Ex::get("/");
        for i in 0..200 {
            ex = ex.set_cookie(&format!("sid={:032x}; Path=/", i + 1));
        }
        h.run(ex);
        assert_eq!(h.an.stats().input.set_cookies_capped, 1);
        assert!(h.an.sessions() <= 1 + super::MAX_ISSUED);
        // Past max_set_cookies (64) without reaching MAX_ISSUED: capped
        // once more; headers that do not parse are counted as invalid up
        // to the cap only.
        let mut ex = Ex::get("/");
        for i in 0..70 {
            ex = ex.set_cookie(&if i % 10 == 0 {
                "=".to_owned()
            } else {
                format!("pref{i}=1")
            });
        }
        h.run(ex);
        assert_eq!(h.an.stats().input.set_cookies_capped, 2);
        assert_eq!(h.an.stats().input.set_cookies_invalid, 7);
    }

    #[test]
    fn replay_is_deterministic_on_event_time() {
        let scenario = || {
            vec![
                Ex::get("/login").set_cookie(&good("connect.sid", EXPRESS_SID)),
                Ex::post("/login")
                    .at(3)
                    .cookie(&format!("connect.sid={EXPRESS_SID}"))
                    .status(302)
                    .location("/")
                    .set_cookie(&good("connect.sid", EXPRESS_SID2)),
                Ex::get("/account")
                    .at(4000)
                    .from("198.51.100.2")
                    .ua(FIREFOX_121)
                    .cookie(&format!("connect.sid={EXPRESS_SID}")),
                Ex::get("/account")
                    .at(9000)
                    .cookie(&format!("connect.sid={EXPRESS_SID2}")),
            ]
        };
        let run = || {
            let mut h = Harness::new();
            for e in scenario() {
                h.run(e);
            }
            h.findings
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        let ids: Vec<_> = a.iter().map(|f| f.detector.as_str()).collect();
        assert!(ids.contains(&"stale_session_accepted"), "{ids:?}");
        assert!(ids.contains(&"idle_timeout_not_enforced"), "{ids:?}");
    }

    #[test]
    fn raw_ids_never_leave_the_analyzer() {
        let mut h = Harness::new();
        let ids = [DJANGO_ID, PHP_ID, JSESSION_ID, RAILS_ID];
        for (i, id) in ids.iter().enumerate() {
            let t = i as u64 * 10_000;
            h.run(
                Ex::get(&format!("/x;jsessionid={id}?sid={id}"))
                    .tls(false)
                    .at(t)
                    .set_cookie(&format!("sid={id}; Path=/")),
            );
            h.run(
                Ex::post("/login")
                    .at(t + 1)
                    .cookie(&format!("sid={id}"))
                    .status(302)
                    .location("/"),
            );
            h.run(
                Ex::get("/account")
                    .at(t + 5000)
                    .from("198.51.100.5")
                    .ua(CURL)
                    .cookie(&format!("sid={id}")),
            );
            h.run(
                Ex::get("/logout")
                    .at(t + 5001)
                    .cookie(&format!("sid={id}"))
                    .set_cookie("sid=deleted; Max-Age=0"),
            );
            h.run(
                Ex::get("/account")
                    .at(t + 9000)
                    .cookie(&format!("sid={id}")),
            );
        }
        assert!(h.findings.len() > 10);
        let out = serde_json::to_string(&h.findings).unwrap()
            + &format!("{:?}", h.an)
            + &format!("{:?}", h.an.stats());
        for id in ids {
            assert!(!out.contains(id), "raw ID leaked");
        }
    }

    #[test]
    fn detectors_can_be_disabled() {
        let mut h = Harness::with(|c| c.detectors.disabled = vec!["session_cleartext".into()]);
        h.run(
            Ex::get("/")
                .tls(false)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(h.count("session_cleartext"), 0);
    }

    #[test]
    fn config_errors_surface_from_new() {
        let mut c = crate::AnalysisConfig::default();
        c.routes.sensitive = vec!["PAY".into()];
        let e = crate::Analyzer::new(c, crate::HashKey::from_bytes([0; 32])).unwrap_err();
        assert!(e.to_string().starts_with("routes.sensitive[0]"), "{e}");
    }

    /// Rough cost per exchange (run with `--release -- --ignored`).
    #[test]
    #[ignore = "timing smoke test; run in release"]
    fn throughput_smoke() {
        let mut h = Harness::new();
        let ids: Vec<String> = (0..10_000u64)
            .map(|i| {
                format!(
                    "{:032x}",
                    u128::from(i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
                )
            })
            .collect();
        let exs: Vec<_> = (0..200_000u64)
            .map(|i| {
                let id = &ids[(i % 10_000) as usize];
                let e = Ex::get("/api/items?page=2")
                    .at(i / 100)
                    .cookie(&format!("csrftoken=abc; sessionid={id}; theme=dark"));
                if i < 10_000 {
                    e.set_cookie(&good("sessionid", id))
                } else {
                    e
                }
            })
            .map(|e| e.build())
            .collect();
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        for e in &exs {
            h.an.on_exchange(e, &mut out);
        }
        let el = t.elapsed();
        eprintln!(
            "{} exchanges in {:?}: {:.0} exchanges/s, {} findings, {} sessions",
            exs.len(),
            el,
            exs.len() as f64 / el.as_secs_f64(),
            out.len(),
            h.an.sessions()
        );
    }
}
