//! `absolute_timeout_not_enforced` (CWE-613): a request succeeds on a
//! session older than `policy.absolute_timeout`. Age runs from issuance (or
//! the login that created the ID), and survives non-login rotations, so a
//! framework that re-issues the ID every few minutes cannot reset it. For
//! sessions first seen mid-life (issued before the agent started) the age
//! is a lower bound.

use serde_json::json;

use super::{Detector, DetectorId, Hits, View, evidence, report_timeout_exceeded};
use crate::store::flags;

/// The detector.
pub struct AbsoluteTimeoutNotEnforced;

impl Detector for AbsoluteTimeoutNotEnforced {
    fn id(&self) -> DetectorId {
        DetectorId::AbsoluteTimeoutNotEnforced
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        let limit = v.settings.policy.absolute_timeout;
        report_timeout_exceeded(
            self.id(),
            v,
            out,
            limit,
            |r| v.now.saturating_since(r.origin),
            |age, r| {
                (
                    format!(
                        "session accepted {}s after it began (policy {}s)",
                        age.as_secs(),
                        limit.as_secs()
                    ),
                    evidence(json!({
                        "age_seconds": age.as_secs(),
                        "absolute_timeout_seconds": limit.as_secs(),
                        "issuance_seen": r.has(flags::ISSUED_SEEN) || r.predecessor.is_some(),
                        "rotated_from_older_id": r.predecessor.is_some(),
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
    fn active_session_past_24h() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("sessionid", DJANGO_ID)),
        );
        for i in 1..=50 {
            h.run(
                Ex::get("/feed")
                    .at(i * 1750)
                    .cookie(&format!("sessionid={DJANGO_ID}")),
            );
        }
        let f = h.of("absolute_timeout_not_enforced");
        assert_eq!(f.len(), 1);
        assert!(f[0].evidence["age_seconds"].as_u64().unwrap() > 86_400);
        assert_eq!(h.count("idle_timeout_not_enforced"), 0);
    }

    #[test]
    fn periodic_reissue_does_not_reset_age() {
        // The framework rotates the ID every ~29 minutes outside login.
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("sid", "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5")),
        );
        let mut cur = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5".to_string();
        for i in 1..=50u64 {
            let next = format!(
                "{:032x}",
                0x1234_5678_9abc_def0_1122_3344_5566_7788u128.wrapping_mul(u128::from(i) + 7)
            );
            h.run(
                Ex::get("/feed")
                    .at(i * 1750)
                    .cookie(&format!("sid={cur}"))
                    .set_cookie(&good("sid", &next)),
            );
            cur = next;
        }
        h.run(Ex::get("/feed").at(51 * 1750).cookie(&format!("sid={cur}")));
        assert_eq!(h.count("absolute_timeout_not_enforced"), 1);
    }

    #[test]
    fn within_lifetime() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie(&good("sessionid", DJANGO_ID)),
        );
        h.run(
            Ex::get("/feed")
                .at(1000)
                .cookie(&format!("sessionid={DJANGO_ID}")),
        );
        // Past the limit but the server rejects it.
        h.run(
            Ex::get("/feed")
                .at(90_000)
                .cookie(&format!("sessionid={DJANGO_ID}"))
                .status(302)
                .location("/accounts/login/?next=/feed"),
        );
        assert_eq!(h.count("absolute_timeout_not_enforced"), 0);
    }
}
