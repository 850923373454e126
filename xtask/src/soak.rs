//! `cargo xtask soak [--minutes N]`: steady TLS load through nginx for a
//! long time with the live agent attached, sampling what must stay flat —
//! the agent's RSS, file descriptors, threads and the fill of its kernel
//! tables — and what must stay zero — capture losses. Not part of CI (it
//! takes half an hour by default); the figures go to the `## Soak` section
//! of BENCHMARKS.md.
//!
//! Load: `wrk` with a Lua script over keep-alive connections, paced (each
//! connection waits after every response), so the rate is moderate and
//! steady rather than saturating the two cores the proxy, the client and
//! the agent share. 1 request in 50 is a login that gets a fresh session
//! cookie; the others carry one of a fixed pool of session IDs. The agent's
//! session table is bounded at [`SOAK_MAX_SESSIONS`], reached within a few
//! minutes, so the soak measures the steady state of a full table. wrk's
//! connections are reopened every `--reconnect-s` seconds (a new wrk run),
//! so connection set-up and tear-down are part of the soak too.
//!
//! Pass/fail: losses must be 0; after a warm-up (the first sample taken
//! after `--warmup-s`), the RSS may not grow by more than 10 % + 4 MiB, and
//! the descriptor count and kernel table fill may not exceed their warm-up
//! values by more than a handful.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::now_utc;
use crate::bench::rig::{cpu_seconds, free_port, http_get, metric_sum, status_kib, which};

/// The nginx copy's executable name, so `capture.processes` selects this
/// nginx only (other nginx instances on the machine stay out of the counts).
const NGINX_COMM: &str = "nginx-swsoak";

/// Session table bound of the soaked agent: logins keep issuing new
/// sessions, so the table fills up within minutes and then stays at its
/// bound (least recently used sessions evicted), which is the steady state
/// a long-running agent lives in.
const SOAK_MAX_SESSIONS: u32 = 4000;

/// Options of `cargo xtask soak`.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Total duration.
    pub minutes: u64,
    /// Seconds between samples.
    pub interval_s: u64,
    /// Samples before this are warm-up (allocator, caches, tables filling).
    pub warmup_s: u64,
    /// wrk connections.
    pub connections: u32,
    /// Milliseconds each connection waits after a response.
    pub pace_ms: u32,
    /// Seconds per wrk run (connections are reopened between runs).
    pub reconnect_s: u64,
    /// Write the figures to BENCHMARKS.md.
    pub write: bool,
}

struct Proc {
    child: Child,
    what: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited: {st}", self.what);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first (nginx' master takes its workers with it), then
        // SIGKILL; always reaped.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// (name, entries, max_entries) of every BPF hash map the agent holds,
/// found through its descriptors' fdinfo and counted with bpftool.
fn map_fill(pid: u32) -> Vec<(String, u64, u64)> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(info) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let field = |n: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(n))
                .map(|v| v.trim().to_owned())
        };
        // map_type 1 = hash, 9 = lru_hash (the per-connection tables).
        if let (Some(id), Some(ty)) = (field("map_id:"), field("map_type:"))
            && (ty == "1" || ty == "9")
        {
            let max = field("max_entries:")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            ids.push((id, max));
        }
    }
    ids.sort();
    ids.dedup();
    let mut out = Vec::new();
    for (id, max) in ids {
        let show = Command::new("bpftool")
            .args(["-j", "map", "show", "id", &id])
            .output();
        let name = show
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .and_then(|s| {
                let start = s.find("\"name\":\"")? + 8;
                let len = s[start..].find('"')?;
                Some(s[start..start + len].to_owned())
            })
            .unwrap_or_else(|| format!("id{id}"));
        // One line per key in the plain dump: "key: .. value: ..".
        let entries = Command::new("bpftool")
            .args(["map", "dump", "id", &id])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| l.starts_with("key:") || l.trim_start().starts_with("\"key\""))
                    .count() as u64
            })
            .unwrap_or(0);
        out.push((name, entries, max));
    }
    out
}

