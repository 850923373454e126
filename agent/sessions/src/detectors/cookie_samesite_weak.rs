//! `cookie_samesite_weak` (CWE-1275): a session cookie without `SameSite`,
//! with a value browsers do not recognise, or with `SameSite=None` is sent
//! on cross-site requests (CSRF). `None` is medium (explicit opt-out),
//! absent/invalid low (Chromium defaults to Lax; Firefox and Safari do not).

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::cookie::SameSite;
use crate::finding::Severity;

/// The detector.
pub struct CookieSamesiteWeak;

impl Detector for CookieSamesiteWeak {
    fn id(&self) -> DetectorId {
        DetectorId::CookieSamesiteWeak
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        for i in v.issued.iter().filter(|i| i.is_live()) {
            let ss = i.cookie_attrs.same_site;
            let severity = match ss {
                SameSite::Strict | SameSite::Lax => continue,
                SameSite::None => Severity::Medium,
                SameSite::Absent | SameSite::Invalid => Severity::Low,
            };
            let scope = Scope::Cookie(i.cookie);
            if !out.wants(self.id(), scope) {
                continue;
            }
            out.push(Hit {
                detector: self.id(),
                severity,
                scope,
                session: i.hash,
                cookie: Some(i.name.to_owned()),
                message: format!("session cookie {} has SameSite {}", i.name, ss.as_str()),
                evidence: evidence(json!({
                    "samesite": ss.as_str(),
                    "partitioned": i.cookie_attrs.partitioned,
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
    fn absent_invalid_and_none() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&format!(
            "JSESSIONID={JSESSION_ID}; Path=/; Secure; HttpOnly"
        )));
        h.run(Ex::get("/").host("php.example").set_cookie(&format!(
            "PHPSESSID={PHP_ID}; path=/; secure; HttpOnly; SameSite=Relaxed"
        )));
        h.run(Ex::get("/").set_cookie(&format!(
            "connect.sid={EXPRESS_SID}; Path=/; Secure; HttpOnly; SameSite=None"
        )));
        let f = h.of("cookie_samesite_weak");
        assert_eq!(f.len(), 3);
        assert_eq!(
            (f[0].evidence["samesite"].as_str(), f[0].severity),
            (Some("absent"), Severity::Low)
        );
        assert_eq!(f[1].evidence["samesite"], "invalid");
        assert_eq!(
            (f[2].evidence["samesite"].as_str(), f[2].severity),
            (Some("none"), Severity::Medium)
        );
        assert_eq!(f[0].cwe, "CWE-1275");
    }

    #[test]
    fn lax_and_strict_are_fine() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(Ex::get("/").set_cookie(&format!(
            "_session_id={RAILS_ID}; path=/; secure; HttpOnly; SameSite=Strict"
        )));
        assert_eq!(h.count("cookie_samesite_weak"), 0);
    }
}
