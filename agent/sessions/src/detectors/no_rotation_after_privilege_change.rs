//! `no_rotation_after_privilege_change` (CWE-384): a successful password or
//! role change (`routes.privilege`) answered without a new session ID. An
//! attacker who had the old ID keeps the elevated (or re-secured) session.
//! Like login, re-issuing the same ID is not rotation.

use serde_json::json;

use super::{Detector, DetectorId, Effect, Hit, Hits, Outcome, Scope, View, evidence};
use crate::finding::Severity;

/// The detector.
pub struct NoRotationAfterPrivilegeChange;

impl Detector for NoRotationAfterPrivilegeChange {
    fn id(&self) -> DetectorId {
        DetectorId::NoRotationAfterPrivilegeChange
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        if !v.routes.privilege || v.outcome != Outcome::Accepted || v.new_id_issued() {
            return;
        }
        for p in v.presented.iter().filter(|p| !p.ambiguous) {
            let scope = Scope::Session(p.hash);
            if !out.wants(self.id(), scope) {
                continue;
            }
            out.push(Hit {
                detector: self.id(),
                severity: Severity::Medium,
                scope,
                session: Some(p.hash),
                cookie: Some(p.name.to_owned()),
                message: "session ID not rotated on password or privilege change".into(),
                evidence: evidence(json!({
                    "reissued_same_id": p.effect == Effect::Reissued,
                    "since_login_seconds": p.record.and_then(|r| r.login_at.get()).map(|t| v.secs_since(t)),
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn rails_password_change_keeps_session() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/session")
                .status(302)
                .location("/")
                .set_cookie(&good("_session_id", RAILS_ID)),
        );
        h.run(
            Ex::post("/account/password")
                .at(300)
                .cookie(&format!("_session_id={RAILS_ID}"))
                .status(302)
                .location("/account"),
        );
        let f = h.of("no_rotation_after_privilege_change");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["since_login_seconds"], 300);
        assert_eq!(f[0].cwe, "CWE-384");
    }

    #[test]
    fn django_update_session_auth_hash_rotates() {
        // Django's PasswordChangeView calls update_session_auth_hash → cycle_key().
        let mut h = Harness::new();
        h.run(
            Ex::post("/accounts/login/")
                .status(302)
                .location("/")
                .set_cookie(&good("sessionid", DJANGO_ID)),
        );
        h.run(
            Ex::post("/accounts/password_change/")
                .at(60)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(302)
                .location("/accounts/password_change/done/")
                .set_cookie(&good("sessionid", DJANGO_ID2)),
        );
        // A rejected change (form error re-rendered with 200 would count; a
        // 403 CSRF failure does not).
        h.run(
            Ex::post("/password")
                .at(90)
                .cookie(&format!("sessionid={DJANGO_ID2}"))
                .status(403),
        );
        assert_eq!(h.count("no_rotation_after_privilege_change"), 0);
    }
}
