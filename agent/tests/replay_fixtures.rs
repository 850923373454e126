//! End-to-end replay of the real-traffic fixtures.
//!
//! `tests/fixtures/record.sh` records each scenario of
//! `tests/fixtures/expected.toml` from real traffic (curl -> nginx -> the
//! fixture app, tcpdump on the proxy -> app hop). Every test here runs the
//! real binary as a user would:
//!
//! ```text
//! sessionwatch replay tests/fixtures/pcap/<scenario>.pcap --config tests/fixtures/sessionwatch-test.toml
//! ```
//!
//! and checks the JSON lines on stdout against the expectations: detectors
//! that must fire (with severity and client address where the design fixes
//! them), and no detector outside `must_fire`/`may_fire`. It also checks the
//! Finding contract (field shapes, service, host, CWE of the design table,
//! event time taken from the capture) and that no raw session ID from the
//! capture appears anywhere in stdout or stderr, with debug logging on.
//!
//! Bad input: a truncated capture and a file with a wrong magic number must
//! make `replay` exit 2 naming the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use sessionwatch_sessions::{Finding, Severity};

/// Every detector id of the design, with its reference.
const DETECTORS: [(&str, &str); 20] = [
    ("cookie_missing_secure", "CWE-614"),
    ("cookie_missing_httponly", "CWE-1004"),
    ("cookie_samesite_weak", "CWE-1275"),
    ("cookie_persistent", "CWE-539"),
    ("cookie_loose_scope", "CWE-565"),
    ("cookie_prefix_violation", "RFC 6265bis"),
    ("session_id_weak", "CWE-331"),
    ("session_id_in_url", "CWE-598"),
    ("session_cleartext", "CWE-319"),
    ("no_rotation_after_login", "CWE-384"),
    ("no_rotation_after_privilege_change", "CWE-384"),
    ("no_rotation_after_tls_upgrade", "CWE-384"),
    ("stale_session_accepted", "CWE-613"),
    ("session_accepted_after_logout", "CWE-613"),
    ("idle_timeout_not_enforced", "CWE-613"),
    ("absolute_timeout_not_enforced", "CWE-613"),
    ("sensitive_action_without_reauth", "ASVS 3.7.1"),
    ("session_fingerprint_change", "CWE-294"),
    ("session_id_bruteforce", "CWE-307"),
    ("client_side_session", "seed"),
];

/// Benign traffic: never a high-severity finding, whatever expected.toml says.
const BENIGN: [&str; 2] = ["nat", "roaming"];

/// Names under which the fixtures carry session IDs: the cookie names of
/// sessionwatch-test.toml, the prefixed form, Tomcat's path parameter, and
/// `app_auth` (configured nowhere: learned from the traffic).
const ID_CARRIERS: [&str; 10] = [
    "JSESSIONID",
    "jsessionid",
    "PHPSESSID",
    "connect.sid",
    "sessionid",
    "__Host-sessionid",
    "_session_id",
    "session",
    "sid",
    "app_auth",
];

/// Test config, relative to the workspace root (the replay's working directory).
const CONFIG: &str = "tests/fixtures/sessionwatch-test.toml";

// ---------------------------------------------------------------------------
// expected.toml

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectations {
    detectors: Vec<String>,
    fixture: Vec<Fixture>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    pcap: String,
    what: String,
    must_fire: Vec<String>,
    #[serde(default)]
    must_not_fire: Vec<String>,
    #[serde(default)]
    may_fire: Vec<String>,
    #[serde(default)]
    severity: BTreeMap<String, Severity>,
    #[serde(default)]
    max_severity: Option<Severity>,
    #[serde(default)]
    client_ip: BTreeMap<String, String>,
    #[serde(default)]
    cookie: Option<String>,
}

