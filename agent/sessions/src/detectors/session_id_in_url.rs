//! `session_id_in_url` (CWE-598): the session ID travels in the URL — a
//! query parameter (`?PHPSESSID=…`, PHP `session.use_trans_sid`) or a path
//! parameter (`/cart;jsessionid=…`, servlet URL rewriting). URLs end up in
//! `Referer` headers, proxy and server logs, browser history and shared
//! links. The finding's `request.path` has the value redacted.

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::finding::Severity;

/// The detector.
pub struct SessionIdInUrl;

impl Detector for SessionIdInUrl {
    fn id(&self) -> DetectorId {
        DetectorId::SessionIdInUrl
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        for p in v.presented {
            let Some(loc) = p.url else { continue };
            let scope = Scope::Session(p.hash);
            if !out.wants(self.id(), scope) {
                continue;
            }
            out.push(Hit {
                detector: self.id(),
                severity: Severity::Medium,
                scope,
                session: Some(p.hash),
                cookie: Some(v.settings.names.name(p.cookie).to_owned()),
                message: format!(
                    "session ID sent in the URL ({} parameter {})",
                    loc.as_str().replace('_', " "),
                    p.url_name
                ),
                evidence: evidence(json!({
                    "location": loc.as_str(),
                    "parameter": p.url_name,
                    "known_session": p.record.is_some(),
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn servlet_url_rewriting() {
        let mut h = Harness::new();
        let f = h.run(Ex::get(&format!(
            "/shop/cart;jsessionid={JSESSION_ID}?item=3"
        )));
        let f: Vec<_> = f
            .iter()
            .filter(|f| f.detector == "session_id_in_url")
            .collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["location"], "path_parameter");
        assert_eq!(f[0].cookie.as_deref(), Some("JSESSIONID"));
        assert_eq!(f[0].request.path, "/shop/cart;jsessionid=[redacted]");
        assert!(!serde_json::to_string(f[0]).unwrap().contains(JSESSION_ID));
        assert_eq!(f[0].session.as_deref(), Some(h.hash(JSESSION_ID).as_str()));
    }

    #[test]
    fn php_trans_sid_query() {
        let mut h = Harness::new();
        h.run(
            Ex::get(&format!("/index.php?PHPSESSID={PHP_ID}&page=2"))
                .cookie(&format!("PHPSESSID={PHP_ID}")),
        );
        let f = h.of("session_id_in_url");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["location"], "query");
        assert_eq!(f[0].evidence["parameter"], "PHPSESSID");
        assert_eq!(f[0].request.path, "/index.php");
    }

    #[test]
    fn unrelated_parameters() {
        let mut h = Harness::new();
        h.run(Ex::get("/search?q=session&sid=5&page=2").cookie(&format!("sessionid={DJANGO_ID}")));
        h.run(Ex::get("/a;v=2/b"));
        assert_eq!(h.count("session_id_in_url"), 0);
    }
}
