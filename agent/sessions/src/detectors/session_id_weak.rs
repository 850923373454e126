//! `session_id_weak` (CWE-331): a session ID that can be guessed.
//!
//! Per-ID estimate (sample statistics across many IDs are a later stage):
//! the ID's alphabet class and length bound its entropy at
//! `length × log2(alphabet)`; IDs below `policy.min_entropy_bits`, shorter
//! than 16 characters, or with obvious structure (one repeated character,
//! sequential runs, a repeating block, very few distinct characters) are
//! reported. Framework wrapping is removed first (Express `s:…​.signature`,
//! Tomcat `.jvmRoute`, quotes, percent-encoding). Client-side sessions
//! (JWT, signed blobs) are not IDs and are left to `client_side_session`.

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::finding::Severity;

/// The detector.
pub struct SessionIdWeak;

impl Detector for SessionIdWeak {
    fn id(&self) -> DetectorId {
        DetectorId::SessionIdWeak
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        let min = v.settings.policy.min_entropy_bits;
        for (hash, cookie, name, raw) in v.first_seen_ids() {
            let scope = Scope::Cookie(cookie);
            if !out.wants(self.id(), scope) {
                continue;
            }
            let e = raw.estimate();
            if !e.is_weak(min) || raw.client_side().is_some() {
                continue;
            }
            let mut reasons = Vec::new();
            if e.too_short() {
                reasons.push("too_short".to_owned());
            }
            if let Some(p) = e.pattern {
                reasons.push(format!("pattern_{}", p.as_str()));
            }
            if e.bits < f64::from(min) {
                reasons.push("below_min_entropy".to_owned());
            }
            let bits = e.bits.floor() as u64;
            out.push(Hit {
                detector: self.id(),
                severity: Severity::High,
                scope,
                session: Some(hash),
                cookie: Some(name.to_owned()),
                message: format!(
                    "session ID of {name} carries about {bits} bits, below the {min}-bit policy"
                ),
                evidence: evidence(json!({
                    "alphabet": e.alphabet.as_str(),
                    "length": e.length,
                    "estimated_bits": bits,
                    "min_entropy_bits": min,
                    "reasons": reasons,
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn short_decimal_counter() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie("sid=100234; Path=/; Secure; HttpOnly; SameSite=Lax"),
        );
        let f = h.of("session_id_weak");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["alphabet"], "decimal");
        assert_eq!(
            f[0].evidence["reasons"],
            serde_json::json!(["too_short", "below_min_entropy"])
        );
        assert_eq!(f[0].cwe, "CWE-331");
        // The raw ID never appears in the finding.
        assert!(!serde_json::to_string(f[0]).unwrap().contains("100234"));
    }

    #[test]
    fn patterned_and_aspnet_classic() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(
            "ASP.NET_SessionId=hbq0a5ztxq2vrk45elrnbm55; path=/; secure; HttpOnly; SameSite=Lax",
        ));
        assert_eq!(
            h.count("session_id_weak"),
            1,
            "120-bit ASP.NET IDs are below a 128-bit policy"
        );
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie("session=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; Path=/; Secure; HttpOnly; SameSite=Lax"));
        assert_eq!(
            h.of("session_id_weak")[0].evidence["reasons"][0],
            "pattern_all_same"
        );
    }

    #[test]
    fn framework_ids_are_not_weak() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(Ex::get("/").set_cookie(&good("PHPSESSID", PHP_ID)));
        h.run(Ex::get("/").set_cookie(&format!(
            "JSESSIONID={JSESSION_ID}.node1; Path=/; Secure; HttpOnly"
        )));
        h.run(Ex::get("/").set_cookie(&good("connect.sid", EXPRESS_SID)));
        h.run(Ex::get("/").set_cookie(&good("_session_id", RAILS_ID)));
        assert_eq!(h.count("session_id_weak"), 0);
    }

    #[test]
    fn rejected_attacker_ids_are_not_judged() {
        // A client inventing "1" as an ID that the server rejects says
        // nothing about the server's IDs.
        let mut h = Harness::new();
        h.run(
            Ex::get("/account")
                .cookie("sessionid=1")
                .status(302)
                .location("/accounts/login/?next=/account"),
        );
        assert_eq!(h.count("session_id_weak"), 0);
        // The same invented ID, adopted by the server, is a weak ID in use.
        h.run(Ex::get("/account").cookie("sessionid=12").status(200));
        assert_eq!(h.count("session_id_weak"), 1);
    }
}
