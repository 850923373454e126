//! Faults around a running `sessionwatch run` agent, with real nginx TLS
//! terminators, real curl/openssl clients and `bpftool`:
//!
//! 1. worker churn: `SIGHUP` reloads (new workers, old ones exiting after
//!    their keep-alive connections) while traffic flows, then every worker
//!    killed with SIGKILL while holding open keep-alive connections; every
//!    answered request is counted exactly once, nothing is lost, and the
//!    kernel connection table holds no entry of a dead process afterwards;
//! 2. a TLS library replaced by a new version (new file written and
//!    renamed over the old: a new inode) and the proxy restarted: the agent
//!    hooks the new inode by itself and captures — after it dropped its
//!    capabilities (checked on every thread in `/proc/PID/task/*/status`),
//!    which proves the kept set suffices to hook new processes — and, once
//!    no process maps the old inode, detaches its probes (perf links of the
//!    agent counted from `/proc/PID/fdinfo`);
//! 3. the agent killed with SIGKILL: its BPF programs, links, maps and perf
//!    events are gone (`bpftool`), and a restarted agent captures again;
//! 4. the Prometheus scraper gone bad: scrapers that stop reading and a
//!    flood of idle connections never stall capture and analysis, the
//!    endpoint recovers by itself and its file descriptors return to the
//!    baseline;
//! 5. a ring buffer too small for the big TLS responses of one keep-alive
//!    connection: the records lost while the kernel's per-thread connection
//!    cache serves the connection still become gaps of exactly the lost
//!    length (bytes + gaps = what nginx sent, to the byte).
//!
//! Isolation from other traffic on the machine: each scenario runs its own
//! copy of the nginx binary under a distinctive name and the agent only
//! captures processes of that name (`capture.processes`), so the exchange
//! counts are exact. Ring-buffer overflow on the plain hop (exact gaps,
//! counted) is covered by `capture_e2e` (5. covers the TLS hop), Alertmanager
//! outages by `dashboards`.
//!
//! Needs root, the embedded eBPF object, nginx, openssl, curl and bpftool;
//! without them it prints a loud SKIP line (or fails when `CI` or
//! `SESSIONWATCH_E2E_REQUIRED=1` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The scenarios each run an agent and an nginx; one at a time keeps the
/// two shared cores for the processes under test.
static SERIAL: Mutex<()> = Mutex::new(());

const LIBSSL: &str = "/lib/x86_64-linux-gnu/libssl.so.3";

struct Tools {
    nginx: PathBuf,
    openssl: PathBuf,
    curl: PathBuf,
    bpftool: PathBuf,
}

fn preconditions(test: &str) -> Option<Tools> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (eBPF needs it)".to_string());
    }
    if !sessionwatch::capture::object_embedded() {
        missing.push("the eBPF object (run through `cargo xtask test`)".into());
    }
    let names = ["nginx", "openssl", "curl", "bpftool"];
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| find_tool(n)).collect();
    for (n, p) in names.iter().zip(&found) {
        if p.is_none() {
            missing.push((*n).to_string());
        }
    }
    if !Path::new(LIBSSL).is_file() {
        missing.push(format!("{LIBSSL} (libssl3)"));
    }
    if skip_if_missing(&format!("faults_e2e::{test}"), &missing) {
        return None;
    }
    if !Path::new("/sys/kernel/tracing/events").is_dir() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
    let [nginx, openssl, curl, bpftool] = [0, 1, 2, 3].map(|i| found[i].clone().unwrap());
    Some(Tools {
        nginx,
        openssl,
        curl,
        bpftool,
    })
}

// ---------------------------------------------------------------------------
// nginx under a distinctive name.

