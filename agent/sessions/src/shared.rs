//! Session sightings shared between agents (cross-node correlation).
//!
//! Behind a load balancer the victim's requests and the attacker's replay of
//! a stolen cookie often reach proxy replicas on different nodes; each agent
//! alone then sees one fingerprint per session and stays silent. Agents
//! that share a hash key (so they hash IDs alike) publish the *state
//! changes* of each session — never raw IDs, never one write per request —
//! to a shared store, and merge what the other nodes saw into the record the
//! detectors judge.
//!
//! This module is the synchronous, non-blocking side the analyzer sees:
//! [`SharedSightings::publish`] hands a [`Change`] to a bounded queue and
//! [`SharedSightings::lookup`] answers from a local cache that the backend
//! fills asynchronously (the Redis backend lives in the agent crate). The
//! merge itself ([`merge`]) is pure: local record + [`RemoteView`] → the
//! record detectors see, plus an [`Attribution`] naming the node where each
//! side of a finding was seen.

use std::net::IpAddr;
use std::sync::Arc;

use sessionwatch_streams::Timestamp;

use crate::hash::SessionHash;
use crate::store::{EndReason, Fingerprint, OptTs, SessionRecord, SessionState, flags};
use crate::useragent::UaTable;

/// Most remote fingerprints kept in one [`RemoteView`] (newest first
/// sighting wins; the rest are dropped when decoding).
pub const MAX_REMOTE_FINGERPRINTS: usize = 16;

/// A client fingerprint in a form every node decodes alike: the IP and the
/// User-Agent as `family/major` (interned family ids differ per process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFp {
    /// Client IP, if known.
    pub ip: Option<IpAddr>,
    /// `family/major` (e.g. `chrome/120`) or `none`.
    pub ua: String,
}

impl SharedFp {
    /// A node-independent id of the fingerprint (FNV-1a over the printed
    /// IP and User-Agent key): the field name under which it is stored, so
    /// two nodes seeing the same client write one field.
    pub fn id(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |b: &[u8]| {
            for x in b {
                h ^= u32::from(*x);
                h = h.wrapping_mul(0x0100_0193);
            }
        };
        match self.ip {
            Some(ip) => eat(ip.to_string().as_bytes()),
            None => eat(b"-"),
        }
        eat(b"|");
        eat(self.ua.as_bytes());
        h
    }
}

/// One state change of a session, as published to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// First local sight of the ID (issued here, or first presented and
    /// accepted): the start of its lifetime and its first client.
    Seen {
        /// Start of the absolute lifetime.
        origin: Timestamp,
        /// The client.
        fp: SharedFp,
    },
    /// A client fingerprint not seen on this session before.
    Fingerprint {
        /// Event time.
        at: Timestamp,
        /// The client.
        fp: SharedFp,
    },
    /// An accepted use. Published only for the first use and then once per
    /// `use_granularity` bucket of event time (never per request).
    Use {
        /// Event time.
        at: Timestamp,
        /// The client.
        fp: SharedFp,
        /// The first accepted use this node saw.
        first: bool,
    },
    /// A successful login on this ID.
    Login {
        /// Event time.
        at: Timestamp,
    },
    /// A successful re-authentication.
    Reauth {
        /// Event time.
        at: Timestamp,
    },
    /// The session ended by logout (logout route or deletion cookie).
    Logout {
        /// Event time.
        at: Timestamp,
        /// The logout signal.
        reason: EndReason,
    },
    /// The ID was replaced by `successor`.
    Rotated {
        /// Event time.
        at: Timestamp,
        /// The new ID.
        successor: SessionHash,
        /// Why.
        reason: EndReason,
    },
}

/// When and where something was seen on another (or this) node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMark {
    /// Event time.
    pub at: Timestamp,
    /// Node name.
    pub node: String,
}

/// A fingerprint seen on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFp {
    /// First sighting.
    pub mark: RemoteMark,
    /// The client.
    pub fp: SharedFp,
}

