//! Session state: the [`SessionStore`] trait and the in-memory
//! [`SessionTable`].
//!
//! A session is keyed by the keyed hash of its ID ([`SessionHash`]); the raw
//! ID is never stored. Each [`SessionRecord`] is a small `Copy` value
//! (about 120 bytes, ~160 with table overhead) so that a million sessions fit
//! in a DaemonSet's memory, and so that another backend (Redis, for agents
//! that must share state) can implement the same trait by serialising it.
//!
//! All times are event times; the table never reads the wall clock. It is
//! bounded twice: by `max_sessions` (least recently seen is evicted) and by a
//! TTL of `max(idle, absolute timeout) × ttl_factor` since a session was last
//! seen, and every eviction is reported with its reason.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sessionwatch_streams::Timestamp;

use crate::hash::SessionHash;
use crate::useragent::UaKey;

/// An optional event time in 8 bytes (`0` = unset; event time zero is the
/// Unix epoch and never a real capture time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OptTs(u64);

impl OptTs {
    /// Unset.
    pub const NONE: OptTs = OptTs(0);
    /// Set to `t`.
    pub const fn some(t: Timestamp) -> OptTs {
        OptTs(if t.0 == 0 { 1 } else { t.0 })
    }
    /// The time, if set.
    pub const fn get(self) -> Option<Timestamp> {
        if self.0 == 0 {
            None
        } else {
            Some(Timestamp(self.0))
        }
    }
}

/// Lifecycle state of a session ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// In use.
    Active,
    /// Replaced by a successor ID (rotation); must no longer be accepted.
    RotatedOut,
    /// Ended by logout (logout route or a deletion cookie).
    LoggedOut,
    /// Rejected by the server after having been valid (timeout, eviction).
    Expired,
}

impl SessionState {
    /// Stable evidence value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SessionState::Active => "active",
            SessionState::RotatedOut => "rotated_out",
            SessionState::LoggedOut => "logged_out",
            SessionState::Expired => "expired",
        }
    }
}

/// Why a session left the `Active` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Still active.
    None,
    /// Rotated on a successful login.
    Login,
    /// Rotated on a privilege change.
    Privilege,
    /// Re-issued with a new value outside login/privilege routes.
    Reissue,
    /// A logout route answered.
    LogoutRoute,
    /// The server sent a deletion cookie.
    DeletionCookie,
    /// The server rejected it (401, redirect to login, …).
    Rejected,
}

impl EndReason {
    /// Stable evidence value.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::None => "none",
            EndReason::Login => "login",
            EndReason::Privilege => "privilege_change",
            EndReason::Reissue => "reissue",
            EndReason::LogoutRoute => "logout_route",
            EndReason::DeletionCookie => "deletion_cookie",
            EndReason::Rejected => "rejected",
        }
    }
}

/// A client fingerprint in 24 bytes: IP (canonical) and User-Agent key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fingerprint {
    ip: [u8; 16],
    /// 0 = unknown, 4 = IPv4, 6 = IPv6.
    ip_kind: u8,
    /// User-Agent family and major version.
    pub ua: UaKey,
}

impl Fingerprint {
    /// Builds a fingerprint.
    pub fn new(ip: Option<IpAddr>, ua: UaKey) -> Fingerprint {
        let (bytes, kind) = match ip {
            None => ([0; 16], 0),
            Some(IpAddr::V4(v4)) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v4.octets());
                (b, 4)
            }
            Some(IpAddr::V6(v6)) => (v6.octets(), 6),
        };
        Fingerprint {
            ip: bytes,
            ip_kind: kind,
            ua,
        }
    }

    /// The IP, if known.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.ip_kind {
            4 => Some(IpAddr::V4(Ipv4Addr::new(
                self.ip[0], self.ip[1], self.ip[2], self.ip[3],
            ))),
            6 => Some(IpAddr::V6(Ipv6Addr::from(self.ip))),
            _ => None,
        }
    }

    /// A 32-bit digest for the bounded set of fingerprints seen.
    pub fn digest(&self) -> u32 {
        // FNV-1a over the packed fields: not security relevant (the set only
        // avoids re-reporting a fingerprint already seen).
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |b: u8| {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        };
        self.ip.iter().for_each(|b| eat(*b));
        eat(self.ip_kind);
        self.ua.family.to_le_bytes().iter().for_each(|b| eat(*b));
        self.ua.major.to_le_bytes().iter().for_each(|b| eat(*b));
        h
    }
}

