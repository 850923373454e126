//! `cargo xtask bench <name>`: benchmarks whose figures, commands and
//! machine go to BENCHMARKS.md (one section per benchmark, replaced by each
//! run).
//!
//! * `replay` (this file) — generates a pcap with at least 1M HTTP/1.1
//!   exchanges (keep-alive connections with session cookies, logins that
//!   rotate the ID, logouts), then times `sessionwatch replay` and `tshark`
//!   extracting the same fields from the same file, and `dd` reading it (the
//!   floor), alternating A B C A B C A B C.
//! * `live` (`bench/live.rs`) — nginx TLS under wrk with and without the
//!   agent, and with empty probes (the floor).
//! * `hooks` (`bench/hooks.rs`) — BPF run time per program and the uprobe
//!   trap floor.
//! * `memory` (`bench/memory.rs`) — bytes per tracked session at 1M.
//!
//! Every benchmark has a smoke mode (seconds, no thresholds, nothing
//! written) that `cargo xtask test` runs so the benchmarks never rot.

mod hooks;
mod live;
mod memory;
pub(crate) mod rig;
mod targets;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::pcapw::{ACK, FIN_ACK, PSH_ACK, PcapWriter, SYN};
use crate::rng::Rng;

/// Exchanges per generated connection (keep-alive).
const EXCHANGES_PER_CONN: u32 = 10;

/// The session cookie of the generated file (what floor G hashes).
const BENCH_SESSION_COOKIE: &str = "sessionid";

/// `sessions.max_sessions` of the bounded peak-RSS runs of `bench replay`.
const BOUNDED_SESSIONS: u32 = 10_000;

/// `sessions.suppression_window` of the bounded peak-RSS runs: the
/// suppressor remembers every reported (detector, session) for a window of
/// event time, and the generated file reports each of its sessions once
/// (`session_cleartext`) within about 35 minutes of event time, so under
/// the default hour it holds every one of them. One minute bounds it by the
/// findings of two minutes of event time.
const BOUNDED_SUPPRESSION: &str = "1m";

/// Every detector id (`[detectors] disabled` of the no-detector floor run).
const ALL_DETECTORS: [&str; 20] = [
    "cookie_missing_secure",
    "cookie_missing_httponly",
    "cookie_samesite_weak",
    "cookie_persistent",
    "cookie_loose_scope",
    "cookie_prefix_violation",
    "session_id_weak",
    "session_id_in_url",
    "session_cleartext",
    "no_rotation_after_login",
    "no_rotation_after_privilege_change",
    "no_rotation_after_tls_upgrade",
    "stale_session_accepted",
    "session_accepted_after_logout",
    "idle_timeout_not_enforced",
    "absolute_timeout_not_enforced",
    "sensitive_action_without_reauth",
    "session_fingerprint_change",
    "session_id_bruteforce",
    "client_side_session",
];