/// Everything the shared store knows about one session, merged over nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteView {
    /// First sighting (start of the absolute lifetime).
    pub origin: Option<RemoteMark>,
    /// First accepted use.
    pub first_use: Option<RemoteMark>,
    /// Latest accepted use (coarse: see [`Change::Use`]) and its client.
    pub last_use: Option<RemoteFp>,
    /// Fingerprints seen (bounded by [`MAX_REMOTE_FINGERPRINTS`]).
    pub fingerprints: Vec<RemoteFp>,
    /// Latest login.
    pub login: Option<RemoteMark>,
    /// Latest re-authentication.
    pub reauth: Option<RemoteMark>,
    /// Latest logout and its signal.
    pub logout: Option<(RemoteMark, EndReason)>,
    /// Rotation: when, where, to which ID, why.
    pub rotated: Option<(RemoteMark, SessionHash, EndReason)>,
    /// The ID this one replaced.
    pub predecessor: Option<SessionHash>,
}

impl RemoteView {
    /// Nothing known.
    pub fn is_empty(&self) -> bool {
        self.origin.is_none()
            && self.first_use.is_none()
            && self.last_use.is_none()
            && self.fingerprints.is_empty()
            && self.login.is_none()
            && self.reauth.is_none()
            && self.logout.is_none()
            && self.rotated.is_none()
            && self.predecessor.is_none()
    }

    /// Whether everything in the view was seen by `node` (then a node that
    /// still holds its own record learns nothing from it).
    pub fn only_from(&self, node: &str) -> bool {
        let ours = |m: &RemoteMark| m.node == node;
        self.origin.iter().all(ours)
            && self.first_use.iter().all(ours)
            && self.last_use.iter().all(|f| ours(&f.mark))
            && self.fingerprints.iter().all(|f| ours(&f.mark))
            && self.login.iter().all(ours)
            && self.reauth.iter().all(ours)
            && self.logout.iter().all(|(m, _)| ours(m))
            && self.rotated.iter().all(|(m, _, _)| ours(m))
    }

    /// Every node named in the view, sorted, without duplicates.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let mut add = |m: &RemoteMark| {
            if !v.contains(&m.node) {
                v.push(m.node.clone());
            }
        };
        self.origin.iter().for_each(&mut add);
        self.first_use.iter().for_each(&mut add);
        self.last_use.iter().for_each(|f| add(&f.mark));
        self.fingerprints.iter().for_each(|f| add(&f.mark));
        self.login.iter().for_each(&mut add);
        self.reauth.iter().for_each(&mut add);
        self.logout.iter().for_each(|(m, _)| add(m));
        self.rotated.iter().for_each(|(m, _, _)| add(m));
        v.sort();
        v
    }
}

/// Parses an [`EndReason::as_str`] value.
pub fn end_reason_from_str(s: &str) -> Option<EndReason> {
    [
        EndReason::None,
        EndReason::Login,
        EndReason::Privilege,
        EndReason::Reissue,
        EndReason::LogoutRoute,
        EndReason::DeletionCookie,
        EndReason::Rejected,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
}

/// The shared store as the (synchronous) analyzer sees it. Implementations
/// never block on the network in `publish`, and block in `lookup` at most
/// for a bounded, configured time (zero: answers arriving later are used
/// from the next exchange on).
pub trait SharedSightings: Send {
    /// Queues a state change of `hash` for the other nodes (a full queue
    /// drops it and counts the drop).
    fn publish(&mut self, hash: SessionHash, change: Change);

    /// What the other nodes know about `hash`, from the local cache; a
    /// missing or stale entry (older than the cache TTL at event time
    /// `now`) requests a fetch.
    fn lookup(&mut self, hash: SessionHash, now: Timestamp) -> Option<Arc<RemoteView>>;

    /// Delivers every queued change (end of a replay, shutdown), bounded by
    /// the backend's timeout.
    fn flush(&mut self) {}
}

/// Where each side of a merged record was seen: `None` = this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Node of the client the record's `last_fp` belongs to.
    pub last_fp_node: Option<String>,
    /// Node that saw the logout or rotation behind the record's state.
    pub end_node: Option<String>,
    /// Node that saw the latest login.
    pub login_node: Option<String>,
    /// Node that saw the latest accepted use.
    pub last_use_node: Option<String>,
    /// Node that saw the session first (absolute lifetime origin).
    pub origin_node: Option<String>,
    /// Every node that saw the session (this one included when it knew the
    /// session before this exchange), sorted.
    pub seen_on: Vec<String>,
}

impl Attribution {
    /// Whether any side comes from another node.
    pub fn is_cross_node(&self, this_node: &str) -> bool {
        self.seen_on.iter().any(|n| n != this_node)
    }
}

fn fp_of(f: &SharedFp, ua: &mut UaTable) -> Fingerprint {
    Fingerprint::new(f.ip, ua.key_from_display(&f.ua))
}

