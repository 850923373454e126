//! `session_id_weak` (CWE-331): a session ID that can be guessed.
//!
//! Two stages.
//!
//! **Per ID.** The ID's alphabet class and length bound its entropy at
//! `length × log2(alphabet)`; IDs below `policy.min_entropy_bits`, shorter
//! than 16 characters, or with obvious structure (one repeated character,
//! sequential runs, a repeating block, very few distinct characters) are
//! reported at once (`basis: "per_id"`). Framework wrapping is removed first
//! (Express `s:…​.signature`, Tomcat `.jvmRoute`, quotes, percent-encoding).
//!
//! **Per sample.** Every ID a service issues as new under a cookie name
//! also feeds that (service, cookie)'s [`randomness::Sampler`]: never
//! before `detectors.id_min_sample` IDs (the first verdict waits until the
//! sequence tests can run), then every `id_min_sample` IDs up to
//! `detectors.id_sample_size`, the sample is tested for duplicates,
//! counters, timestamps, an effective entropy below the policy and FIPS
//! 140-2 bit tests (`basis: "sample"`). One finding per (service, cookie,
//! failed test) per suppression window; the per-ID and the sample findings
//! are suppressed separately, and the sample does not repeat an entropy
//! shortfall the per-ID estimate already reports.
//!
//! Client-side sessions (JWT, signed blobs) are not IDs and are left to
//! `client_side_session`.

pub mod randomness;

use std::collections::HashMap;

use serde_json::{Value, json};

pub use self::randomness::{Assessment, MAX_SAMPLE_SIZE, MIN_MIN_SAMPLE, SampleLimits, Test};
use super::{Detector, DetectorId, Hit, Hits, Scope, View, evidence};
use crate::entropy::{estimate_core, with_core};
use crate::finding::Severity;
use crate::settings::Settings;

/// Most (service, cookie name) samples held; IDs of further pairs are not
/// sampled (counted as untracked). Each sample is at most 64 × 256 16-bit
/// symbol counts plus one hash and one difference per ID.
pub const MAX_SAMPLERS: usize = 64;

/// The detector (stateful: one sample per service and cookie name).
pub struct SessionIdWeak {
    limits: SampleLimits,
    /// Samples by (service, cookie name index), at most [`MAX_SAMPLERS`]:
    /// looked up once per issued ID, with seeded foldhash (SipHash's
    /// flooding resistance is not needed for a table this bounded).
    samplers: HashMap<(u16, u8), randomness::Sampler, foldhash::fast::RandomState>,
}

impl SessionIdWeak {
    /// Configured from `[detectors]`.
    pub fn new(s: &Settings) -> SessionIdWeak {
        SessionIdWeak {
            limits: SampleLimits {
                sample_size: s.id_sample_size,
                min_sample: s.id_min_sample,
            },
            samplers: HashMap::default(),
        }
    }

    fn per_id(&self, v: &View<'_>, out: &mut Hits<'_>) {
        let min = v.settings.policy.min_entropy_bits;
        for f in v.first_seen {
            let (hash, name) = (f.hash, f.name);
            let scope = Scope::Cookie(f.cookie);
            if !out.wants(self.id(), scope) {
                continue;
            }
            let e = *f.estimate();
            if !e.is_weak(min) || f.client_side().is_some() {
                continue;
            }
            let mut reasons = Vec::new();
            if e.too_short() {
                reasons.push("too_short".to_owned());
            }
            if let Some(p) = e.pattern {
                reasons.push(format!("pattern_{}", p.as_str()));
            }
            if e.bits < f64::from(min) {
                reasons.push("below_min_entropy".to_owned());
            }
            let failed_test = if e.pattern.is_some() {
                "pattern"
            } else if e.bits < f64::from(min) {
                "entropy"
            } else {
                "length"
            };
            let bits = e.bits.floor() as u64;
            out.push(Hit {
                detector: self.id(),
                severity: Severity::High,
                scope,
                session: Some(hash),
                cookie: Some(name.to_owned()),
                message: format!(
                    "session ID of {name} carries about {bits} bits, below the {min}-bit policy"
                ),
                evidence: evidence(json!({
                    "basis": "per_id",
                    "failed_test": failed_test,
                    "sample_size": 1,
                    "alphabet": e.alphabet.as_str(),
                    "length": e.length,
                    "estimated_bits": bits,
                    "min_entropy_bits": min,
                    "reasons": reasons,
                })),
            });
        }
    }

