//! One finding per (session, detector) per `sessions.suppression_window`.
//!
//! Two generations of "last reported" times: lookups check both, and the
//! older generation is dropped once it is a whole window old, so memory is
//! bounded by what was reported within two windows. A hard cap turns the
//! generation over early (counted), trading a possible repeat finding for
//! bounded memory under a flood.

use std::collections::HashMap;
use std::time::Duration;

use sessionwatch_streams::Timestamp;

use crate::detectors::{DetectorId, Scope};

/// Key of one suppression entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeKey {
    detector: u8,
    kind: u8,
    service: u16,
    value: u64,
}

impl ScopeKey {
    /// The key of `detector` in `scope` for `service`.
    pub fn new(detector: DetectorId, scope: Scope, service: u16) -> ScopeKey {
        let d = detector.index() as u8;
        match scope {
            Scope::Session(h) => ScopeKey {
                detector: d,
                kind: 0,
                service: 0,
                value: h.get(),
            },
            Scope::Cookie(c) => ScopeKey {
                detector: d,
                kind: 1,
                service,
                value: u64::from(c),
            },
            Scope::Client(k) => ScopeKey {
                detector: d,
                kind: 2,
                service,
                value: k,
            },
            Scope::CookieTest(c, t) => ScopeKey {
                detector: d,
                kind: 3,
                service,
                value: u64::from(c) << 8 | u64::from(t),
            },
        }
    }
}

/// The suppressor's hasher: every detector asks [`Suppressor::is_suppressed`]
/// before it builds a finding, so the lookup runs several times per
/// exchange. foldhash with a per-process random seed is several times
/// cheaper than SipHash on these 12-byte keys; the seed keeps keys an
/// attacker influences (client addresses, cookie indexes) from being aimed
/// at one bucket, and the generation cap bounds the table regardless.
type SeededHash = foldhash::fast::RandomState;

impl ScopeKey {
    /// Slot in [`Suppressor`]'s recent-key cache: the value (a keyed
    /// session hash, a client key: already well mixed; a cookie index: small)
    /// folded with the rest and multiplied. A collision only sends the
    /// lookup on to the tables.
    fn slot(&self) -> usize {
        let tag =
            u64::from(self.detector) | u64::from(self.kind) << 8 | u64::from(self.service) << 16;
        let mixed = (self.value ^ tag.rotate_left(40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> 56) as usize & (RECENT_SLOTS - 1)
    }
}

/// Default cap of entries per generation.
pub const DEFAULT_CAPACITY: usize = 262_144;

/// Entries of [`Suppressor`]'s recent-key cache (a power of two).
const RECENT_SLOTS: usize = 256;

/// The suppression memory.
#[derive(Debug)]
pub struct Suppressor {
    window: Duration,
    current: HashMap<ScopeKey, Timestamp, SeededHash>,
    previous: HashMap<ScopeKey, Timestamp, SeededHash>,
    /// The last keys recorded, direct-mapped, with their time: the same
    /// copy of the time `current` holds (emptied at every turnover, so it
    /// never answers for a key the generations dropped). A session's
    /// finding is asked about again on its next requests, moments later;
    /// this answers those from a few cache lines instead of probing a
    /// table of up to [`DEFAULT_CAPACITY`] entries.
    recent: Box<[Option<(ScopeKey, Timestamp)>]>,
    generation_start: Timestamp,
    capacity: usize,
    /// Generations turned over early because of the cap.
    pub early_turnovers: u64,
}

impl Suppressor {
    /// Suppression for `window` with at most `capacity` entries per
    /// generation.
    pub fn new(window: Duration, capacity: usize) -> Suppressor {
        Suppressor {
            window,
            current: HashMap::default(),
            previous: HashMap::default(),
            recent: vec![None; RECENT_SLOTS].into_boxed_slice(),
            generation_start: Timestamp(0),
            capacity: capacity.max(1),
            early_turnovers: 0,
        }
    }

    /// Whether a hit with `key` at `now` repeats one reported within the
    /// window.
    pub fn is_suppressed(&self, key: ScopeKey, now: Timestamp) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let recent = |t: &Timestamp| now.saturating_since(*t) < self.window;
        if let Some((k, t)) = &self.recent[key.slot()]
            && *k == key
            && recent(t)
        {
            return true;
        }
        self.current.get(&key).is_some_and(recent) || self.previous.get(&key).is_some_and(recent)
    }

    /// Records that `key` was reported at `now`.
    pub fn record(&mut self, key: ScopeKey, now: Timestamp) {
        if self.window.is_zero() {
            return;
        }
        let full = self.current.len() >= self.capacity;
        if full || now.saturating_since(self.generation_start) >= self.window {
            if full && now.saturating_since(self.generation_start) < self.window {
                self.early_turnovers += 1;
            }
            self.previous = std::mem::take(&mut self.current);
            self.recent.fill(None);
            self.generation_start = now;
        }
        self.current.insert(key, now);
        self.recent[key.slot()] = Some((key, now));
    }