/// Generates the benchmark pcap; returns the number of exchanges written.
pub fn generate(path: &Path, exchanges: u64) -> Result<u64> {
    let mut w = PcapWriter::create(path)?;
    let mut rng = Rng(0x5e55_1057_a7c4_u64);
    let server = ([192, 0, 2, 10], 8080u16);
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    ];
    let mut ts: u64 = 1_764_000_000_000_000;
    let mut written = 0u64;
    let mut conn = 0u32;
    let mut req = String::with_capacity(512);
    let mut resp = String::with_capacity(512);
    while written < exchanges {
        conn += 1;
        let client = (
            [198, 51, (conn >> 8) as u8 % 100 + 100, conn as u8],
            20000 + (conn % 40000) as u16,
        );
        let ua = agents[(conn % 3) as usize];
        let (mut cseq, mut sseq) = (1_000u32.wrapping_mul(conn), 7_000u32.wrapping_mul(conn));
        w.tcp(ts, client, server, cseq, 0, SYN, &[])?;
        w.tcp(ts + 50, server, client, sseq, cseq + 1, SYN | ACK, &[])?;
        cseq += 1;
        sseq += 1;
        w.tcp(ts + 100, client, server, cseq, sseq, ACK, &[])?;
        let mut sid = rng.id();
        for i in 0..EXCHANGES_PER_CONN {
            ts += 2_000;
            req.clear();
            resp.clear();
            let login = i == 1;
            let logout = i == EXCHANGES_PER_CONN - 1 && conn.is_multiple_of(4);
            let (method, path) = if login {
                ("POST", "/login".to_string())
            } else if logout {
                ("GET", "/logout".to_string())
            } else {
                ("GET", format!("/products/{}?page={}", conn % 977, i))
            };
            let _ = write!(
                req,
                "{method} {path} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {ua}\r\nAccept: text/html\r\n\
                 Cookie: sessionid={sid}; theme=dark\r\nX-Forwarded-Proto: https\r\n"
            );
            if login {
                req.push_str(
                    "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 29\r\n\r\n",
                );
                req.push_str("username=alice&password=hunter");
            } else {
                req.push_str("\r\n");
            }
            let _ = write!(
                resp,
                "HTTP/1.1 {} \r\nServer: bench\r\nContent-Type: text/html\r\n",
                if login { "302 Found" } else { "200 OK" }
            );
            if login {
                sid = rng.id();
                let _ = write!(
                    resp,
                    "Location: /\r\nSet-Cookie: sessionid={sid}; Path=/; Secure; HttpOnly; SameSite=Lax\r\n"
                );
            }
            if logout {
                resp.push_str("Set-Cookie: sessionid=; Max-Age=0; Path=/\r\n");
            }
            resp.push_str("Content-Length: 12\r\n\r\nhello world\n");
            w.tcp(ts, client, server, cseq, sseq, PSH_ACK, req.as_bytes())?;
            cseq = cseq.wrapping_add(req.len() as u32);
            w.tcp(
                ts + 300,
                server,
                client,
                sseq,
                cseq,
                PSH_ACK,
                resp.as_bytes(),
            )?;
            sseq = sseq.wrapping_add(resp.len() as u32);
            written += 1;
        }
        ts += 1_000;
        w.tcp(ts, client, server, cseq, sseq, FIN_ACK, &[])?;
        w.tcp(ts + 50, server, client, sseq, cseq + 1, FIN_ACK, &[])?;
        w.tcp(ts + 100, client, server, cseq + 1, sseq + 1, ACK, &[])?;
    }
    w.finish()?;
    Ok(written)
}

/// One timed run of a child process.
#[derive(Debug, Clone, Copy)]
struct Run {
    wall_s: f64,
    cpu_s: f64,
}

/// Runs a command, discarding stdout, and measures wall time and CPU time
/// (user + system of the reaped child, from this process's `cutime`/`cstime`
/// before and after: the child is reaped before the second reading).
/// Returns the run and its stderr.
fn timed(cmd: &mut Command) -> Result<(Run, String)> {
    cmd.stdout(Stdio::null());
    timed_output(cmd).map(|(run, out)| (run, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// [`timed`], returning the command's stdout instead.
fn timed_stdout(cmd: &mut Command) -> Result<(Run, String)> {
    cmd.stdout(Stdio::piped());
    timed_output(cmd).map(|(run, out)| (run, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn timed_output(cmd: &mut Command) -> Result<(Run, std::process::Output)> {
    let before = rig::children_cpu_seconds();
    let start = Instant::now();
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .context("spawn benchmark command")?;
    let wall_s = start.elapsed().as_secs_f64();
    let after = rig::children_cpu_seconds();
    if !out.status.success() {
        bail!(
            "{:?} failed: {}\n{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((
        Run {
            wall_s,
            cpu_s: after - before,
        },
        out,
    ))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {:.1} GiB RAM, kernel {}",
        mem as f64 / 1048576.0,
        kernel.trim()
    )
}

/// Peak RSS of a command, measured by polling its /proc status `VmHWM`
/// until it exits (resolution: the last poll before exit, every 5 ms).
fn peak_rss(cmd: &mut Command) -> Result<u64> {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status_path)
            && let Some(v) = s.lines().find(|l| l.starts_with("VmHWM:"))
        {
            let kib = v
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            peak = peak.max(kib);
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(peak)
}

/// Full run (figures written to BENCHMARKS.md) or smoke run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Alternating rounds, figures and targets written to BENCHMARKS.md.
    Full { rounds: usize },
    /// A few seconds end to end: fails if something is broken, checks no
    /// threshold, writes nothing.
    Smoke,
}

/// The binaries the benchmarks run.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `sessionwatch` (with the eBPF object embedded for live/hooks).
    pub sessionwatch: PathBuf,
    /// `agent/examples/probe_floor.rs`.
    pub probe_floor: PathBuf,
    /// `agent/sessions/examples/session_memory.rs`.
    pub session_memory: PathBuf,
    /// `agent/http/examples/replay_throughput.rs`: the replay floors (pcap
    /// reading, reassembly, HTTP/1 parsing), built with the binaries above so
    /// the same profile and feature set apply.
    pub replay_floor: PathBuf,
    /// `agent/sessions/examples/session_floor.rs`: the least session
    /// analysis (floor G of the replay benchmark).
    pub session_floor: PathBuf,
    /// Built with profile-guided optimisation (`xtask/src/pgo.rs`), as
    /// `cargo xtask build` ships the agent.
    pub pgo: bool,
}

/// How the measured binaries were built, for the sections' "Build" line.
pub(crate) fn build_kind(pgo: bool) -> &'static str {
    if pgo {
        "release, profile-guided as `cargo xtask build` ships the agent (trained on a generated mix of six \
         frameworks' traffic and the repository's captures, not on this benchmark's file: xtask/src/pgo.rs); \
         every binary of the run, the floors included, is built with the same profile"
    } else {
        "release, without profile-guided optimisation (`SESSIONWATCH_PGO=off`, or no `llvm-profdata`)"
    }
}

/// A benchmark by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Name {
    /// Replay throughput against tshark.
    Replay,
    /// Live overhead on nginx TLS under wrk.
    Live,
    /// Kernel cost per hook (BPF run time, trap floor).
    Hooks,
    /// Memory per tracked session.
    Memory,
    /// All of the above.
    All,
}

/// Sizes of the benchmarks' inputs.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Exchanges in the replay pcap.
    pub exchanges: u64,
    /// Sessions of the memory benchmark.
    pub sessions: u64,
}