fn root() -> PathBuf {
    // CARGO_MANIFEST_DIR is agent/; the fixtures live at the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

fn fixtures_dir() -> PathBuf {
    root().join("tests/fixtures")
}

fn expectations() -> Expectations {
    let path = fixtures_dir().join("expected.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture(name: &str) -> Fixture {
    let file = format!("{name}.pcap");
    expectations()
        .fixture
        .into_iter()
        .find(|f| f.pcap == file)
        .unwrap_or_else(|| panic!("{file} has no [[fixture]] in tests/fixtures/expected.toml"))
}

// ---------------------------------------------------------------------------
// Running the binary

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .current_dir(root())
        .arg("replay")
        .args(args)
        // Debug logging on: raw IDs must not leak into logs either.
        .env("RUST_LOG", "debug")
        .env("NODE_NAME", "fixtures")
        .output()
        .expect("run the sessionwatch binary")
}

fn parse_findings(stdout: &str, problems: &mut Vec<String>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, line) in stdout.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Err(e) => problems.push(format!("stdout line {}: not JSON: {e}", i + 1)),
            Ok(value) if !value.is_object() => {
                problems.push(format!("stdout line {}: not a JSON object", i + 1))
            }
            Ok(value) => match serde_json::from_value::<Finding>(value) {
                Ok(f) => findings.push(f),
                Err(e) => problems.push(format!("stdout line {}: not a Finding: {e}", i + 1)),
            },
        }
    }
    findings
}

// ---------------------------------------------------------------------------
// pcap reading (for times, truncation points and raw IDs)