    fn sample(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        let min = v.settings.policy.min_entropy_bits;
        for i in v
            .issued
            .iter()
            .filter(|i| i.is_live() && i.last_for_name && i.record.is_none())
        {
            let Some(hash) = i.hash else { continue };
            // Attacker-chosen IDs the server merely echoes are not issued
            // IDs: only IDs the request did not present count.
            // Issued IDs without a record are first seen: their derived
            // properties are shared with the per-ID stage.
            let first = v.first_seen.iter().find(|f| f.hash == hash);
            let client_side = match first {
                Some(f) => f.client_side().is_some(),
                None => i.raw.client_side().is_some(),
            };
            if v.presented.iter().any(|p| p.hash == hash) || client_side {
                continue;
            }
            let key = (v.service, i.cookie);
            if !self.samplers.contains_key(&key) && self.samplers.len() >= MAX_SAMPLERS {
                out.count_untracked();
                continue;
            }
            let sampler = self
                .samplers
                .entry(key)
                .or_insert_with(|| randomness::Sampler::new(self.limits));
            let assessment = with_core(i.raw.0, |core| {
                let weak = match first {
                    Some(f) => f.estimate().is_weak(min),
                    None => estimate_core(core).is_weak(min),
                };
                sampler.observe(core, hash.get(), v.now.0, weak, min)
            });
            let Some(a) = assessment else { continue };
            let Some(test) = a.failed.first().copied() else {
                continue;
            };
            let scope = Scope::CookieTest(i.cookie, test.index());
            if !out.wants(self.id(), scope) {
                continue;
            }
            out.push(sample_hit(scope, i.name, min, test, &a));
        }
    }
}

fn rounded(x: f64) -> Value {
    Value::from((x * 10.0).round() / 10.0)
}

fn sample_hit(scope: Scope, name: &str, min: u32, test: Test, a: &Assessment) -> Hit {
    let bits = a.estimated_bits.map(|b| b.floor() as u64);
    let what = match test {
        Test::Duplicates => format!("{} IDs were issued twice", a.duplicates),
        Test::Sequential => "IDs are a counter".to_owned(),
        Test::TimeCorrelated => "IDs follow the clock".to_owned(),
        Test::Entropy => "IDs carry less entropy than their format suggests".to_owned(),
        Test::Monobit | Test::Poker | Test::Runs | Test::LongRun => {
            format!("the FIPS 140-2 {} test fails", test.as_str())
        }
    };
    let about = bits.map_or(String::new(), |b| format!(", about {b} bits of entropy"));
    let mut ev = evidence(json!({
        "basis": "sample",
        "failed_test": test.as_str(),
        "failed_tests": a.failed.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "sample_size": a.sample_size,
        "estimated_bits": bits,
        "min_entropy_bits": min,
        "length": a.length,
        "alphabet_size": a.alphabet_size,
        "constant_positions": a.constant_positions,
        "restricted_positions": a.restricted_positions,
        "biased_positions": a.biased_positions,
        "duplicates": a.duplicates,
    }));
    if let Some(f) = a.format_bits {
        ev.insert("format_bits".into(), Value::from(f.floor() as u64));
    }
    if let Some(r) = a.time_correlation {
        ev.insert(
            "time_correlation".into(),
            Value::from((r * 1e4).round() / 1e4),
        );
    }
    if let Some(s) = a.step_share {
        ev.insert("repeated_step_share".into(), rounded(s));
    }
    if a.fips_blocks > 0 {
        ev.insert("fips_blocks".into(), Value::from(a.fips_blocks));
        ev.insert(
            "fips_failed_blocks".into(),
            json!({
                "monobit": a.fips_failed_blocks[0],
                "poker": a.fips_failed_blocks[1],
                "runs": a.fips_failed_blocks[2],
                "long_run": a.fips_failed_blocks[3],
            }),
        );
    }
    Hit {
        detector: DetectorId::SessionIdWeak,
        severity: Severity::High,
        scope,
        session: None,
        cookie: Some(name.to_owned()),
        message: format!(
            "session IDs of {name}: {what} over the last {} issued{about} (policy {min})",
            a.sample_size
        ),
        evidence: ev,
    }
}