/// Flags of a [`SessionRecord`].
pub mod flags {
    /// The issuing `Set-Cookie` was seen.
    pub const ISSUED_SEEN: u8 = 1;
    /// First seen presented by a client and accepted (issued before the
    /// agent started, or an ID the server adopted).
    pub const ADOPTED: u8 = 2;
    /// Seen (issued or presented) on a cleartext connection and not yet
    /// used over TLS since.
    pub const CLEARTEXT: u8 = 4;
    /// A successful login was seen on this session or its predecessor.
    pub const AUTHENTICATED: u8 = 8;
}

/// Most client fingerprints remembered per session.
pub const MAX_FINGERPRINTS: usize = 4;

/// Everything known about one session ID. `Copy`, no heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// First time this ID was seen (issued, or first presented).
    pub first_seen: Timestamp,
    /// Start of the absolute lifetime: issuance, or the login that created
    /// it; inherited across non-login rotations.
    pub origin: Timestamp,
    /// Last request the server accepted with this ID.
    pub last_use: OptTs,
    /// Last successful login.
    pub login_at: OptTs,
    /// Last successful re-authentication route.
    pub reauth_at: OptTs,
    /// Last successful privilege change.
    pub privilege_at: OptTs,
    /// When `state` last changed.
    pub state_at: Timestamp,
    /// The ID this one replaced.
    pub predecessor: Option<SessionHash>,
    /// The ID that replaced this one.
    pub successor: Option<SessionHash>,
    /// The client of the last accepted use (or of issuance).
    pub last_fp: Fingerprint,
    /// Digests of fingerprints seen (bounded; ring once full).
    pub seen_fps: [u32; MAX_FINGERPRINTS],
    /// Entries used in `seen_fps`, and the ring position once full.
    pub seen_len: u8,
    /// Service id (see `AnalysisStats::services`).
    pub service: u16,
    /// Index of the session cookie name.
    pub cookie: u8,
    /// Lifecycle state.
    pub state: SessionState,
    /// Why it left `Active`.
    pub end_reason: EndReason,
    /// [`flags`].
    pub flags: u8,
}

impl SessionRecord {
    /// A session first seen at `now` by client `fp`.
    pub fn new(
        now: Timestamp,
        fp: Fingerprint,
        service: u16,
        cookie: u8,
        flags: u8,
    ) -> SessionRecord {
        let mut r = SessionRecord {
            first_seen: now,
            origin: now,
            last_use: OptTs::NONE,
            login_at: OptTs::NONE,
            reauth_at: OptTs::NONE,
            privilege_at: OptTs::NONE,
            state_at: now,
            predecessor: None,
            successor: None,
            last_fp: fp,
            seen_fps: [0; MAX_FINGERPRINTS],
            seen_len: 0,
            service,
            cookie,
            state: SessionState::Active,
            end_reason: EndReason::None,
            flags,
        };
        r.remember_fp(fp);
        r
    }

    /// Whether a flag is set.
    pub const fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether this client fingerprint was seen on the session.
    pub fn knows_fp(&self, fp: &Fingerprint) -> bool {
        let d = fp.digest();
        let n = usize::from(self.seen_len).min(MAX_FINGERPRINTS);
        self.seen_fps[..n].contains(&d)
    }

    /// Adds a fingerprint to the bounded set (oldest replaced once full).
    pub fn remember_fp(&mut self, fp: Fingerprint) {
        self.remember_digest(fp.digest());
    }

    /// `seen_len` is the count while filling (`< MAX`), then `MAX + cursor`
    /// of the ring.
    fn remember_digest(&mut self, d: u32) {
        let len = usize::from(self.seen_len);
        if self.seen_fps[..len.min(MAX_FINGERPRINTS)].contains(&d) {
            return;
        }
        if len < MAX_FINGERPRINTS {
            self.seen_fps[len] = d;
            self.seen_len += 1;
        } else {
            let cursor = (len - MAX_FINGERPRINTS) % MAX_FINGERPRINTS;
            self.seen_fps[cursor] = d;
            self.seen_len = (MAX_FINGERPRINTS + (cursor + 1) % MAX_FINGERPRINTS) as u8;
        }
    }

