//! `sensitive_action_without_reauth` (OWASP ASVS 3.7.1): a sensitive route
//! (`routes.sensitive`, e.g. payment, checkout) succeeds on an authenticated
//! session whose last login or re-authentication (`routes.reauth`) is older
//! than `policy.reauth_window`. A hijacked or unattended session can then
//! spend money without knowing the password.
//!
//! Anonymous sessions (issued here, never logged in — guest checkout) are
//! not reported. Sessions first seen mid-life without an observed login are
//! reported once they have been watched for longer than the window.

use serde_json::json;

use super::{Detector, DetectorId, Hit, Hits, Outcome, Scope, View, evidence};
use crate::finding::Severity;
use crate::store::flags;

/// The detector.
pub struct SensitiveActionWithoutReauth;

impl Detector for SensitiveActionWithoutReauth {
    fn id(&self) -> DetectorId {
        DetectorId::SensitiveActionWithoutReauth
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        if !v.routes.sensitive || v.outcome != Outcome::Accepted {
            return;
        }
        let window = v.settings.policy.reauth_window;
        for p in v.presented.iter().filter(|p| !p.ambiguous) {
            let Some(r) = p.record else { continue };
            let (stale, since) = match r.last_auth() {
                Some(t) => (v.now.saturating_since(t) > window, Some(v.secs_since(t))),
                // Never saw a login: only sessions we adopted mid-life
                // (authenticated before we watched) and have watched for
                // longer than the window.
                None => (
                    r.has(flags::ADOPTED) && v.now.saturating_since(r.first_seen) > window,
                    None,
                ),
            };
            if !stale {
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
                message: match since {
                    Some(s) => format!(
                        "sensitive action {}s after the last login (window {}s)",
                        s,
                        window.as_secs()
                    ),
                    None => format!(
                        "sensitive action with no login seen for over {}s",
                        window.as_secs()
                    ),
                },
                evidence: evidence(json!({
                    "since_last_auth_seconds": since,
                    "reauth_window_seconds": window.as_secs(),
                    "login_seen": r.login_at.get().is_some(),
                })),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn payment_hours_after_login() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("PHPSESSID", PHP_ID)),
        );
        h.run(
            Ex::post("/checkout/confirm")
                .at(3600)
                .cookie(&format!("PHPSESSID={PHP_ID}"))
                .status(302)
                .location("/orders/7"),
        );
        let f = h.of("sensitive_action_without_reauth");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].cwe, "ASVS 3.7.1");
        assert_eq!(f[0].evidence["since_last_auth_seconds"], 3600);
    }

    #[test]
    fn recent_login_reauth_or_guest() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("PHPSESSID", PHP_ID)),
        );
        h.run(
            Ex::post("/pay")
                .at(300)
                .cookie(&format!("PHPSESSID={PHP_ID}")),
        );
        // Re-authentication (Laravel password.confirm) before paying.
        h.run(
            Ex::post("/user/confirm-password")
                .at(7000)
                .cookie(&format!("PHPSESSID={PHP_ID}"))
                .status(302)
                .location("/pay"),
        );
        h.run(
            Ex::post("/pay")
                .at(7100)
                .cookie(&format!("PHPSESSID={PHP_ID}")),
        );
        // Guest checkout on an anonymous session.
        h.run(Ex::get("/").set_cookie(&good("PHPSESSID", PHP_ID2)));
        h.run(
            Ex::post("/checkout")
                .at(5000)
                .cookie(&format!("PHPSESSID={PHP_ID2}")),
        );
        assert_eq!(h.count("sensitive_action_without_reauth"), 0);
    }

    #[test]
    fn login_inherited_through_rotation() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(
            Ex::post("/accounts/login/")
                .at(10)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(302)
                .location("/")
                .set_cookie(&good("sessionid", DJANGO_ID2)),
        );
        h.run(
            Ex::post("/pay")
                .at(3000)
                .cookie(&format!("sessionid={DJANGO_ID2}")),
        );
        assert_eq!(h.count("sensitive_action_without_reauth"), 1);
    }
}
