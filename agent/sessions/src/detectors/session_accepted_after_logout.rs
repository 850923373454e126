//! `session_accepted_after_logout` (CWE-613): an ID still gets a success
//! response after its session ended by logout — a logout route answered, or
//! the server sent a deletion cookie (the clearest logout signal). The
//! logout only cleared the browser's cookie; a copy of the ID (stolen,
//! logged, cached) still works.
//!
//! Not reported: requests in flight within `detectors.stale_grace`, ignored
//! routes (static assets, the login page), a login on that ID (reported by
//! `no_rotation_after_login` if it keeps the ID), and responses that replace
//! or clear the ID (the server started a new session instead).

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::finding::Severity;
use crate::store::SessionState;

/// The detector.
pub struct SessionAcceptedAfterLogout;

impl Detector for SessionAcceptedAfterLogout {
    fn id(&self) -> DetectorId {
        DetectorId::SessionAcceptedAfterLogout
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        if !v.accepted_use() || v.routes.login || v.routes.logout {
            return;
        }
        for p in v.presented.iter().filter(|p| !p.ambiguous && !p.replaced()) {
            let Some(r) = p.record.filter(|r| r.state == SessionState::LoggedOut) else {
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
                severity: Severity::High,
                scope,
                session: Some(p.hash),
                cookie: Some(p.name.to_owned()),
                message: format!(
                    "session ID still accepted {}s after logout",
                    v.secs_since(r.state_at)
                ),
                evidence: evidence(json!({
                    "since_logout_seconds": v.secs_since(r.state_at),
                    "logout_signal": r.end_reason.as_str(),
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;
    use crate::finding::Severity;

    fn login_logout(h: &mut Harness, logout: Ex) {
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("JSESSIONID", JSESSION_ID)),
        );
        h.run(
            Ex::get("/account")
                .at(60)
                .cookie(&format!("JSESSIONID={JSESSION_ID}")),
        );
        h.run(logout);
    }

    #[test]
    fn spring_logout_without_invalidation() {
        // Logout clears the browser cookie but the server keeps the session.
        let mut h = Harness::new();
        login_logout(
            &mut h,
            Ex::post("/logout")
                .at(120)
                .cookie(&format!("JSESSIONID={JSESSION_ID}"))
                .status(302)
                .location("/login?logout")
                .set_cookie(
                    "JSESSIONID=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:10 GMT; Path=/",
                ),
        );
        h.run(
            Ex::get("/account")
                .at(400)
                .from("198.51.100.66")
                .ua(CURL)
                .cookie(&format!("JSESSIONID={JSESSION_ID}")),
        );
        let f = h.of("session_accepted_after_logout");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].evidence["since_logout_seconds"], 280);
        assert_eq!(f[0].evidence["logout_signal"], "logout_route");
        assert_eq!(f[0].cwe, "CWE-613");
    }

    #[test]
    fn deletion_cookie_is_a_logout_signal() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        // Django flush() on an arbitrary route clears the cookie.
        h.run(Ex::post("/account/delete").at(30).cookie(&format!("sessionid={DJANGO_ID}")).status(302).location("/")
            .set_cookie("sessionid=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax"));
        h.run(
            Ex::get("/orders")
                .at(100)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(
            h.of("session_accepted_after_logout")[0].evidence["logout_signal"],
            "deletion_cookie"
        );
        assert_eq!(
            h.count("cookie_missing_secure"),
            0,
            "deletion cookie is not hygiene"
        );
    }

    #[test]
    fn invalidated_session_is_rejected() {
        let mut h = Harness::new();
        login_logout(
            &mut h,
            Ex::get("/logout")
                .at(120)
                .cookie(&format!("JSESSIONID={JSESSION_ID}"))
                .status(302)
                .location("/login?logout"),
        );
        // Correct server: redirect to login.
        h.run(
            Ex::get("/account")
                .at(400)
                .cookie(&format!("JSESSIONID={JSESSION_ID}"))
                .status(302)
                .location("/login"),
        );
        // Browser kept the cookie and loads the login page and assets.
        h.run(
            Ex::get("/login")
                .at(401)
                .cookie(&format!("JSESSIONID={JSESSION_ID}")),
        );
        h.run(
            Ex::get("/assets/app.js")
                .at(402)
                .cookie(&format!("JSESSIONID={JSESSION_ID}")),
        );
        // Server starts a fresh session for the stale cookie on a public page.
        h.run(
            Ex::get("/")
                .at(403)
                .cookie(&format!("JSESSIONID={JSESSION_ID}"))
                .set_cookie(&good("JSESSIONID", JSESSION_ID2)),
        );
        // In-flight request right after logout.
        assert_eq!(h.count("session_accepted_after_logout"), 0);
    }
}