    /// Entries held (both generations).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::SessionHash;

    fn t(s: u64) -> Timestamp {
        Timestamp::from_secs_nanos(1_700_000_000 + s, 0)
    }

    #[test]
    fn window_and_generations() {
        let mut s = Suppressor::new(Duration::from_secs(100), 1000);
        let k = ScopeKey::new(
            DetectorId::IdleTimeoutNotEnforced,
            Scope::Session(SessionHash::from_u64(5)),
            0,
        );
        let other = ScopeKey::new(
            DetectorId::StaleSessionAccepted,
            Scope::Session(SessionHash::from_u64(5)),
            0,
        );
        assert!(!s.is_suppressed(k, t(0)));
        s.record(k, t(0));
        assert!(s.is_suppressed(k, t(99)));
        assert!(!s.is_suppressed(other, t(1)));
        assert!(!s.is_suppressed(k, t(100)));
        // Generations turn over; memory stays bounded by two windows.
        for i in 0..10 {
            s.record(
                ScopeKey::new(
                    DetectorId::IdleTimeoutNotEnforced,
                    Scope::Session(SessionHash::from_u64(100 + i)),
                    0,
                ),
                t(1000 + i * 100),
            );
        }
        assert!(s.len() <= 2);
    }

    #[test]
    fn cap_turns_over_early() {
        let mut s = Suppressor::new(Duration::from_secs(3600), 10);
        for i in 0..100 {
            s.record(
                ScopeKey::new(
                    DetectorId::SessionIdInUrl,
                    Scope::Session(SessionHash::from_u64(i + 1)),
                    0,
                ),
                t(i),
            );
        }
        assert!(s.len() <= 20);
        assert!(s.early_turnovers > 0);
    }

    #[test]
    fn zero_window_never_suppresses() {
        let mut s = Suppressor::new(Duration::ZERO, 10);
        let k = ScopeKey::new(DetectorId::SessionIdInUrl, Scope::Cookie(1), 0);
        s.record(k, t(0));
        assert!(!s.is_suppressed(k, t(0)));
    }
    /// The two generations alone, without the recent-key cache: what
    /// [`Suppressor`] must answer.
    struct Model {
        window: Duration,
        cap: usize,
        current: HashMap<ScopeKey, Timestamp>,
        previous: HashMap<ScopeKey, Timestamp>,
        start: Timestamp,
    }

    impl Model {
        fn is_suppressed(&self, k: ScopeKey, now: Timestamp) -> bool {
            let recent = |t: &Timestamp| now.saturating_since(*t) < self.window;
            self.current.get(&k).is_some_and(recent) || self.previous.get(&k).is_some_and(recent)
        }
        fn record(&mut self, k: ScopeKey, now: Timestamp) {
            if self.current.len() >= self.cap || now.saturating_since(self.start) >= self.window {
                self.previous = std::mem::take(&mut self.current);
                self.start = now;
            }
            self.current.insert(k, now);
        }
    }

    #[test]
    fn recent_cache_answers_like_the_generations() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config {
            cases: 256,
            ..Config::default()
        });
        // (key id, seconds forward, record?) over few keys and a small cap,
        // so keys collide in the cache and generations turn over early and
        // by time.
        let ops = proptest::collection::vec((0u64..40, 0u64..8, any::<bool>()), 1..400);
        runner
            .run(&ops, |ops| {
                let window = Duration::from_secs(60);
                let mut s = Suppressor::new(window, 12);
                let mut m = Model {
                    window,
                    cap: 12,
                    current: HashMap::new(),
                    previous: HashMap::new(),
                    start: Timestamp(0),
                };
                let mut now = t(0);
                for (id, dt, record) in ops {
                    now = Timestamp(now.0 + dt * 1_000_000_000);
                    let scope = if id % 3 == 0 {
                        Scope::Cookie((id % 7) as u8)
                    } else {
                        Scope::Session(SessionHash::from_u64(id * 0x9E37_79B9 + 1))
                    };
                    let k = ScopeKey::new(DetectorId::SessionCleartext, scope, (id % 2) as u16);
                    prop_assert_eq!(s.is_suppressed(k, now), m.is_suppressed(k, now));
                    if record {
                        s.record(k, now);
                        m.record(k, now);
                    }
                }
                Ok(())
            })
            .expect("same answers");
    }

    #[test]
    fn a_key_dropped_by_early_turnovers_is_reported_again() {
        let mut s = Suppressor::new(Duration::from_secs(3600), 4);
        let k = ScopeKey::new(
            DetectorId::SessionCleartext,
            Scope::Session(SessionHash::from_u64(42)),
            0,
        );
        s.record(k, t(0));
        assert!(s.is_suppressed(k, t(1)));
        for i in 0..8 {
            s.record(
                ScopeKey::new(
                    DetectorId::SessionCleartext,
                    Scope::Session(SessionHash::from_u64(1000 + i)),
                    0,
                ),
                t(2),
            );
        }
        assert!(!s.is_suppressed(k, t(3)), "both generations dropped it");
    }
}