#[derive(Debug, Clone)]
struct Sample {
    t_s: u64,
    rss_kib: u64,
    fds: usize,
    threads: usize,
    cpu_s: f64,
    exchanges: f64,
    lost: f64,
    sessions: f64,
    maps: Vec<(String, u64, u64)>,
    load: String,
}

/// `PEER_LOCAL` maps the peer address of *every* passive TCP connection on
/// the host to its local address (the accept path reads it); it is an LRU
/// cache bounded by its size, filled by all of the machine's traffic, so it
/// is reported but not part of the flatness check.
const HOST_WIDE_CACHES: &[&str] = &["PEER_LOCAL"];

impl Sample {
    /// Entries of the agent's per-connection and per-process tables.
    fn map_total(&self) -> u64 {
        self.maps
            .iter()
            .filter(|m| !HOST_WIDE_CACHES.contains(&m.0.as_str()))
            .map(|m| m.1)
            .sum()
    }
}

/// Runs the soak. `bin` is the release agent with its eBPF object.
pub fn run(root: &Path, bin: &Path, opts: &SoakOptions) -> Result<()> {
    let mut missing = Vec::new();
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    {
        missing.push("root");
    }
    for t in ["nginx", "wrk", "openssl", "bpftool"] {
        if which(t).is_none() {
            missing.push(t);
        }
    }
    if !missing.is_empty() {
        bail!("soak needs {}", missing.join(", "));
    }
    let dir = root.join("target/soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs"))?;

    // nginx: one worker, TLS, keep-alive; a login route issuing sessions.
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=soak.sessionwatch.test", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .context("openssl req")?;
    if !st.success() {
        bail!("openssl req failed");
    }
    let nginx_sys = which("nginx").context("nginx")?;
    let exe = dir.join(NGINX_COMM);
    std::fs::copy(&nginx_sys, &exe)?;
    let port = free_port()?;
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1; pid {d}/nginx.pid; error_log {d}/logs/error.log; daemon off;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s;\n\
               server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n\
                 location /login {{ add_header Set-Cookie \"sessionid=$request_id; Path=/; Secure; HttpOnly; SameSite=Lax\"; return 302 /account; }}\n\
                 location / {{ return 200 \"ok\\n\"; }} }} }}\n"
        ),
    )?;
    let mut nginx = Proc {
        child: Command::new(&exe)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start nginx")?,
        what: "nginx",
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        nginx.alive()?;
        if Instant::now() > deadline {
            bail!("nginx does not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // The agent, capturing only this nginx.
    let admin = free_port()?;
    std::fs::write(
        dir.join("sessionwatch.toml"),
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[alerting]\njson = \"{}\"\n\n\
             [sessions]\nmax_sessions = {SOAK_MAX_SESSIONS}\n\n\
             [capture]\nprocesses = [\"{NGINX_COMM}\"]\n",
            dir.join("findings.jsonl").display()
        ),
    )?;
    let mut agent = Proc {
        child: Command::new(bin)
            .args(["--log-level", "warn", "run", "--config"])
            .arg(dir.join("sessionwatch.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.err"))?)
            .spawn()
            .context("start the agent")?,
        what: "sessionwatch run",
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http_get(admin, "/readyz"), Ok((200, _))) {
        agent
            .alive()
            .with_context(|| std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default())?;
        if Instant::now() > deadline {
            bail!("agent not ready after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // wrk: paced keep-alive load; 2 % logins (fresh session cookies), the
    // rest with one of 2,000 session IDs.
    let script = dir.join("soak.lua");
    std::fs::write(
        &script,
        format!(
            "local n = 0\n\
             function request()\n\
               n = n + 1\n\
               if n % 50 == 0 then\n\
                 return wrk.format(\"POST\", \"/login\", {{[\"Content-Type\"] = \"application/x-www-form-urlencoded\"}}, \"user=soak&password=x\")\n\
               end\n\
               local sid = string.format(\"%032x\", math.random(1, 2000))\n\
               return wrk.format(\"GET\", \"/page/\" .. (n % 100), {{[\"Cookie\"] = \"sessionid=\" .. sid}})\n\
             end\n\
             function delay() return {} end\n",
            opts.pace_ms
        ),
    )?;
    let url = format!("https://127.0.0.1:{port}/");
    let total = Duration::from_secs(opts.minutes * 60);
    let start = Instant::now();
    let load_start = loadavg();
    let mut samples: Vec<Sample> = Vec::new();
    let mut requests: u64 = 0;
    let mut wrk_errors: u64 = 0;
    let mut next_sample = Duration::ZERO;
    let mut wrk: Option<(Child, Instant)> = None;
    let take = |agent: &Proc, t: Duration| -> Sample {
        let pid = agent.pid();
        let metrics = http_get(admin, "/metrics").map(|r| r.1).unwrap_or_default();
        Sample {
            t_s: t.as_secs(),
            rss_kib: status_kib(pid, "VmRSS:"),
            fds: count_dir(&format!("/proc/{pid}/fd")),
            threads: count_dir(&format!("/proc/{pid}/task")),
            cpu_s: cpu_seconds(pid),
            exchanges: metric_sum(&metrics, "sessionwatch_http_exchanges_total").max(0.0) + 0.0,
            lost: metric_sum(&metrics, "sessionwatch_capture_lost_total").max(0.0) + 0.0,
            sessions: metric_sum(&metrics, "sessionwatch_sessions_tracked").max(0.0) + 0.0,
            maps: map_fill(pid),
            load: loadavg(),
        }
    };
    eprintln!(
        "soak: {} min, {} connections paced {} ms, sampling every {} s (load {load_start})",
        opts.minutes, opts.connections, opts.pace_ms, opts.interval_s
    );
    while start.elapsed() < total {
        agent.alive()?;
        nginx.alive()?;
        // (Re)start wrk when the previous run ended.
        let finished = match &mut wrk {
            Some((c, _)) => c.try_wait()?.is_some(),
            None => true,
        };
        if finished {
            if let Some((c, _)) = wrk.take() {
                let out = c.wait_with_output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                for line in text.lines().map(str::trim) {
                    if line.contains(" requests in ") {
                        requests += line
                            .split_whitespace()
                            .next()
                            .and_then(|n| n.parse::<u64>().ok())
                            .unwrap_or(0);
                    } else if let Some(v) = line.strip_prefix("Socket errors:") {
                        wrk_errors += v
                            .split(',')
                            .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                            .sum::<u64>();
                    }
                }
            }
            let left = total.saturating_sub(start.elapsed()).as_secs();
            if left >= 2 {
                let secs = left.min(opts.reconnect_s);
                let child = Command::new("wrk")
                    .args(["-t1", &format!("-c{}", opts.connections)])
                    .arg(format!("-d{secs}s"))
                    .arg("-s")
                    .arg(&script)
                    .arg(&url)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("start wrk")?;
                wrk = Some((child, Instant::now()));
            }
        }
        if start.elapsed() >= next_sample {
            let s = take(&agent, start.elapsed());
            eprintln!(
                "soak: t={:>5}s rss={} KiB fds={} threads={} cpu={:.1}s exchanges={} lost={} sessions={} maps={} load {}",
                s.t_s,
                s.rss_kib,
                s.fds,
                s.threads,
                s.cpu_s,
                s.exchanges,
                s.lost,
                s.sessions,
                s.map_total(),
                s.load
            );
            samples.push(s);
            next_sample += Duration::from_secs(opts.interval_s);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some((c, _)) = wrk.take() {
        let out = c.wait_with_output()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains(" requests in ") {
                requests += line
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    // Let the agent drain, then the final sample.
    std::thread::sleep(Duration::from_secs(2));
    let last = take(&agent, start.elapsed());
    samples.push(last.clone());
    let load_end = loadavg();

    let warm = samples
        .iter()
        .find(|s| s.t_s >= opts.warmup_s)
        .cloned()
        .unwrap_or_else(|| last.clone());
    let after_warm: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= warm.t_s).collect();
    let rss_max = after_warm.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let fds_max = after_warm.iter().map(|s| s.fds).max().unwrap_or(0);
    let maps_max = after_warm.iter().map(|s| s.map_total()).max().unwrap_or(0);
    let rss_limit = warm.rss_kib + warm.rss_kib / 10 + 4096;
    let mut failures = Vec::new();
    if last.lost > 0.0 {
        failures.push(format!("{} capture losses", last.lost));
    }
    if rss_max > rss_limit {
        failures.push(format!(
            "RSS grew from {} KiB (warm) to {rss_max} KiB (limit {rss_limit})",
            warm.rss_kib
        ));
    }
    if fds_max > warm.fds + 4 {
        failures.push(format!("fds grew from {} to {fds_max}", warm.fds));
    }
    let conn_bound = u64::from(opts.connections) * 2 + 8;
    if maps_max > warm.map_total() + conn_bound {
        failures.push(format!(
            "kernel table entries grew from {} to {maps_max}",
            warm.map_total()
        ));
    }
    if last.exchanges < requests as f64 * 0.99 {
        failures.push(format!(
            "{} exchanges analysed for {requests} requests wrk completed",
            last.exchanges
        ));
    }

    let elapsed = start.elapsed().as_secs_f64();
    let mut body = String::new();
    let _ = writeln!(body, "## Soak\n");
    let _ = writeln!(
        body,
        "`cargo xtask soak --minutes {}` — {}. nginx (TLS, keep-alive, one worker) under paced `wrk` \
         ({} connections, {} ms pause after each response, reconnecting every {} s; 2 % logins issuing \
         new session cookies, the rest reusing 2,000 session IDs), the release agent attached \
         (`capture.processes` = this nginx, `sessions.max_sessions` = {SOAK_MAX_SESSIONS}). Load average at start {load_start}, at end {load_end} \
         (the machine is shared with other work: 2 cores).\n",
        opts.minutes,
        now_utc(),
        opts.connections,
        opts.pace_ms,
        opts.reconnect_s
    );
    let _ = writeln!(
        body,
        "| | value |\n|---|---|\n\
         | duration | {:.1} min |\n\
         | requests (wrk) | {requests} ({:.0}/s), socket errors {wrk_errors} |\n\
         | exchanges analysed | {} |\n\
         | capture lost | {} |\n\
         | RSS after warm-up ({} s) → max → end | {} → {} → {} KiB |\n\
         | fds warm-up → max → end | {} → {fds_max} → {} |\n\
         | threads end | {} |\n\
         | kernel hash-map entries warm-up → max → end | {} → {maps_max} → {} |\n\
         | sessions tracked end | {} |\n\
         | agent CPU | {:.1} s ({:.1} % of one core) |\n\
         | verdict | {} |\n",
        elapsed / 60.0,
        requests as f64 / elapsed,
        last.exchanges,
        last.lost,
        warm.t_s,
        warm.rss_kib,
        rss_max,
        last.rss_kib,
        warm.fds,
        last.fds,
        last.threads,
        warm.map_total(),
        last.map_total(),
        last.sessions,
        last.cpu_s,
        last.cpu_s / elapsed * 100.0,
        if failures.is_empty() {
            "flat, nothing lost".to_owned()
        } else {
            format!("FAILED: {}", failures.join("; "))
        }
    );
    let _ = writeln!(
        body,
        "Samples (every {} s; map entries = the agent's per-connection and per-process kernel tables, \
         without the host-wide LRU cache PEER_LOCAL; every hash map at the end, entries/max: {}):\n",
        opts.interval_s,
        last.maps
            .iter()
            .map(|(n, e, m)| format!("{n} {e}/{m}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        body,
        "| t (s) | RSS (KiB) | fds | threads | CPU (s) | exchanges | lost | sessions | map entries | load |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    // At most ~20 rows: every k-th sample plus the last.
    let k = samples.len().div_ceil(20).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % k == 0 || i + 1 == samples.len() {
            let _ = writeln!(
                body,
                "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
                s.t_s,
                s.rss_kib,
                s.fds,
                s.threads,
                s.cpu_s,
                s.exchanges,
                s.lost,
                s.sessions,
                s.map_total(),
                s.load
            );
        }
    }
    body.push('\n');
    print!("{body}");
    if opts.write {
        crate::bench::write_section(&root.join("BENCHMARKS.md"), "## Soak", &body)?;
        eprintln!("soak: figures written to BENCHMARKS.md (## Soak)");
    }
    drop(agent);
    drop(nginx);
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    Ok(())
}