/// An nginx master with its workers, in a process group of its own; the
/// whole group is killed on drop.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn master(&self) -> i32 {
        self.child.id() as i32
    }

    /// Worker pids (children of the master).
    fn workers(&self) -> BTreeSet<u32> {
        let master = self.master();
        let mut out = BTreeSet::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            // state ppid ...; zombies are not workers any more.
            if fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(master)
                && fields.first() != Some(&"Z")
            {
                out.insert(pid);
            }
        }
        out
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.master(), sig) };
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-self.master(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

struct Lab {
    tmp: tempfile::TempDir,
    tools: Tools,
    /// The copied nginx binary; its file name is the process name (comm).
    nginx_bin: PathBuf,
    comm: &'static str,
    tls_port: u16,
    admin_port: u16,
}

impl Lab {
    fn new(tools: Tools, comm: &'static str, worker_processes: u32) -> Lab {
        assert!(comm.len() <= 15, "comm is cut at 15 bytes");
        let tmp = tempfile::Builder::new()
            .prefix("sessionwatch-faults-")
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        for sub in ["logs", "tmp", "lib"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let nginx_bin = dir.join(comm);
        std::fs::copy(&tools.nginx, &nginx_bin).unwrap();
        let st = Command::new(&tools.openssl)
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=faults.test", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl req failed");
        let lab = Lab {
            tmp,
            tools,
            nginx_bin,
            comm,
            tls_port: free_port(),
            admin_port: free_port(),
        };
        // Workers run as nginx' compiled-in unprivileged user, as in
        // production: the agent reads their /proc entries with
        // CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only.
        let t = lab.p("tmp");
        let conf = format!(
            "worker_processes {worker_processes};\nevents {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n keepalive_requests 100000;\n keepalive_timeout 60s;\n\
             client_body_temp_path {t}/body;\n proxy_temp_path {t}/proxy;\n\
             fastcgi_temp_path {t}/fcgi;\n uwsgi_temp_path {t}/uwsgi;\n scgi_temp_path {t}/scgi;\n\
             server {{\n  listen 127.0.0.1:{port} ssl;\n  server_name faults.test;\n\
             ssl_certificate {d}/cert.pem;\n  ssl_certificate_key {d}/key.pem;\n\
             location = /big {{ alias {d}/big.bin; default_type application/octet-stream; }}\n\
             location / {{ return 200 \"fault-ok $request_uri\\n\"; }}\n }}\n}}\n",
            t = t.display(),
            d = lab.tmp.path().display(),
            port = lab.tls_port,
        );
        std::fs::write(lab.p("nginx.conf"), conf).unwrap();
        lab
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// Starts the nginx copy; `lib_dir` puts a private libssl first.
    fn nginx(&self, lib_dir: Option<&Path>) -> Nginx {
        let mut cmd = Command::new(&self.nginx_bin);
        cmd.arg("-p")
            .arg(self.tmp.path())
            .arg("-c")
            .arg(self.p("nginx.conf"))
            .args(["-g", "daemon off; pid nginx.pid; error_log logs/error.log;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0);
        if let Some(l) = lib_dir {
            cmd.env("LD_LIBRARY_PATH", l);
        }
        let child = cmd.spawn().expect("start nginx");
        let n = Nginx { child };
        wait_port(self.tls_port);
        n
    }

    /// Starts the agent capturing only this lab's nginx; waits for /readyz.
    fn agent(&self, tag: &str) -> Agent {
        std::fs::write(
            self.p("sw.toml"),
            format!(
                "[admin]\nlisten = \"127.0.0.1:{}\"\n\n[alerting]\njson = \"{}\"\n\n\
                 [capture]\nprocesses = [\"{}\"]\nrescan_interval = \"2s\"\nwait_for_targets = true\n",
                self.admin_port,
                self.p(&format!("findings-{tag}.jsonl")).display(),
                self.comm
            ),
        )
        .unwrap();
        let err = self.p(&format!("agent-{tag}.err"));
        let child = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
            .args(["--log-level", "info", "run", "--config"])
            .arg(self.p("sw.toml"))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let mut agent = Agent {
            guard: Guard(child),
            err,
            port: self.admin_port,
        };
        agent.wait_ready();
        agent
    }

    /// One curl process sending `n` keep-alive GETs; the number answered 200.
    fn curl(&self, tag: &str, n: usize) -> usize {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("https://faults.test:{}/f/{tag}/{i}", self.tls_port))
            .collect();
        let out = Command::new(&self.tools.curl)
            .args(["-sk", "--http1.1", "--max-time", "30"])
            .args([
                "--resolve",
                &format!("faults.test:{}:127.0.0.1", self.tls_port),
            ])
            .args(["-w", "%{http_code}\\n", "-o", "/dev/null"])
            .args(&urls)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.trim() == "200")
            .count()
    }
}

// ---------------------------------------------------------------------------
// The agent and its metrics.

struct Agent {
    guard: Guard,
    err: PathBuf,
    port: u16,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.guard.0.id()
    }

    /// The agent's log without terminal colour sequences.
    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.err).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC [ ... final byte in @..~
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) && d != '[' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.guard.0.try_wait() {
                panic!("agent exited early ({st}): {}", self.log());
            }
            if let Some((200, _)) = http_get(self.port, "/readyz", Duration::from_secs(2)) {
                return;
            }
            assert!(Instant::now() < deadline, "agent not ready: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metrics(&self) -> String {
        http_get(self.port, "/metrics", Duration::from_secs(5))
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Sum of every series of a metric family.
    fn sum(&self, family: &str) -> u64 {
        metric_sum(&self.metrics(), family)
    }

    /// Waits until `family` sums to `want`, then checks it stays there (no
    /// double counting) and returns the final value.
    fn expect_total(&self, family: &str, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = self.sum(family);
        while seen < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            seen = self.sum(family);
        }
        std::thread::sleep(Duration::from_secs(1));
        seen = self.sum(family);
        assert_eq!(
            seen,
            want,
            "{family}: expected exactly {want}\n--- metrics ---\n{}\n--- agent log (tail) ---\n{}",
            self.metrics(),
            tail(&self.log(), 40)
        );
    }

    fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn metric_sum(text: &str, family: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// HTTP/1.0 GET on loopback: (status, body).
fn http_get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|b| b.1.to_owned())?;
    Some((code, body))
}