/// Whether live benchmarks (root, nginx, wrk) can run here; in CI
/// (`CI=1`) or with `SESSIONWATCH_E2E_REQUIRED=1` a missing precondition is
/// an error, elsewhere they are skipped loudly.
fn live_preconditions() -> Result<bool> {
    let mut missing = Vec::new();
    if !rig::is_root() {
        missing.push("root".to_owned());
    }
    for tool in ["nginx", "wrk", "openssl"] {
        if rig::which(tool).is_none() {
            missing.push(tool.to_owned());
        }
    }
    if missing.is_empty() {
        return Ok(true);
    }
    let required = std::env::var("CI").is_ok_and(|v| v == "1" || v == "true")
        || std::env::var("SESSIONWATCH_E2E_REQUIRED").is_ok_and(|v| v == "1");
    if required {
        bail!("live benchmarks need {}", missing.join(", "));
    }
    eprintln!(
        "bench: SKIP live/hooks benchmarks: missing {} (set CI=1 or SESSIONWATCH_E2E_REQUIRED=1 to make this an error)",
        missing.join(", ")
    );
    Ok(false)
}

/// Runs one benchmark (or all).
pub fn run(root: &Path, bins: &Bins, name: Name, mode: Mode, sizes: Sizes) -> Result<()> {
    let all = name == Name::All;
    if all || name == Name::Memory {
        memory::run(root, bins, mode, sizes.sessions)?;
    }
    if all || name == Name::Replay {
        let (exchanges, rounds) = match mode {
            Mode::Full { rounds } => (sizes.exchanges, rounds),
            Mode::Smoke => (20_000, 1),
        };
        replay(root, exchanges, rounds, bins, mode)?;
    }
    if (all || name == Name::Hooks) && live_preconditions()? {
        hooks::run(root, bins, mode)?;
    }
    if (all || name == Name::Live) && live_preconditions()? {
        live::run(root, bins, mode)?;
    }
    Ok(())
}