fn later(a: OptTs, b: Timestamp) -> bool {
    a.get().is_none_or(|a| b > a)
}

/// Merges a remote view into the local record of a session (or builds a
/// record from the view alone when this node never saw the session).
/// `service`/`cookie` label a record built from the view. Returns `None`
/// when there is nothing to merge.
///
/// Other nodes publish a use only once per `use_slack` of event time (the
/// first use of each `idle_timeout / 4` bucket), so their last use may be
/// up to `use_slack` later than published: it is credited with `use_slack`
/// so an idle gap is never overestimated (no false idle-timeout finding;
/// gaps within `use_slack` above the policy are missed across nodes).
///
/// Rules: fingerprints are unioned; the latest use (and its client), login
/// and re-authentication win; the earliest origin wins; a remote logout or
/// rotation ends a locally active session unless a login after it
/// re-activated the ID.
pub fn merge(
    local: Option<SessionRecord>,
    view: &RemoteView,
    this_node: &str,
    use_slack: std::time::Duration,
    ua: &mut UaTable,
    service: u16,
    cookie: u8,
) -> Option<(SessionRecord, Attribution)> {
    let slack = u64::try_from(use_slack.as_nanos()).unwrap_or(u64::MAX);
    let credited = |m: &RemoteMark| {
        if m.node == this_node {
            m.at
        } else {
            Timestamp(m.at.0.saturating_add(slack))
        }
    };
    // Everything in the view came from this node while it held the same
    // record (not one re-created after an eviction): nothing to learn.
    let own_history = local.is_some_and(|l| {
        view.only_from(this_node) && view.origin.as_ref().is_none_or(|o| l.first_seen <= o.at)
    });
    if view.is_empty() || own_history {
        return None;
    }
    let mut attr = Attribution::default();
    let had_local = local.is_some();
    let mut r = match local {
        Some(r) => r,
        None => {
            let first = view
                .origin
                .as_ref()
                .map(|m| m.at)
                .into_iter()
                .chain(view.first_use.as_ref().map(|m| m.at))
                .chain(view.fingerprints.iter().map(|f| f.mark.at))
                .min()?;
            let client = view
                .last_use
                .as_ref()
                .or_else(|| view.fingerprints.iter().max_by_key(|f| f.mark.at))?;
            let mut r = SessionRecord::new(first, fp_of(&client.fp, ua), service, cookie, 0);
            r.last_use = OptTs::NONE;
            attr.last_fp_node = Some(client.mark.node.clone());
            attr.origin_node = view
                .origin
                .as_ref()
                .map(|m| m.node.clone())
                .or_else(|| Some(client.mark.node.clone()));
            r
        }
    };
    for f in &view.fingerprints {
        r.remember_fp(fp_of(&f.fp, ua));
    }
    if let Some(u) = &view.last_use
        && later(r.last_use, credited(&u.mark))
    {
        r.last_use = OptTs::some(credited(&u.mark));
        let fp = fp_of(&u.fp, ua);
        r.last_fp = fp;
        r.remember_fp(fp);
        attr.last_fp_node = Some(u.mark.node.clone());
        attr.last_use_node = Some(u.mark.node.clone());
    }
    if let Some(o) = &view.origin
        && o.at < r.origin
    {
        r.origin = o.at;
        r.first_seen = r.first_seen.min(o.at);
        attr.origin_node = Some(o.node.clone());
    }
    if let Some(l) = &view.login
        && later(r.login_at, l.at)
    {
        r.login_at = OptTs::some(l.at);
        r.flags |= flags::AUTHENTICATED;
        attr.login_node = Some(l.node.clone());
    }
    if let Some(a) = &view.reauth
        && later(r.reauth_at, a.at)
    {
        r.reauth_at = OptTs::some(a.at);
    }
    let relogin_after = |t: Timestamp, r: &SessionRecord| r.login_at.get().is_some_and(|l| l > t);
    if let Some((m, reason)) = &view.logout
        && !relogin_after(m.at, &r)
        && (r.state != SessionState::LoggedOut || m.at < r.state_at)
    {
        r.state = SessionState::LoggedOut;
        r.end_reason = *reason;
        r.state_at = m.at;
        r.flags &= !flags::AUTHENTICATED;
        attr.end_node = Some(m.node.clone());
    }
    if let Some((m, successor, reason)) = &view.rotated {
        if r.successor.is_none() {
            r.successor = Some(*successor);
        }
        if matches!(r.state, SessionState::Active | SessionState::Expired)
            && !relogin_after(m.at, &r)
        {
            r.state = SessionState::RotatedOut;
            r.end_reason = *reason;
            r.state_at = m.at;
            attr.end_node = Some(m.node.clone());
        }
    }
    if r.predecessor.is_none() {
        r.predecessor = view.predecessor;
    }
    attr.seen_on = view.nodes();
    if had_local && !attr.seen_on.iter().any(|n| n == this_node) {
        attr.seen_on.push(this_node.to_owned());
        attr.seen_on.sort();
    }
    Some((r, attr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::useragent::UaKey;
    use std::time::Duration;

    fn t(s: u64) -> Timestamp {
        Timestamp::from_secs_nanos(1_700_000_000 + s, 0)
    }
    fn mark(s: u64, node: &str) -> RemoteMark {
        RemoteMark {
            at: t(s),
            node: node.into(),
        }
    }
    fn sfp(ip: &str, ua: &str) -> SharedFp {
        SharedFp {
            ip: Some(ip.parse().unwrap()),
            ua: ua.into(),
        }
    }

    #[test]
    fn view_alone_builds_a_record_with_the_remote_client() {
        let mut ua = UaTable::default();
        let victim = sfp("203.0.113.7", "chrome/120");
        let view = RemoteView {
            origin: Some(mark(0, "node-a")),
            last_use: Some(RemoteFp {
                mark: mark(60, "node-a"),
                fp: victim.clone(),
            }),
            fingerprints: vec![RemoteFp {
                mark: mark(0, "node-a"),
                fp: victim.clone(),
            }],
            logout: Some((mark(120, "node-a"), EndReason::LogoutRoute)),
            ..RemoteView::default()
        };
        let (r, attr) = merge(None, &view, "node-b", Duration::ZERO, &mut ua, 0, 0).unwrap();
        assert_eq!(r.state, SessionState::LoggedOut);
        assert_eq!(r.state_at, t(120));
        assert_eq!(r.last_fp.ip(), victim.ip);
        assert_eq!(
            r.last_fp.ua,
            UaKey {
                family: 9,
                major: 120
            }
        );
        assert_eq!(r.last_use.get(), Some(t(60)));
        assert_eq!(attr.end_node.as_deref(), Some("node-a"));
        assert_eq!(attr.last_fp_node.as_deref(), Some("node-a"));
        assert_eq!(attr.seen_on, ["node-a"]);
        assert!(attr.is_cross_node("node-b"));
        assert!(
            merge(
                None,
                &RemoteView::default(),
                "node-b",
                Duration::ZERO,
                &mut ua,
                0,
                0
            )
            .is_none()
        );
    }

    #[test]
    fn relogin_after_remote_logout_keeps_the_session_active() {
        let mut ua = UaTable::default();
        let fp = Fingerprint::new(Some("192.0.2.1".parse().unwrap()), UaKey::default());
        let mut local = SessionRecord::new(t(0), fp, 0, 0, 0);
        local.login_at = OptTs::some(t(200));
        let view = RemoteView {
            logout: Some((mark(100, "node-a"), EndReason::DeletionCookie)),
            rotated: Some((
                mark(50, "node-a"),
                SessionHash::from_u64(9),
                EndReason::Reissue,
            )),
            ..RemoteView::default()
        };
        let (r, attr) = merge(Some(local), &view, "node-b", Duration::ZERO, &mut ua, 0, 0).unwrap();
        assert_eq!(r.state, SessionState::Active);
        assert_eq!(r.successor, Some(SessionHash::from_u64(9)));
        assert_eq!(attr.seen_on, ["node-a", "node-b"]);
        // Without the later login, the logout wins over the rotation.
        local.login_at = OptTs::NONE;
        let (r, _) = merge(Some(local), &view, "node-b", Duration::ZERO, &mut ua, 0, 0).unwrap();
        assert_eq!(r.state, SessionState::LoggedOut);
        assert_eq!(r.end_reason, EndReason::DeletionCookie);
    }

    #[test]
    fn fingerprints_union_and_ids_are_node_independent() {
        let mut ua = UaTable::default();
        let a = sfp("203.0.113.7", "chrome/120");
        let b = sfp("198.51.100.66", "curl/8");
        assert_eq!(a.id(), sfp("203.0.113.7", "chrome/120").id());
        assert_ne!(a.id(), b.id());
        let local = SessionRecord::new(t(0), fp_of(&a, &mut ua), 0, 0, 0);
        let view = RemoteView {
            fingerprints: vec![RemoteFp {
                mark: mark(5, "node-c"),
                fp: b.clone(),
            }],
            ..RemoteView::default()
        };
        let (r, _) = merge(Some(local), &view, "node-b", Duration::ZERO, &mut ua, 0, 0).unwrap();
        assert!(r.knows_fp(&fp_of(&a, &mut ua)));
        assert!(r.knows_fp(&fp_of(&b, &mut ua)));
        assert_eq!(
            end_reason_from_str("logout_route"),
            Some(EndReason::LogoutRoute)
        );
        assert_eq!(end_reason_from_str("bogus"), None);
    }

    /// The shared store as a test double: changes folded into views the
    /// way the Redis codec does (first sighting wins, latest use/login/
    /// logout wins).
    #[derive(Clone, Default)]
    struct Fake {
        node: String,
        store: Arc<std::sync::Mutex<std::collections::HashMap<SessionHash, RemoteView>>>,
        published: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl SharedSightings for Fake {
        fn publish(&mut self, h: SessionHash, c: Change) {
            self.published
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut st = self.store.lock().unwrap();
            let m = |at| RemoteMark {
                at,
                node: self.node.clone(),
            };
            let v = st.entry(h).or_default();
            let add_fp = |v: &mut RemoteView, at, fp: SharedFp| {
                if !v.fingerprints.iter().any(|f| f.fp == fp) {
                    v.fingerprints.push(RemoteFp { mark: m(at), fp });
                }
            };
            match c {
                Change::Seen { origin, fp } => {
                    v.origin.get_or_insert(m(origin));
                    add_fp(v, origin, fp);
                }
                Change::Fingerprint { at, fp } => add_fp(v, at, fp),
                Change::Use { at, fp, first } => {
                    if first {
                        v.first_use.get_or_insert(m(at));
                    }
                    v.last_use = Some(RemoteFp { mark: m(at), fp });
                }
                Change::Login { at } => v.login = Some(m(at)),
                Change::Reauth { at } => v.reauth = Some(m(at)),
                Change::Logout { at, reason } => v.logout = Some((m(at), reason)),
                Change::Rotated {
                    at,
                    successor,
                    reason,
                } => {
                    v.rotated = Some((m(at), successor, reason));
                    st.entry(successor).or_default().predecessor = Some(h);
                }
            }
        }
        fn lookup(&mut self, h: SessionHash, _now: Timestamp) -> Option<Arc<RemoteView>> {
            self.store.lock().unwrap().get(&h).cloned().map(Arc::new)
        }
    }

    fn pair() -> (
        crate::detectors::testkit::Harness,
        crate::detectors::testkit::Harness,
    ) {
        use crate::detectors::testkit::Harness;
        let fake = Fake::default();
        let mut a = Harness::with(|c| c.node = "node-a".into());
        let mut b = Harness::with(|c| c.node = "node-b".into());
        a.an.set_shared(Box::new(Fake {
            node: "node-a".into(),
            ..fake.clone()
        }));
        b.an.set_shared(Box::new(Fake {
            node: "node-b".into(),
            ..fake
        }));
        (a, b)
    }

    #[test]
    fn hijack_and_logout_split_over_two_nodes() {
        use crate::detectors::testkit::*;
        let (mut a, mut b) = pair();
        let c1 = format!("sessionid={DJANGO_ID}");
        let c2 = format!("sessionid={DJANGO_ID2}");
        a.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        a.run(Ex::get("/account").at(5).cookie(&c1));
        a.run(
            Ex::get("/")
                .at(6)
                .set_cookie(&good("sessionid", DJANGO_ID2)),
        );
        a.run(
            Ex::get("/logout")
                .at(10)
                .cookie(&c2)
                .status(302)
                .location("/")
                .set_cookie("sessionid=; Max-Age=0; Path=/"),
        );
        assert_eq!(a.count("session_fingerprint_change"), 0);
        b.run(
            Ex::get("/account")
                .at(60)
                .from("198.51.100.66")
                .ua(CURL)
                .cookie(&c1),
        );
        b.run(
            Ex::get("/orders")
                .at(70)
                .from("198.51.100.66")
                .ua(CURL)
                .cookie(&c2),
        );
        let fp = b.of("session_fingerprint_change");
        assert_eq!(fp.len(), 2, "{:#?}", b.findings);
        assert_eq!(fp[0].evidence["previous_node"], "node-a");
        assert_eq!(
            fp[0].evidence["seen_on"],
            serde_json::json!(["node-a", "node-b"])
        );
        assert_eq!(fp[0].node, "node-b");
        let lo = b.of("session_accepted_after_logout");
        assert_eq!(lo.len(), 1);
        assert_eq!(lo[0].evidence["logout_node"], "node-a");
        assert_eq!(lo[0].evidence["since_logout_seconds"], 60);
        // The attacker's next request on B is not reported again, and the
        // victim's next request on A sees the attacker's client as known.
        b.run(
            Ex::get("/account")
                .at(80)
                .from("198.51.100.66")
                .ua(CURL)
                .cookie(&c1),
        );
        assert_eq!(b.count("session_fingerprint_change"), 2);
        a.run(Ex::get("/account").at(90).cookie(&c1));
        assert_eq!(
            a.count("session_fingerprint_change"),
            0,
            "{:#?}",
            a.findings
        );
    }

    #[test]
    fn rotation_and_idle_gap_seen_across_nodes() {
        use crate::detectors::testkit::*;
        let (mut a, mut b) = pair();
        a.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        a.run(
            Ex::post("/login")
                .at(5)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(302)
                .location("/")
                .set_cookie(&good("sessionid", DJANGO_ID2)),
        );
        a.run(
            Ex::get("/account")
                .at(7)
                .cookie(&format!("sessionid={DJANGO_ID2}")),
        );
        // The rotated-out ID accepted on B.
        b.run(
            Ex::get("/account")
                .at(600)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        let st = b.of("stale_session_accepted");
        assert_eq!(st.len(), 1, "{:#?}", b.findings);
        assert_eq!(st[0].evidence["rotation_node"], "node-a");
        assert_eq!(st[0].evidence["rotation_reason"], "login");
        // Idle: within policy plus the publishing slack → nothing; far past
        // it → reported, naming the node of the last use.
        b.run(
            Ex::get("/cart")
                .at(7 + 1000)
                .cookie(&format!("sessionid={DJANGO_ID2}")),
        );
        assert_eq!(b.count("idle_timeout_not_enforced"), 0, "{:#?}", b.findings);
        let (mut a, mut b) = pair();
        a.run(Ex::get("/").set_cookie(&good("sessionid", RAILS_ID)));
        a.run(Ex::get("/a").at(3).cookie(&format!("sessionid={RAILS_ID}")));
        b.run(
            Ex::get("/b")
                .at(3 + 4000)
                .cookie(&format!("sessionid={RAILS_ID}")),
        );
        let idle = b.of("idle_timeout_not_enforced");
        assert_eq!(idle.len(), 1, "{:#?}", b.findings);
        assert_eq!(idle[0].evidence["last_use_node"], "node-a");
        // Credited with idle/4 (450 s): 4000 - 450 = 3550 s.
        assert_eq!(idle[0].evidence["idle_gap_seconds"], 3550);
    }

    #[test]
    fn uses_are_published_coarsely_and_bounded() {
        use crate::detectors::testkit::*;
        let (mut a, _) = pair();
        let fake = Fake {
            node: "node-a".into(),
            ..Fake::default()
        };
        let published = fake.published.clone();
        a.an.set_shared(Box::new(fake));
        let c = format!("sessionid={DJANGO_ID}");
        a.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        // 1000 requests over 1000 s from one client: the first use, then
        // one per idle_timeout / 4 (450 s) bucket.
        for i in 0..1000u64 {
            a.run(Ex::get("/a").at(1 + i).cookie(&c));
        }
        let steady = published.load(std::sync::atomic::Ordering::Relaxed);
        assert!(steady <= 1 + 4, "{steady} publishes");
        // A client cycling through many User-Agents: bounded, not per request.
        let uas = [
            CURL,
            FIREFOX_121,
            SAFARI_17,
            CHROME_121,
            CHROME_120,
            "Wget/1.21",
            "okhttp/4.9",
        ];
        for i in 0..700u64 {
            a.run(
                Ex::get("/b")
                    .at(1001 + i)
                    .ua(uas[(i % 7) as usize])
                    .cookie(&c),
            );
        }
        let cycled = published.load(std::sync::atomic::Ordering::Relaxed) - steady;
        assert!(
            cycled <= 2 * crate::store::MAX_FINGERPRINTS + 4,
            "{cycled} publishes"
        );
    }
}
