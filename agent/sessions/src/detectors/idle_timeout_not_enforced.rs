//! `idle_timeout_not_enforced` (CWE-613): a request succeeds after the
//! session sat unused longer than `policy.idle_timeout` (measured from its
//! last accepted use, or its issuance). An abandoned session on a shared
//! machine, or a stolen ID, stays usable indefinitely.
//!
//! Not reported when the response replaces or clears the ID (the server
//! expired it and started over), on login routes, and on ignored routes.

use serde_json::json;

use super::{Detector, DetectorId, Hits, View, evidence, report_timeout_exceeded};
use crate::store::SessionState;

/// The detector.
pub struct IdleTimeoutNotEnforced;

impl Detector for IdleTimeoutNotEnforced {
    fn id(&self) -> DetectorId {
        DetectorId::IdleTimeoutNotEnforced
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        let limit = v.settings.policy.idle_timeout;
        report_timeout_exceeded(
            self.id(),
            v,
            out,
            limit,
            |r| {
                v.now
                    .saturating_since(r.last_use.get().unwrap_or(r.first_seen))
            },
            |gap, r| {
                (
                    format!(
                        "session accepted after {}s idle (policy {}s)",
                        gap.as_secs(),
                        limit.as_secs()
                    ),
                    evidence(json!({
                        "idle_gap_seconds": gap.as_secs(),
                        "idle_timeout_seconds": limit.as_secs(),
                        "previously_rejected": r.state == SessionState::Expired,
                    })),
                )
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn two_hours_idle_still_accepted() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("laravel_session", RAILS_ID)),
        );
        h.run(
            Ex::get("/dashboard")
                .at(60)
                .cookie(&format!("laravel_session={RAILS_ID}")),
        );
        h.run(
            Ex::get("/dashboard")
                .at(60 + 7200)
                .cookie(&format!("laravel_session={RAILS_ID}")),
        );
        let f = h.of("idle_timeout_not_enforced");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["idle_gap_seconds"], 7200);
        assert_eq!(f[0].evidence["idle_timeout_seconds"], 1800);
    }

    #[test]
    fn active_use_and_enforced_timeout() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("laravel_session", RAILS_ID)),
        );
        // Regular use every 20 minutes: never idle past 30.
        for i in 1..10 {
            h.run(
                Ex::get("/dashboard")
                    .at(i * 1200)
                    .cookie(&format!("laravel_session={RAILS_ID}")),
            );
        }
        // After 2 h idle Laravel answers 419 / redirects to login.
        h.run(
            Ex::post("/cart")
                .at(10 * 1200 + 7200)
                .cookie(&format!("laravel_session={RAILS_ID}"))
                .status(419),
        );
        h.run(
            Ex::get("/dashboard")
                .at(10 * 1200 + 7201)
                .cookie(&format!("laravel_session={RAILS_ID}"))
                .status(302)
                .location("/login"),
        );
        // PHP strict mode replaces the expired ID with a fresh one.
        h.run(
            Ex::get("/")
                .at(30_000)
                .cookie(&format!("laravel_session={RAILS_ID}"))
                .set_cookie(&good("laravel_session", RAILS_ID2)),
        );
        assert_eq!(h.count("idle_timeout_not_enforced"), 0);
    }
}
