//! The live benchmark rig: an nginx terminating TLS, the agent, the empty
//! floor probes, wrk, and readings from /proc and the admin endpoint.
//!
//! Every process started here is owned by a guard that stops it (SIGTERM,
//! then SIGKILL) and reaps it, so a failing benchmark leaves nothing behind.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// nginx's executable name as the benchmark runs it: a copy named so that
/// `capture.processes` selects this nginx and no other one on the machine
/// (tests of other components run their own nginx at the same time).
pub const NGINX_COMM: &str = "nginx-swbench";
/// The benchmark nginx's large static file (`Nginx::big_url`).
pub const BIG_FILE: &str = "big.bin";
/// Its size: 1 MiB.
pub const BIG_BYTES: usize = 1 << 20;

/// The system OpenSSL that nginx links (the library the probes go on).
pub const LIBSSL: &str = "/lib/x86_64-linux-gnu/libssl.so.3";

/// A free loopback TCP port (bound then released).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_port(port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on 127.0.0.1:{port} after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Stops and reaps its process on drop.
pub struct Guard {
    child: Child,
    what: &'static str,
}

impl Guard {
    pub fn new(child: Child, what: &'static str) -> Guard {
        Guard { child, what }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited early: {st}", self.what);
        }
        Ok(())
    }

    /// SIGTERM, SIGKILL after two seconds; reaps.
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx, one worker, TLS with keep-alive, a small fixed response.
pub struct Nginx {
    _guard: Guard,
    pub port: u16,
}

impl Nginx {
    pub fn start(dir: &Path) -> Result<Nginx> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let key = dir.join("key.pem");
        let cert = dir.join("cert.pem");
        if !cert.exists() {
            let st = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=bench.sessionwatch.test", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null())
                .status()
                .context("openssl req")?;
            if !st.success() {
                bail!("openssl req failed");
            }
        }
        let system =
            which("nginx").context("nginx is not installed (apt-get install nginx-light)")?;
        let exe = dir.join(NGINX_COMM);
        std::fs::copy(&system, &exe).with_context(|| format!("copy {}", system.display()))?;
        let port = free_port()?;
        std::fs::create_dir_all(dir.join("www"))?;
        std::fs::write(dir.join("www").join(BIG_FILE), vec![b'b'; BIG_BYTES])?;
        let d = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "worker_processes 1; pid {d}/nginx.pid; error_log {d}/logs/error.log; daemon off;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{ access_log off; keepalive_requests 100000000; keepalive_timeout 300s;\n\
                   server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n\
                     location = /{BIG_FILE} {{ root {d}/www; }}\n\
                     location / {{ add_header Set-Cookie \"sid=0123456789abcdef0123456789abcdef; Path=/; Secure; HttpOnly\"; return 200 \"ok\\n\"; }} }} }}\n"
            ),
        )?;
        let child = Command::new(&exe)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start nginx")?;
        let mut guard = Guard::new(child, "nginx");
        wait_port(port, Duration::from_secs(10))?;
        guard.check_alive()?;
        Ok(Nginx {
            _guard: guard,
            port,
        })
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    /// The [`BIG_BYTES`] static file.
    pub fn big_url(&self) -> String {
        format!("https://127.0.0.1:{}/{BIG_FILE}", self.port)
    }
}

/// The nginx worker (the master's child) of the benchmark.
pub fn nginx_worker(master_port: u16) -> Result<u32> {
    // The worker is the process named NGINX_COMM whose parent is also named
    // so; the port only names the instance in errors.
    let mut found = None;
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let parent_comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
        if comm == NGINX_COMM && parent_comm.trim() == NGINX_COMM {
            found = Some(pid);
        }
    }
    found.with_context(|| format!("no nginx worker for the benchmark nginx on port {master_port}"))
}

/// `sessionwatch run`, capturing only the benchmark's nginx.
pub struct Agent {
    guard: Guard,
    admin: u16,
}

impl Agent {
    pub fn start(bin: &Path, dir: &Path) -> Result<Agent> {
        Self::start_with(bin, dir, "")
    }

