//! End-to-end over HTTP/2 with a second client implementation: the real
//! `sessionwatch run` binary captures TLS traffic at a real nginx
//! (`listen … ssl http2`; Debian 12's nginx 1.22 predates the `http2 on`
//! directive) driven by tests/fixtures/h2client.py — python3-h2 (hyper-h2)
//! and its own HPACK encoder, independent of curl's nghttp2 that
//! tests/live_e2e.rs uses.
//!
//! 1. [`h2_second_client_fixation_and_hijack`]: the journey of the curl
//!    test (a session, a login that keeps it, the cookie replayed from
//!    another address and client): `no_rotation_after_login` and
//!    `session_fingerprint_change`, both high, exactly once, four HTTP/2
//!    exchanges, no HTTP/2 parse error.
//! 2. [`h2_capture_started_inside_long_lived_connections`]: connections are
//!    opened and their HPACK dynamic tables filled *before* the agent
//!    starts. Requests on them afterwards reference table entries the agent
//!    never saw: they are counted skips (`midstream_join`, `hpack_index`)
//!    and produce no exchange at all — not a wrong one. A dynamic table size
//!    update (to 0 and back) on one old connection resynchronises it: its
//!    next requests are decoded; new connections are decoded from their
//!    first byte. The findings come out right.
//!
//! Isolation from other tests running on the same loopback: nginx runs
//! from a copy of its binary named `nginx-h2e2e` and the agent captures only
//! that process (`[capture] processes`), on ports picked at run time, under
//! a host mapped to its own service.
//!
//! Needs root, the embedded eBPF object, nginx, openssl and a python3 with
//! the `h2` package (Debian `python3-h2`). Without them it prints a loud
//! SKIP line (or fails when `CI` or `SESSIONWATCH_E2E_REQUIRED=1` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The process name the agent is restricted to.
const NGINX_COMM: &str = "nginx-h2e2e";
/// Host (and service) of this test's traffic.
const HOST: &str = "h2.shop.test";
const SERVICE: &str = "h2shop";
const ATTACKER_UA: &str = "python-httpx/0.23.3";

/// Both tests start their own agent restricted to `nginx-h2e2e`, so each
/// would see the other's traffic: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Tools {
    nginx: PathBuf,
    openssl: PathBuf,
    python: PathBuf,
}

