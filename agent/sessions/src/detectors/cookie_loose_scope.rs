//! `cookie_loose_scope` (CWE-565): the session cookie reaches more than the
//! application that issued it.
//!
//! - `Domain` set to a parent of the host (`Domain=example.com` from
//!   `shop.example.com`): every sibling subdomain receives the session
//!   (medium). `Domain` equal to the host still widens a host-only cookie to
//!   all subdomains (low).
//! - `Path` not `/`-rooted (browsers ignore it and fall back to the request
//!   directory), or outside `policy.cookie_path` (wider than the application's
//!   prefix, e.g. `Path=/` when the app lives under `/shop`) (low).

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::cookie::PathAttr;
use crate::finding::Severity;

/// The detector.
pub struct CookieLooseScope;

fn domain_relation(domain: &str, host: Option<&str>) -> Option<(&'static str, Severity)> {
    let Some(host) = host else {
        return Some(("domain_set", Severity::Low));
    };
    if domain.eq_ignore_ascii_case(host) {
        return Some(("domain_includes_subdomains", Severity::Low));
    }
    let parent = host.len() > domain.len()
        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
        && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain);
    // A Domain that does not domain-match the host is rejected by browsers:
    // not a scope problem.
    parent.then_some(("domain_parent_of_host", Severity::Medium))
}

fn path_within(path: &str, base: &str) -> bool {
    base == "/"
        || path == base
        || (path.starts_with(base)
            && (base.ends_with('/') || path.as_bytes().get(base.len()) == Some(&b'/')))
}

impl Detector for CookieLooseScope {
    fn id(&self) -> DetectorId {
        DetectorId::CookieLooseScope
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        let base = v.settings.policy.cookie_path.as_str();
        for i in v.issued.iter().filter(|i| i.is_live()) {
            let a = &i.cookie_attrs;
            let mut reasons = Vec::new();
            let mut severity = Severity::Low;
            let domain = a.domain.map(String::from_utf8_lossy);
            if let Some(d) = domain.as_deref()
                && let Some((r, s)) = domain_relation(d, v.host)
            {
                reasons.push(r);
                severity = severity.max(s);
            }
            let path = match a.path {
                PathAttr::Invalid(p) => {
                    reasons.push("path_not_rooted");
                    Some(String::from_utf8_lossy(p))
                }
                PathAttr::Value(p) => {
                    let p = String::from_utf8_lossy(p);
                    if !path_within(&p, base) {
                        reasons.push("path_outside_configured");
                    }
                    Some(p)
                }
                PathAttr::Absent => None,
            };
            if reasons.is_empty() {
                continue;
            }
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
                message: format!(
                    "session cookie {} is scoped wider than its application ({})",
                    i.name,
                    reasons.join(", ")
                ),
                evidence: evidence(json!({
                    "reasons": reasons,
                    "domain": domain.map(|d| d.chars().take(255).collect::<String>()),
                    "host": v.host.map(|h| h.chars().take(255).collect::<String>()),
                    "path": path.map(|p| p.chars().take(255).collect::<String>()),
                    "configured_path": base,
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
    fn parent_domain() {
        // Django SESSION_COOKIE_DOMAIN = ".example.com" served from shop.example.com.
        let mut h = Harness::new();
        h.run(Ex::get("/").host("shop.example.com:443").set_cookie(&format!(
            "sessionid={DJANGO_ID}; Domain=.example.com; HttpOnly; Path=/; SameSite=Lax; Secure"
        )));
        let f = h.of("cookie_loose_scope");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Medium);
        assert_eq!(f[0].evidence["reasons"][0], "domain_parent_of_host");
        assert_eq!(f[0].evidence["domain"], "example.com");
    }

    #[test]
    fn domain_equal_to_host_and_unrooted_path() {
        let mut h = Harness::new();
        h.run(Ex::get("/").host("shop.example").set_cookie(&format!("JSESSIONID={JSESSION_ID}; Domain=shop.example; Path=app; Secure; HttpOnly; SameSite=Lax")));
        let f = h.of("cookie_loose_scope");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Low);
        assert_eq!(
            f[0].evidence["reasons"],
            serde_json::json!(["domain_includes_subdomains", "path_not_rooted"])
        );
    }

    #[test]
    fn path_outside_configured_prefix() {
        let mut h = Harness::with(|c| c.policy.cookie_path = "/shop".into());
        h.run(Ex::get("/shop/").set_cookie(&format!(
            "JSESSIONID={JSESSION_ID}; Path=/shop; Secure; HttpOnly; SameSite=Lax"
        )));
        h.run(Ex::get("/shop/").set_cookie(&format!(
            "JSESSIONID={JSESSION_ID2}; Path=/shop/cart; Secure; HttpOnly; SameSite=Lax"
        )));
        assert_eq!(h.count("cookie_loose_scope"), 0);
        h.run(Ex::get("/shop/").set_cookie(&format!(
            "JSESSIONID={JSESSION_ID2}; Path=/; Secure; HttpOnly; SameSite=Lax"
        )));
        assert_eq!(
            h.of("cookie_loose_scope")[0].evidence["reasons"][0],
            "path_outside_configured"
        );
    }

    #[test]
    fn host_only_root_path_is_fine() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        // A Domain that does not match the host is rejected by browsers.
        h.run(Ex::get("/").host("shop.example").set_cookie(&format!(
            "sid={RAILS_ID}; Domain=other.example; Path=/; Secure; HttpOnly; SameSite=Lax"
        )));
        assert_eq!(h.count("cookie_loose_scope"), 0);
    }
}
