//! Raw session IDs never leave the agent.
//!
//! Every recorded scenario (tests/fixtures/pcap) and a synthetic capture
//! with every carrier shape (cookies, `Set-Cookie`, URL path and query
//! parameters, quoted and percent-encoded values, invalid UTF-8, CR/LF
//! smuggled into values) is replayed with trace-level logging; stdout,
//! stderr (the log), the alerts file and the metrics are scanned for the
//! raw IDs the captures carry. None may appear.
//!
//! And the hash key: read from a file, and a world-readable one is refused
//! with exit 2 and a message that names the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::traffic::Traffic;

const CONFIG: &str = "tests/fixtures/sessionwatch-test.toml";

/// Everything a replay wrote.
struct Outputs {
    code: i32,
    stdout: String,
    stderr: String,
    alerts: String,
    metrics: String,
}

impl Outputs {
    fn streams(&self) -> [(&'static str, &str); 4] {
        [
            ("stdout", &self.stdout),
            ("stderr", &self.stderr),
            ("alerts", &self.alerts),
            ("metrics", &self.metrics),
        ]
    }
}

fn replay(dir: &Path, pcap: &Path, config: &Path, alerts_to_stdout: bool) -> Outputs {
    let alerts = dir.join("alerts.jsonl");
    let metrics = dir.join("metrics.prom");
    let _ = std::fs::remove_file(&alerts);
    let _ = std::fs::remove_file(&metrics);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessionwatch"));
    cmd.current_dir(common::repo())
        .arg("--log-level")
        .arg("trace")
        .arg("replay")
        .arg(pcap)
        .arg("--config")
        .arg(config)
        .arg("--metrics-out")
        .arg(&metrics)
        .env("RUST_LOG", "trace")
        .env("NODE_NAME", "secrets");
    if !alerts_to_stdout {
        cmd.arg("--alerts").arg(&alerts);
    }
    let out = cmd.output().expect("run sessionwatch");
    Outputs {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        alerts: std::fs::read_to_string(&alerts).unwrap_or_default(),
        metrics: std::fs::read_to_string(&metrics).unwrap_or_default(),
    }
}

/// Cookie and parameter names that carry session IDs in the fixtures and
/// in the synthetic capture (the test config's `cookie_names`, the URL
/// forms and the signed/JWT carriers).
const CARRIERS: [&str; 11] = [
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
    "laravel_session",
];

/// Every value of a carrier (`name=value` after a delimiter) in `bytes`,
/// as it travels and percent-decoded, at least 8 bytes long (shorter
/// strings occur in any text by chance). Values are byte strings: a value
/// that is not UTF-8 is looked for as bytes.
fn raw_ids(bytes: &[u8]) -> BTreeSet<Vec<u8>> {
    let mut ids = BTreeSet::new();
    let starts = |b: u8| matches!(b, b' ' | b';' | b'?' | b'&' | b'\n' | b'\t' | b'/' | b',');
    let ends = |b: u8| {
        matches!(
            b,
            b';' | b' ' | b'\r' | b'\n' | b'&' | b',' | b'"' | b'<' | b'>' | b'#' | b'\''
        )
    };
    for name in CARRIERS {
        let needle = format!("{name}=");
        let needle = needle.as_bytes();
        let mut from = 0;
        while let Some(p) = bytes[from..]
            .windows(needle.len())
            .position(|w| w == needle)
        {
            let at = from + p;
            from = at + 1;
            if at > 0 && !starts(bytes[at - 1]) {
                continue;
            }
            let mut v = &bytes[at + needle.len()..];
            if v.first() == Some(&b'"') {
                v = &v[1..];
            }
            let len = v.iter().position(|&b| ends(b)).unwrap_or(v.len());
            let v = &v[..len];
            if v.len() < 8 || v == b"deleted" {
                continue;
            }
            ids.insert(v.to_vec());
            ids.insert(percent_decode(v));
            // The ID inside a signed value (`s:<id>.<signature>`).
            for part in percent_decode(v).split(|&b| b == b'.' || b == b':') {
                if part.len() >= 16 && !part.starts_with(b"eyJhbGci") {
                    ids.insert(part.to_vec());
                }
            }
        }
    }
    ids
}

fn percent_decode(v: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%'
            && i + 2 < v.len()
            && let (Some(h), Some(l)) = (hex(v[i + 1]), hex(v[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    out
}

/// Problems: each raw ID found in an output (the message gives the ID's
/// length and where, never the ID).
fn leaks(what: &str, out: &Outputs, ids: &BTreeSet<Vec<u8>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (stream, text) in out.streams() {
        let text = text.as_bytes();
        for id in ids {
            if text.windows(id.len()).any(|w| w == id.as_slice()) {
                problems.push(format!(
                    "{what}: {stream} contains a raw session ID ({} bytes)",
                    id.len()
                ));
            }
        }
    }
    problems
}

fn fixtures() -> Vec<PathBuf> {
    let dir = common::repo().join("tests/fixtures/pcap");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    v.sort();
    v
}

#[test]
fn no_fixture_session_id_in_any_output_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::repo().join(CONFIG);
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut with_findings = 0;
    for (i, pcap) in fixtures().iter().enumerate() {
        let ids = raw_ids(&std::fs::read(pcap).unwrap());
        checked += ids.len();
        // Alternate: findings to stdout, and to the alerts file.
        let out = replay(dir.path(), pcap, &config, i % 2 == 0);
        let name = pcap.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            out.code == 0,
            "{name}: exit {}:\n{}",
            out.code,
            out.stderr
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        if !out.alerts.is_empty() || out.stdout.contains("\"detector\"") {
            with_findings += 1;
        }
        problems.extend(leaks(&name, &out, &ids));
    }
    eprintln!(
        "secrets: {} captures replayed at trace level, {checked} raw IDs looked for, {} leaks",
        fixtures().len(),
        problems.len()
    );
    assert!(
        checked >= 100,
        "only {checked} session IDs extracted from the fixtures: extractor broken"
    );
    assert!(
        with_findings >= 20,
        "only {with_findings} fixtures with findings"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// IDs of the synthetic capture: every carrier shape, with values a test
/// can recognise (`LEAKCHECK` + a counter, 24+ bytes).
fn synthetic_capture() -> (Vec<u8>, BTreeSet<Vec<u8>>) {
    let mut ids = BTreeSet::new();
    let mut id = |n: u32| {
        let v = format!("LEAKCHECK{n:04}x7f3e9a1c5b2d8e4f");
        ids.insert(v.clone().into_bytes());
        v
    };
    let mut t = Traffic::new(Vec::new(), 3, 1_000_000).unwrap();
    for n in 0..40u32 {
        let (a, b, c, d) = (id(n * 4), id(n * 4 + 1), id(n * 4 + 2), id(n * 4 + 3));
        // Login: presented ID, new ID issued (or not: fixation).
        let req = format!(
            "POST /login HTTP/1.1\r\nHost: shop{n}.example\r\nCookie: theme=dark; sessionid={a}\r\n\
             User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/{n}.0\r\nContent-Length: 0\r\n\r\n"
        );
        let resp = format!(
            "HTTP/1.1 302 Found\r\nLocation: /account;jsessionid={b}\r\n\
             Set-Cookie: sessionid=\"{c}\"; Path=/\r\nContent-Length: 0\r\n\r\n"
        );
        t.exchange(req.as_bytes(), resp.as_bytes()).unwrap();
        // IDs in the URL, percent-encoded, and a signed Express cookie.
        let req = format!(
            "GET /account;jsessionid={b}?PHPSESSID={d}&x=1 HTTP/1.1\r\nHost: shop{n}.example\r\n\
             Cookie: connect.sid=s%3A{d}.c2lnbmF0dXJlc2lnbmF0dXJl; sessionid={c}\r\n\r\n"
        );
        t.exchange(
            req.as_bytes(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        // Hostile values: invalid UTF-8 and a bare CR inside a cookie
        // value (a parse error), CR/LF injected into a Set-Cookie value
        // through an obsolete line fold.
        let mut req = format!("GET /x HTTP/1.1\r\nHost: h\r\nCookie: sessionid={a}").into_bytes();
        req.extend_from_slice(b"\xff\xfe\r\n\r\n");
        let mut resp = b"HTTP/1.1 200 OK\r\nSet-Cookie: sessionid=".to_vec();
        resp.extend_from_slice(d.as_bytes());
        resp.extend_from_slice(b"\r\n injected=1; Path=/\r\nContent-Length: 0\r\n\r\n");
        t.exchange(&req, &resp).unwrap();
        let req = format!("GET /y HTTP/1.1\r\nHost: h\r\nCookie: sessionid={b}\rX: y\r\n\r\n");
        t.exchange(
            req.as_bytes(),
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
    }
    (t.finish().unwrap(), ids)
}

#[test]
fn no_synthetic_session_id_in_any_output_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let (pcap, ids) = synthetic_capture();
    let file = dir.path().join("carriers.pcap");
    std::fs::write(&file, &pcap).unwrap();
    // The extractor must see what it looks for.
    let found = raw_ids(&pcap);
    assert!(
        ids.iter().all(|id| found.contains(id)),
        "extractor misses IDs"
    );
    let config = common::repo().join(CONFIG);
    for to_stdout in [true, false] {
        let out = replay(dir.path(), &file, &config, to_stdout);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let findings = if to_stdout { &out.stdout } else { &out.alerts };
        assert!(
            findings.contains("no_rotation_after_login") || findings.contains("session_id_in_url"),
            "the synthetic capture yields findings:\n{findings}"
        );
        let problems = leaks("synthetic", &out, &found);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

fn write_key(dir: &Path, mode: u32) -> PathBuf {
    let key = dir.join(format!("hash-{mode:o}.key"));
    std::fs::write(
        &key,
        "8c3e1f0a6b2d4c5e7f9a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d0e\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    key
}

fn config_with_key(dir: &Path, key: &Path) -> PathBuf {
    let base = std::fs::read_to_string(common::repo().join(CONFIG)).unwrap();
    let text = base.replacen(
        "[sessions]\n",
        &format!(
            "[sessions]\nhash_key_file = {:?}\n",
            key.display().to_string()
        ),
        1,
    );
    assert_ne!(text, base, "test config has a [sessions] table");
    let path = dir.join(format!(
        "{}.toml",
        key.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn sessions_of(alerts: &str) -> BTreeSet<String> {
    alerts
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["session"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn hash_key_is_read_from_a_private_file_and_a_world_readable_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = common::repo().join("tests/fixtures/pcap/login_fixation.pcap");

    // A private key file: the session hashes are the key's, stable across
    // runs (and differ from a run with a random key).
    let private = config_with_key(dir.path(), &write_key(dir.path(), 0o600));
    let a = replay(dir.path(), &pcap, &private, false);
    let b = replay(dir.path(), &pcap, &private, false);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let (sa, sb) = (sessions_of(&a.alerts), sessions_of(&b.alerts));
    assert!(!sa.is_empty(), "findings carry session hashes");
    assert_eq!(sa, sb, "a configured key gives stable hashes");
    let random = replay(dir.path(), &pcap, &common::repo().join(CONFIG), false);
    assert!(sessions_of(&random.alerts).is_disjoint(&sa));

    // World-readable (0644) and world-readable-only (0604): refused by
    // replay and by check-config, exit 2, the file named, nothing analysed.
    for mode in [0o644, 0o604] {
        let key = write_key(dir.path(), mode);
        let config = config_with_key(dir.path(), &key);
        let out = replay(dir.path(), &pcap, &config, false);
        assert_eq!(out.code, 2, "mode {mode:o}: {}", out.stderr);
        let expected = format!(
            "{}: hash key file is world-readable (mode {mode:o})",
            key.display()
        );
        assert!(
            out.stderr.contains(&expected),
            "{expected:?} in:\n{}",
            out.stderr
        );
        assert!(out.alerts.is_empty() && out.stdout.is_empty());
        let check = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
            .arg("check-config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(check.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&check.stderr).contains(&expected));
    }

    // Group-readable is the operator's choice (a `sessionwatch` group).
    let group = config_with_key(dir.path(), &write_key(dir.path(), 0o640));
    assert_eq!(replay(dir.path(), &pcap, &group, false).code, 0);
}
