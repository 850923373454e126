//! End-to-end test of the sample-based `session_id_weak` stage: real
//! session-ID generators behind a real HTTP server, real traffic on
//! loopback, a real capture, the real binary.
//!
//! For each generator of `tests/fixtures/app/idgen.py` — a counter, 32
//! random bits behind a fixed node id, a nanosecond timestamp, and
//! `secrets.token_urlsafe(16)` (128 bits from the OS CSPRNG) — the test
//! starts the server on a free loopback port, records `tcp port <port>` on
//! `lo` with tcpdump while the idgen client opens [`SESSIONS`] fresh
//! sessions over keep-alive connections, and runs
//!
//! ```text
//! sessionwatch replay <capture> --config <test config>
//! ```
//!
//! The first three must produce a sample-based `session_id_weak` finding
//! whose `failed_test` names the generator's flaw (`sequential`,
//! `entropy` with about 32 estimated bits, `time_correlated`); the CSPRNG
//! must produce no `session_id_weak` finding at all. Every ID of the three
//! weak generators looks strong on its own (32 hex digits), so only the
//! sample stage can find them. No raw ID may appear in the output.
//!
//! Needs root (tcpdump on lo), tcpdump and python3: without them it prints
//! a loud SKIP line, or fails when `CI` or `SESSIONWATCH_E2E_REQUIRED=1`
//! is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Guard, find_tool, free_port, repo, skip_if_missing, wait_port};
use serde_json::Value;

/// Fresh sessions per generator. With `id_min_sample = 100` the first 100
/// IDs teach the layout, the first verdict comes at 200 (50 pairs for the
/// sequence tests), then one every 100; by 600 the CSPRNG's bits (126 per
/// ID) fill the three FIPS blocks the monobit and poker verdicts need.
const SESSIONS: usize = 600;

const CONFIG: &str = r#"
[sessions]
cookie_names = ["sid"]

[detectors]
id_sample_size = 1000
id_min_sample = 100
"#;

struct Tools {
    tcpdump: PathBuf,
    python: PathBuf,
}

fn preconditions() -> Option<Tools> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (tcpdump on lo needs it)".to_owned());
    }
    let tcpdump = find_tool("tcpdump");
    let python = find_tool("python3");
    if tcpdump.is_none() {
        missing.push("tcpdump".into());
    }
    if python.is_none() {
        missing.push("python3".into());
    }
    if skip_if_missing("randomness_e2e", &missing) {
        return None;
    }
    Some(Tools {
        tcpdump: tcpdump.unwrap(),
        python: python.unwrap(),
    })
}

fn idgen() -> PathBuf {
    repo().join("tests/fixtures/app/idgen.py")
}