/// A classic pcap file's records: (offset of the record header, timestamp
/// in seconds, captured bytes).
fn pcap_records(data: &[u8]) -> Vec<(usize, f64, &[u8])> {
    assert!(data.len() >= 24, "pcap shorter than its header");
    let magic = [data[0], data[1], data[2], data[3]];
    let (le, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => panic!("fixture is not a classic pcap file"),
    };
    let u32_at = |off: usize| {
        let b = [data[off], data[off + 1], data[off + 2], data[off + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let sec = f64::from(u32_at(off));
        let frac = f64::from(u32_at(off + 4));
        let incl = u32_at(off + 8) as usize;
        let end = (off + 16).saturating_add(incl);
        assert!(
            end <= data.len(),
            "fixture pcap is itself truncated at offset {off}"
        );
        let ts = sec + if nanos { frac / 1e9 } else { frac / 1e6 };
        out.push((off, ts, &data[off + 16..end]));
        off = end;
    }
    out
}

/// Session IDs present in the capture, as they travel: every value of a
/// session cookie or URL parameter (`Set-Cookie:`, `Cookie:`, `;jsessionid=`,
/// `?PHPSESSID=`, `Location:`, HTML links), found by scanning the packet
/// bytes for `<name>=` after a delimiter.
///
/// Returns (exact secrets, window secrets): the values themselves plus
/// their percent-decoded forms must never appear; and no 12-character
/// window of an ID part (the decoded value split at `.` and `:`, e.g. the
/// ID inside `s:<id>.<hmac>` or the payload and signature of a JWT) may
/// appear either -- a prefix of an ID is a leak too. The JWT header
/// (`eyJhbGci...`, a public constant) is not a secret.
fn raw_session_ids(pcap: &[u8], cookie_names: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut exact = BTreeSet::new();
    let mut parts = BTreeSet::new();
    let is_delim = |b: u8| {
        matches!(
            b,
            b' ' | b';' | b'?' | b'&' | b'\n' | b'\t' | b'"' | b'/' | b','
        )
    };
    let ends_value = |b: u8| {
        matches!(
            b,
            b';' | b' ' | b'\r' | b'\n' | b'&' | b',' | b'"' | b'\'' | b'<' | b'>' | b'#'
        )
    };
    for (_, _, packet) in pcap_records(pcap) {
        for name in cookie_names {
            let needle = format!("{name}=");
            let needle = needle.as_bytes();
            let mut i = 0;
            while let Some(pos) = find(&packet[i..], needle) {
                let start = i + pos;
                i = start + 1;
                if start > 0 && !is_delim(packet[start - 1]) {
                    continue;
                }
                let vstart = start + needle.len();
                let vend = packet[vstart..]
                    .iter()
                    .position(|&b| ends_value(b))
                    .map_or(packet.len(), |p| vstart + p);
                let Ok(value) = std::str::from_utf8(&packet[vstart..vend]) else {
                    continue;
                };
                if value.len() < 8 || value == "deleted" {
                    continue;
                }
                exact.insert(value.to_owned());
                let decoded = percent_decode(value);
                exact.insert(decoded.clone());
                for part in decoded.split(['.', ':']) {
                    if part.len() >= 16 && !part.starts_with("eyJhbGci") {
                        parts.insert(part.to_owned());
                    }
                }
            }
        }
    }
    (exact, parts)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks that none of the capture's session IDs (or a 12-character piece
/// of one) is in `text`. Messages never quote the ID itself.
fn check_no_raw_ids(
    stream: &str,
    text: &str,
    exact: &BTreeSet<String>,
    parts: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    for (n, id) in exact.iter().enumerate() {
        if text.contains(id.as_str()) {
            problems.push(format!(
                "{stream}: contains raw session ID #{n} from the capture ({} chars)",
                id.len()
            ));
        }
    }
    for (n, part) in parts.iter().enumerate() {
        let chars: Vec<char> = part.chars().collect();
        if chars
            .windows(12)
            .any(|w| text.contains(&w.iter().collect::<String>()))
        {
            problems.push(format!(
                "{stream}: contains a 12-character piece of session ID part #{n}"
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// Time

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS.mmmZ`, or None.
fn parse_rfc3339_millis(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|s| s.parse::<i64>().ok());
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + s) as f64 + ms as f64 / 1000.0)
}

// ---------------------------------------------------------------------------
// The check of one fixture

fn check_fixture(name: &str) {
    let exp = fixture(name);
    let rel = format!("tests/fixtures/pcap/{}", exp.pcap);
    let pcap = std::fs::read(root().join(&rel))
        .unwrap_or_else(|e| panic!("{rel}: {e} (run tests/fixtures/record.sh)"));
    let out = replay(&[&rel, "--config", CONFIG]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut problems = Vec::new();

    if out.status.code() != Some(0) {
        problems.push(format!(
            "exit status {:?}, expected 0; stderr:\n{}",
            out.status.code(),
            tail(&stderr, 30)
        ));
    }
    let findings = parse_findings(&stdout, &mut problems);

    // Which detectors fired, and how.
    let mut fired: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in &findings {
        fired.entry(f.detector.as_str()).or_default().push(f);
    }
    let must: BTreeSet<&str> = exp.must_fire.iter().map(String::as_str).collect();
    let may: BTreeSet<&str> = exp.may_fire.iter().map(String::as_str).collect();
    for d in &must {
        if !fired.contains_key(d) {
            problems.push(format!("MUST fire but did not: {d}"));
        }
    }
    for (d, list) in &fired {
        if !must.contains(d) && !may.contains(d) {
            let first = list[0];
            problems.push(format!(
                "must NOT fire but did: {d} ({}x; first: {} {} {} -> {:?}, client {:?}: {})",
                list.len(),
                first.severity,
                first.request.method,
                first.request.path,
                first.request.status,
                first.client.ip,
                first.message
            ));
        }
    }
    for (d, want) in &exp.severity {
        for f in fired.get(d.as_str()).into_iter().flatten() {
            if f.severity != *want {
                problems.push(format!(
                    "{d}: severity {}, expected {want} (client {:?})",
                    f.severity, f.client.ip
                ));
            }
        }
    }
    for (d, want) in &exp.client_ip {
        for f in fired.get(d.as_str()).into_iter().flatten() {
            if f.client.ip.as_deref() != Some(want.as_str()) {
                problems.push(format!("{d}: client.ip {:?}, expected {want}", f.client.ip));
            }
        }
    }
    let max_allowed = exp.max_severity.or(if BENIGN.contains(&name) {
        Some(Severity::Medium)
    } else {
        None
    });
    if let Some(max) = max_allowed {
        for f in findings.iter().filter(|f| f.severity > max) {
            problems.push(format!(
                "{}: severity {} above the maximum {max} for this fixture",
                f.detector, f.severity
            ));
        }
    }
    if BENIGN.contains(&name) {
        for f in findings.iter().filter(|f| f.severity >= Severity::High) {
            problems.push(format!(
                "benign fixture with a {} finding: {}",
                f.severity, f.detector
            ));
        }
    }

    // The Finding contract, on every finding.
    let records = pcap_records(&pcap);
    let (first_ts, last_ts) = (
        records.first().map_or(0.0, |r| r.1),
        records.last().map_or(0.0, |r| r.1),
    );
    let cwe: BTreeMap<&str, &str> = DETECTORS.into_iter().collect();
    for f in &findings {
        let d = f.detector.as_str();
        match cwe.get(d) {
            None => problems.push(format!("unknown detector id {d:?}")),
            Some(r) if r.starts_with("CWE-") && f.cwe != *r => {
                problems.push(format!("{d}: cwe {:?}, the design says {r}", f.cwe))
            }
            Some(_) => {}
        }
        match parse_rfc3339_millis(&f.time) {
            None => problems.push(format!("{d}: time {:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ", f.time)),
            // Event time from the capture, never the wall clock of the replay.
            Some(t) if t < first_ts - 1.0 || t > last_ts + 1.0 => problems.push(format!(
                "{d}: time {} is outside the capture ({first_ts:.3}..{last_ts:.3} s since the epoch)",
                f.time
            )),
            Some(_) => {}
        }
        if let Some(s) = &f.session
            && (s.len() != 16
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            problems.push(format!(
                "{d}: session {s:?} is not 16 lower-case hex digits"
            ));
        }
        if f.service != "shop" {
            problems.push(format!(
                "{d}: service {:?}, expected \"shop\" from [[services]]",
                f.service
            ));
        }
        if f.request.host.as_deref() != Some("app.shop.test") {
            problems.push(format!(
                "{d}: request.host {:?}, expected \"app.shop.test\"",
                f.request.host
            ));
        }
        // Every client came through nginx at 127.0.0.1 with X-Forwarded-For.
        if f.client.ip.as_deref() == Some("127.0.0.1") {
            problems.push(format!(
                "{d}: client.ip is the proxy (127.0.0.1), not the X-Forwarded-For client"
            ));
        }
        if let (Some(want), Some(got)) = (&exp.cookie, &f.cookie)
            && got != want
        {
            problems.push(format!("{d}: cookie {got:?}, expected {want:?}"));
        }
    }

    // No raw session ID anywhere.
    let (exact, parts) = raw_session_ids(&pcap, &ID_CARRIERS);
    if exact.is_empty() {
        problems.push(
            "found no session ID in the capture to check for leaks (extractor or fixture broken)"
                .into(),
        );
    }
    check_no_raw_ids("stdout", &stdout, &exact, &parts, &mut problems);
    check_no_raw_ids("stderr", &stderr, &exact, &parts, &mut problems);

    if !problems.is_empty() {
        let mut summary: Vec<String> = fired
            .iter()
            .map(|(d, l)| format!("{d} x{}", l.len()))
            .collect();
        if summary.is_empty() {
            summary.push("no findings".into());
        }
        panic!(
            "{rel}: {} problem(s)\n  fixture: {}\n  fired: {}\n  - {}\n",
            problems.len(),
            exp.what.replace('\n', " "),
            summary.join(", "),
            problems.join("\n  - ")
        );
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// One `#[test]` per fixture, so `cargo test` names the failing scenario.
macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        const FIXTURE_NAMES: &[&str] = &[$(stringify!($name)),*];
        mod fixture {
            $( #[test] fn $name() { super::check_fixture(stringify!($name)); } )*
        }
    };
}

fixtures!(
    good_app,
    cookie_no_secure,
    cookie_no_httponly,
    cookie_samesite_none,
    cookie_samesite_absent,
    cookie_persistent,
    cookie_persistent_within_policy,
    cookie_loose_domain,
    cookie_prefix_violation,
    cookie_prefix_ok,
    session_id_sequential,
    session_id_short,
    session_id_tomcat_default,
    session_id_in_url_path,
    session_id_in_url_query,
    cleartext_http,
    login_no_rotation,
    login_no_rotation_reissue,
    login_fixation,
    login_rotation,
    login_fresh_session,
    express_signed_id,
    privilege_no_rotation,
    privilege_rotation,
    tls_upgrade_no_rotation,
    tls_upgrade_rotation,
    stale_session_accepted,
    stale_session_rejected,
    logout_not_invalidated,
    logout_invalidated,
    idle_timeout_not_enforced,
    idle_timeout_enforced,
    absolute_timeout_not_enforced,
    absolute_timeout_enforced,
    reauth_not_required,
    reauth_required,
    hijack_ip_and_ua,
    hijack_ua_family,
    hijack_xff_spoof,
    ua_major_change,
    ua_patch_update,
    roaming,
    nat,
    bruteforce_unknown_ids,
    bruteforce_expired_ids,
    client_side_jwt,
    client_side_signed_cookie,
    learned_session_cookie,
);

// ---------------------------------------------------------------------------
// The expectations themselves

/// expected.toml, the pcap directory, record.sh's scenario list and the
/// tests above name the same fixtures; every detector has a positive and a
/// negative fixture; the lists are consistent.
#[test]
fn expectations_are_consistent_and_complete() {
    let exp = expectations();
    let ids: BTreeSet<&str> = DETECTORS.iter().map(|d| d.0).collect();
    let listed: BTreeSet<&str> = exp.detectors.iter().map(String::as_str).collect();
    assert_eq!(
        listed, ids,
        "expected.toml `detectors` differs from the design's detector ids"
    );

    let mut problems = Vec::new();
    let mut positives: BTreeMap<&str, usize> = BTreeMap::new();
    let mut negatives: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for f in &exp.fixture {
        if !seen.insert(f.pcap.as_str()) {
            problems.push(format!("{}: listed twice", f.pcap));
        }
        let must: BTreeSet<&str> = f.must_fire.iter().map(String::as_str).collect();
        let may: BTreeSet<&str> = f.may_fire.iter().map(String::as_str).collect();
        let must_not: BTreeSet<&str> = f.must_not_fire.iter().map(String::as_str).collect();
        let named = f
            .must_fire
            .iter()
            .chain(&f.may_fire)
            .chain(&f.must_not_fire);
        for d in named.chain(f.severity.keys()).chain(f.client_ip.keys()) {
            if !ids.contains(d.as_str()) {
                problems.push(format!("{}: unknown detector {d:?}", f.pcap));
            }
        }
        for d in must
            .intersection(&must_not)
            .chain(may.intersection(&must_not))
            .chain(must.intersection(&may))
        {
            problems.push(format!(
                "{}: {d} is in two of must_fire/may_fire/must_not_fire",
                f.pcap
            ));
        }
        for d in f.severity.keys().chain(f.client_ip.keys()) {
            if !must.contains(d.as_str()) {
                problems.push(format!(
                    "{}: severity/client_ip given for {d}, which is not in must_fire",
                    f.pcap
                ));
            }
        }
        for d in &ids {
            if must.contains(d) {
                *positives.entry(d).or_default() += 1;
            } else if !may.contains(d) {
                *negatives.entry(d).or_default() += 1;
            }
        }
    }
    for d in &ids {
        if !positives.contains_key(d) {
            problems.push(format!("{d}: no positive fixture"));
        }
        if !negatives.contains_key(d) {
            problems.push(format!("{d}: no negative fixture"));
        }
    }

    let in_toml: BTreeSet<String> = exp
        .fixture
        .iter()
        .map(|f| f.pcap.trim_end_matches(".pcap").to_owned())
        .collect();
    let in_tests: BTreeSet<String> = FIXTURE_NAMES.iter().map(|s| s.to_string()).collect();
    let in_dir: BTreeSet<String> = std::fs::read_dir(fixtures_dir().join("pcap"))
        .expect("tests/fixtures/pcap")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".pcap"))
                .map(str::to_owned)
        })
        .collect();
    let script = Command::new("bash")
        .arg(fixtures_dir().join("record.sh"))
        .arg("--list")
        .output()
        .expect("run record.sh --list");
    assert!(script.status.success(), "record.sh --list failed");
    let in_script: BTreeSet<String> = String::from_utf8_lossy(&script.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    for (what, set) in [
        ("the test list", &in_tests),
        ("tests/fixtures/pcap/", &in_dir),
        ("record.sh --list", &in_script),
    ] {
        for missing in in_toml.difference(set) {
            problems.push(format!("{missing}: in expected.toml but not in {what}"));
        }
        for extra in set.difference(&in_toml) {
            problems.push(format!("{extra}: in {what} but not in expected.toml"));
        }
    }
    for name in BENIGN {
        if !in_toml.contains(name) {
            problems.push(format!("benign fixture {name} missing"));
        }
    }
    assert!(
        problems.is_empty(),
        "expected.toml:\n  - {}",
        problems.join("\n  - ")
    );
}

/// The leak check must be able to see what it looks for: the extractor
/// finds the IDs of every shape the fixtures use.
#[test]
fn raw_id_extractor_finds_every_id_shape() {
    let expect_parts = |pcap: &str, min_exact: usize| {
        let data = std::fs::read(fixtures_dir().join("pcap").join(pcap)).expect("fixture");
        let (exact, parts) = raw_session_ids(&data, &ID_CARRIERS);
        assert!(
            exact.len() >= min_exact,
            "{pcap}: {} IDs found, expected at least {min_exact}",
            exact.len()
        );
        (exact, parts)
    };
    // Two IDs (before/after login); the deletion value "" is skipped.
    let (exact, _) = expect_parts("login_rotation.pcap", 2);
    assert!(
        exact.iter().all(|v| v.len() == 43),
        "256-bit IDs are 43 base64url characters"
    );
    // ;jsessionid= in the request line and the Location header.
    let (exact, _) = expect_parts("session_id_in_url_path.pcap", 2);
    assert!(
        exact
            .iter()
            .all(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    );
    // Express: the encoded value, the decoded value and its ID part.
    let (exact, parts) = expect_parts("express_signed_id.pcap", 2);
    assert!(
        exact.iter().any(|v| v.starts_with("s%3A")) && exact.iter().any(|v| v.starts_with("s:"))
    );
    assert!(
        parts.iter().any(|p| p.len() == 32),
        "the 32-character ID inside s:<id>.<hmac>"
    );
    // JWT: payload and signature are secrets, the constant header is not.
    let (_, parts) = expect_parts("client_side_jwt.pcap", 1);
    assert!(
        parts.iter().any(|p| p.starts_with("eyJzdWIi")),
        "JWT payload"
    );
    assert!(
        !parts.iter().any(|p| p.starts_with("eyJhbGci")),
        "JWT header is public"
    );
}

// ---------------------------------------------------------------------------
// Bad input: exit 2, naming the file

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "sessionwatch-replay-fixtures-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn truncated_capture_exits_2_naming_file_and_offset() {
    let data = std::fs::read(fixtures_dir().join("pcap/good_app.pcap")).expect("good_app.pcap");
    let records = pcap_records(&data);
    // Cut in the middle of the data of a record in the middle of the file.
    let (offset, _, bytes) = records[records.len() / 2];
    assert!(bytes.len() > 2);
    let cut = offset + 16 + bytes.len() / 2;
    let tmp = TempDir::new("truncated");
    let path = tmp.0.join("truncated-good_app.pcap");
    std::fs::write(&path, &data[..cut]).expect("write truncated copy");

    let out = replay(&[path.to_str().expect("utf-8 temp path"), "--config", CONFIG]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "truncated capture: exit status; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("truncated-good_app.pcap"),
        "stderr does not name the file:\n{stderr}"
    );
    // The byte offset: where the cut record starts, or where the file ends.
    let numbers: BTreeSet<u64> = stderr
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(
        numbers.contains(&(offset as u64)) || numbers.contains(&(cut as u64)),
        "stderr names neither the record offset {offset} nor the end of file {cut}:\n{stderr}"
    );
}

#[test]
fn wrong_magic_exits_2_naming_file() {
    let tmp = TempDir::new("magic");
    let path = tmp.0.join("not-a-capture.pcap");
    std::fs::write(
        &path,
        b"GET / HTTP/1.1\r\nHost: app.shop.test\r\n\r\nthis is not a capture file\n".repeat(4),
    )
    .expect("write");
    let out = replay(&[path.to_str().expect("utf-8 temp path"), "--config", CONFIG]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "wrong magic: exit status; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("not-a-capture.pcap"),
        "stderr does not name the file:\n{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no findings from a file that is not a capture"
    );
}

#[test]
fn empty_file_exits_2_naming_file() {
    let tmp = TempDir::new("empty");
    let path = tmp.0.join("empty.pcap");
    std::fs::write(&path, b"").expect("write");
    let out = replay(&[path.to_str().expect("utf-8 temp path"), "--config", CONFIG]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "empty file: exit status; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("empty.pcap"),
        "stderr does not name the file:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Session-cookie learning (`sessions.learn_cookie_names`)

/// The `app_auth` fixture is analysed without configuring the name (the
/// [[fixture]] entry checks the findings); here: the summary and
/// `check-config --learned` name it and only it, and with learning off the
/// same capture yields nothing.
#[test]
fn learned_session_cookie_only_when_learning_is_on() {
    let rel = "tests/fixtures/pcap/learned_session_cookie.pcap";
    let test_config = std::fs::read_to_string(root().join(CONFIG))
        .expect("tests/fixtures/sessionwatch-test.toml");
    assert!(
        !test_config.contains("app_auth") && !test_config.contains("learn_cookie_names"),
        "the fixture config must neither name app_auth nor set learning"
    );

    let tmp = TempDir::new("learning");
    let metrics = tmp.0.join("metrics.prom");
    let out = replay(&[
        rel,
        "--config",
        CONFIG,
        "--metrics-out",
        metrics.to_str().expect("utf-8 temp path"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let prom = std::fs::read_to_string(&metrics).expect("metrics written");
    assert!(
        prom.contains("sessionwatch_session_cookies_learned{service=\"shop\"} 1"),
        "{prom}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("learned session cookies:"))
        .unwrap_or_else(|| panic!("no learned-cookies line in the summary:\n{stderr}"));
    assert_eq!(line.trim(), "learned session cookies: app_auth (shop)");

    let out = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .current_dir(root())
        .args(["check-config", CONFIG, "--learned", rel])
        .output()
        .expect("run check-config --learned");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let learned: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("# session cookies learned from"))
        .skip(1)
        .take_while(|l| l.starts_with("#   "))
        .collect();
    assert_eq!(learned.len(), 1, "{stdout}");
    assert!(
        learned[0].starts_with(
            "#   app_auth (service shop): issued on 2 login(s), accepted from 2 client(s)"
        ),
        "{stdout}"
    );
    for decoy in ["theme", "csrftoken"] {
        assert!(
            !stdout
                .lines()
                .any(|l| l.starts_with(&format!("#   {decoy} "))),
            "{decoy} is neither learned nor a candidate:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("#   visitor (service shop): "),
        "the random visitor ID is a candidate that is not learned:\n{stdout}"
    );
    // The printed configuration is still valid TOML (the report is comments).
    toml::from_str::<toml::Value>(&stdout).expect("check-config output parses as TOML");

    let off = tmp.0.join("no-learning.toml");
    let text = test_config.replacen(
        "[sessions]\n",
        "[sessions]\nlearn_cookie_names = false\n",
        1,
    );
    assert_ne!(text, test_config);
    std::fs::write(&off, text).expect("write config");
    let out = replay(&[rel, "--config", off.to_str().expect("utf-8 temp path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        out.stdout.is_empty(),
        "learning off: app_auth is not a session cookie, nothing to find; got:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("learned session cookies"), "{stderr}");
}
