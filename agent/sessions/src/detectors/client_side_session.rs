//! `client_side_session`: the session cookie carries the session data
//! itself (JWT, Flask/Django signed cookies, Rails cookie store,
//! cookie-session, Laravel's cookie driver) instead of a reference to
//! server-side state. Such sessions cannot be revoked by the server: logout
//! and timeouts only hold if the data carries an expiry and the signing key
//! stays secret (CWE-613). Informational, but high for an unsigned JWT
//! (`alg: none`), which anyone can forge. Decided by whether the payload
//! decodes to structured data, so signed server-side IDs (Express
//! `connect.sid`) are not reported.

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::finding::Severity;

/// The detector.
pub struct ClientSideSession;

impl Detector for ClientSideSession {
    fn id(&self) -> DetectorId {
        DetectorId::ClientSideSession
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        for f in v.first_seen {
            let (hash, name) = (f.hash, f.name);
            let scope = Scope::Cookie(f.cookie);
            if !out.wants(self.id(), scope) {
                continue;
            }
            let Some(cs) = f.client_side() else {
                continue;
            };
            let severity = if cs.unsigned() {
                Severity::High
            } else {
                Severity::Info
            };
            out.push(Hit {
                detector: self.id(),
                severity,
                scope,
                session: Some(hash),
                cookie: Some(name.to_owned()),
                message: if cs.unsigned() {
                    format!("session cookie {name} is an unsigned JWT (alg none): sessions can be forged")
                } else {
                    format!("session cookie {name} carries the session data ({}), which the server cannot revoke", cs.kind)
                },
                evidence: evidence(json!({
                    "kind": cs.kind,
                    "alg": cs.alg,
                    "payload_bytes": cs.payload_bytes,
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;
    use crate::finding::Severity;
    use base64::Engine as _;

    fn b64url(s: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn flask_signed_cookie() {
        let v = format!(
            "{}.ZXcSrA.kL9v3k2H2d0mSg3pQhYl1oTq4uA",
            b64url(br#"{"_fresh":true,"_user_id":"7"}"#)
        );
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&format!(
                    "session={v}; HttpOnly; Path=/; Secure; SameSite=Lax"
                )),
        );
        let f = h.of("client_side_session");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
        assert_eq!(f[0].evidence["kind"], "signed_json");
        // The payload (user id) never leaves the process.
        assert!(!serde_json::to_string(f[0]).unwrap().contains("_user_id"));
        assert_eq!(
            h.count("session_id_weak"),
            0,
            "a signed blob is not judged as an ID"
        );
    }

    #[test]
    fn unsigned_jwt_is_high() {
        let v = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"JWT"}"#),
            b64url(br#"{"sub":"42","role":"user"}"#)
        );
        let mut h = Harness::new();
        h.run(Ex::get("/app").cookie(&format!("session={v}")));
        let f = h.of("client_side_session");
        assert_eq!(f[0].severity, Severity::High);
        assert_eq!(f[0].evidence["alg"], "none");
    }

    #[test]
    fn server_side_sessions_are_not_reported() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("connect.sid", EXPRESS_SID)));
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(Ex::get("/").set_cookie(&format!("laravel_session={}; path=/; secure; httponly; samesite=lax",
            base64::engine::general_purpose::STANDARD.encode(
                br#"{"iv":"b2N0ZXRzb2N0ZXRzMTIzNA==","value":"Vm0xd1MxTXlSa2RYYmxKcFVqSm9UbFJWVlhkTlJsSlhWMnQwYVZKdGVGWlVWbHBoV1doT1NWRnJlRlZXYkVwUFZGVmFUMlJXV25GV2JGcE9WakpvUlZaWE1IaGs=","mac":"3f2a","tag":""}"#))));
        assert_eq!(h.count("client_side_session"), 0);
    }
}
