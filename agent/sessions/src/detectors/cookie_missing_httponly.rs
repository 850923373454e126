//! `cookie_missing_httponly` (CWE-1004): a session cookie without
//! `HttpOnly` can be read by JavaScript, so any XSS steals the session.

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::finding::Severity;

/// The detector.
pub struct CookieMissingHttponly;

impl Detector for CookieMissingHttponly {
    fn id(&self) -> DetectorId {
        DetectorId::CookieMissingHttponly
    }

    fn check(&mut self, _v: &View<'_>, out: &mut Hits<'_>) {
        for i in _v
            .issued
            .iter()
            .filter(|i| i.is_live() && !i.cookie_attrs.http_only)
        {
            let scope = Scope::Cookie(i.cookie);
            if !out.wants(self.id(), scope) {
                continue;
            }
            out.push(Hit {
                detector: self.id(),
                severity: Severity::Medium,
                scope,
                session: i.hash,
                cookie: Some(i.name.to_owned()),
                message: format!(
                    "session cookie {} set without the HttpOnly attribute",
                    i.name
                ),
                evidence: evidence(json!({ "attribute": "HttpOnly" })),
            });
        }
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
