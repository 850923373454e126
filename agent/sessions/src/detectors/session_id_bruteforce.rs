//! `session_id_bruteforce` (CWE-307): one client presents many different
//! session IDs that were never issued or accepted, and the server rejects
//! them (401, redirect to login, clearing or replacing the cookie) — someone
//! guessing IDs.
//!
//! Counted per client IP over a sliding `detectors.bruteforce_window`;
//! `detectors.bruteforce_threshold` distinct unknown IDs make a finding.
//! IDs that were once valid (expired, logged out, rotated) are known to the
//! table and never count, so users with stale cookies are not guessers. The
//! same unknown ID retried counts once. Severity is high when the guesses
//! come from a single User-Agent, medium when from several (a NAT where
//! many users return with cookies issued before the agent started looks
//! like that). Bounded: at most [`MAX_CLIENTS`] clients tracked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;
use sessionwatch_streams::Timestamp;

use super::{Detector, DetectorId, Effect, Hit, Hits, Outcome, Scope, View, evidence};
use crate::finding::Severity;
use crate::settings::Settings;
use crate::useragent::UaKey;

/// Most clients tracked at once.
pub const MAX_CLIENTS: usize = 65_536;
/// Distinct User-Agents remembered per client.
const MAX_UAS: usize = 4;

#[derive(Debug, Clone)]
struct Client {
    window_start: Timestamp,
    ids: Vec<u64>,
    uas: Vec<UaKey>,
}

/// The detector (stateful).
pub struct SessionIdBruteforce {
    threshold: usize,
    window: Duration,
    clients: HashMap<IpAddr, Client>,
}

impl SessionIdBruteforce {
    /// Configured from `[detectors]`.
    pub fn new(s: &Settings) -> SessionIdBruteforce {
        SessionIdBruteforce {
            threshold: s.bruteforce_threshold as usize,
            window: s.bruteforce_window,
            clients: HashMap::new(),
        }
    }

    fn client_key(ip: IpAddr) -> u64 {
        match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let b = u128::from(v6);
                (b >> 64) as u64 ^ b as u64 ^ (1 << 63)
            }
        }
    }
}