// ---------------------------------------------------------------------------
// bpftool views of what a process owns.

fn bpftool_json(tools: &Tools, args: &[&str]) -> Value {
    let out = Command::new(&tools.bpftool)
        .args(["-j"])
        .args(args)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Ids of the programs, links and maps `pid` holds file descriptors of,
/// from `/proc/PID/fdinfo` (works with any bpftool build, with or without
/// its `pids` support).
#[derive(Debug, Default)]
struct BpfOwned {
    progs: BTreeSet<u64>,
    links: BTreeSet<u64>,
    maps: BTreeSet<u64>,
    /// `perf` links: uprobes and tracepoints attached through perf events.
    perf_links: usize,
}

fn bpf_owned(pid: u32) -> BpfOwned {
    let mut out = BpfOwned::default();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(info) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(link) = field("link_id:") {
            out.links.insert(link);
            if info
                .lines()
                .any(|l| l.starts_with("link_type:") && l.contains("perf"))
            {
                out.perf_links += 1;
            }
        } else if let Some(prog) = field("prog_id:") {
            out.progs.insert(prog);
        } else if let Some(map) = field("map_id:") {
            out.maps.insert(map);
        }
    }
    out
}

fn existing_ids(tools: &Tools, what: &str) -> HashSet<u64> {
    bpftool_json(tools, &[what, "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["id"].as_u64())
        .collect()
}

/// tgids of the entries of the agent's kernel connection table (`CONNS`).
fn conns_tgids(tools: &Tools, agent: u32) -> Vec<u32> {
    let mine = bpf_owned(agent).maps;
    let Some(id) = bpftool_json(tools, &["map", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["name"] == "CONNS")
        .filter_map(|m| m["id"].as_u64())
        .find(|id| mine.contains(id))
    else {
        panic!("the agent's CONNS map is not visible to bpftool");
    };
    let dump = bpftool_json(tools, &["map", "dump", "id", &id.to_string()]);
    dump.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            // With BTF: {"key": {"tgid": N, "fd": M}, ...}; without:
            // {"key": ["0x..", ...]} (little-endian bytes, tgid first).
            let key = if e["formatted"].is_object() {
                &e["formatted"]["key"]
            } else {
                &e["key"]
            };
            if let Some(t) = key["tgid"].as_u64() {
                return u32::try_from(t).ok();
            }
            let bytes: Vec<u8> = key
                .as_array()?
                .iter()
                .take(4)
                .filter_map(|b| u8::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
                .collect();
            Some(u32::from_le_bytes(bytes.try_into().ok()?))
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
}

// ---------------------------------------------------------------------------
// 1. Worker churn and workers killed mid-connection.

/// An `openssl s_client` keep-alive connection that sent one request and
/// read its answer, then stays open.
struct OpenConn {
    child: Child,
    _stdin: ChildStdin,
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_conn(lab: &Lab, i: usize) -> OpenConn {
    let mut child = Command::new(&lab.tools.openssl)
        .args(["s_client", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{}", lab.tls_port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    write!(
        stdin,
        "GET /f/open/{i} HTTP/1.1\r\nHost: faults.test\r\n\r\n"
    )
    .unwrap();
    stdin.flush().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !line.contains("fault-ok") {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap_or(0) > 0 && Instant::now() < deadline,
            "s_client got no answer"
        );
    }
    OpenConn {
        child,
        _stdin: stdin,
    }
}

#[test]
fn worker_churn_and_killed_workers_keep_capture_exact() {
    let Some(tools) = preconditions("worker_churn_and_killed_workers_keep_capture_exact") else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(tools, "swflt-churn", 2);
    let nginx = lab.nginx(None);
    let agent = lab.agent("churn");
    let mut expected = lab.curl("warmup", 20) as u64;
    assert_eq!(expected, 20);
    agent.expect_total("sessionwatch_http_exchanges_total", expected);

    // Reloads while traffic flows: every reload forks new workers from the
    // master and lets the old ones finish their connections and exit.
    let before = nginx.workers();
    let stop = AtomicBool::new(false);
    let answered = std::thread::scope(|s| {
        let traffic = s.spawn(|| {
            let mut n = 0;
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                n += lab.curl(&format!("churn{round}"), 25);
                round += 1;
            }
            n
        });
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(700));
            nginx.signal(libc::SIGHUP);
        }
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        traffic.join().unwrap()
    });
    assert!(answered > 50, "traffic during reloads: {answered} answered");
    expected += answered as u64;
    // Old workers exit once their connections are done.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nginx.workers().intersection(&before).count() > 0 {
        assert!(Instant::now() < deadline, "old workers did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
    let after_reloads = nginx.workers();
    assert_eq!(after_reloads.len(), 2, "{after_reloads:?}");
    expected += lab.curl("after-reload", 20) as u64;
    agent.expect_total("sessionwatch_http_exchanges_total", expected);

    // Workers killed with SIGKILL while they hold keep-alive connections:
    // no close reaches the agent for those sockets.
    let conns: Vec<OpenConn> = (0..6).map(|i| open_conn(&lab, i)).collect();
    expected += conns.len() as u64;
    agent.expect_total("sessionwatch_http_exchanges_total", expected);
    let holders: BTreeSet<u32> = conns_tgids(&lab.tools, agent.pid()).into_iter().collect();
    assert!(
        holders.iter().any(|p| after_reloads.contains(p)),
        "kernel table should hold the open connections of the workers {after_reloads:?}: {holders:?}"
    );
    for w in &after_reloads {
        // SAFETY: kill(2) on a worker of our own nginx.
        unsafe { libc::kill(*w as i32, libc::SIGKILL) };
    }
    drop(conns);
    // The master starts new workers; traffic to them is captured.
    let deadline = Instant::now() + Duration::from_secs(10);
    while nginx.workers().len() < 2 || !nginx.workers().is_disjoint(&after_reloads) {
        assert!(Instant::now() < deadline, "nginx did not respawn workers");
        std::thread::sleep(Duration::from_millis(100));
    }
    expected += lab.curl("after-kill", 30) as u64;
    agent.expect_total("sessionwatch_http_exchanges_total", expected);
    assert_eq!(
        agent.sum("sessionwatch_capture_lost_total"),
        0,
        "{}",
        agent.metrics()
    );

    // No kernel connection entry of a dead process survives the periodic
    // clean-up (rescan_interval 2 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tgids = conns_tgids(&lab.tools, agent.pid());
        let dead: Vec<u32> = tgids.iter().copied().filter(|p| !alive(*p)).collect();
        if dead.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CONNS still holds entries of dead processes {dead:?} (all: {tgids:?})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !agent.log().contains("panicked"),
        "agent panicked: {}",
        agent.log()
    );
}

// ---------------------------------------------------------------------------
// 2. Library replaced (new inode), after the capability drop.

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(p).unwrap().ino()
}

/// Every thread of `pid` holds exactly `want` (effective, permitted,
/// bounding), nothing ambient, and has no_new_privs.
fn assert_caps(pid: u32, want: u64) {
    let tasks: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(!tasks.is_empty());
    for t in tasks {
        let status = std::fs::read_to_string(t.join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let v = u64::from_str_radix(&field(set), 16).unwrap();
            assert_eq!(v, want, "{} {set} {v:#x}, want {want:#x}", t.display());
        }
        assert_eq!(field("CapAmb:"), "0000000000000000", "{}", t.display());
        assert_eq!(field("NoNewPrivs:"), "1", "{}", t.display());
    }
}

#[test]
fn replaced_library_is_hooked_after_capabilities_are_dropped() {
    let Some(tools) = preconditions("replaced_library_is_hooked_after_capabilities_are_dropped")
    else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(tools, "swflt-libswap", 1);
    let lib_dir = lab.p("lib");
    let lib = lib_dir.join("libssl.so.3");
    std::fs::copy(LIBSSL, &lib).unwrap();
    let old_ino = ino(&lib);
    let nginx = lab.nginx(Some(&lib_dir));
    let agent = lab.agent("libswap");

    // CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19), CAP_PERFMON (38),
    // CAP_BPF (39), and CAP_SYS_ADMIN (21) where the kernel wants it to
    // create uprobes (the agent tries and logs it); nothing else, on every
    // thread, in every set.
    let mut keep = (1u64 << 2) | (1u64 << 19) | (1u64 << 38) | (1u64 << 39);
    if agent.log().contains("uprobes_need_sys_admin=true") {
        keep |= 1u64 << 21;
    } else {
        assert!(
            agent.log().contains("uprobes_need_sys_admin=false"),
            "{}",
            agent.log()
        );
    }
    assert_caps(agent.pid(), keep);
    assert!(
        agent.log().contains("capabilities dropped"),
        "{}",
        agent.log()
    );
    assert!(
        agent.log().contains(&format!("inode={old_ino}")),
        "the private libssl copy should be hooked: {}",
        agent.log()
    );
    let mut expected = lab.curl("old-lib", 15) as u64;
    assert_eq!(expected, 15);
    agent.expect_total("sessionwatch_http_exchanges_total", expected);
    let targets_before = agent.sum("sessionwatch_attached_targets");
    let links_one_file = bpf_owned(agent.pid()).perf_links;

    // A package upgrade: the new version is written beside the old one and
    // renamed over it (a new inode at the same path), then the proxy
    // restarts. Processes still running keep the old, now unlinked, inode.
    let staged = lib_dir.join(".libssl.so.3.dpkg-new");
    std::fs::copy(LIBSSL, &staged).unwrap();
    std::fs::rename(&staged, &lib).unwrap();
    let new_ino = ino(&lib);
    assert_ne!(old_ino, new_ino);
    drop(nginx);
    let _nginx = lab.nginx(Some(&lib_dir));
    // The exec is seen, the process rescanned and the new inode hooked —
    // with the reduced capability set.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.log().contains(&format!("inode={new_ino}")) {
        assert!(
            Instant::now() < deadline,
            "new inode {new_ino} not hooked: {}",
            tail(&agent.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.sum("sessionwatch_attached_targets") > targets_before);
    expected += lab.curl("new-lib", 15) as u64;
    agent.expect_total("sessionwatch_http_exchanges_total", expected);
    assert_eq!(agent.sum("sessionwatch_capture_lost_total"), 0);
    assert!(!agent.log().contains("could not hook"), "{}", agent.log());
    let links_two_files = bpf_owned(agent.pid()).perf_links;
    assert!(
        links_two_files > links_one_file,
        "the new inode's probes are perf links too: {links_one_file} → {links_two_files}"
    );

    // No process maps the old inode any more: after two full rescans its
    // probes are detached (they would pin the deleted file and its uprobe
    // registrations until the agent stops), and the new one keeps working.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent
        .log()
        .lines()
        .any(|l| l.contains("unhooked TLS library") && l.contains(&format!("inode={old_ino}")))
    {
        assert!(
            Instant::now() < deadline,
            "old inode {old_ino} not unhooked: {}",
            tail(&agent.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.sum("sessionwatch_attached_targets"), targets_before);
    assert_eq!(
        bpf_owned(agent.pid()).perf_links,
        links_one_file,
        "every probe of the old inode detached, none of the new one"
    );
    assert!(!agent.log().contains("could not detach"), "{}", agent.log());
    assert!(
        !agent
            .log()
            .lines()
            .any(|l| l.contains("unhooked TLS library") && l.contains(&format!("inode={new_ino}"))),
        "the mapped inode stays hooked: {}",
        agent.log()
    );
    expected += lab.curl("after-unhook", 15) as u64;
    agent.expect_total("sessionwatch_http_exchanges_total", expected);
    assert_eq!(agent.sum("sessionwatch_capture_lost_total"), 0);
    assert_caps(agent.pid(), keep);
}

// ---------------------------------------------------------------------------
// 3. SIGKILL of the agent.

#[test]
fn killed_agent_leaves_no_bpf_objects_and_restarts() {
    let Some(tools) = preconditions("killed_agent_leaves_no_bpf_objects_and_restarts") else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(tools, "swflt-sigkill", 1);
    let _nginx = lab.nginx(None);
    let mut agent = lab.agent("first");
    assert_eq!(lab.curl("first", 10), 10);
    agent.expect_total("sessionwatch_http_exchanges_total", 10);

    let pid = agent.pid();
    let owned = bpf_owned(pid);
    assert!(
        owned.progs.len() >= 10,
        "the agent should hold its programs: {owned:?}"
    );
    assert!(!owned.maps.is_empty(), "{owned:?}");
    // Uprobes and tracepoints are bpf_links of type perf (a perf event
    // with the program attached), owned through the agent's descriptors.
    assert!(owned.perf_links >= 10, "attachments: {owned:?}");
    let listed = existing_ids(&lab.tools, "link");
    assert!(
        owned.links.iter().all(|l| listed.contains(l)),
        "bpftool lists the agent's links"
    );

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = agent.guard.0.wait();
    // The kernel releases everything with the last file descriptor; freeing
    // is deferred (RCU, work queues), so allow a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let progs = existing_ids(&lab.tools, "prog");
        let links = existing_ids(&lab.tools, "link");
        let maps = existing_ids(&lab.tools, "map");
        let left_progs: Vec<_> = owned.progs.iter().filter(|i| progs.contains(i)).collect();
        let left_links: Vec<_> = owned.links.iter().filter(|i| links.contains(i)).collect();
        let left_maps: Vec<_> = owned.maps.iter().filter(|i| maps.contains(i)).collect();
        if left_progs.is_empty() && left_links.is_empty() && left_maps.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after SIGKILL: programs {left_progs:?}, links {left_links:?}, \
             maps {left_maps:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // No uprobe event left registered in tracefs on the agent's behalf.
    let events = std::fs::read_to_string("/sys/kernel/tracing/uprobe_events").unwrap_or_default();
    assert!(
        !events.contains(&format!("_{pid}_")),
        "uprobe_events still names the killed agent: {events}"
    );

    // A new agent attaches and captures again (exchange counters start anew).
    let agent2 = lab.agent("second");
    assert_eq!(lab.curl("second", 10), 10);
    agent2.expect_total("sessionwatch_http_exchanges_total", 10);
    assert_eq!(agent2.sum("sessionwatch_capture_lost_total"), 0);
}

// ---------------------------------------------------------------------------
// 4. Scrapers that stop reading, connection floods.

/// A scraper that pipelines many /metrics requests and never reads: the
/// agent's responses fill the socket buffers and its writes stall.
fn stuck_scraper(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    // Part of it may not fit while the agent's writes are stuck: fine.
    let _ = (&s).write_all(req.as_bytes());
    s
}

#[test]
fn stuck_scrapers_never_stall_the_pipeline() {
    let Some(tools) = preconditions("stuck_scrapers_never_stall_the_pipeline") else {
        return;
    };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(tools, "swflt-scrape", 1);
    let _nginx = lab.nginx(None);
    let agent = lab.agent("scrape");
    let mut expected = lab.curl("before", 10) as u64;
    agent.expect_total("sessionwatch_http_exchanges_total", expected);
    let fds_before = agent.fd_count();

    // Eight scrapers that never read.
    let stuck: Vec<TcpStream> = (0..8).map(|_| stuck_scraper(lab.admin_port)).collect();
    std::thread::sleep(Duration::from_millis(500));
    // Capture and analysis go on; a well-behaved scrape is still answered
    // at once.
    expected += lab.curl("stuck", 40) as u64;
    agent.expect_total("sessionwatch_http_exchanges_total", expected);
    let t = Instant::now();
    assert!(agent.metrics().contains("sessionwatch_build_info"));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "scrape took {:?}",
        t.elapsed()
    );

    // A flood of idle connections beyond the connection limit.
    let flood: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", lab.admin_port)).ok())
        .collect();
    expected += lab.curl("flood", 40) as u64;
    agent.expect_total("sessionwatch_http_exchanges_total", expected);
    // Idle and stalled connections are cut (header read timeout, write
    // stall timeout, 10 s each): the endpoint answers again by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(lab.admin_port, "/healthz", Duration::from_secs(1)).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "admin endpoint did not recover");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Every stuck connection is closed by the agent, and its descriptors
    // return to the baseline while the clients still hold their ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.fd_count() > fds_before + 2 {
        assert!(
            Instant::now() < deadline,
            "agent fds {} vs {fds_before} before the stuck scrapers",
            agent.fd_count()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(stuck);
    drop(flood);
    expected += lab.curl("after", 10) as u64;
    agent.expect_total("sessionwatch_http_exchanges_total", expected);
    assert_eq!(agent.sum("sessionwatch_capture_lost_total"), 0);
}

// ---------------------------------------------------------------------------
// 5. TLS ring-buffer loss on a cached connection.

/// Per connection, what reached the sink toward the client: bytes and gap
/// lengths.
#[derive(Default)]
struct ToClient {
    tls: std::collections::HashMap<u64, (u64, u64)>,
}

impl sessionwatch_streams::StreamSink for ToClient {
    fn on_event(&mut self, e: sessionwatch_streams::StreamEvent<'_>) {
        use sessionwatch_streams::{Direction, Source, StreamEvent};
        match e {
            StreamEvent::Open(m) if m.source == Source::TlsLibrary => {
                self.tls.entry(m.id.0).or_default();
            }
            StreamEvent::Data {
                conn,
                dir: Direction::ToClient,
                bytes,
                ..
            } => {
                if let Some(c) = self.tls.get_mut(&conn.0) {
                    c.0 += bytes.len() as u64;
                }
            }
            StreamEvent::Gap {
                conn,
                dir: Direction::ToClient,
                len,
                ..
            } => {
                if let Some(c) = self.tls.get_mut(&conn.0) {
                    c.1 += len;
                }
            }
            _ => {}
        }
    }
}

/// One keep-alive TLS connection alternating small and 9000-byte responses
/// against a 4 KiB ring: every big response record is lost (it cannot fit),
/// on the connection the return program serves from its per-thread cache
/// (same fd, unchanged generation). The loss must be recorded on the
/// `CONNS` entry and carried by the next event, so the bytes plus the gaps
/// the agent emits equal what nginx sent, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ring_loss_on_cached_connection_is_exact() {
    use sessionwatch::capture::{CaptureConfig, LiveCapture, LossReason};
    use sessionwatch_streams::Source;

    let Some(tools) = preconditions("tls_ring_loss_on_cached_connection_is_exact") else {
        return;
    };
    let lab = std::sync::Arc::new(Lab::new(tools, "sw-tlsloss", 1));
    std::fs::write(lab.p("big.bin"), vec![b'z'; 9000]).unwrap();
    let _nginx = lab.nginx(None);
    let cfg = CaptureConfig {
        processes: vec![lab.comm.to_string()],
        payload_cap: 4096,
        ring_buffer_size: 4096,
        ..CaptureConfig::default()
    };
    let mut capture = LiveCapture::start(&cfg).unwrap_or_else(|e| panic!("start failed:\n{e}"));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let traffic = std::thread::spawn({
        let lab = lab.clone();
        move || {
            let mut cmd = Command::new(&lab.tools.curl);
            cmd.args(["-sk", "--http1.1", "--max-time", "30", "--rate", "20/s"])
                .args([
                    "--resolve",
                    &format!("faults.test:{}:127.0.0.1", lab.tls_port),
                ])
                .args(["-w", "%{http_code} %{size_header} %{size_download}\\n"]);
            for i in 0..8 {
                cmd.args(["-o", "/dev/null"])
                    .arg(format!("https://faults.test:{}/small/{i}", lab.tls_port))
                    .args(["-o", "/dev/null"])
                    .arg(format!("https://faults.test:{}/big", lab.tls_port));
            }
            let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output();
            let _ = done_tx.send(());
            out
        }
    });
    let mut sink = ToClient::default();
    capture
        .run(&mut sink, async {
            let _ = done_rx.await;
            // Let the last records drain (the agent reads every 10 ms).
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
        .await
        .expect("capture run");
    let snap = capture.stats();
    drop(capture);
    let out = traffic.join().expect("traffic thread").expect("run curl");
    let mut sent = 0u64;
    let mut answered = 0;
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [200, head, body] = f[..] {
            answered += 1;
            sent += head + body;
        }
    }
    assert_eq!(
        answered,
        16,
        "curl output: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        snap.lost_for(Source::TlsLibrary, LossReason::RingBufferFull) >= 8,
        "every big response record is lost to the 4 KiB ring"
    );
    assert_eq!(sink.tls.len(), 1, "one keep-alive TLS connection captured");
    let (bytes, gaps) = sink.tls.values().next().copied().unwrap_or_default();
    assert!(gaps >= 8 * 9000, "lost responses are gaps: {gaps}");
    assert_eq!(
        bytes + gaps,
        sent,
        "captured bytes {bytes} + gaps {gaps} = bytes nginx sent"
    );
}
