//! `cookie_missing_secure` (CWE-614): a session cookie set without `Secure`
//! is sent over plain HTTP too — one `http://` link or a downgrade exposes it.

use serde_json::{Map, Value};

use super::{Detector, DetectorId, Hits, View, report_missing_flag};

/// The detector.
pub struct CookieMissingSecure;

impl Detector for CookieMissingSecure {
    fn id(&self) -> DetectorId {
        DetectorId::CookieMissingSecure
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        let tls = v.client.tls;
        report_missing_flag(
            self.id(),
            v,
            out,
            "Secure",
            |i| !i.cookie_attrs.secure,
            || {
                let mut extra = Map::new();
                extra.insert("set_over_tls".into(), Value::from(tls));
                extra
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn django_without_session_cookie_secure() {
        // Django with SESSION_COOKIE_SECURE = False (the default).
        let mut h = Harness::new();
        let f = h.run(Ex::post("/accounts/login/").status(302).location("/").set_cookie(&format!(
            "sessionid={DJANGO_ID}; expires=Mon, 05 Oct 2026 10:00:00 GMT; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax"
        )));
        let hits: Vec<_> = f
            .iter()
            .filter(|f| f.detector == "cookie_missing_secure")
            .collect();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].cookie.as_deref(), Some("sessionid"));
        assert_eq!(hits[0].session.as_deref(), Some(h.hash(DJANGO_ID).as_str()));
        assert_eq!(hits[0].cwe, "CWE-614");
        assert_eq!(hits[0].evidence["attribute"], "Secure");
    }

    #[test]
    fn secure_cookie_and_deletions_are_fine() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("PHPSESSID", PHP_ID)),
        );
        // PHP logout deletion cookie without Secure is not a hygiene issue.
        h.run(
            Ex::get("/logout")
                .cookie(&format!("PHPSESSID={PHP_ID}"))
                .at(10)
                .status(302)
                .location("/login")
                .set_cookie(
                    "PHPSESSID=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT; Max-Age=0; path=/",
                ),
        );
        // Non-session cookies are out of scope.
        h.run(Ex::get("/").at(20).set_cookie("csrftoken=abc; Path=/"));
        assert_eq!(h.count("cookie_missing_secure"), 0);
    }

    #[test]
    fn reissue_on_every_response_reports_once() {
        // express-session with rolling: true re-sends Set-Cookie every time.
        let mut h = Harness::new();
        for t in 0..5 {
            h.run(Ex::get("/cart").cookie(&format!("connect.sid={EXPRESS_SID}")).at(t * 10)
                .set_cookie(&format!("connect.sid={EXPRESS_SID}; Path=/; Expires=Mon, 21 Sep 2026 18:00:00 GMT; HttpOnly")));
        }
        assert_eq!(h.count("cookie_missing_secure"), 1);
        assert!(h.an.stats().findings_suppressed >= 4);
    }
}