    /// Latest of login and re-authentication.
    pub fn last_auth(&self) -> Option<Timestamp> {
        match (self.login_at.get(), self.reauth_at.get()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies a lifecycle event.
    pub fn apply(&mut self, event: &SessionEvent) {
        match *event {
            SessionEvent::Used { at, fp } => {
                self.last_use = OptTs::some(at);
                self.last_fp = fp;
                self.remember_fp(fp);
                if self.state == SessionState::Expired {
                    self.state = SessionState::Active;
                    self.end_reason = EndReason::None;
                    self.state_at = at;
                }
            }
            SessionEvent::Tls => self.flags &= !flags::CLEARTEXT,
            SessionEvent::Cleartext => self.flags |= flags::CLEARTEXT,
            SessionEvent::Login { at } => {
                self.login_at = OptTs::some(at);
                self.flags |= flags::AUTHENTICATED;
                if self.state == SessionState::LoggedOut || self.state == SessionState::Expired {
                    // Logging in again on an ID the server kept (adoption).
                    self.state = SessionState::Active;
                    self.end_reason = EndReason::None;
                    self.state_at = at;
                }
            }
            SessionEvent::Reauth { at } => self.reauth_at = OptTs::some(at),
            SessionEvent::Privilege { at } => self.privilege_at = OptTs::some(at),
            SessionEvent::Ended { at, state, reason } => {
                // A logout outranks a rotation recorded in the same exchange.
                if self.state == SessionState::LoggedOut && state != SessionState::LoggedOut {
                    return;
                }
                self.state = state;
                self.end_reason = reason;
                self.state_at = at;
                // An ended session is no longer authenticated: a later
                // login on the same ID is a new login.
                self.flags &= !flags::AUTHENTICATED;
            }
            SessionEvent::Rotated {
                at,
                successor,
                reason,
            } => {
                self.successor = Some(successor);
                if self.state == SessionState::Active || self.state == SessionState::Expired {
                    self.state = SessionState::RotatedOut;
                    self.end_reason = reason;
                    self.state_at = at;
                }
            }
            SessionEvent::Issued => self.flags |= flags::ISSUED_SEEN,
        }
    }

    /// Inherits what survives a rotation from `pred` (authentication,
    /// re-auth and privilege times, fingerprints, and the absolute-lifetime
    /// origin unless the rotation was a login).
    pub fn inherit(&mut self, pred_hash: SessionHash, pred: &SessionRecord, login: bool) {
        self.predecessor = Some(pred_hash);
        self.login_at = if self.login_at.get().is_some() {
            self.login_at
        } else {
            pred.login_at
        };
        self.reauth_at = pred.reauth_at;
        self.privilege_at = pred.privilege_at;
        self.flags |= pred.flags & flags::AUTHENTICATED;
        if !login {
            self.origin = self.origin.min(pred.origin);
        }
        let n = usize::from(pred.seen_len).min(MAX_FINGERPRINTS);
        for d in pred.seen_fps[..n].iter().copied() {
            self.remember_digest(d);
        }
    }
}

/// A lifecycle event recorded against a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// The server accepted a request with this ID from `fp`.
    Used {
        /// Event time.
        at: Timestamp,
        /// The client.
        fp: Fingerprint,
    },
    /// Used over TLS at the client.
    Tls,
    /// Seen on a cleartext connection.
    Cleartext,
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
    /// A successful privilege change.
    Privilege {
        /// Event time.
        at: Timestamp,
    },
    /// The ID ended (logout, deletion cookie, rejection).
    Ended {
        /// Event time.
        at: Timestamp,
        /// New state.
        state: SessionState,
        /// Why.
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
    /// The server's `Set-Cookie` for this ID was seen.
    Issued,
}

/// Why a session left the table (`sessionwatch_sessions_evicted_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictReason {
    /// The table was full; the least recently seen session made room.
    Capacity,
    /// Not seen for longer than the TTL.
    Ttl,
}

impl EvictReason {
    /// Every reason.
    pub const ALL: [EvictReason; 2] = [EvictReason::Capacity, EvictReason::Ttl];

    /// Stable label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            EvictReason::Capacity => "capacity",
            EvictReason::Ttl => "ttl",
        }
    }
}

/// A session removed by a bound.
#[derive(Debug, Clone, Copy)]
pub struct Eviction {
    /// The session.
    pub hash: SessionHash,
    /// Its last state.
    pub record: SessionRecord,
    /// When it was last seen.
    pub last_seen: Timestamp,
    /// Why it was removed.
    pub reason: EvictReason,
}

