//! `cookie_persistent` (CWE-539): a session cookie whose `Max-Age` /
//! `Expires` outlives `policy.max_cookie_lifetime` stays on disk in the
//! browser long after the user left (shared computers, stolen laptops).
//! `Max-Age` wins over `Expires`, as in browsers; `Expires` is measured from
//! the response's `Date` header (the server's clock), else event time.

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::finding::Severity;

/// Browsers cap cookie lifetimes at 400 days (RFC 6265bis §5.5).
const BROWSER_CAP_SECS: i64 = 400 * 86_400;

/// The detector.
pub struct CookiePersistent;

impl Detector for CookiePersistent {
    fn id(&self) -> DetectorId {
        DetectorId::CookiePersistent
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        let max =
            i64::try_from(v.settings.policy.max_cookie_lifetime.as_secs()).unwrap_or(i64::MAX);
        for i in v.issued.iter().filter(|i| i.is_live()) {
            let Some(lifetime) = i.lifetime.filter(|l| *l > max) else {
                continue;
            };
            let scope = Scope::Cookie(i.cookie);
            if !out.wants(self.id(), scope) {
                continue;
            }
            let attribute = if i.cookie_attrs.max_age.is_some() {
                "Max-Age"
            } else {
                "Expires"
            };
            out.push(Hit {
                detector: self.id(),
                severity: Severity::Low,
                scope,
                session: i.hash,
                cookie: Some(i.name.to_owned()),
                message: format!(
                    "session cookie {} persists for {}s, longer than the {}s policy",
                    i.name, lifetime, max
                ),
                evidence: evidence(json!({
                    "attribute": attribute,
                    "lifetime_seconds": lifetime,
                    "effective_lifetime_seconds": lifetime.min(BROWSER_CAP_SECS),
                    "max_cookie_lifetime_seconds": max,
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn django_two_week_default() {
        // Django SESSION_COOKIE_AGE = 1209600 (two weeks).
        let mut h = Harness::new();
        h.run(Ex::post("/accounts/login/").status(302).location("/").set_cookie(&format!(
            "sessionid={DJANGO_ID}; expires=Mon, 05 Oct 2026 10:00:00 GMT; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax; Secure"
        )));
        let f = h.of("cookie_persistent");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["attribute"], "Max-Age");
        assert_eq!(f[0].evidence["lifetime_seconds"], 1_209_600);
        assert_eq!(f[0].cwe, "CWE-539");
    }

    #[test]
    fn expires_far_in_future_relative_to_date_header() {
        let mut h = Harness::new();
        // Laravel 'lifetime' => 43200 minutes (30 days), Expires only.
        h.run(Ex::get("/").resp_header("date", "Mon, 21 Sep 2026 10:00:00 GMT").set_cookie(
            "laravel_session=eyJpdiI6IkRZWnZ3; expires=Wed, 21 Oct 2026 10:00:00 GMT; Max-Age=x; path=/; secure; httponly; samesite=lax",
        ));
        let f = h.of("cookie_persistent");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["attribute"], "Expires");
        assert_eq!(f[0].evidence["lifetime_seconds"], 30 * 86_400);
    }

    #[test]
    fn browser_session_cookie_and_short_lifetime_are_fine() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("JSESSIONID", JSESSION_ID)));
        h.run(Ex::get("/").set_cookie(&format!(
            "PHPSESSID={PHP_ID}; Max-Age=3600; path=/; secure; HttpOnly; SameSite=Lax"
        )));
        // Deletion with a past date is a logout signal, never "persistent".
        h.run(
            Ex::get("/logout")
                .at(5)
                .cookie(&format!("PHPSESSID={PHP_ID}"))
                .set_cookie(
                    "PHPSESSID=deleted; expires=Thu, 01-Jan-1970 00:00:01 GMT; Max-Age=0; path=/",
                ),
        );
        assert_eq!(h.count("cookie_persistent"), 0);
    }
}
