//! End-to-end for the SOC surfaces: the real `sessionwatch run` agent
//! watching real TLS traffic at a real nginx (Debian nginx-light), scraped
//! by a real Debian `prometheus` that evaluates the repo's alerting rules,
//! and pushing its findings to a real `prometheus-alertmanager`.
//!
//! nginx terminates TLS in front of a small upstream app that never rotates
//! the session ID at login. A Firefox-like victim on 127.0.0.2 gets a
//! session and logs in (session fixation); a curl client on 127.0.0.3 then
//! replays the victim's cookie (hijack). The test asserts:
//!
//! 1. Prometheus' `/api/v1/alerts` shows `SessionWatchHijackSuspected` and
//!    `SessionWatchSessionFixation` firing (neither rule has a `for:`, so
//!    the repo's rules file is loaded unchanged);
//! 2. Alertmanager's `/api/v2/alerts` holds the alerts the agent pushed,
//!    with their labels, evidence and runbook URL;
//! 3. every expression of the Grafana dashboard is valid PromQL against that
//!    Prometheus, and every one returns data except those over metrics this
//!    scenario legitimately never produces (evictions, ended sessions,
//!    capture loss/truncation, parse errors);
//! 4. the raw session ID appears in none of Prometheus' scraped series,
//!    Alertmanager's alerts, or the agent's stdout/stderr.
//!
//! Needs root, the embedded eBPF object, nginx, openssl, curl, python3,
//! prometheus and prometheus-alertmanager. Without them it prints a loud SKIP
//! line (or fails when `CI` or `SESSIONWATCH_E2E_REQUIRED=1` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const NODE: &str = "soc-e2e-node";

/// Metric families the scenario must produce (so the dashboard panels over
/// them must return data). The scenario includes a logout (a session age)
/// and a malformed request (a parse error) for that. Others — evictions,
/// capture loss or truncation, alert drops — only appear once observed; a
/// panel over those alone may be empty, but only while the agent's own
/// `/metrics` does not export them either.
const PRODUCED_IN_SCENARIO: &[&str] = &[
    "sessionwatch_findings_total",
    "sessionwatch_http_exchanges_total",
    "sessionwatch_sessions_tracked",
    "sessionwatch_session_cookies_total",
    "sessionwatch_session_cookies_compliant_total",
    "sessionwatch_capture_events_total",
    "sessionwatch_attached_targets",
    "sessionwatch_alerts_sent_total",
    "sessionwatch_build_info",
    "sessionwatch_session_age_seconds_bucket",
    "sessionwatch_parse_errors_total",
];

/// Minimal HTTP/1.0 GET on loopback: (status, body).
/// The name nginx runs under: the agent's process filter and, without
/// `[[services]]`, the findings' `service`.
const NGINX_COMM: &str = "nginx-soc";

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|b| b.1.to_owned())?;
    Some((code, body))
}

