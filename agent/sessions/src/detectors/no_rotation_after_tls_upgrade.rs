//! `no_rotation_after_tls_upgrade` (CWE-384): an ID first seen on a
//! cleartext connection (issued over HTTP, or presented over HTTP) is later
//! used over TLS unchanged. Whoever saw it on the wire can ride the HTTPS
//! session; the server should issue a new ID when the client moves to TLS.
//! Reported once per upgrade (on the first accepted TLS use).

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Outcome, Scope, View, evidence};
use crate::finding::Severity;
use crate::store::flags;

/// The detector.
pub struct NoRotationAfterTlsUpgrade;

impl Detector for NoRotationAfterTlsUpgrade {
    fn id(&self) -> DetectorId {
        DetectorId::NoRotationAfterTlsUpgrade
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        if !v.client.tls || v.outcome != Outcome::Accepted {
            return;
        }
        for p in v.presented.iter().filter(|p| !p.ambiguous) {
            let Some(r) = p.record.filter(|r| r.has(flags::CLEARTEXT)) else {
                continue;
            };
            if p.replaced() {
                continue;
            }
            let scope = Scope::Session(p.hash);
            if !out.wants(self.id(), scope) {
                continue;
            }
            out.push(Hit {
                detector: self.id(),
                severity: Severity::Medium,
                scope,
                session: Some(p.hash),
                cookie: Some(p.name.to_owned()),
                message: "session ID first seen over cleartext is used over TLS unchanged".into(),
                evidence: evidence(json!({
                    "issued_over_cleartext": r.has(flags::ISSUED_SEEN),
                    "since_first_seen_seconds": v.secs_since(r.first_seen),
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn http_then_https_same_id() {
        let mut h = Harness::new();
        h.run(
            Ex::get("/")
                .tls(false)
                .set_cookie(&format!("PHPSESSID={PHP_ID}; path=/")),
        );
        h.run(
            Ex::get("/account")
                .at(20)
                .cookie(&format!("PHPSESSID={PHP_ID}")),
        );
        h.run(
            Ex::get("/account")
                .at(40)
                .cookie(&format!("PHPSESSID={PHP_ID}")),
        );
        let f = h.of("no_rotation_after_tls_upgrade");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["issued_over_cleartext"], true);
        assert_eq!(f[0].evidence["since_first_seen_seconds"], 20);
    }

    #[test]
    fn rotated_on_upgrade_or_tls_only() {
        let mut h = Harness::new();
        h.run(
            Ex::get("/")
                .tls(false)
                .set_cookie(&format!("PHPSESSID={PHP_ID}; path=/")),
        );
        h.run(
            Ex::get("/")
                .at(20)
                .cookie(&format!("PHPSESSID={PHP_ID}"))
                .set_cookie(&good("PHPSESSID", PHP_ID2)),
        );
        h.run(
            Ex::get("/account")
                .at(30)
                .cookie(&format!("PHPSESSID={PHP_ID2}")),
        );
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(
            Ex::get("/a")
                .at(5)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(h.count("no_rotation_after_tls_upgrade"), 0);
    }
}