/// CPU seconds of one round of each replay measurement.
#[derive(Debug, Default)]
struct Series {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

impl Series {
    fn push(&mut self, r: Run) {
        self.wall.push(r.wall_s);
        self.cpu.push(r.cpu_s);
    }
    fn cpu(&self) -> f64 {
        median(&mut self.cpu.clone())
    }
    fn wall(&self) -> f64 {
        median(&mut self.wall.clone())
    }
}

/// `cargo xtask bench replay`.
pub fn replay(root: &Path, exchanges: u64, rounds: usize, bins: &Bins, mode: Mode) -> Result<()> {
    let sessionwatch = bins.sessionwatch.as_path();
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    // The second file for the peak-RSS comparison: half the exchanges of
    // the same generator (the same traffic, cut shorter).
    let half_n = exchanges / 2;
    let pcap = dir.join(format!("replay-{exchanges}.pcap"));
    if !pcap.exists() {
        eprintln!(
            "bench: generating {} ({exchanges} exchanges)",
            pcap.display()
        );
        generate(&pcap, exchanges)?;
    }
    let half = dir.join(format!("replay-{half_n}.pcap"));
    if !half.exists() {
        generate(&half, half_n)?;
    }
    let size = std::fs::metadata(&pcap)?.len();
    if which("tshark").is_none() {
        bail!("tshark is not installed: apt-get install tshark (it is the peer of this benchmark)");
    }
    let floor_bin = bins.replay_floor.as_path();
    let sw = |file: &Path| {
        let mut c = Command::new(sessionwatch);
        c.arg("replay")
            .arg(file)
            .arg("--alerts")
            .arg("/dev/null")
            .env("RUST_LOG", "warn");
        c
    };
    let ts = |file: &Path| {
        let mut c = Command::new("tshark");
        c.args(["-n", "-r"]).arg(file).args([
            "-Y",
            "http",
            "-T",
            "fields",
            "-e",
            "ip.src",
            "-e",
            "http.request.method",
            "-e",
            "http.request.uri",
            "-e",
            "http.host",
            "-e",
            "http.user_agent",
            "-e",
            "http.cookie",
            "-e",
            "http.response.code",
            "-e",
            "http.set_cookie",
        ]);
        c
    };
    // The floor of any replay that reads the file with read(2): copying it
    // from the page cache into a 256 KiB buffer and nothing else.
    let dd = |file: &Path| {
        let mut c = Command::new("dd");
        c.arg(format!("if={}", file.display()))
            .args(["of=/dev/null", "bs=256K"]);
        c
    };
    // Floors of the pipeline: stop after TCP reassembly, after HTTP/1
    // parsing, and run the analysis with every detector off.
    let streams_floor = |file: &Path| {
        let mut c = Command::new(floor_bin);
        c.arg("--replay-streams").arg(file);
        c
    };
    let http_floor = |file: &Path| {
        let mut c = Command::new(floor_bin);
        c.arg("--replay").arg(file);
        c
    };
    // The least session analysis: D, then each head parsed in place and
    // the session cookie's keyed hash counted in a table.
    let session_floor = |file: &Path| {
        let mut c = Command::new(&bins.session_floor);
        c.arg(file).arg(BENCH_SESSION_COOKIE);
        c
    };
    let no_detectors_cfg = dir.join("no-detectors.toml");
    std::fs::write(
        &no_detectors_cfg,
        format!(
            "[detectors]\ndisabled = [{}]\n",
            ALL_DETECTORS
                .iter()
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )?;
    let no_detectors = |file: &Path| {
        let mut c = sw(file);
        c.arg("--config").arg(&no_detectors_cfg);
        c
    };
    let (mut a, mut b, mut dd_s) = (Series::default(), Series::default(), Series::default());
    let (mut fs, mut fh, mut fa) = (Series::default(), Series::default(), Series::default());
    let mut fg = Series::default();
    let (mut seen_exchanges, mut floor_heads) = (0u64, 0u64);
    let mut load = vec![rig::loadavg()];
    for round in 1..=rounds {
        let (ra, stderr) = timed(&mut sw(&pcap))?;
        seen_exchanges = parse_exchanges(&stderr).unwrap_or(0);
        let (rb, _) = timed(&mut ts(&pcap))?;
        let (rc, _) = timed(&mut dd(&pcap))?;
        let (rs, _) = timed(&mut streams_floor(&pcap))?;
        let (rh, _) = timed(&mut http_floor(&pcap))?;
        let (rn, _) = timed(&mut no_detectors(&pcap))?;
        let (rg, out) = timed_stdout(&mut session_floor(&pcap))?;
        floor_heads = parse_floor_heads(&out).unwrap_or(0);
        eprintln!(
            "bench round {round}: sessionwatch {:.2}s wall {:.2}s cpu | tshark {:.2}s wall {:.2}s cpu | dd {:.2}s cpu \
             | floors: streams {:.2}s, +http {:.2}s, no detectors {:.2}s, least analysis {:.2}s cpu",
            ra.wall_s,
            ra.cpu_s,
            rb.wall_s,
            rb.cpu_s,
            rc.cpu_s,
            rs.cpu_s,
            rh.cpu_s,
            rn.cpu_s,
            rg.cpu_s
        );
        a.push(ra);
        b.push(rb);
        dd_s.push(rc);
        fs.push(rs);
        fh.push(rh);
        fa.push(rn);
        fg.push(rg);
        load.push(rig::loadavg());
    }
    if floor_heads < exchanges {
        bail!(
            "the least-analysis floor parsed {floor_heads} request heads, expected {exchanges}: a floor that skips work is no floor"
        );
    }
    if seen_exchanges < exchanges {
        bail!(
            "sessionwatch reported {seen_exchanges} exchanges, expected {exchanges}: the summary line changed or replay lost data"
        );
    }
    // Peak RSS, default config: the session table holds every session of
    // the file (below the default `max_sessions`), so it grows with it.
    let rss_big = peak_rss(&mut sw(&pcap))?;
    let rss_half = peak_rss(&mut sw(&half))?;
    // With every table bounded below what both files reach, what remains
    // must not depend on the file size.
    let bounded_cfg = dir.join("bounded-sessions.toml");
    std::fs::write(
        &bounded_cfg,
        format!(
            "[sessions]\nmax_sessions = {BOUNDED_SESSIONS}\nsuppression_window = \"{BOUNDED_SUPPRESSION}\"\n"
        ),
    )?;
    let bounded = |file: &Path| {
        let mut c = sw(file);
        c.arg("--config").arg(&bounded_cfg);
        c
    };
    let rss_big_bounded = peak_rss(&mut bounded(&pcap))?;
    let rss_half_bounded = peak_rss(&mut bounded(&half))?;
    let bounded_growth =
        (rss_big_bounded as f64 - rss_half_bounded as f64) / (rss_half_bounded.max(1) as f64);
    // "Independent of the file size": within 5 % for twice the file.
    let rss_met = bounded_growth.abs() <= 0.05;
    if mode == Mode::Smoke {
        eprintln!(
            "bench replay (smoke): {exchanges} exchanges, sessionwatch {:.2}s CPU, tshark {:.2}s CPU, dd {:.2}s CPU, \
             floors {:.2}/{:.2}/{:.2}/{:.2}s CPU, peak RSS {} KiB ({} KiB on {half_n}), bounded {} KiB ({} KiB on {half_n})",
            a.cpu[0],
            b.cpu[0],
            dd_s.cpu[0],
            fs.cpu[0],
            fh.cpu[0],
            fa.cpu[0],
            fg.cpu[0],
            rss_big,
            rss_half,
            rss_big_bounded,
            rss_half_bounded
        );
        return Ok(());
    }
    let instructions = instructions_per_exchange(&dir, sessionwatch, &bins.session_floor)?;
    let spread = |v: &[f64]| {
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(0.0, f64::max);
        format!("{min:.2}–{max:.2}")
    };
    let (swc, tsc, ddc) = (a.cpu(), b.cpu(), dd_s.cpu());
    let per_core = exchanges as f64 / swc.max(1e-9);
    let us = |cpu: f64| cpu * 1e6 / exchanges as f64;
    let mut md = String::new();
    let date = now_utc();
    let _ = writeln!(md, "## Replay throughput (`cargo xtask bench replay`)\n");
    let _ = writeln!(md, "- Date: {date}");
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(
        md,
        "- Input: generated pcap, {exchanges} HTTP/1.1 exchanges, {} connections, {:.0} MiB",
        exchanges / u64::from(EXCHANGES_PER_CONN),
        size as f64 / 1048576.0
    );
    let _ = writeln!(md, "- Build: {}", build_kind(bins.pgo));
    let _ = writeln!(md, "- A: `sessionwatch replay FILE --alerts /dev/null`");
    let _ = writeln!(
        md,
        "- B: `tshark -n -r FILE -Y http -T fields -e ip.src -e http.request.method -e http.request.uri -e http.host -e http.user_agent -e http.cookie -e http.response.code -e http.set_cookie`"
    );
    let _ = writeln!(
        md,
        "- C (floor): `dd if=FILE of=/dev/null bs=256K` — what reading the file costs before any parsing"
    );
    let _ = writeln!(
        md,
        "- D, E (floors): `replay_throughput --replay-streams FILE` / `--replay FILE` (example of `sessionwatch-http`): \
         the same pcap reader and TCP reassembly, then nothing / the HTTP/1 stage building every exchange into a sink that counts"
    );
    let _ = writeln!(
        md,
        "- F: A with every detector in `[detectors] disabled` (session analysis without detectors)"
    );
    let _ = writeln!(
        md,
        "- G (floor): `session_floor FILE {BENCH_SESSION_COOKIE}` (example of `sessionwatch-sessions`): the least \
         session analysis — D, then every request and response head parsed in place with httparse (no copy, no pairing, \
         no body framing), the session cookie found in `Cookie`, its value hashed with the agent's keyed hash \
         (HMAC-SHA-256) and counted in a hash table; no fingerprint, cookie attributes, detector or output"
    );
    let _ = writeln!(
        md,
        "- Rounds: {rounds}, alternating A B C D E F G; median (min–max); CPU = user + system of the process\n"
    );
    let _ = writeln!(
        md,
        "| run | wall s | CPU s | µs CPU per exchange | exchanges/s per core |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    let mut row = |name: &str, s: &Series| {
        let c = s.cpu();
        let _ = writeln!(
            md,
            "| {name} | {:.2} ({}) | {c:.2} ({}) | {:.2} | {:.0} |",
            s.wall(),
            spread(&s.wall),
            spread(&s.cpu),
            us(c),
            exchanges as f64 / c.max(1e-9)
        );
    };
    row("A: sessionwatch", &a);
    row("B: tshark", &b);
    row("C: floor: `dd` (read(2) only)", &dd_s);
    row("D: floor: pcap reading + TCP reassembly", &fs);
    row("E: floor: D + HTTP/1 parsing into exchanges", &fh);
    row("F: sessionwatch, every detector disabled", &fa);
    row("G: floor: the least session analysis", &fg);
    let _ = writeln!(
        md,
        "\n- Ratio (CPU time, tshark / sessionwatch): **{:.1}×**",
        tsc / swc.max(1e-9)
    );
    let _ = writeln!(
        md,
        "- Load average (1 min) before and after each round: {}",
        load_list(&load)
    );
    let (sc, hc, nc) = (fs.cpu(), fh.cpu(), fa.cpu());
    let _ = writeln!(
        md,
        "- Where sessionwatch's {:.2} µs per exchange go (differences of the medians): reading the file {:.2}; \
         pcap records and TCP reassembly {:.2} (D − C); HTTP/1 parsing into owned exchanges {:.2} (E − D); \
         session analysis without detectors — cookies, keyed hashing, session table, routes, learning, metrics, \
         CLI glue {:.2} (F − E); the 20 detectors and writing their findings as JSON lines {:.2} (A − F)",
        us(swc),
        us(ddc),
        us(sc - ddc),
        us(hc - sc),
        us(nc - hc),
        us(swc - nc)
    );
    match instructions {
        Some(i) => {
            let _ = writeln!(
                md,
                "- Instructions per exchange under callgrind, on a {}-exchange file of the same generator: \
                 sessionwatch {:.0}, floor G {:.0} ({:.2}× G). Unlike the times above they do not move with the \
                 machine's load, so they compare runs of different days; valgrind runs SHA-256 in software (no \
                 SHA-NI), which inflates both by the same hashing",
                i.exchanges,
                i.sessionwatch,
                i.floor,
                i.sessionwatch / i.floor.max(1.0)
            );
        }
        None => {
            let _ = writeln!(
                md,
                "- Instructions per exchange: not measured (valgrind is not installed: `apt-get install valgrind`)"
            );
        }
    }
    let _ = writeln!(
        md,
        "- Peak RSS of sessionwatch, default config: {:.1} MiB on {exchanges} exchanges, {:.1} MiB on {half_n}. The \
         file is streamed (never held in memory); the difference is the session table and the suppression memory — \
         the generator issues two session IDs per connection ({} vs {} sessions), below the default \
         `sessions.max_sessions`, and reports each session once within the default `sessions.suppression_window`",
        rss_big as f64 / 1024.0,
        rss_half as f64 / 1024.0,
        exchanges / u64::from(EXCHANGES_PER_CONN) * 2,
        half_n / u64::from(EXCHANGES_PER_CONN) * 2
    );
    let _ = writeln!(
        md,
        "- With `sessions.max_sessions = {BOUNDED_SESSIONS}` and `sessions.suppression_window = \"{BOUNDED_SUPPRESSION}\"` \
         (both tables bounded below what either file reaches): peak RSS {:.1} MiB on {exchanges} exchanges, {:.1} MiB \
         on {half_n} ({:+.1} % for twice the file) — {}",
        rss_big_bounded as f64 / 1024.0,
        rss_half_bounded as f64 / 1024.0,
        bounded_growth * 100.0,
        if rss_met {
            "independent of the file size"
        } else {
            "NOT independent of the file size (more than 5 % apart)"
        }
    );
    let gc = fg.cpu();
    // Each status is decided once, here, for both the section and the
    // Targets table.
    let ratio = tsc / swc.max(1e-9);
    let per_core_met = per_core >= 1e6;
    let ratio_met = ratio >= 50.0;
    let met = |ok: bool| if ok { "met" } else { "not met" };
    // What each target leaves per exchange above the floor, against what
    // sessionwatch spends there now.
    let above = us(swc - gc);
    let room = |budget_us: f64| {
        let left = budget_us - us(gc);
        if left <= 0.0 {
            format!(
                "no time at all (a budget of {budget_us:.2} µs per exchange is below the floor alone)"
            )
        } else {
            format!(
                "{left:.2} µs per exchange ({:.0} % of what it takes now)",
                left / above.max(1e-9) * 100.0
            )
        }
    };
    let _ = writeln!(
        md,
        "- The floor of the targets (G): reading, reassembling, parsing both heads in place and hashing one session \
         ID cost {:.2} µs per exchange ({:.0} exchanges/s per core, {:.1}× tshark). Above it sessionwatch spends \
         {above:.2} µs per exchange on the rest of the analysis: pairing requests with responses, client \
         fingerprints, Set-Cookie attributes, routes, the session table, learning, the 20 detectors and their \
         findings. For all of that, 1,000,000 exchanges/s/core leaves {}; 50× tshark leaves {}",
        us(gc),
        exchanges as f64 / gc.max(1e-9),
        tsc / gc.max(1e-9),
        room(1.0),
        room(us(tsc / 50.0)),
    );
    let _ = writeln!(
        md,
        "- Targets: ≥ 1,000,000 exchanges/s/core ({}), ≥ 50× tshark ({})\n",
        met(per_core_met),
        met(ratio_met)
    );
    targets::record(
        &root.join("BENCHMARKS.md"),
        "replay",
        &date,
        &[
            targets::Row {
                target: targets::REPLAY_PER_CORE,
                measured: format!("{per_core:.0} ({:.2} µs per exchange)", us(swc)),
                floor: format!(
                    "G, the least session analysis: {:.0} ({:.2} µs)",
                    exchanges as f64 / gc.max(1e-9),
                    us(gc)
                ),
                status: if per_core_met {
                    "met".to_owned()
                } else if us(gc) >= 1.0 {
                    "not met: the floor alone takes the whole budget of 1 µs per exchange"
                        .to_owned()
                } else {
                    format!(
                        "not met: the budget leaves {:.2} µs per exchange above the floor, the analysis takes {above:.2}",
                        1.0 - us(gc)
                    )
                },
            },
            targets::Row {
                target: targets::REPLAY_VS_TSHARK,
                measured: format!("{ratio:.1}×"),
                floor: format!("G: {:.1}×", tsc / gc.max(1e-9)),
                status: if ratio_met {
                    "met".to_owned()
                } else {
                    format!(
                        "not met: 50× leaves {:.2} µs per exchange above the floor, the analysis takes {above:.2}",
                        us(tsc / 50.0 - gc)
                    )
                },
            },
            targets::Row {
                target: targets::REPLAY_RSS,
                measured: format!(
                    "{:+.1} % for twice the file (tables bounded)",
                    bounded_growth * 100.0
                ),
                floor: "–".to_owned(),
                status: met(rss_met).to_owned(),
            },
        ],
    )?;
    write_section(&root.join("BENCHMARKS.md"), "## Replay throughput", &md)?;
    eprint!("{md}");
    Ok(())
}

/// Instructions per exchange of sessionwatch (A) and of the least session
/// analysis (G), counted by callgrind.
struct Instructions {
    exchanges: u64,
    sessionwatch: f64,
    floor: f64,
}

/// Exchanges of the file [`instructions_per_exchange`] runs under
/// callgrind (about 50 times slower than native: seconds, not minutes).
const CALLGRIND_EXCHANGES: u64 = 20_000;

/// Counts the instructions A and G execute per exchange under callgrind,
/// on a small file of the same generator: a figure the machine's load and
/// frequency do not move. `None` without valgrind.
fn instructions_per_exchange(
    dir: &Path,
    sessionwatch: &Path,
    session_floor: &Path,
) -> Result<Option<Instructions>> {
    let Some(valgrind) = which("valgrind") else {
        eprintln!("bench: valgrind is not installed; instruction counts are not measured");
        return Ok(None);
    };
    let file = dir.join(format!("replay-{CALLGRIND_EXCHANGES}.pcap"));
    if !file.exists() {
        generate(&file, CALLGRIND_EXCHANGES)?;
    }
    let count = |program: &Path, args: &[&std::ffi::OsStr]| -> Result<f64> {
        let mut c = Command::new(&valgrind);
        c.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let (_, out) = timed_output(&mut c)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let collected = parse_collected(&stderr)
            .with_context(|| format!("no instruction count in callgrind's output:\n{stderr}"))?;
        Ok(collected as f64 / CALLGRIND_EXCHANGES as f64)
    };
    let sw = count(
        sessionwatch,
        &[
            "replay".as_ref(),
            file.as_os_str(),
            "--alerts".as_ref(),
            "/dev/null".as_ref(),
        ],
    )?;
    let floor = count(
        session_floor,
        &[file.as_os_str(), BENCH_SESSION_COOKIE.as_ref()],
    )?;
    Ok(Some(Instructions {
        exchanges: CALLGRIND_EXCHANGES,
        sessionwatch: sw,
        floor,
    }))
}

/// The total of callgrind's `==PID== Collected : N` line.
fn parse_collected(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let (_, n) = l.split_once("Collected :")?;
        n.trim().parse().ok()
    })
}