fn get_json(port: u16, path: &str) -> Value {
    get(port, path)
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(port: u16, expr: &str) -> Value {
    get_json(
        port,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )
}

/// Polls `f` every 250 ms until it returns `Some`, or panics with `what`
/// and the last value seen.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what} not reached after {timeout:?}; last seen: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn curl(curl: &Path, args: &[&str]) {
    let out = Command::new(curl)
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One victim session through nginx: a visit, a login that keeps the ID
/// (fixation), a page; then the attacker replays the cookie from another
/// address and client (hijack). Returns the raw session ID.
fn attack(curl_bin: &Path, tls_port: u16, jar: &Path) -> String {
    let url = |p: &str| format!("https://shop.test:{tls_port}{p}");
    let resolve = format!("shop.test:{tls_port}:127.0.0.1");
    let jar_s = jar.to_str().unwrap();
    let victim = [
        "--interface",
        "127.0.0.2",
        "-A",
        FIREFOX,
        "--resolve",
        &resolve,
    ];
    let mut args: Vec<&str> = victim.to_vec();
    let (u1, u2, u3) = (url("/"), url("/login"), url("/account"));
    args.extend(["-c", jar_s, "-b", jar_s, &u1]);
    curl(curl_bin, &args);
    let mut args: Vec<&str> = victim.to_vec();
    args.extend([
        "-c",
        jar_s,
        "-b",
        jar_s,
        "-d",
        "username=alice&password=secret",
        &u2,
    ]);
    curl(curl_bin, &args);
    let mut args: Vec<&str> = victim.to_vec();
    args.extend(["-b", jar_s, &u3]);
    curl(curl_bin, &args);
    curl(
        curl_bin,
        &[
            "--interface",
            "127.0.0.3",
            "-A",
            "curl/8.1.2",
            "-b",
            jar_s,
            "--resolve",
            &resolve,
            &u3,
        ],
    );
    let raw = std::fs::read_to_string(jar)
        .unwrap()
        .lines()
        .find(|l| l.contains("\tsessionid\t"))
        .and_then(|l| l.rsplit('\t').next().map(str::to_owned))
        .expect("the app issued a session cookie");
    assert!(raw.len() >= 40, "unexpected session ID length");
    raw
}

/// A session that logs out (its age is observed when it ends), then a
/// malformed request over TLS (a counted parse error). Returns the raw ID.
fn logout_and_malformed(curl_bin: &Path, tls_port: u16, jar: &Path) -> String {
    let url = |p: &str| format!("https://shop.test:{tls_port}{p}");
    let resolve = format!("shop.test:{tls_port}:127.0.0.1");
    let jar_s = jar.to_str().unwrap();
    let (home, logout) = (url("/"), url("/logout"));
    let visit = |target: &str| {
        curl(
            curl_bin,
            &[
                "--interface",
                "127.0.0.4",
                "-A",
                FIREFOX,
                "--resolve",
                &resolve,
                "-c",
                jar_s,
                "-b",
                jar_s,
                target,
            ],
        );
    };
    visit(&home);
    // Read before the logout: its deletion cookie removes it from the jar.
    let raw = std::fs::read_to_string(jar)
        .unwrap()
        .lines()
        .find(|l| l.contains("\tsessionid\t"))
        .and_then(|l| l.rsplit('\t').next().map(str::to_owned))
        .expect("the app issued a session cookie");
    assert!(raw.len() >= 40, "unexpected session ID length");
    visit(&logout);
    // A method with a space is not HTTP: nginx answers 400, the agent's
    // HTTP/1 parser counts it.
    curl(
        curl_bin,
        &[
            "--interface",
            "127.0.0.4",
            "--resolve",
            &resolve,
            "-X",
            "BAD METHOD",
            &home,
        ],
    );
    raw
}

/// Findings the agent wrote as JSON lines to its stdout so far.
fn findings(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A Grafana expression as Prometheus sees it with every node and service
/// selected (as in tests/dashboards.rs).
fn substitute(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$node", ".*")
        .replace("$service", ".*");
    match expr.strip_prefix("label_values(") {
        Some(rest) => rest
            .rsplit_once(',')
            .map(|(sel, _)| sel.to_owned())
            .unwrap_or(rest.to_owned()),
        None => expr,
    }
}

#[test]
fn soc_surfaces_see_live_hijack_and_fixation() {
    let started = Instant::now();
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (eBPF needs it)".to_string());
    }
    if !sessionwatch::capture::object_embedded() {
        missing.push("the eBPF object (run through `cargo xtask test`)".into());
    }
    let names = ["nginx", "openssl", "curl", "python3", "prometheus"];
    let mut tools: Vec<Option<PathBuf>> = names.iter().map(|t| find_tool(t)).collect();
    tools.push(find_tool("prometheus-alertmanager").or_else(|| find_tool("alertmanager")));
    for (t, p) in names.iter().chain(&["prometheus-alertmanager"]).zip(&tools) {
        if p.is_none() {
            missing.push((*t).to_string());
        }
    }
    if skip_if_missing("soc_e2e", &missing) {
        return;
    }
    let [nginx, openssl, curl_bin, python, prometheus, alertmanager] =
        [0, 1, 2, 3, 4, 5].map(|i| tools[i].clone().unwrap());

    // Declared first: dropped (removed) after every process guard below.
    let tmp = tempfile::Builder::new()
        .prefix("sessionwatch-soc-e2e-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_owned();
    let (admin_port, prom_port, am_port) = (free_port(), free_port(), free_port());

    // Alertmanager: temp storage, loopback web, clustering off (an empty
    // --cluster.listen-address disables gossip), a do-nothing receiver.
    std::fs::write(
        dir.join("alertmanager.yml"),
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("am-data")).unwrap();
    let _am = Guard(
        Command::new(&alertmanager)
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::fs::File::create(dir.join("am.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );

    // nginx as `nginx-soc`: the agent is restricted to it, so concurrent
    // e2e tests' servers are not captured.
    let shop = spawn_shop(
        &python,
        &nginx,
        &openssl,
        &dir.join("shop"),
        &ShopOptions {
            comm: NGINX_COMM,
            host: "shop.test",
            http2: false,
            http_directives: "",
        },
    );
    let tls_port = shop.tls_port;
    wait_for(
        "alertmanager ready",
        Duration::from_secs(20),
        || match get(am_port, "/-/ready") {
            Some((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // The agent, started after nginx (its sockets and workers are found
    // through /proc): findings as JSON lines on stdout, pushed to
    // Alertmanager with a short backoff.
    std::fs::write(
        dir.join("sw.toml"),
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n\
             [capture]\nprocesses = [\"{NGINX_COMM}\"]\n\n\
             [alerting]\njson = \"-\"\nalertmanager_url = \"http://127.0.0.1:{am_port}\"\n\
             timeout = \"2s\"\nmax_backoff = \"1s\"\n"
        ),
    )
    .unwrap();
    let agent_out = dir.join("agent.out");
    let agent_err = dir.join("agent.err");
    let mut agent = spawn_ready_agent(&dir, admin_port, Duration::from_secs(30), |c| {
        c.env("NODE_NAME", NODE);
    });

    // Prometheus: scrapes the agent every second as job "sessionwatch",
    // evaluates the repo's rules file unchanged (the hijack and fixation
    // rules have no `for:`), and sends its alerts to the Alertmanager.
    let rules = repo().join("dashboards/sessionwatch-rules.yml");
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: sessionwatch\n    static_configs:\n      \
             - targets: ['127.0.0.1:{admin_port}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let _prom = Guard(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );
    wait_for(
        "prometheus scraping the agent",
        Duration::from_secs(20),
        || {
            let v = query(prom_port, "up{job=\"sessionwatch\"} == 1");
            match v["data"]["result"].as_array() {
                Some(r) if !r.is_empty() => Ok(()),
                _ => Err(v.to_string()),
            }
        },
    );

    // One hijack and one fixation on a fresh agent. Their
    // `sessionwatch_findings_total` series come into existence at 1, so this
    // also proves the rules fire on a counter's first appearance (a plain
    // `increase() > 0` would stay at 0 and never fire).
    let raw1 = attack(&curl_bin, tls_port, &dir.join("jar1"));
    let raw_logout = logout_and_malformed(&curl_bin, tls_port, &dir.join("jar-logout"));
    // (1) The Prometheus alerts fire.
    let firing = wait_for("prometheus alerts firing", Duration::from_secs(20), || {
        let v = get_json(prom_port, "/api/v1/alerts");
        let firing: Vec<Value> = v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .cloned()
            .collect();
        let has = |n: &str| firing.iter().any(|a| a["labels"]["alertname"] == n);
        if has("SessionWatchHijackSuspected") && has("SessionWatchSessionFixation") {
            Ok(firing)
        } else {
            Err(v.to_string())
        }
    });
    for (alert, detector) in [
        ("SessionWatchHijackSuspected", "session_fingerprint_change"),
        ("SessionWatchSessionFixation", "no_rotation_after_login"),
    ] {
        let a = firing
            .iter()
            .find(|a| a["labels"]["alertname"] == alert)
            .unwrap();
        assert_eq!(a["labels"]["severity"], "critical", "{a}");
        assert_eq!(a["labels"]["service"], NGINX_COMM, "{a}");
        assert_eq!(a["labels"]["detector"], detector, "{a}");
        assert_eq!(a["labels"]["job"], "sessionwatch", "{a}");
        assert_eq!(a["labels"]["instance"], format!("127.0.0.1:{admin_port}"));
        assert!(
            a["annotations"]["runbook_url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("docs/detectors.md#{detector}")),
            "{a}"
        );
    }
    let names: BTreeSet<&str> = firing
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    for quiet in [
        "SessionWatchAgentDown",
        "SessionWatchAgentAbsent",
        "SessionWatchNoTargetsAttached",
        "SessionWatchCaptureLosingEvents",
        "SessionWatchStaleSessionAccepted",
    ] {
        assert!(!names.contains(quiet), "{quiet} fired: {names:?}");
    }

    // (2) Alertmanager holds the agent's pushes: one per (session,
    // detector), i.e. one hijack and one fixation, with the evidence.
    let all_findings = findings(&agent_out);
    let am_alerts = wait_for(
        "agent alerts in alertmanager",
        Duration::from_secs(20),
        || {
            let v = get_json(am_port, "/api/v2/alerts");
            let pushed: Vec<Value> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["labels"]["node"] == NODE)
                .cloned()
                .collect();
            let count = |d: &str| {
                pushed
                    .iter()
                    .filter(|a| a["labels"]["detector"] == d)
                    .count()
            };
            if count("session_fingerprint_change") >= 1 && count("no_rotation_after_login") >= 1 {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        },
    );
    for (alertname, detector, client) in [
        (
            "SessionWatchSessionFingerprintChange",
            "session_fingerprint_change",
            "127.0.0.3",
        ),
        (
            "SessionWatchNoRotationAfterLogin",
            "no_rotation_after_login",
            "127.0.0.2",
        ),
    ] {
        let pushed: Vec<&Value> = am_alerts
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == alertname)
            .collect();
        assert_eq!(pushed.len(), 1, "{alertname}: {am_alerts:#}");
        for a in pushed {
            assert_eq!(a["labels"]["detector"], detector);
            assert_eq!(a["labels"]["severity"], "high");
            assert_eq!(a["labels"]["service"], NGINX_COMM);
            assert_eq!(a["labels"]["node"], NODE);
            assert_eq!(a["status"]["state"], "active");
            let f = all_findings
                .iter()
                .find(|f| f["detector"] == detector && f["session"] == a["labels"]["session"])
                .unwrap_or_else(|| panic!("no finding behind {a}"));
            assert_eq!(f["client"]["ip"], client);
            let evidence = serde_json::to_string(&f["evidence"]).unwrap();
            let description = a["annotations"]["description"].as_str().unwrap();
            assert!(
                description.contains(&evidence),
                "{description} lacks {evidence}"
            );
            assert!(description.contains(client), "{description}");
            assert!(!a["annotations"]["summary"].as_str().unwrap().is_empty());
            assert!(
                a["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("docs/detectors.md#{detector}")),
                "{a}"
            );
        }
    }
    // And Prometheus forwarded its own firing alerts there too.
    wait_for(
        "prometheus alerts in alertmanager",
        Duration::from_secs(20),
        || {
            let v = get_json(am_port, "/api/v2/alerts");
            let has = |n: &str| {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["labels"]["alertname"] == n)
            };
            if has("SessionWatchHijackSuspected") && has("SessionWatchSessionFixation") {
                Ok(())
            } else {
                Err(v.to_string())
            }
        },
    );

    // (3) Every dashboard expression is valid and returns data, unless it
    // only reads metrics this scenario never produces.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/sessionwatch.json")).unwrap(),
    )
    .unwrap();
    let (code, agent_metrics) = get(admin_port, "/metrics").unwrap();
    assert_eq!(code, 200);
    let exported = |name: &str| {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        agent_metrics
            .lines()
            .any(|l| l.starts_with(name) || l.starts_with(&format!("{family}{{")))
    };
    for name in PRODUCED_IN_SCENARIO {
        assert!(
            exported(name),
            "agent /metrics lacks {name}:\n{agent_metrics}"
        );
    }
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 12, "{exprs:?}");
    let (mut with_data, mut without) = (Vec::new(), Vec::new());
    for (title, expr) in &exprs {
        let promql = substitute(expr);
        // A family the agent exported moments ago may still await its
        // first scrape (1 s): give an empty answer a few seconds.
        let deadline = Instant::now() + Duration::from_secs(4);
        let result = loop {
            let v = query(prom_port, &promql);
            assert_eq!(v["status"], "success", "{title}: {promql}: {v}");
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            if !result.is_empty() || Instant::now() > deadline {
                break result;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        if result.is_empty() {
            let names = metric_names(expr);
            assert!(
                !names.is_empty()
                    && names
                        .iter()
                        .all(|n| !PRODUCED_IN_SCENARIO.contains(&n.as_str()) && !exported(n)),
                "{title}: no data for {promql} (agent /metrics:\n{agent_metrics})"
            );
            without.push(format!("{title}: {promql}"));
        } else {
            with_data.push(format!("{title}: {promql}"));
        }
    }
    assert!(
        without.is_empty(),
        "dashboard expressions without data from Prometheus: {without:#?}"
    );
    eprintln!(
        "soc_e2e: {} dashboard expressions returned data:\n  {}\n\
         {} valid but empty (metric not exported by the agent in this scenario):\n  {}",
        with_data.len(),
        with_data.join("\n  "),
        without.len(),
        without.join("\n  ")
    );

    // (4) No raw session ID anywhere: Prometheus' scraped series (names,
    // labels, values), Alertmanager's alerts (both sources), agent output.
    let series = query(prom_port, "{job=\"sessionwatch\"}").to_string();
    assert!(series.contains("sessionwatch_findings_total"), "{series}");
    let am_all = get(am_port, "/api/v2/alerts").unwrap().1;
    let prom_alerts = get(prom_port, "/api/v1/alerts").unwrap().1;
    // A clean stop (exit 0 on SIGTERM) flushes the agent's output.
    let t = Instant::now();
    let status = agent.stop_within(Duration::from_secs(20));
    eprintln!("soc_e2e: agent stopped in {:.1?}", t.elapsed());
    assert!(
        status.is_some_and(|s| s.success()),
        "agent did not stop cleanly on SIGTERM: {status:?}"
    );
    let out = std::fs::read_to_string(&agent_out).unwrap();
    let err = std::fs::read_to_string(&agent_err).unwrap();
    for raw in [&raw1, &raw_logout] {
        for (what, text) in [
            ("Prometheus series", &series),
            ("Alertmanager alerts", &am_all),
            ("Prometheus alerts", &prom_alerts),
            ("agent stdout", &out),
            ("agent stderr", &err),
        ] {
            assert!(!text.contains(raw.as_str()), "raw session ID in {what}");
        }
    }
    eprintln!("soc_e2e: done in {:.1?}", started.elapsed());
}