/// A python3 that can `import h2`: Debian's first (python3-h2 installs
/// there), then whatever `python3` is on PATH.
fn python_with_h2() -> Option<PathBuf> {
    [
        Some(PathBuf::from("/usr/bin/python3")),
        find_tool("python3"),
    ]
    .into_iter()
    .flatten()
    .filter(|p| p.is_file())
    .find(|p| {
        Command::new(p)
            .args(["-c", "import h2.connection, hpack"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The tools, or a SKIP (a failure under CI).
fn preconditions(test: &str) -> Option<Tools> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (eBPF needs it)".to_string());
    }
    if !sessionwatch::capture::object_embedded() {
        missing.push("the eBPF object (run through `cargo xtask test`)".into());
    }
    let nginx = find_tool("nginx");
    let openssl = find_tool("openssl");
    let python = python_with_h2();
    for (name, p) in [("nginx", nginx.is_some()), ("openssl", openssl.is_some())] {
        if !p {
            missing.push(name.into());
        }
    }
    if python.is_none() {
        missing.push("python3 with h2 (Debian python3-h2)".into());
    }
    if skip_if_missing(test, &missing) {
        return None;
    }
    Some(Tools {
        nginx: nginx?,
        openssl: openssl?,
        python: python?,
    })
}

/// nginx (TLS + HTTP/2) in front of the common session app, running as
/// `nginx-h2e2e` in its own directory. Long keepalive: the connections of
/// the mid-stream test stay open while the agent starts.
fn start_server(tools: &Tools, tag: &str) -> ShopServer {
    let dir =
        std::env::temp_dir().join(format!("sessionwatch-h2-e2e-{tag}-{}", std::process::id()));
    spawn_shop(
        &tools.python,
        &tools.nginx,
        &tools.openssl,
        &dir,
        &ShopOptions {
            comm: NGINX_COMM,
            host: HOST,
            http2: true,
            http_directives: "keepalive_timeout 300s;",
        },
    )
}

/// The live agent, restricted to `nginx-h2e2e`, findings to a file.
struct Agent {
    guard: Guard,
    admin_port: u16,
    findings: PathBuf,
    dir: PathBuf,
}

fn start_agent(dir: &Path) -> Agent {
    let admin_port = free_port();
    let findings = dir.join("findings.jsonl");
    std::fs::write(
        dir.join("sw.toml"),
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [capture]\nprocesses = [\"{NGINX_COMM}\"]\n\
             [[services]]\nname = \"{SERVICE}\"\nhosts = [\"{HOST}\"]\n"
        ),
    )
    .unwrap();
    let guard = spawn_ready_agent(dir, admin_port, Duration::from_secs(60), |c| {
        c.arg("--alerts").arg(&findings);
    });
    Agent {
        guard,
        admin_port,
        findings,
        dir: dir.to_owned(),
    }
}

impl Agent {
    fn metrics(&self) -> String {
        let (status, text) = http_get(self.admin_port, "/metrics");
        assert_eq!(status, 200);
        text
    }

    /// Value of one sample (labels in Prometheus' sorted order), 0 if absent.
    fn sample(&self, metrics: &str, name_and_labels: &str) -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
            .unwrap_or(0)
    }

    fn findings(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.findings)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until `done(findings)` holds (the agent drains the ring every
    /// 10 ms; 20 s is generous).
    fn wait_findings(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let f = self.findings();
            if done(&f) {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not there after 20 s: {f:#?}\nmetrics:\n{}\nagent log (tail):\n{}",
                self.metrics(),
                tail(&std::fs::read_to_string(self.dir.join("agent.err")).unwrap_or_default())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM: exit 0 within 20 s.
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(self.guard.0.id() as i32, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.guard.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "agent exit status {status}");
    }
}

fn tail(s: &str) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(40)..].join("\n")
}

/// tests/fixtures/h2client.py, driven over its stdin/stdout.
struct H2Client {
    _guard: Guard,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl H2Client {
    fn start(python: &Path, tls_port: u16) -> H2Client {
        let mut child = Command::new(python)
            .arg(repo().join("tests/fixtures/h2client.py"))
            .args(["--connect", "127.0.0.1", "--port"])
            .arg(tls_port.to_string())
            .arg("--authority")
            .arg(format!("{HOST}:{tls_port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        H2Client {
            _guard: Guard(child),
            stdin,
            stdout,
        }
    }

    fn call(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("h2client answered {line:?} to {cmd}: {e}"));
        assert!(v.get("error").is_none(), "h2client: {cmd} -> {v}");
        v
    }

    fn open(&mut self, conn: &str, source: &str) {
        self.call(json!({"op": "open", "conn": conn, "source": source}));
    }

    /// One request; returns (status, the `sessionid` it set, if any).
    fn request(
        &mut self,
        conn: &str,
        method: &str,
        path: &str,
        ua: &str,
        cookie: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Option<String>) {
        let mut headers = vec![json!(["user-agent", ua])];
        if let Some(c) = cookie {
            headers.push(json!(["cookie", c]));
        }
        let v = self.call(json!({
            "op": "request", "conn": conn, "method": method, "path": path,
            "headers": headers, "body": body,
        }));
        let status = v["status"].as_u64().unwrap() as u16;
        let sid = v["headers"].as_array().unwrap().iter().find_map(|h| {
            let (k, val) = (h[0].as_str()?, h[1].as_str()?);
            (k == "set-cookie")
                .then(|| val.strip_prefix("sessionid=")?.split(';').next())
                .flatten()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        });
        (status, sid)
    }
}

/// No finding, log line or metric carries the raw ID.
fn assert_no_raw_id(agent: &Agent, metrics: &str, raw: &str) {
    assert!(raw.len() >= 40, "the app issues 43-character IDs");
    assert!(!metrics.contains(raw), "raw session ID in /metrics");
    for f in ["findings.jsonl", "agent.out", "agent.err"] {
        let text = std::fs::read_to_string(agent.dir.join(f)).unwrap_or_default();
        assert!(!text.contains(raw), "raw session ID leaked into {f}");
    }
}

fn exchanges_sample() -> String {
    format!(
        "sessionwatch_http_exchanges_total{{protocol=\"http2\",service=\"{SERVICE}\",tls=\"true\"}}"
    )
}

fn parse_error_sample(kind: &str) -> String {
    format!("sessionwatch_parse_errors_total{{kind=\"{kind}\",protocol=\"http2\"}}")
}

fn one(findings: &[Value], detector: &str) -> Value {
    let of: Vec<&Value> = findings
        .iter()
        .filter(|f| f["detector"] == detector)
        .collect();
    assert_eq!(of.len(), 1, "exactly one {detector}: {findings:#?}");
    of[0].clone()
}

#[test]
fn h2_second_client_fixation_and_hijack() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tools) = preconditions("h2_second_client_fixation_and_hijack") else {
        return;
    };
    let server = start_server(&tools, "client");
    let agent = start_agent(&server.dir);
    let mut c = H2Client::start(&tools.python, server.tls_port);

    // Victim: a session, a login that keeps it, the account page.
    c.open("victim", "127.0.0.2");
    let (st, sid) = c.request("victim", "GET", "/", FIREFOX, None, None);
    assert_eq!(st, 200);
    let sid = sid.expect("the app issued a session cookie");
    let cookie = format!("sessionid={sid}");
    let (st, _) = c.request(
        "victim",
        "POST",
        "/login",
        FIREFOX,
        Some(&cookie),
        Some("username=alice&password=secret"),
    );
    assert_eq!(st, 302);
    let (st, _) = c.request("victim", "GET", "/account", FIREFOX, Some(&cookie), None);
    assert_eq!(st, 200);
    c.call(json!({"op": "close", "conn": "victim"}));
    // Attacker: the cookie from another address and client.
    c.open("attacker", "127.0.0.3");
    let (st, _) = c.request(
        "attacker",
        "GET",
        "/account",
        ATTACKER_UA,
        Some(&cookie),
        None,
    );
    assert_eq!(st, 200);
    c.call(json!({"op": "close", "conn": "attacker"}));

    agent.wait_findings("both findings", |f| {
        let has = |d: &str| f.iter().any(|x| x["detector"] == d);
        has("no_rotation_after_login") && has("session_fingerprint_change")
    });
    // Let anything late arrive before counting.
    std::thread::sleep(Duration::from_millis(500));
    let findings = agent.findings();
    let login = one(&findings, "no_rotation_after_login");
    assert_eq!(login["severity"], "high");
    assert_eq!(login["service"], SERVICE);
    assert_eq!(login["client"]["ip"], "127.0.0.2");
    assert_eq!(login["request"]["method"], "POST");
    assert_eq!(login["request"]["path"], "/login");
    assert_eq!(login["request"]["status"], 302);
    assert_eq!(
        login["request"]["host"],
        format!("{HOST}:{}", server.tls_port)
    );
    let hijack = one(&findings, "session_fingerprint_change");
    assert_eq!(hijack["severity"], "high");
    assert_eq!(hijack["client"]["ip"], "127.0.0.3");
    assert_eq!(hijack["client"]["user_agent"], ATTACKER_UA);
    assert_eq!(hijack["session"], login["session"]);

    let metrics = agent.metrics();
    assert_eq!(
        agent.sample(&metrics, &exchanges_sample()),
        4,
        "four HTTP/2 exchanges:\n{metrics}"
    );
    for line in metrics.lines().filter(|l| {
        l.starts_with("sessionwatch_parse_errors_total") && l.contains("protocol=\"http2\"")
    }) {
        assert!(line.ends_with(" 0"), "HTTP/2 parse error: {line}");
    }
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("sessionwatch_capture_lost_total"))
    {
        assert!(line.ends_with(" 0"), "capture lost something: {line}");
    }
    assert_no_raw_id(&agent, &metrics, &sid);
    drop(c);
    agent.stop();
    let _ = std::fs::remove_dir_all(&server.dir);
}

#[test]
fn h2_capture_started_inside_long_lived_connections() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tools) = preconditions("h2_capture_started_inside_long_lived_connections") else {
        return;
    };
    let server = start_server(&tools, "midstream");
    let mut c = H2Client::start(&tools.python, server.tls_port);

    // Before the agent: two long-lived connections of the victim fill
    // their HPACK dynamic tables (authority, user-agent, the cookie — more
    // than 20 bytes, so hyper-h2 indexes it — and the paths).
    c.open("resynced", "127.0.0.2");
    let (st, sid) = c.request("resynced", "GET", "/", FIREFOX, None, None);
    assert_eq!(st, 200);
    let sid = sid.expect("the app issued a session cookie");
    let cookie = format!("sessionid={sid}");
    c.open("stale", "127.0.0.2");
    for conn in ["resynced", "stale"] {
        for _ in 0..2 {
            let (st, _) = c.request(conn, "GET", "/account", FIREFOX, Some(&cookie), None);
            assert_eq!(st, 200);
        }
    }

    let agent = start_agent(&server.dir);

    // Old connections, same headers: every field is a dynamic-table
    // reference the agent cannot resolve. Counted skips, no exchange.
    for conn in ["resynced", "stale"] {
        for _ in 0..2 {
            let (st, _) = c.request(conn, "GET", "/account", FIREFOX, Some(&cookie), None);
            assert_eq!(st, 200);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let m = agent.metrics();
        if agent.sample(&m, &parse_error_sample("hpack_index")) >= 4 {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no hpack_index skips counted after 20 s:\n{m}\nagent log (tail):\n{}",
            tail(&std::fs::read_to_string(server.dir.join("agent.err")).unwrap_or_default())
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        agent.sample(&metrics, &parse_error_sample("midstream_join")),
        2,
        "both old connections joined mid-stream:\n{metrics}"
    );
    assert_eq!(
        agent.sample(&metrics, &exchanges_sample()),
        0,
        "undecodable requests must not become exchanges:\n{metrics}"
    );
    assert!(agent.findings().is_empty(), "{:#?}", agent.findings());

    // Resynchronised by a table size update (0, then back to 4096): the
    // next requests on that old connection decode completely.
    c.call(json!({"op": "resync", "conn": "resynced"}));
    for _ in 0..2 {
        let (st, _) = c.request("resynced", "GET", "/account", FIREFOX, Some(&cookie), None);
        assert_eq!(st, 200);
    }
    // The other old connection still cannot be decoded.
    let (st, _) = c.request("stale", "GET", "/account", FIREFOX, Some(&cookie), None);
    assert_eq!(st, 200);

    // New connections decode from their first byte: the attacker replays
    // the victim's cookie; a second user logs in without rotation.
    c.open("attacker", "127.0.0.3");
    let (st, _) = c.request(
        "attacker",
        "GET",
        "/account",
        ATTACKER_UA,
        Some(&cookie),
        None,
    );
    assert_eq!(st, 200);
    c.open("user2", "127.0.0.5");
    let (st, sid2) = c.request("user2", "GET", "/", FIREFOX, None, None);
    assert_eq!(st, 200);
    let cookie2 = format!("sessionid={}", sid2.expect("a second session"));
    let (st, _) = c.request(
        "user2",
        "POST",
        "/login",
        FIREFOX,
        Some(&cookie2),
        Some("username=bob&password=secret"),
    );
    assert_eq!(st, 302);

    agent.wait_findings("fingerprint change and no rotation", |f| {
        let has = |d: &str| f.iter().any(|x| x["detector"] == d);
        has("no_rotation_after_login") && has("session_fingerprint_change")
    });
    std::thread::sleep(Duration::from_millis(500));
    let findings = agent.findings();
    let hijack = one(&findings, "session_fingerprint_change");
    assert_eq!(hijack["severity"], "high");
    assert_eq!(hijack["client"]["ip"], "127.0.0.3");
    assert_eq!(hijack["request"]["path"], "/account");
    assert_eq!(hijack["evidence"]["previous_ip"], "127.0.0.2", "{hijack:#}");
    let login = one(&findings, "no_rotation_after_login");
    assert_eq!(login["client"]["ip"], "127.0.0.5");
    assert_eq!(login["request"]["path"], "/login");
    assert_ne!(login["session"], hijack["session"]);
    assert_eq!(findings.len(), 2, "nothing else: {findings:#?}");

    let metrics = agent.metrics();
    // 2 on the resynchronised connection + 1 attacker + 2 of user2.
    assert_eq!(
        agent.sample(&metrics, &exchanges_sample()),
        5,
        "exactly the decodable requests are exchanges:\n{metrics}"
    );
    assert!(
        agent.sample(&metrics, &parse_error_sample("hpack_index")) >= 5,
        "the stale connection's request after the resync is skipped too:\n{metrics}"
    );
    assert_eq!(
        agent.sample(&metrics, &parse_error_sample("midstream_join")),
        2
    );
    for kind in ["hpack", "hpack_table_size", "frame", "invalid_preface"] {
        assert_eq!(
            agent.sample(&metrics, &parse_error_sample(kind)),
            0,
            "{kind}:\n{metrics}"
        );
    }
    assert_no_raw_id(&agent, &metrics, &sid);
    c.call(json!({"op": "close", "conn": "resynced"}));
    drop(c);
    agent.stop();
    let _ = std::fs::remove_dir_all(&server.dir);
}