/// Request heads the least-analysis floor parsed (`floor: N request heads, …`).
fn parse_floor_heads(out: &str) -> Option<u64> {
    out.strip_prefix("floor: ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_exchanges(summary: &str) -> Option<u64> {
    let idx = summary.find("exchanges ")?;
    summary[idx + "exchanges ".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

pub(crate) fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The 1-minute load averages sampled before and after each round, as
/// the reports print them (the machine is shared; they qualify a figure).
fn load_list(load: &[f64]) -> String {
    load.iter()
        .map(|l| format!("{l:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Replaces the section starting with `heading` in BENCHMARKS.md (up to the
/// next `## `), or appends it.
pub fn write_section(path: &Path, heading: &str, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path)
        .unwrap_or_else(|_| "# Benchmarks\n\nWritten by `cargo xtask bench <name>`; each section is one recent run.\n\n".into());
    let new = match old.find(heading) {
        Some(start) => {
            let rest = &old[start + heading.len()..];
            let end = rest
                .find("\n## ")
                .map(|e| start + heading.len() + e + 1)
                .unwrap_or(old.len());
            format!("{}{}{}", &old[..start], body, &old[end..])
        }
        None => format!("{}{}", old.trim_end_matches('\n').to_owned() + "\n\n", body),
    };
    std::fs::write(path, new).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callgrind_total_is_read_from_its_summary_line() {
        let stderr = "==4242== Callgrind, a call-graph generating cache profiler\n\
                      ==4242== Events    : Ir\n\
                      ==4242== Collected : 638541504\n\
                      ==4242==\n\
                      ==4242== I   refs:      638,541,504\n";
        assert_eq!(parse_collected(stderr), Some(638_541_504));
        assert_eq!(parse_collected("==1== Events : Ir\n"), None);
        assert_eq!(parse_collected("==1== Collected : many\n"), None);
    }
}