/// Starts tcpdump on `lo` for `port` and waits until it captures.
fn start_tcpdump(tools: &Tools, pcap: &Path, err: &Path, port: u16) -> Guard {
    // --immediate-mode and -U: every packet is in the file when tcpdump is
    // stopped; a snaplen above lo's 65536-byte MTU; -Z root: write as root.
    let child = Command::new(&tools.tcpdump)
        .args([
            "-i",
            "lo",
            "--immediate-mode",
            "-U",
            "-s",
            "66000",
            "-B",
            "65536",
        ])
        .args(["-Z", "root", "-w"])
        .arg(pcap)
        .arg(format!("tcp port {port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err).unwrap())
        .spawn()
        .expect("start tcpdump");
    let mut guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(err).unwrap_or_default();
        if text.contains("listening on") {
            break;
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!("tcpdump exited ({status}): {text}");
        }
        assert!(Instant::now() < deadline, "tcpdump did not start: {text}");
        std::thread::sleep(Duration::from_millis(25));
    }
    std::thread::sleep(Duration::from_millis(200));
    guard
}

/// Captures `SESSIONS` sessions of one generator; returns the pcap path.
fn capture(tools: &Tools, dir: &Path, mode: &str) -> PathBuf {
    let port = free_port();
    let server = Command::new(&tools.python)
        .arg(idgen())
        .args(["serve", "--mode", mode, "--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start idgen server");
    let _server = Guard(server);
    wait_port(port);
    let pcap = dir.join(format!("{mode}.pcap"));
    let mut tcpdump = start_tcpdump(tools, &pcap, &dir.join(format!("{mode}.tcpdump")), port);
    let out = Command::new(&tools.python)
        .arg(idgen())
        .args(["drive", "--port", &port.to_string()])
        .args(["--count", &SESSIONS.to_string()])
        .output()
        .expect("run idgen client");
    assert!(
        out.status.success(),
        "{mode}: client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        SESSIONS.to_string(),
        "{mode}: sessions issued"
    );
    std::thread::sleep(Duration::from_millis(300));
    tcpdump.stop_within(Duration::from_secs(5));
    let size = std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "{mode}: capture is {size} bytes");
    pcap
}

/// Runs the binary on the capture; returns the `session_id_weak` findings.
fn replay(dir: &Path, pcap: &Path, mode: &str) -> Vec<Value> {
    let config = dir.join("sessionwatch.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .arg("replay")
        .arg(pcap)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "debug")
        .env("NODE_NAME", "randomness-e2e")
        .output()
        .expect("run sessionwatch replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{mode}: replay failed ({}): {stderr}",
        out.status
    );
    let findings: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{mode}: {e}: {l}")))
        .collect();
    assert!(
        !findings.is_empty(),
        "{mode}: no findings at all (cleartext cookies must be reported): {stderr}"
    );
    assert_no_raw_ids(pcap, mode, &[&stdout, &stderr]);
    findings
        .into_iter()
        .filter(|f| f["detector"] == "session_id_weak")
        .collect()
}

/// No session ID from the capture appears in the replay's output.
fn assert_no_raw_ids(pcap: &Path, mode: &str, outputs: &[&str]) {
    let bytes = std::fs::read(pcap).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let mut ids = 0;
    for part in text.split("Set-Cookie: sid=").skip(1) {
        let id: String = part.chars().take_while(|c| *c != ';').collect();
        if id.len() >= 16 {
            ids += 1;
            for o in outputs {
                assert!(!o.contains(&id), "{mode}: a raw session ID leaked");
            }
        }
    }
    assert!(ids >= SESSIONS, "{mode}: {ids} IDs found in the capture");
}

fn sample_findings<'a>(findings: &'a [Value], mode: &str) -> Vec<&'a Value> {
    let per_id: Vec<_> = findings
        .iter()
        .filter(|f| f["evidence"]["basis"] == "per_id")
        .collect();
    assert!(
        per_id.is_empty(),
        "{mode}: every ID looks strong on its own, yet per-ID findings: {per_id:?}"
    );
    findings
        .iter()
        .filter(|f| f["evidence"]["basis"] == "sample")
        .collect()
}

#[test]
fn sample_stage_finds_weak_generators_through_real_http() {
    let Some(tools) = preconditions() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "sessionwatch-randomness-e2e-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    for (mode, expected) in [
        ("sequential", Some("sequential")),
        ("random32", Some("entropy")),
        ("timestamp", Some("time_correlated")),
        ("csprng128", None),
    ] {
        let pcap = capture(&tools, &dir, mode);
        let all = replay(&dir, &pcap, mode);
        let sample = sample_findings(&all, mode);
        for f in &sample {
            eprintln!("randomness_e2e {mode}: {}", f["evidence"]);
        }
        match expected {
            None => assert!(
                all.is_empty(),
                "{mode}: a good generator was reported: {all:?}"
            ),
            Some(test) => {
                assert!(!sample.is_empty(), "{mode}: no sample finding");
                // The first verdict names the flaw, once per (cookie, test).
                let f = sample[0];
                let ev = &f["evidence"];
                assert_eq!(ev["failed_test"], test, "{mode}: {f}");
                assert_eq!(f["severity"], "high", "{mode}");
                assert_eq!(f["cwe"], "CWE-331", "{mode}");
                assert_eq!(f["cookie"], "sid", "{mode}");
                assert!(f["session"].is_null(), "{mode}: a generator, not a session");
                let n = ev["sample_size"].as_u64().unwrap();
                assert!((100..=SESSIONS as u64).contains(&n), "{mode}: sample {n}");
                let bits = ev["estimated_bits"].as_u64().unwrap();
                assert!(bits < 128, "{mode}: {bits} bits");
                assert_eq!(ev["min_entropy_bits"], 128);
                assert_eq!(ev["length"], 32, "{mode}");
                let tests: Vec<&Value> = sample
                    .iter()
                    .map(|f| &f["evidence"]["failed_test"])
                    .collect();
                let mut unique: Vec<String> = tests.iter().map(|t| t.to_string()).collect();
                unique.sort();
                unique.dedup();
                assert_eq!(
                    unique.len(),
                    tests.len(),
                    "{mode}: repeated finding {tests:?}"
                );
                match mode {
                    "random32" => {
                        assert!((30..=33).contains(&bits), "{mode}: {bits} bits");
                        assert_eq!(ev["constant_positions"], 24, "{mode}");
                    }
                    "timestamp" => {
                        assert!(
                            ev["time_correlation"].as_f64().unwrap() > 0.99,
                            "{mode}: {f}"
                        );
                    }
                    "sequential" => {
                        assert!(
                            ev["repeated_step_share"].as_f64().unwrap() > 0.9,
                            "{mode}: {f}"
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