impl Detector for SessionIdBruteforce {
    fn id(&self) -> DetectorId {
        DetectorId::SessionIdBruteforce
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        let Some(ip) = v.client.ip else { return };
        if v.routes.ignored {
            return;
        }
        let window = self.window;
        let now = v.now;
        for p in v
            .presented
            .iter()
            .filter(|p| p.record.is_none() && !p.ambiguous)
        {
            let rejected = v.outcome == Outcome::Rejected
                || matches!(p.effect, Effect::Rotated(_) | Effect::Deleted(_));
            if !rejected {
                continue;
            }
            if !self.clients.contains_key(&ip) && self.clients.len() >= MAX_CLIENTS {
                self.clients
                    .retain(|_, c| now.saturating_since(c.window_start) <= window);
                if self.clients.len() >= MAX_CLIENTS {
                    out.count_untracked();
                    continue;
                }
            }
            let c = self.clients.entry(ip).or_insert_with(|| Client {
                window_start: now,
                ids: Vec::new(),
                uas: Vec::new(),
            });
            if now.saturating_since(c.window_start) > window {
                c.window_start = now;
                c.ids.clear();
                c.uas.clear();
            }
            if !c.ids.contains(&p.hash.get()) && c.ids.len() < self.threshold {
                c.ids.push(p.hash.get());
            }
            if !c.uas.contains(&v.fp.ua) && c.uas.len() < MAX_UAS {
                c.uas.push(v.fp.ua);
            }
            if c.ids.len() < self.threshold {
                continue;
            }
            let scope = Scope::Client(Self::client_key(ip));
            let (count, uas, since) = (
                c.ids.len(),
                c.uas.len(),
                now.saturating_since(c.window_start).as_secs(),
            );
            // Start a fresh window so a continuing attack is counted anew.
            c.window_start = now;
            c.ids.clear();
            c.uas.clear();
            if !out.wants(self.id(), scope) {
                continue;
            }
            out.push(Hit {
                detector: self.id(),
                severity: if uas <= 1 {
                    Severity::High
                } else {
                    Severity::Medium
                },
                scope,
                session: None,
                cookie: Some(p.name.to_owned()),
                message: format!(
                    "client presented {count} unknown session IDs rejected within {since}s"
                ),
                evidence: evidence(json!({
                    "rejected_unknown_ids": count,
                    "window_seconds": window.as_secs(),
                    "observed_over_seconds": since,
                    "distinct_user_agents": uas,
                    "threshold": self.threshold,
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;
    use crate::finding::Severity;

    fn guess(i: u64) -> String {
        format!(
            "{:032x}",
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128.wrapping_mul(u128::from(i) * 2 + 1)
        )
    }

    #[test]
    fn guessing_ids_from_one_client() {
        let mut h = Harness::new();
        for i in 0..25 {
            h.run(
                Ex::get("/api/me")
                    .from("198.51.100.66")
                    .ua("python-requests/2.31.0")
                    .at(i)
                    .cookie(&format!("sessionid={}", guess(i)))
                    .status(401),
            );
        }
        let f = h.of("session_id_bruteforce");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].evidence["rejected_unknown_ids"], 20);
        assert_eq!(f[0].session, None);
        assert_eq!(f[0].cwe, "CWE-307");
        assert_eq!(
            h.an.sessions(),
            0,
            "guessed IDs never enter the session table"
        );
    }

    #[test]
    fn php_strict_mode_replacing_guesses_counts_as_rejection() {
        let mut h = Harness::new();
        for i in 0..20 {
            h.run(
                Ex::get("/")
                    .from("198.51.100.66")
                    .ua(CURL)
                    .at(i)
                    .cookie(&format!("PHPSESSID={}", guess(i)))
                    .set_cookie(&good("PHPSESSID", &guess(1000 + i))),
            );
        }
        assert_eq!(h.count("session_id_bruteforce"), 1);
    }

    #[test]
    fn once_valid_ids_and_retries_are_not_bruteforce() {
        let mut h = Harness::new();
        // 30 users behind one NAT each had a session that later expired.
        for i in 0..30 {
            h.run(
                Ex::post("/login")
                    .from("192.0.2.1")
                    .at(i)
                    .status(302)
                    .location("/")
                    .set_cookie(&good("sessionid", &guess(i))),
            );
        }
        for i in 0..30 {
            h.run(
                Ex::get("/account")
                    .from("192.0.2.1")
                    .at(4000 + i)
                    .cookie(&format!("sessionid={}", guess(i)))
                    .status(302)
                    .location("/accounts/login/"),
            );
        }
        // One client retrying the same unknown ID many times.
        for t in 0..50 {
            h.run(
                Ex::get("/account")
                    .from("198.51.100.9")
                    .at(5000 + t)
                    .cookie(&format!("sessionid={}", guess(999)))
                    .status(401),
            );
        }
        // Slow guessing outside the window.
        for i in 0..25 {
            h.run(
                Ex::get("/account")
                    .from("198.51.100.10")
                    .at(6000 + i * 120)
                    .cookie(&format!("sessionid={}", guess(500 + i)))
                    .status(401),
            );
        }
        assert_eq!(h.count("session_id_bruteforce"), 0);
    }

    #[test]
    fn many_user_agents_from_one_ip_is_medium() {
        let mut h = Harness::new();
        let uas = [CHROME_120, FIREFOX_121, SAFARI_17];
        for i in 0..20 {
            h.run(
                Ex::get("/account")
                    .from("192.0.2.1")
                    .ua(uas[(i % 3) as usize])
                    .at(i)
                    .cookie(&format!("sessionid={}", guess(i)))
                    .status(302)
                    .location("/accounts/login/"),
            );
        }
        let f = h.of("session_id_bruteforce");
        assert_eq!(f[0].severity, Severity::Medium);
        assert_eq!(f[0].evidence["distinct_user_agents"], 3);
    }
}
