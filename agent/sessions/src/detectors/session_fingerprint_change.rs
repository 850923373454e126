//! `session_fingerprint_change` (CWE-294): one session ID used from another
//! client fingerprint (client IP and User-Agent family + major version) —
//! the signature of a stolen cookie replayed elsewhere.
//!
//! Severity per the design: high when IP and User-Agent both change, or the
//! User-Agent family changes (Chrome → curl); medium for a User-Agent-only
//! change (same IP); low for an IP-only change (mobile roaming, dual-stack
//! IPv4/IPv6, corporate egress rotation). A browser update (minor version)
//! is not a change; a major update on the same IP is medium. Fingerprints
//! already seen on the session (up to four) are not re-reported; the
//! comparison is with the last accepted use. Only accepted requests count:
//! a rejected replay is not a hijack. Many sessions behind one NAT address
//! never change fingerprint, so NAT produces nothing here.

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::finding::Severity;

/// The detector.
pub struct SessionFingerprintChange;

impl Detector for SessionFingerprintChange {
    fn id(&self) -> DetectorId {
        DetectorId::SessionFingerprintChange
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        if !v.accepted_use() {
            return;
        }
        for p in v.presented.iter().filter(|p| !p.ambiguous) {
            let Some(r) = p.record else { continue };
            if r.knows_fp(&v.fp) {
                continue;
            }
            let prev = r.last_fp;
            let (prev_ip, new_ip) = (prev.ip(), v.fp.ip());
            let ip_changed = matches!((prev_ip, new_ip), (Some(a), Some(b)) if a != b);
            let ua_changed = prev.ua != v.fp.ua;
            let family_changed = prev.ua.family != v.fp.ua.family;
            let severity = if (ip_changed && ua_changed) || family_changed {
                Severity::High
            } else if ua_changed {
                Severity::Medium
            } else if ip_changed {
                Severity::Low
            } else {
                continue;
            };
            let scope = Scope::Session(p.hash);
            if !out.wants(self.id(), scope) {
                continue;
            }
            let what = match (ip_changed, ua_changed) {
                (true, true) => "IP address and User-Agent",
                (true, false) => "IP address",
                _ => "User-Agent",
            };
            out.push(Hit {
                detector: self.id(),
                severity,
                scope,
                session: Some(p.hash),
                cookie: Some(p.name.to_owned()),
                message: format!("session used from a different client ({what} changed)"),
                evidence: evidence(json!({
                    "previous_ip": prev_ip.map(|i| i.to_string()),
                    "new_ip": new_ip.map(|i| i.to_string()),
                    "previous_user_agent": v.ua.display(prev.ua),
                    "new_user_agent": v.ua.display(v.fp.ua),
                    "ip_changed": ip_changed,
                    "user_agent_changed": ua_changed,
                    "user_agent_family_changed": family_changed,
                    "fingerprints_seen": usize::from(r.seen_len).min(crate::store::MAX_FINGERPRINTS),
                    "since_last_use_seconds": r.last_use.get().map(|t| v.secs_since(t)),
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;
    use crate::finding::Severity;

    fn login(h: &mut Harness) {
        h.run(
            Ex::post("/login")
                .from("203.0.113.7")
                .status(302)
                .location("/")
                .set_cookie(&good("sessionid", DJANGO_ID)),
        );
        h.run(
            Ex::get("/account")
                .from("203.0.113.7")
                .at(10)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
    }

    #[test]
    fn stolen_cookie_replayed_with_curl() {
        let mut h = Harness::new();
        login(&mut h);
        h.run(
            Ex::get("/account")
                .from("198.51.100.66")
                .ua(CURL)
                .at(100)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        let f = h.of("session_fingerprint_change");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].evidence["previous_ip"], "203.0.113.7");
        assert_eq!(f[0].evidence["new_ip"], "198.51.100.66");
        assert_eq!(f[0].evidence["previous_user_agent"], "chrome/120");
        assert_eq!(f[0].evidence["new_user_agent"], "curl/8");
        assert_eq!(f[0].client.ip.as_deref(), Some("198.51.100.66"));
        assert_eq!(f[0].cwe, "CWE-294");
    }

    #[test]
    fn ua_family_change_same_ip_is_high_major_update_medium() {
        let mut h = Harness::new();
        login(&mut h);
        h.run(
            Ex::get("/account")
                .at(100)
                .ua(FIREFOX_121)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(
            h.of("session_fingerprint_change")[0].severity,
            Severity::High
        );
        let mut h = Harness::new();
        login(&mut h);
        h.run(
            Ex::get("/account")
                .at(100)
                .ua(CHROME_121)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(
            h.of("session_fingerprint_change")[0].severity,
            Severity::Medium
        );
    }

    #[test]
    fn roaming_is_low_and_not_repeated() {
        // Phone moving from Wi-Fi to LTE and back, same browser.
        let mut h = Harness::new();
        login(&mut h);
        h.run(
            Ex::get("/account")
                .from("198.51.100.200")
                .at(100)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        h.run(
            Ex::get("/account")
                .from("203.0.113.7")
                .at(200)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        h.run(
            Ex::get("/account")
                .from("198.51.100.200")
                .at(300)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        // Dual-stack: IPv6 then IPv4-mapped of a known address.
        h.run(
            Ex::get("/account")
                .from("::ffff:203.0.113.7")
                .at(400)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        let f = h.of("session_fingerprint_change");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Low);
        assert_eq!(
            h.max_severity(),
            Some(Severity::Low),
            "roaming must not produce high findings"
        );
    }

    #[test]
    fn nat_many_sessions_one_ip_and_browser_updates() {
        // An office behind one NAT address: 30 users, each with their own
        // session and browser; plus one user whose Chrome updates (minor).
        let mut h = Harness::new();
        let uas = [CHROME_120, FIREFOX_121, SAFARI_17];
        for u in 0..30u64 {
            let id = format!(
                "{:032x}",
                0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834u128.wrapping_mul(u128::from(u) + 3)
            );
            let ua = uas[(u % 3) as usize];
            h.run(
                Ex::post("/login")
                    .from("192.0.2.1")
                    .ua(ua)
                    .at(u)
                    .status(302)
                    .location("/")
                    .set_cookie(&good("sessionid", &id)),
            );
            h.run(
                Ex::get("/account")
                    .from("192.0.2.1")
                    .ua(ua)
                    .at(100 + u)
                    .cookie(&format!("sessionid={id}")),
            );
        }
        h.run(
            Ex::post("/login")
                .from("192.0.2.1")
                .at(500)
                .status(302)
                .location("/")
                .set_cookie(&good("sessionid", DJANGO_ID)),
        );
        h.run(
            Ex::get("/account")
                .from("192.0.2.1")
                .ua(CHROME_120_PATCH)
                .at(600)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(h.count("session_fingerprint_change"), 0);
        assert!(
            h.max_severity().is_none_or(|s| s < Severity::High),
            "{:?}",
            h.findings
        );
    }

    #[test]
    fn rejected_replay_is_not_reported() {
        let mut h = Harness::new();
        login(&mut h);
        h.run(
            Ex::get("/account")
                .from("198.51.100.66")
                .ua(CURL)
                .at(100)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(401),
        );
        assert_eq!(h.count("session_fingerprint_change"), 0);
    }
}
