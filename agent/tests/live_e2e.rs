//! End-to-end: the real `sessionwatch run` binary captures real TLS traffic
//! at a real nginx (Debian nginx-light) and reports findings from it.
//!
//! nginx terminates TLS in front of a small upstream app that never rotates
//! the session ID at login. A Firefox-like client on 127.0.0.2 gets a
//! session and logs in; a curl client on 127.0.0.3 then replays its cookie.
//! The agent must report `no_rotation_after_login` and
//! `session_fingerprint_change` (both high), with the right client IPs,
//! serve `/healthz`, `/readyz` and `/metrics`, lose nothing, never print the
//! raw session ID anywhere, and exit 0 on SIGTERM.
//!
//! Needs root, the embedded eBPF object, nginx, openssl, curl and python3.
//! Without them it prints a loud SKIP line (or fails when `CI` or
//! `SESSIONWATCH_E2E_REQUIRED=1` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn curl(curl: &Path, http: Http, args: &[&str]) {
    let version = if http == Http::Two {
        "--http2"
    } else {
        "--http1.1"
    };
    let out = Command::new(curl)
        .args(["-sk", version, "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two variants share the loopback and each starts its own agent, which
/// would see the other's traffic: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn live_run_reports_findings_from_tls_traffic() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    live_scenario(Http::One);
}

/// The same journey over HTTP/2 (nginx `listen ... ssl http2`, curl
/// `--http2` negotiating h2 by ALPN): the agent decodes HTTP/2 frames and
/// HPACK from the SSL-layer capture.
#[test]
fn live_run_reports_findings_from_tls_http2_traffic() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    live_scenario(Http::Two);
}

#[derive(Clone, Copy, PartialEq)]
enum Http {
    One,
    Two,
}

