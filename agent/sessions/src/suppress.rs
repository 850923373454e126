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

/// Default cap of entries per generation.
pub const DEFAULT_CAPACITY: usize = 262_144;

/// The suppression memory.
#[derive(Debug)]
pub struct Suppressor {
    window: Duration,
    current: HashMap<ScopeKey, Timestamp, SeededHash>,
    previous: HashMap<ScopeKey, Timestamp, SeededHash>,
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
            self.generation_start = now;
        }
        self.current.insert(key, now);
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
}