/// Where session state lives. The in-memory [`SessionTable`] is the default;
/// a shared backend (Redis) can implement the same operations so several
/// agents see one another's sessions. Records are passed by value.
pub trait SessionStore {
    /// The record of `hash`, marking it seen at `now`.
    fn get(&mut self, hash: SessionHash, now: Timestamp) -> Option<SessionRecord>;

    /// The record of `hash` without marking it seen.
    fn peek(&self, hash: SessionHash) -> Option<SessionRecord>;

    /// Inserts or replaces a record, seen at `now`. Reports any session
    /// evicted to make room.
    fn put(
        &mut self,
        hash: SessionHash,
        record: SessionRecord,
        now: Timestamp,
        evicted: &mut dyn FnMut(Eviction),
    );

    /// Removes sessions not seen within the TTL before `now` (bounded work
    /// per call), reporting each.
    fn expire(&mut self, now: Timestamp, evicted: &mut dyn FnMut(Eviction));

    /// Sessions held.
    fn len(&self) -> usize;

    /// Whether the store is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits every session (end of a run: ages for the histogram).
    fn for_each(&self, f: &mut dyn FnMut(SessionHash, &SessionRecord, Timestamp));

    /// Records an event against an existing session; `false` when unknown.
    fn record_event(
        &mut self,
        hash: SessionHash,
        event: SessionEvent,
        now: Timestamp,
        evicted: &mut dyn FnMut(Eviction),
    ) -> bool {
        match self.get(hash, now) {
            Some(mut r) => {
                r.apply(&event);
                self.put(hash, r, now, evicted);
                true
            }
            None => false,
        }
    }
}

/// Hasher for keys that are already uniformly random (keyed HMAC output,
/// which an attacker cannot steer): identity, no rehashing.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Slot {
    hash: SessionHash,
    record: SessionRecord,
    last_seen: Timestamp,
    prev: u32,
    next: u32,
}

/// Most TTL evictions per [`SessionStore::expire`] call (keeps per-exchange
/// latency flat; the rest go on later calls).
const EXPIRE_BATCH: usize = 64;

/// The in-memory session table: a slab with an intrusive LRU list (by last
/// seen) and a hash index. O(1) get/put/evict.
#[derive(Debug)]
pub struct SessionTable {
    index: HashMap<SessionHash, u32, BuildHasherDefault<IdentityHasher>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Most recently seen.
    head: u32,
    /// Least recently seen.
    tail: u32,
    capacity: usize,
    ttl: std::time::Duration,
}

impl SessionTable {
    /// A table of at most `capacity` sessions, each dropped `ttl` after it
    /// was last seen.
    pub fn new(capacity: usize, ttl: std::time::Duration) -> SessionTable {
        let capacity = capacity.clamp(1, NIL as usize - 1);
        SessionTable {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
            ttl,
        }
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        if p != NIL {
            self.slots[p as usize].next = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.slots[n as usize].prev = p;
        } else {
            self.tail = p;
        }
    }