fn live_scenario(http: Http) {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (eBPF needs it)".to_string());
    }
    if !sessionwatch::capture::object_embedded() {
        missing.push("the eBPF object (run through `cargo xtask test`)".into());
    }
    let tools: Vec<Option<PathBuf>> = ["nginx", "openssl", "curl", "python3"]
        .iter()
        .map(|t| find_tool(t))
        .collect();
    for (t, p) in ["nginx", "openssl", "curl", "python3"].iter().zip(&tools) {
        if p.is_none() {
            missing.push((*t).to_string());
        }
    }
    if skip_if_missing("live_e2e", &missing) {
        return;
    }
    let [nginx, openssl, curl_bin, python] = [0, 1, 2, 3].map(|i| tools[i].clone().unwrap());

    // nginx under a name of its own per test: the agent is restricted to
    // it, so the other test of this file (and any concurrent e2e test) is
    // not captured.
    let comm = if http == Http::Two {
        "nginx-live-h2"
    } else {
        "nginx-live-h1"
    };
    let shop = spawn_shop(
        &python,
        &nginx,
        &openssl,
        &std::env::temp_dir().join(format!(
            "sessionwatch-live-e2e-{}-{comm}",
            std::process::id()
        )),
        &ShopOptions {
            comm,
            host: "shop.test",
            http2: http == Http::Two,
            http_directives: "",
        },
    );
    let (dir, tls_port, admin_port) = (shop.dir.clone(), shop.tls_port, free_port());

    // The agent, started after nginx: its sockets and workers are found
    // through /proc.
    let findings = dir.join("findings.jsonl");
    std::fs::write(
        dir.join("sw.toml"),
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [capture]\nprocesses = [\"{comm}\"]\n"
        ),
    )
    .unwrap();
    let mut agent = spawn_ready_agent(&dir, admin_port, Duration::from_secs(60), |c| {
        c.arg("--alerts").arg(&findings);
    });
    assert_eq!(http_get(admin_port, "/healthz").0, 200);

    let url = |p: &str| format!("https://shop.test:{tls_port}{p}");
    let resolve = format!("shop.test:{tls_port}:127.0.0.1");
    let jar = dir.join("jar");
    let jar = jar.to_str().unwrap();
    // Victim: a session, then a login that keeps it.
    curl(
        &curl_bin,
        http,
        &[
            "--interface",
            "127.0.0.2",
            "-A",
            FIREFOX,
            "-c",
            jar,
            "-b",
            jar,
            "--resolve",
            &resolve,
            &url("/"),
        ],
    );
    curl(
        &curl_bin,
        http,
        &[
            "--interface",
            "127.0.0.2",
            "-A",
            FIREFOX,
            "-c",
            jar,
            "-b",
            jar,
            "--resolve",
            &resolve,
            "-d",
            "username=alice&password=secret",
            &url("/login"),
        ],
    );
    curl(
        &curl_bin,
        http,
        &[
            "--interface",
            "127.0.0.2",
            "-A",
            FIREFOX,
            "-b",
            jar,
            "--resolve",
            &resolve,
            &url("/account"),
        ],
    );
    // Attacker: the stolen cookie from another address and client.
    curl(
        &curl_bin,
        http,
        &[
            "--interface",
            "127.0.0.3",
            "-A",
            "curl/8.1.2",
            "-b",
            jar,
            "--resolve",
            &resolve,
            &url("/account"),
        ],
    );

    let raw_id = std::fs::read_to_string(jar)
        .unwrap()
        .lines()
        .find(|l| l.contains("\tsessionid\t"))
        .and_then(|l| l.rsplit('\t').next().map(str::to_owned))
        .expect("the app issued a session cookie");
    assert!(raw_id.len() >= 40);

    // Wait for both findings (the agent drains the ring every 10 ms).
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let text = std::fs::read_to_string(&findings).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let has = |d: &str| lines.iter().any(|f| f["detector"] == d);
        if has("no_rotation_after_login") && has("session_fingerprint_change") {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "findings missing after 20 s: {text}\nagent log:\n{}",
            std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let login = lines
        .iter()
        .find(|f| f["detector"] == "no_rotation_after_login")
        .unwrap();
    assert_eq!(login["severity"], "high");
    assert_eq!(login["client"]["ip"], "127.0.0.2");
    assert_eq!(login["request"]["path"], "/login");
    assert_eq!(login["request"]["status"], 302);
    assert_eq!(
        login["service"], comm,
        "service is the capturing process without [[services]]"
    );
    let hijack = lines
        .iter()
        .find(|f| f["detector"] == "session_fingerprint_change")
        .unwrap();
    assert_eq!(hijack["severity"], "high");
    assert_eq!(hijack["client"]["ip"], "127.0.0.3");
    assert_eq!(
        hijack["session"], login["session"],
        "both findings name the same session hash"
    );
    // Exactly one of each: curl's own TLS sockets (client side, same libssl)
    // must not be analysed a second time.
    assert_eq!(
        lines
            .iter()
            .filter(|f| f["detector"] == "no_rotation_after_login")
            .count(),
        1
    );

    let (status, metrics) = http_get(admin_port, "/metrics");
    assert_eq!(status, 200);
    let exchanges = format!(
        "sessionwatch_http_exchanges_total{{protocol=\"{}\",service=\"{comm}\",tls=\"true\"}} 4",
        if http == Http::Two { "http2" } else { "http1" }
    );
    let hijacks = format!(
        "sessionwatch_findings_total{{detector=\"session_fingerprint_change\",service=\"{comm}\",severity=\"high\"}} 1"
    );
    for needle in [
        exchanges.as_str(),
        hijacks.as_str(),
        "sessionwatch_capture_events_total{source=\"tls\"}",
        "sessionwatch_build_info{version=",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("sessionwatch_capture_lost_total"))
    {
        assert!(line.ends_with(" 0"), "capture lost something: {line}");
    }
    assert!(!metrics.contains(&raw_id), "raw session ID in /metrics");

    // SIGTERM: clean stop, exit 0.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "agent ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "agent exit status {status}");
    for f in ["findings.jsonl", "agent.out", "agent.err"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        assert!(!text.contains(&raw_id), "raw session ID leaked into {f}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
