//! `stale_session_accepted` (CWE-613): an ID that was rotated out (a new ID
//! replaced it — at login, privilege change or a periodic re-issue) still
//! gets a success response. Frameworks that re-issue the cookie on every
//! change and keep older values valid (PHP `session_regenerate_id(false)`,
//! signed client-side cookies) let anyone holding an old value keep the
//! session. Legitimate browsers switch to the new value at once; requests
//! already in flight within `detectors.stale_grace` are tolerated.

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::finding::Severity;
use crate::store::SessionState;

/// The detector.
pub struct StaleSessionAccepted;

impl Detector for StaleSessionAccepted {
    fn id(&self) -> DetectorId {
        DetectorId::StaleSessionAccepted
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        if !v.accepted_use() || v.routes.login {
            return;
        }
        for p in v.presented.iter().filter(|p| !p.ambiguous) {
            let Some(r) = p.record.filter(|r| r.state == SessionState::RotatedOut) else {
                continue;
            };
            if v.now.saturating_since(r.state_at) <= v.settings.stale_grace {
                continue;
            }
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
                message: format!(
                    "rotated-out session ID still accepted {}s after rotation",
                    v.secs_since(r.state_at)
                ),
                evidence: evidence(json!({
                    "since_rotation_seconds": v.secs_since(r.state_at),
                    "rotation_reason": r.end_reason.as_str(),
                    "successor_session": r.successor.map(|s| s.to_hex()),
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    fn rotate_php(h: &mut Harness) {
        h.run(Ex::get("/login").set_cookie(&good("PHPSESSID", PHP_ID)));
        h.run(
            Ex::post("/login")
                .at(10)
                .cookie(&format!("PHPSESSID={PHP_ID}"))
                .status(302)
                .location("/")
                .set_cookie(&good("PHPSESSID", PHP_ID2)),
        );
    }

    #[test]
    fn old_id_still_works_after_regenerate_without_delete() {
        let mut h = Harness::new();
        rotate_php(&mut h);
        // An attacker replays the pre-login ID ten minutes later.
        h.run(
            Ex::get("/account")
                .at(610)
                .from("198.51.100.66")
                .cookie(&format!("PHPSESSID={PHP_ID}")),
        );
        let f = h.of("stale_session_accepted");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["rotation_reason"], "login");
        assert_eq!(f[0].evidence["since_rotation_seconds"], 600);
        assert_eq!(f[0].evidence["successor_session"], h.hash(PHP_ID2));
    }

    #[test]
    fn old_id_rejected_or_in_flight() {
        let mut h = Harness::new();
        rotate_php(&mut h);
        // In-flight request of the same page within the grace period.
        h.run(
            Ex::get("/account")
                .at(12)
                .cookie(&format!("PHPSESSID={PHP_ID}")),
        );
        // Replay later: the server (correctly) redirects to login.
        h.run(
            Ex::get("/account")
                .at(610)
                .cookie(&format!("PHPSESSID={PHP_ID}"))
                .status(302)
                .location("/login"),
        );
        // Static assets say nothing about the session.
        h.run(
            Ex::get("/static/app.css")
                .at(620)
                .cookie(&format!("PHPSESSID={PHP_ID}")),
        );
        assert_eq!(h.count("stale_session_accepted"), 0);
    }
}