impl Detector for SessionIdWeak {
    fn id(&self) -> DetectorId {
        DetectorId::SessionIdWeak
    }

    fn check(&mut self, v: &View<'_>, out: &mut Hits<'_>) {
        self.per_id(v, out);
        self.sample(v, out);
    }
}

#[cfg(test)]
mod tests {
    use crate::detectors::testkit::*;

    #[test]
    fn short_decimal_counter() {
        let mut h = Harness::new();
        h.run(
            Ex::post("/login")
                .status(302)
                .location("/")
                .set_cookie("sid=100234; Path=/; Secure; HttpOnly; SameSite=Lax"),
        );
        let f = h.of("session_id_weak");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].evidence["alphabet"], "decimal");
        assert_eq!(
            f[0].evidence["reasons"],
            serde_json::json!(["too_short", "below_min_entropy"])
        );
        assert_eq!(f[0].cwe, "CWE-331");
        // The raw ID never appears in the finding.
        assert!(!serde_json::to_string(f[0]).unwrap().contains("100234"));
    }

    #[test]
    fn patterned_and_aspnet_classic() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(
            "ASP.NET_SessionId=hbq0a5ztxq2vrk45elrnbm55; path=/; secure; HttpOnly; SameSite=Lax",
        ));
        assert_eq!(
            h.count("session_id_weak"),
            1,
            "120-bit ASP.NET IDs are below a 128-bit policy"
        );
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie("session=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; Path=/; Secure; HttpOnly; SameSite=Lax"));
        assert_eq!(
            h.of("session_id_weak")[0].evidence["reasons"][0],
            "pattern_all_same"
        );
    }

    #[test]
    fn framework_ids_are_not_weak() {
        let mut h = Harness::new();
        h.run(Ex::get("/").set_cookie(&good("sessionid", DJANGO_ID)));
        h.run(Ex::get("/").set_cookie(&good("PHPSESSID", PHP_ID)));
        h.run(Ex::get("/").set_cookie(&format!(
            "JSESSIONID={JSESSION_ID}.node1; Path=/; Secure; HttpOnly"
        )));
        h.run(Ex::get("/").set_cookie(&good("connect.sid", EXPRESS_SID)));
        h.run(Ex::get("/").set_cookie(&good("_session_id", RAILS_ID)));
        assert_eq!(h.count("session_id_weak"), 0);
    }

    /// SplitMix64, standing in for a CSPRNG.
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn sample_stage_reports_a_counter_once() {
        let mut h = Harness::new();
        let base = 0x5f3a_9c21_e8d4_7b06_1a2b_3c4d_5e6f_7081u128;
        for i in 0..400u64 {
            let id = format!("{:032x}", base + u128::from(i));
            h.run(Ex::get("/").at(i).set_cookie(&good("sessionid", &id)));
        }
        let f = h.of("session_id_weak");
        assert_eq!(f.len(), 1, "one finding per (cookie, failed test): {f:?}");
        let ev = &f[0].evidence;
        assert_eq!(ev["basis"], "sample");
        assert_eq!(ev["failed_test"], "sequential");
        assert_eq!(
            ev["sample_size"], 200,
            "first verdict once the sequence tests can run"
        );
        assert!(ev["estimated_bits"].as_u64().unwrap() < 16, "{ev:?}");
        assert!(
            ev["failed_tests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "entropy")
        );
        assert_eq!(f[0].session, None);
        assert_eq!(f[0].cookie.as_deref(), Some("sessionid"));
        let json = serde_json::to_string(f[0]).unwrap();
        assert!(!json.contains(&format!("{:032x}", base + 199)));
        assert!(!json.contains(&format!("{:x}", base >> 64)));
    }

    #[test]
    fn sample_stage_is_silent_for_a_good_generator() {
        let mut h = Harness::new();
        let mut rng = 7u64;
        for i in 0..1000u64 {
            let id = format!("{:016x}{:016x}", splitmix(&mut rng), splitmix(&mut rng));
            h.run(Ex::get("/").at(i).set_cookie(&good("sessionid", &id)));
        }
        assert_eq!(h.count("session_id_weak"), 0);
    }

    #[test]
    fn per_id_and_sample_do_not_repeat_each_other() {
        // 8 hex digits: the per-ID estimate reports 32 bits at once; the
        // sample (all positions uniform) has nothing to add.
        let mut h = Harness::new();
        let mut rng = 9u64;
        for i in 0..500u64 {
            let id = format!("{:08x}", splitmix(&mut rng) as u32);
            h.run(Ex::get("/").at(i).set_cookie(&good("sid", &id)));
        }
        let f = h.of("session_id_weak");
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].evidence["basis"], "per_id");
        assert_eq!(f[0].evidence["failed_test"], "entropy");
        assert_eq!(f[0].evidence["estimated_bits"], 32);
    }

    #[test]
    fn echoed_client_ids_are_not_sampled() {
        // A server that adopts whatever ID the client sends (PHP without
        // strict mode) sets it back: that is not its generator's output.
        let mut h = Harness::new();
        let base = 0x0123_4567_89ab_cdef_0123_4567_89ab_cdefu128;
        for i in 0..400u64 {
            let id = format!("{:032x}", base + u128::from(i));
            h.run(
                Ex::get("/")
                    .at(i)
                    .cookie(&format!("PHPSESSID={id}"))
                    .set_cookie(&good("PHPSESSID", &id)),
            );
        }
        assert!(
            h.of("session_id_weak")
                .iter()
                .all(|f| f.evidence["basis"] != "sample")
        );
    }

    #[test]
    fn sample_limits_are_validated() {
        use crate::config::AnalysisConfig;
        use crate::settings::Settings;
        let mut c = AnalysisConfig::default();
        c.detectors.id_min_sample = 2000;
        let e = Settings::compile(&c).unwrap_err().to_string();
        assert!(e.starts_with("detectors.id_min_sample:"), "{e}");
        let mut c = AnalysisConfig::default();
        c.detectors.id_sample_size = 1_000_000;
        let e = Settings::compile(&c).unwrap_err().to_string();
        assert!(e.starts_with("detectors.id_sample_size:"), "{e}");
        let mut c = AnalysisConfig::default();
        c.detectors.id_min_sample = 10;
        assert!(Settings::compile(&c).is_err());
    }

    #[test]
    fn samples_beyond_the_bound_are_counted_untracked() {
        let mut h = Harness::new();
        let mut rng = 3u64;
        for i in 0..(super::MAX_SAMPLERS as u64 + 6) {
            // One (service, cookie) sample per process name.
            let id = format!("{:016x}{:016x}", splitmix(&mut rng), splitmix(&mut rng));
            h.run(
                Ex::get("/")
                    .at(i)
                    .comm(&format!("svc{i}"))
                    .set_cookie(&good("sessionid", &id)),
            );
        }
        assert_eq!(h.an.stats().input.detector_untracked, 6);
    }

    #[test]
    fn rejected_attacker_ids_are_not_judged() {
        // A client inventing "1" as an ID that the server rejects says
        // nothing about the server's IDs.
        let mut h = Harness::new();
        h.run(
            Ex::get("/account")
                .cookie("sessionid=1")
                .status(302)
                .location("/accounts/login/?next=/account"),
        );
        assert_eq!(h.count("session_id_weak"), 0);
        // The same invented ID, adopted by the server, is a weak ID in use.
        h.run(Ex::get("/account").cookie("sessionid=12").status(200));
        assert_eq!(h.count("session_id_weak"), 1);
    }
}
