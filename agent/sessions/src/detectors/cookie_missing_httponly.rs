//! `cookie_missing_httponly` (CWE-1004): a session cookie without
//! `HttpOnly` can be read by JavaScript, so any XSS steals the session.

use serde_json::Map;

use super::{Detector, DetectorId, Hits, View, report_missing_flag};

/// The detector.
pub struct CookieMissingHttponly;

impl Detector for CookieMissingHttponly {
    fn id(&self) -> DetectorId {
        DetectorId::CookieMissingHttponly
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        report_missing_flag(
            self.id(),
            v,
            out,
            "HttpOnly",
            |i| !i.cookie_attrs.http_only,
            Map::new,
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn php_session_without_httponly() {
        // PHP default: session.cookie_httponly = 0.
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&format!("PHPSESSID={PHP_ID}; path=/; secure")));
        let f = h.of("cookie_missing_httponly");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].cwe, "CWE-1004");
        assert_eq!(f[0].cookie.as_deref(), Some("PHPSESSID"));
    }

    #[test]
    fn httponly_set() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&format!(
            "JSESSIONID={JSESSION_ID}; Path=/; Secure; HttpOnly"
        )));
        assert_eq!(h.count("cookie_missing_httponly"), 0);
    }
}