    /// [`Agent::start`] with `capture` lines added to its `[capture]`.
    pub fn start_with(bin: &Path, dir: &Path, capture: &str) -> Result<Agent> {
        let admin = free_port()?;
        let cfg = dir.join("sessionwatch.toml");
        std::fs::write(
            &cfg,
            format!(
                "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[capture]\nprocesses = [\"{NGINX_COMM}\"]\n{capture}"
            ),
        )?;
        let child = Command::new(bin)
            .args(["--log-level", "warn", "run", "--config"])
            .arg(&cfg)
            .args(["--alerts", "/dev/null"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.err"))?)
            .spawn()
            .context("start sessionwatch run")?;
        let mut agent = Agent {
            guard: Guard::new(child, "sessionwatch run"),
            admin,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if matches!(http_get(admin, "/readyz"), Ok((200, _))) {
                break;
            }
            if let Err(e) = agent.guard.check_alive() {
                let err = std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default();
                bail!("{e}: {err}");
            }
            if Instant::now() > deadline {
                bail!("the agent is not ready after 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The agent's Prometheus exposition.
    pub fn metrics(&self) -> Result<String> {
        match http_get(self.admin, "/metrics")? {
            (200, body) => Ok(body),
            (code, _) => bail!("/metrics answered {code}"),
        }
    }
}

/// Sum of every sample of a metric family in an exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The empty floor probes (`probe_floor` example), attached until dropped.
pub struct Floor {
    guard: Guard,
}

impl Floor {
    /// Empty probes on `sites` (`agent` or `exported`), in every process or
    /// only in `pid`.
    pub fn start(bin: &Path, sites: &str, pid: Option<u32>) -> Result<Floor> {
        let mut child = Command::new(bin)
            .args([LIBSSL, sites])
            .args(pid.map(|p| p.to_string()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdout = child.stdout.take().context("probe_floor stdout")?;
        let mut stderr = child.stderr.take().context("probe_floor stderr")?;
        let mut guard = Guard::new(child, "probe_floor");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("attached") {
            guard.stop();
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            bail!("probe_floor did not attach: {}", err.trim());
        }
        Ok(Floor { guard })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }
}

/// One wrk run.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrkRun {
    pub rps: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Directory with private copies of the system `libssl.so.3` and
/// `libcrypto.so.3` for wrk (`LD_LIBRARY_PATH`): other files (inodes), so no
/// probe on the system library fires in the load generator — in production
/// the clients are remote and pay nothing. (The agent hooks only the files
/// its selected processes map; the empty floor probes go on the system file.)
fn client_libs(dir: &Path) -> Result<PathBuf> {
    let libs = dir.join("client-libs");
    std::fs::create_dir_all(&libs)?;
    for name in ["libssl.so.3", "libcrypto.so.3"] {
        let src = Path::new(LIBSSL).with_file_name(name);
        let dst = libs.join(name);
        if !dst.exists() {
            std::fs::copy(&src, &dst).with_context(|| format!("copy {}", src.display()))?;
        }
    }
    Ok(libs)
}

/// wrk with fixed connections and duration; with `pace_ms`, every
/// connection waits that long after each response (a Lua `delay()`), which
/// caps the rate at about `connections × 1000 / (pace_ms + latency)`:
/// Debian's wrk has no constant-rate mode. wrk runs on its own copy of
/// OpenSSL ([`client_libs`]).
pub fn wrk(
    url: &str,
    connections: u32,
    secs: u32,
    pace_ms: Option<u32>,
    dir: &Path,
) -> Result<WrkRun> {
    let mut cmd = Command::new("wrk");
    cmd.env("LD_LIBRARY_PATH", client_libs(dir)?);
    cmd.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    if let Some(ms) = pace_ms {
        let script = dir.join(format!("pace-{ms}.lua"));
        std::fs::write(&script, format!("function delay() return {ms} end\n"))?;
        cmd.arg("-s").arg(script);
    }
    let out = cmd
        .arg(url)
        .output()
        .context("run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<WrkRun> {
    let mut run = WrkRun::default();
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            run.rps = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            run.p50_ms = parse_ms(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            run.p99_ms = parse_ms(v.trim())?;
        } else if line.contains(" requests in ") {
            run.requests = line.split_whitespace().next()?.parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            run.errors += v.trim().parse::<u64>().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            run.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (run.rps > 0.0).then_some(run)
}

/// wrk's latency: `812.00us`, `1.03ms`, `1.20s`.
fn parse_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    // utime and stime (USER_HZ 100).
    stat_seconds(&format!("/proc/{pid}/stat"), [11, 12])
}

/// CPU seconds (user + system) of the children this process has waited
/// for (`cutime` + `cstime` of `/proc/self/stat`).
pub fn children_cpu_seconds() -> f64 {
    stat_seconds("/proc/self/stat", [13, 14])
}

/// The sum of two tick fields of a `/proc/…/stat` file, in seconds
/// (USER_HZ 100). `fields` count from the one after the process name
/// (state is 0), which may itself contain spaces and parentheses; an
/// unreadable file or field counts 0.
fn stat_seconds(path: &str, fields: [usize; 2]) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let after = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    fields.into_iter().map(ticks).sum::<f64>() / 100.0
}

/// CPU nanoseconds per system call of a process nobody captures:
/// `dd bs=1` copying `count` bytes from `/dev/zero` to `/dev/null`
/// (`2 × count` `read`/`write` calls). While any syscall tracepoint is
/// attached, every task on the host enters and leaves the kernel through
/// the traced path, and the attached programs run for it too (and return
/// at once for a process that is not a target): this is what the agent
/// costs the rest of the host.
pub fn syscall_ns(count: u64) -> Result<f64> {
    let c0 = children_cpu_seconds();
    let st = Command::new("dd")
        .args(["if=/dev/zero", "of=/dev/null", "bs=1"])
        .arg(format!("count={count}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run dd")?;
    if !st.success() {
        bail!("dd failed: {st}");
    }
    let c1 = children_cpu_seconds();
    Ok((c1 - c0) * 1e9 / (2 * count).max(1) as f64)
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
/// Involuntary context switches of a task so far
/// (`nonvoluntary_ctxt_switches` of `/proc/PID/status`): each is the task
/// switched out while it could still run — preempted by a task woken on
/// its CPU, or at the tick.
pub fn involuntary_switches(pid: u32) -> u64 {
    status_kib(pid, "nonvoluntary_ctxt_switches:")
}

/// A numeric field of `/proc/PID/status` (kiB for the memory fields).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Minimal HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.to_owned()))
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Median and spread (min–max) of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    pub fn of(v: &[f64]) -> Stat {
        let mut s = v.to_vec();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Stat {
            median: s.get(s.len() / 2).copied().unwrap_or(0.0),
            min: s.first().copied().unwrap_or(0.0),
            max: s.last().copied().unwrap_or(0.0),
        }
    }

    /// `median (min–max)` with `prec` decimals.
    pub fn show(&self, prec: usize) -> String {
        format!(
            "{:.prec$} ({:.prec$}–{:.prec$})",
            self.median, self.min, self.max
        )
    }
}

/// Outcome of judging B against a threshold relative to A, from every
/// round rather than the medians alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// In every round, B is on the right side of the threshold.
    Met,
    /// In every round, B is on the wrong side of it.
    NotMet,
    /// The rounds disagree: the machine's noise is larger than what is
    /// being judged.
    Inconclusive,
}

impl Verdict {
    /// "B ≤ `limit` × A" (lower is better: latency, CPU per request), from
    /// the rounds taken in turn: round `i` of B is compared with round `i`
    /// of A, run within the same round under the same load, so that the load of
    /// a shared machine, which drifts by more than the 5 % a target allows
    /// between rounds, cancels out. Decided only when every round agrees.
    pub fn at_most(a: &[f64], b: &[f64], limit: f64) -> Verdict {
        Verdict::of_rounds(a.iter().zip(b).map(|(a, b)| *b <= limit * a))
    }

    /// "B ≥ `limit` × A" (higher is better: requests/s), decided as
    /// [`Verdict::at_most`].
    pub fn at_least(a: &[f64], b: &[f64], limit: f64) -> Verdict {
        Verdict::of_rounds(a.iter().zip(b).map(|(a, b)| *b >= limit * a))
    }

    fn of_rounds(ok: impl Iterator<Item = bool>) -> Verdict {
        let (mut yes, mut no) = (0, 0);
        for ok in ok {
            if ok {
                yes += 1;
            } else {
                no += 1;
            }
        }
        match (yes, no) {
            (0, 0) => Verdict::Inconclusive,
            (_, 0) => Verdict::Met,
            (0, _) => Verdict::NotMet,
            _ => Verdict::Inconclusive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_pair_the_rounds() {
        // The live run of 2026-11-27 17:35, nginx CPU µs per request of A
        // and of the floor T in five alternating rounds: A spread from 11.0
        // to 15.4 with the machine's load, yet T cost more than 3 % above
        // the A beside it in every round.
        let a = [13.82, 13.55, 11.02, 15.36, 14.99];
        let t = [19.23, 15.48, 17.27, 21.03, 20.60];
        assert_eq!(Verdict::at_most(&a, &t, 1.0 / 0.97), Verdict::NotMet);
        // Unpaired, the same rounds overlap: T's best (15.48) is below A's
        // worst (15.36 × 1.03).
        assert!(t.iter().copied().fold(f64::MAX, f64::min) < 15.36 / 0.97);
        // All within the limit, and mixed.
        assert_eq!(
            Verdict::at_most(&a, &a.map(|x| x * 1.01), 1.05),
            Verdict::Met
        );
        let mixed = [13.9, 13.5, 12.0, 15.4, 15.0];
        assert_eq!(Verdict::at_most(&a, &mixed, 1.05), Verdict::Inconclusive);
        // Throughput, higher is better.
        let a = [100.0, 120.0, 90.0];
        assert_eq!(
            Verdict::at_least(&a, &[99.0, 118.0, 89.0], 0.97),
            Verdict::Met
        );
        assert_eq!(
            Verdict::at_least(&a, &[60.0, 70.0, 80.0], 0.97),
            Verdict::NotMet
        );
        assert_eq!(
            Verdict::at_least(&a, &[99.0, 70.0, 89.0], 0.97),
            Verdict::Inconclusive
        );
        // No rounds: nothing decided.
        assert_eq!(Verdict::at_most(&[], &[], 1.05), Verdict::Inconclusive);
    }

    #[test]
    fn stat_tick_fields_follow_the_process_name() {
        let path = std::env::temp_dir().join(format!("sw-stat-{}", std::process::id()));
        // A name with spaces and a ')' of its own; utime 250, stime 50,
        // cutime 7, cstime 3 ticks.
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194304 10 0 0 0 250 50 7 3 20 0 1 0";
        std::fs::write(&path, line).expect("write stat");
        let p = path.to_str().expect("utf-8 temp path");
        assert_eq!(stat_seconds(p, [11, 12]), 3.0);
        assert_eq!(stat_seconds(p, [13, 14]), 0.1);
        let _ = std::fs::remove_file(&path);
        assert_eq!(stat_seconds("/nonexistent/stat", [11, 12]), 0.0);
    }

    #[test]
    fn wrk_output() {
        let text = "Running 4s test @ https://127.0.0.1:1/\n  1 threads and 32 connections\n\
            Latency Distribution\n     50%  812.00us\n     75%    1.10ms\n     90%    1.50ms\n     99%    3.20ms\n\
            340000 requests in 4.00s, 40.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
            Requests/sec:  85000.12\nTransfer/sec:     10.00MB\n";
        let r = parse_wrk(text).expect("parsed");
        assert_eq!(r.requests, 340_000);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 3.2).abs() < 1e-9);
        assert!((r.rps - 85000.12).abs() < 1e-6);
        assert_eq!(r.errors, 3);
    }

    #[test]
    fn metric_sums() {
        let m = "# HELP x\nsessionwatch_capture_lost_total{reason=\"a\",source=\"tls\"} 2\n\
                 sessionwatch_capture_lost_total{reason=\"b\",source=\"tls\"} 3\n\
                 sessionwatch_capture_lost_bytes_total 9\n";
        assert_eq!(metric_sum(m, "sessionwatch_capture_lost_total"), 5.0);
    }

    #[test]
    fn stats() {
        let s = Stat::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    }
}
