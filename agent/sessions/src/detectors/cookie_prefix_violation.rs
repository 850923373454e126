//! `cookie_prefix_violation` (RFC 6265bis §4.1.3): a `__Secure-` cookie must
//! be `Secure` and set from a secure origin; a `__Host-` cookie also must
//! have no `Domain` and `Path=/`. Browsers drop violating cookies, so the
//! protection the prefix promises (no overwrite from subdomains or plain
//! HTTP) is not there — and the application's session likely breaks.

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::cookie::{CookiePrefix, PathAttr, split_prefix};
use crate::finding::Severity;

/// The detector.
pub struct CookiePrefixViolation;

impl Detector for CookiePrefixViolation {
    fn id(&self) -> DetectorId {
        DetectorId::CookiePrefixViolation
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        for i in v.issued.iter().filter(|i| i.is_live()) {
            let a = &i.cookie_attrs;
            let (Some(prefix), _) = split_prefix(a.name) else {
                continue;
            };
            let mut broken = Vec::new();
            if !a.secure {
                broken.push("secure_missing");
            }
            if !v.client.tls {
                broken.push("insecure_origin");
            }
            if prefix == CookiePrefix::Host {
                if a.domain.is_some() {
                    broken.push("domain_present");
                }
                if a.path != PathAttr::Value(b"/") {
                    broken.push("path_not_root");
                }
            }
            if broken.is_empty() {
                continue;
            }
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
                    "{} cookie {} breaks the prefix rules ({})",
                    prefix.as_str(),
                    i.name,
                    broken.join(", ")
                ),
                evidence: evidence(json!({ "prefix": prefix.as_str(), "violations": broken })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn host_prefix_with_domain_and_path() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&format!("__Host-sessionid={DJANGO_ID}; Domain=shop.example; Path=/app; Secure; HttpOnly; SameSite=Lax")));
        let f = h.of("cookie_prefix_violation");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].cwe, "RFC 6265bis");
        assert_eq!(
            f[0].evidence["violations"],
            serde_json::json!(["domain_present", "path_not_root"])
        );
        assert_eq!(f[0].cookie.as_deref(), Some("__Host-sessionid"));
    }

    #[test]
    fn secure_prefix_over_cleartext_without_secure() {
        let mut h = Harness::new();
        h.run(Ex::get("/").tls(false).set_cookie(&format!(
            "__Secure-PHPSESSID={PHP_ID}; path=/; HttpOnly; SameSite=Lax"
        )));
        assert_eq!(
            h.of("cookie_prefix_violation")[0].evidence["violations"],
            serde_json::json!(["secure_missing", "insecure_origin"])
        );
    }

    #[test]
    fn compliant_prefixes() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&format!(
            "__Host-sessionid={DJANGO_ID}; Path=/; Secure; HttpOnly; SameSite=Lax"
        )));
        h.run(Ex::get("/").set_cookie(&format!("__Secure-sid={RAILS_ID}; Path=/app; Domain=shop.example; Secure; HttpOnly; SameSite=Lax")));
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID2)));
        assert_eq!(h.count("cookie_prefix_violation"), 0);
    }
}
