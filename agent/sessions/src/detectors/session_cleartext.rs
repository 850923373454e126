//! `session_cleartext` (CWE-319): a session ID crossed a connection that was
//! not TLS at the client — presented by the request or issued by the
//! response. "TLS at the client" is the capture source's TLS flag, or the
//! `X-Forwarded-Proto` / `Forwarded: proto=` of a trusted proxy (so the
//! plaintext hop from a TLS-terminating proxy to its upstream is not a
//! finding when the proxy says the client used HTTPS).

use serde_json::{Map, Value};

use super::{Detector, DetectorId, Hit, Hits, Scope, View};
use crate::finding::Severity;

/// The detector.
pub struct SessionCleartext;

impl Detector for SessionCleartext {
    fn id(&self) -> DetectorId {
        DetectorId::SessionCleartext
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        if v.client.tls {
            return;
        }
        let via_proxy = v.client.tls_from_proxy;
        let requests = v.presented.iter().map(|p| (p.hash, p.name, "request"));
        let responses = v
            .issued
            .iter()
            .filter(|i| i.is_live())
            .filter_map(|i| i.hash.map(|h| (h, i.name, "response")));
        for (hash, name, direction) in requests.chain(responses) {
            let scope = Scope::Session(hash);
            if !out.wants(self.id(), scope) {
                continue;
            }
            // On plaintext traffic every session yields this finding: it is
            // built without the formatting and `json!` machinery.
            let mut message = String::with_capacity(name.len() + 72);
            message.push_str("session ID of ");
            message.push_str(name);
            message.push_str(" sent over a connection that was not TLS at the client");
            let mut evidence = Map::new();
            evidence.insert("direction".to_owned(), Value::from(direction));
            evidence.insert(
                "tls_decided_by".to_owned(),
                Value::from(if via_proxy {
                    "trusted_proxy_header"
                } else {
                    "connection"
                }),
            );
            out.push(Hit {
                detector: self.id(),
                severity: Severity::High,
                scope,
                session: Some(hash),
                cookie: Some(name.to_owned()),
                message,
                evidence,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn plain_http_request_and_response() {
        let mut h = Harness::new();
        h.run(
            Ex::get("/")
                .tls(false)
                .set_cookie(&format!("PHPSESSID={PHP_ID}; path=/")),
        );
        h.run(
            Ex::get("/cart")
                .tls(false)
                .at(5)
                .cookie(&format!("PHPSESSID={PHP_ID2}")),
        );
        let f = h.of("session_cleartext");
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].evidence["direction"], "response");
        assert_eq!(f[1].evidence["direction"], "request");
        assert_eq!(f[0].cwe, "CWE-319");
        assert_eq!(
            f[1].message,
            "session ID of PHPSESSID sent over a connection that was not TLS at the client"
        );
        assert_eq!(f[1].evidence["tls_decided_by"], "connection");
        assert_eq!(f[1].evidence.len(), 2);
    }

    #[test]
    fn trusted_proxy_says_https() {
        // nginx terminates TLS and proxies to the app on 127.0.0.1 with
        // proxy_set_header X-Forwarded-Proto $scheme.
        let mut h = Harness::new();
        h.run(
            Ex::get("/cart")
                .tls(false)
                .from("127.0.0.1")
                .header("x-forwarded-for", "198.51.100.20")
                .header("x-forwarded-proto", "https")
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        assert_eq!(h.count("session_cleartext"), 0);
        // The same header from an untrusted peer is not believed.
        h.run(
            Ex::get("/cart")
                .tls(false)
                .from("198.51.100.20")
                .header("x-forwarded-proto", "https")
                .cookie(&format!("sessionid={DJANGO_ID2}")),
        );
        assert_eq!(h.count("session_cleartext"), 1);
        assert_eq!(
            h.of("session_cleartext")[0].evidence["tls_decided_by"],
            "connection"
        );
    }

    #[test]
    fn tls_and_deletion_cookies_are_fine() {
        let mut h = Harness::new();
        h.run(Ex::get("/").cookie(&format!("JSESSIONID={JSESSION_ID}")));
        h.run(
            Ex::get("/logout")
                .tls(false)
                .set_cookie("JSESSIONID=; Max-Age=0; Path=/"),
        );
        assert_eq!(h.count("session_cleartext"), 0);
    }
}