    fn push_front(&mut self, i: u32) {
        self.slots[i as usize].prev = NIL;
        self.slots[i as usize].next = self.head;
        if self.head != NIL {
            self.slots[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn touch(&mut self, i: u32, now: Timestamp) {
        let s = &mut self.slots[i as usize];
        s.last_seen = s.last_seen.max(now);
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn remove_slot(&mut self, i: u32) -> Slot {
        self.unlink(i);
        let slot = self.slots[i as usize].clone();
        self.index.remove(&slot.hash);
        self.free.push(i);
        slot
    }

    /// Approximate bytes used per session (slot + index entry), for sizing.
    pub const fn bytes_per_session() -> usize {
        std::mem::size_of::<Slot>() + std::mem::size_of::<(SessionHash, u32)>() + 1
    }
}

impl SessionStore for SessionTable {
    fn get(&mut self, hash: SessionHash, now: Timestamp) -> Option<SessionRecord> {
        let i = *self.index.get(&hash)?;
        self.touch(i, now);
        Some(self.slots[i as usize].record)
    }

    fn peek(&self, hash: SessionHash) -> Option<SessionRecord> {
        self.index
            .get(&hash)
            .map(|i| self.slots[*i as usize].record)
    }

    fn put(
        &mut self,
        hash: SessionHash,
        record: SessionRecord,
        now: Timestamp,
        evicted: &mut dyn FnMut(Eviction),
    ) {
        if let Some(&i) = self.index.get(&hash) {
            self.slots[i as usize].record = record;
            self.touch(i, now);
            return;
        }
        if self.index.len() >= self.capacity && self.tail != NIL {
            let s = self.remove_slot(self.tail);
            evicted(Eviction {
                hash: s.hash,
                record: s.record,
                last_seen: s.last_seen,
                reason: EvictReason::Capacity,
            });
        }
        let slot = Slot {
            hash,
            record,
            last_seen: now,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(hash, i);
        self.push_front(i);
    }

    /// One index lookup and the event applied in place (the default reads
    /// the record out and writes it back: two lookups, two copies).
    fn record_event(
        &mut self,
        hash: SessionHash,
        event: SessionEvent,
        now: Timestamp,
        _evicted: &mut dyn FnMut(Eviction),
    ) -> bool {
        let Some(&i) = self.index.get(&hash) else {
            return false;
        };
        self.touch(i, now);
        self.slots[i as usize].record.apply(&event);
        true
    }

    fn expire(&mut self, now: Timestamp, evicted: &mut dyn FnMut(Eviction)) {
        for _ in 0..EXPIRE_BATCH {
            if self.tail == NIL {
                return;
            }
            let last = self.slots[self.tail as usize].last_seen;
            if now.saturating_since(last) <= self.ttl {
                return;
            }
            let s = self.remove_slot(self.tail);
            evicted(Eviction {
                hash: s.hash,
                record: s.record,
                last_seen: s.last_seen,
                reason: EvictReason::Ttl,
            });
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn for_each(&self, f: &mut dyn FnMut(SessionHash, &SessionRecord, Timestamp)) {
        let mut i = self.head;
        while i != NIL {
            let s = &self.slots[i as usize];
            f(s.hash, &s.record, s.last_seen);
            i = s.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn h(v: u64) -> SessionHash {
        SessionHash::from_u64(v)
    }
    fn t(s: u64) -> Timestamp {
        Timestamp::from_secs_nanos(1_700_000_000 + s, 0)
    }
    fn rec(at: Timestamp) -> SessionRecord {
        SessionRecord::new(at, Fingerprint::default(), 0, 0, 0)
    }

    #[test]
    fn record_is_compact() {
        eprintln!(
            "SessionRecord {} bytes, per session in table ~{} bytes",
            std::mem::size_of::<SessionRecord>(),
            SessionTable::bytes_per_session()
        );
        assert!(
            std::mem::size_of::<SessionRecord>() <= 128,
            "{}",
            std::mem::size_of::<SessionRecord>()
        );
        assert!(
            SessionTable::bytes_per_session() <= 200,
            "{}",
            SessionTable::bytes_per_session()
        );
    }

    #[test]
    fn lru_capacity_eviction() {
        let mut tbl = SessionTable::new(3, Duration::from_secs(3600));
        let mut ev = vec![];
        for i in 1..=3 {
            tbl.put(h(i), rec(t(i)), t(i), &mut |e| ev.push(e));
        }
        // Touch 1: 2 becomes least recently seen.
        assert!(tbl.get(h(1), t(10)).is_some());
        tbl.put(h(4), rec(t(11)), t(11), &mut |e| ev.push(e));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].hash, h(2));
        assert_eq!(ev[0].reason, EvictReason::Capacity);
        assert_eq!(tbl.len(), 3);
        assert!(tbl.peek(h(2)).is_none());
        // Slots are reused.
        tbl.put(h(5), rec(t(12)), t(12), &mut |e| ev.push(e));
        assert!(tbl.slots.len() <= 4);
    }

    #[test]
    fn ttl_eviction_on_event_time() {
        let mut tbl = SessionTable::new(100, Duration::from_secs(100));
        let mut ev = vec![];
        tbl.put(h(1), rec(t(0)), t(0), &mut |e| ev.push(e));
        tbl.put(h(2), rec(t(50)), t(50), &mut |e| ev.push(e));
        tbl.expire(t(100), &mut |e| ev.push(e));
        assert!(ev.is_empty());
        tbl.expire(t(101), &mut |e| ev.push(e));
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].hash, ev[0].reason), (h(1), EvictReason::Ttl));
        // Time stepping back never evicts.
        tbl.expire(t(0), &mut |e| ev.push(e));
        assert_eq!(ev.len(), 1);
        assert_eq!(tbl.len(), 1);
    }

    /// The table's in-place `record_event` leaves the same records in the
    /// same LRU order as the trait's read-apply-write default.
    #[test]
    fn in_place_events_match_the_default() {
        /// A table whose `record_event` is the trait default.
        struct ReadApplyWrite(SessionTable);
        impl SessionStore for ReadApplyWrite {
            fn get(&mut self, h: SessionHash, now: Timestamp) -> Option<SessionRecord> {
                self.0.get(h, now)
            }
            fn peek(&self, h: SessionHash) -> Option<SessionRecord> {
                self.0.peek(h)
            }
            fn put(
                &mut self,
                h: SessionHash,
                r: SessionRecord,
                now: Timestamp,
                e: &mut dyn FnMut(Eviction),
            ) {
                self.0.put(h, r, now, e)
            }
            fn expire(&mut self, now: Timestamp, e: &mut dyn FnMut(Eviction)) {
                self.0.expire(now, e)
            }
            fn len(&self) -> usize {
                self.0.len()
            }
            fn for_each(&self, f: &mut dyn FnMut(SessionHash, &SessionRecord, Timestamp)) {
                self.0.for_each(f)
            }
        }
        let table = || SessionTable::new(8, Duration::from_secs(100));
        let (mut a, mut b) = (table(), ReadApplyWrite(table()));
        for k in 1..=6 {
            a.put(h(k), rec(t(k)), t(k), &mut |_| {});
            b.put(h(k), rec(t(k)), t(k), &mut |_| {});
        }
        let fp = Fingerprint::new(Some("192.0.2.7".parse().unwrap()), UaKey::default());
        for (i, k) in [3u64, 1, 6, 3, 9, 2, 2, 5].into_iter().enumerate() {
            let at = t(10 + i as u64);
            let event = match i % 4 {
                0 => SessionEvent::Used { at, fp },
                1 => SessionEvent::Login { at },
                2 => SessionEvent::Tls,
                _ => SessionEvent::Ended {
                    at,
                    state: SessionState::LoggedOut,
                    reason: EndReason::Login,
                },
            };
            assert_eq!(
                a.record_event(h(k), event, at, &mut |_| {}),
                b.record_event(h(k), event, at, &mut |_| {})
            );
        }
        let dump = |s: &dyn SessionStore| {
            let mut v = Vec::new();
            s.for_each(&mut |h, r, seen| v.push((h, *r, seen)));
            v
        };
        assert_eq!(dump(&a), dump(&b));
    }

    #[test]
    fn events_and_fingerprints() {
        let mut tbl = SessionTable::new(10, Duration::from_secs(100));
        tbl.put(h(1), rec(t(0)), t(0), &mut |_| {});
        let fp = Fingerprint::new(
            Some("192.0.2.1".parse().unwrap()),
            UaKey {
                family: 9,
                major: 120,
            },
        );
        assert!(tbl.record_event(h(1), SessionEvent::Used { at: t(5), fp }, t(5), &mut |_| {}));
        assert!(!tbl.record_event(h(9), SessionEvent::Tls, t(5), &mut |_| {}));
        let r = tbl.peek(h(1)).unwrap();
        assert_eq!(r.last_use.get(), Some(t(5)));
        assert!(r.knows_fp(&fp));
        assert_eq!(r.last_fp.ip(), Some("192.0.2.1".parse().unwrap()));
        let mut r = r;
        for i in 0..20u16 {
            r.remember_fp(Fingerprint::new(
                None,
                UaKey {
                    family: 100 + i,
                    major: 1,
                },
            ));
        }
        assert!(usize::from(r.seen_len) <= 2 * MAX_FINGERPRINTS);
        assert!(r.knows_fp(&Fingerprint::new(
            None,
            UaKey {
                family: 119,
                major: 1
            }
        )));
    }

    #[test]
    fn logout_outranks_rotation() {
        let mut r = rec(t(0));
        r.apply(&SessionEvent::Ended {
            at: t(1),
            state: SessionState::LoggedOut,
            reason: EndReason::LogoutRoute,
        });
        r.apply(&SessionEvent::Rotated {
            at: t(1),
            successor: h(7),
            reason: EndReason::Reissue,
        });
        assert_eq!(r.state, SessionState::LoggedOut);
        assert_eq!(r.successor, Some(h(7)));
    }
}
