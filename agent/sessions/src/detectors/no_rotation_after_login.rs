//! `no_rotation_after_login` (CWE-384, session fixation): a successful login
//! answered without a new session ID.
//!
//! "No rotation" means the ID the client presented before the login is
//! still the one it presents after it. That is the case when the login
//! response sets no new session ID at all (the client keeps sending the old
//! one), and also when it sets the *same* ID again — frameworks that re-issue
//! `Set-Cookie` on every response must not count as rotating. A new ID under
//! any configured session cookie name counts as rotation.
//!
//! Not reported: logins with no session presented beforehand (nothing to
//! fixate), and a repeated login on a session already authenticated (some
//! frameworks rotate only when a different user logs in, which is safe). A
//! login form shown again (2xx HTML page, no new session cookie) is a failed
//! attempt and not a login (the analyzer clears the login route for it);
//! JSON/API logins are judged by status. See docs/detectors.md.

use serde_json::json;

use super::{Detector, DetectorId, Effect, Hit, Hits, Outcome, Scope, View, evidence};
use crate::finding::Severity;
use crate::store::flags;

/// The detector.
pub struct NoRotationAfterLogin;

impl Detector for NoRotationAfterLogin {
    fn id(&self) -> DetectorId {
        DetectorId::NoRotationAfterLogin
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        if !v.routes.login || v.outcome != Outcome::Accepted || v.new_id_issued() {
            return;
        }
        for p in v.presented.iter().filter(|p| !p.ambiguous) {
            if p.record.is_some_and(|r| r.has(flags::AUTHENTICATED)) {
                continue;
            }
            let scope = Scope::Session(p.hash);
            if !out.wants(self.id(), scope) {
                continue;
            }
            out.push(Hit {
                detector: self.id(),
                severity: Severity::High,
                scope,
                session: Some(p.hash),
                cookie: Some(p.name.to_owned()),
                message: "session ID not rotated on successful login".into(),
                evidence: evidence(json!({
                    "reissued_same_id": p.effect == Effect::Reissued,
                    "login_status": v.status(),
                    "session_known_before_login": p.record.is_some(),
                    "issuance_seen": p.record.is_some_and(|r| r.has(flags::ISSUED_SEEN)),
                    "session_age_seconds": p.record.map(|r| v.secs_since(r.first_seen)),
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;
    use crate::finding::Severity;

    #[test]
    fn php_without_session_regenerate_id() {
        // Anonymous session, then a login that keeps PHPSESSID and sets nothing.
        let mut h = Harness::new();
        h.run(Ex::get("/login").set_cookie(&good("PHPSESSID", PHP_ID)));
        let f = h.run(
            Ex::post("/login")
                .at(30)
                .cookie(&format!("PHPSESSID={PHP_ID}"))
                .status(302)
                .location("/dashboard"),
        );
        let f: Vec<_> = f
            .iter()
            .filter(|f| f.detector == "no_rotation_after_login")
            .collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].cwe, "CWE-384");
        assert_eq!(f[0].message, "session ID not rotated on successful login");
        assert_eq!(f[0].request.path, "/login");
        assert_eq!(f[0].request.status, Some(302));
        assert_eq!(f[0].evidence["reissued_same_id"], false);
        assert_eq!(f[0].evidence["issuance_seen"], true);
        assert_eq!(f[0].session.as_deref(), Some(h.hash(PHP_ID).as_str()));
    }

    #[test]
    fn express_reissues_the_same_id_on_login() {
        // express-session without req.session.regenerate(): the login
        // response re-sends Set-Cookie with the same value.
        let mut h = Harness::new();
        h.run(Ex::get("/login").set_cookie(&good("connect.sid", EXPRESS_SID)));
        h.run(
            Ex::post("/login")
                .at(10)
                .cookie(&format!("connect.sid={EXPRESS_SID}"))
                .status(302)
                .location("/")
                .set_cookie(&good("connect.sid", EXPRESS_SID)),
        );
        let f = h.of("no_rotation_after_login");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["reissued_same_id"], true);
    }

    #[test]
    fn fixation_with_adopted_id() {
        // An ID the server never issued (planted by an attacker) is accepted
        // at login and kept.
        let mut h = Harness::new();
        h.run(
            Ex::post("/api/login")
                .cookie(&format!("JSESSIONID={JSESSION_ID}"))
                .status(200),
        );
        assert_eq!(
            h.of("no_rotation_after_login")[0].evidence["session_known_before_login"],
            false
        );
    }

    #[test]
    fn form_shown_again_is_a_failed_login_but_a_json_login_is_judged_by_status() {
        // Django answers a wrong password with 200 and the login form again
        // (no new session cookie): a failed attempt, not a login.
        let mut h = Harness::new();
        h.run(Ex::get("/accounts/login/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(
            Ex::post("/accounts/login/")
                .at(5)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(200)
                .resp_header("Content-Type", "text/html; charset=utf-8"),
        );
        assert!(h.of("no_rotation_after_login").is_empty());
        // An API login answering 200 JSON keeps the ID: that is a login
        // without rotation.
        h.run(
            Ex::post("/api/login")
                .at(10)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(200)
                .resp_header("Content-Type", "application/json"),
        );
        assert_eq!(h.of("no_rotation_after_login").len(), 1);
    }

    #[test]
    fn django_rotates() {
        let mut h = Harness::new();
        h.run(Ex::get("/accounts/login/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(
            Ex::post("/accounts/login/")
                .at(20)
                .cookie(&format!("sessionid={DJANGO_ID}; csrftoken=x"))
                .status(302)
                .location("/accounts/profile/")
                .set_cookie(&good("sessionid", DJANGO_ID2)),
        );
        assert_eq!(h.count("no_rotation_after_login"), 0);
        // Spring: login response rotating JSESSIONID (changeSessionId).
        h.run(
            Ex::post("/login")
                .host("spring.example")
                .cookie(&format!("JSESSIONID={JSESSION_ID}"))
                .status(302)
                .location("/")
                .set_cookie(&good("JSESSIONID", JSESSION_ID2)),
        );
        assert_eq!(h.count("no_rotation_after_login"), 0);
    }

    #[test]
    fn failed_login_and_login_without_prior_session() {
        let mut h = Harness::new();
        // Spring failure: redirect to /login?error is not success.
        h.run(
            Ex::post("/login")
                .cookie(&format!("JSESSIONID={JSESSION_ID}"))
                .status(302)
                .location("/login?error"),
        );
        // Laravel failure: 302 back to /login.
        h.run(
            Ex::post("/login")
                .cookie(&format!("laravel_session={RAILS_ID}"))
                .status(302)
                .location("https://shop.example/login"),
        );
        // 401 from an API.
        h.run(
            Ex::post("/api/login")
                .cookie(&format!("sid={RAILS_ID2}"))
                .status(401),
        );
        // First visit straight to login: nothing presented, new ID issued.
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("PHPSESSID", PHP_ID)),
        );
        assert_eq!(h.count("no_rotation_after_login"), 0);
    }

    #[test]
    fn repeated_login_on_authenticated_session() {
        // Frameworks that rotate only when a different user logs in.
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("sessionid", DJANGO_ID)),
        );
        h.run(
            Ex::post("/login")
                .at(60)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(302)
                .location("/"),
        );
        assert_eq!(h.count("no_rotation_after_login"), 0);
        // After logout the session is no longer authenticated: a login that
        // keeps the ID again is a finding.
        h.run(
            Ex::post("/logout")
                .at(120)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(302)
                .location("/"),
        );
        h.run(
            Ex::post("/login")
                .at(180)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(302)
                .location("/"),
        );
        assert_eq!(h.count("no_rotation_after_login"), 1);
    }
}
