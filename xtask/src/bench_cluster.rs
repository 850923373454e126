//! `cargo xtask bench cluster`: what cross-node correlation costs.
//!
//! Generates steady keep-alive traffic — many long-lived sessions, each on
//! its own keep-alive connection, browsing at a steady pace (one request
//! every `GAP_S` seconds of event time) — starts a real `redis-server` on
//! a loopback port, and replays the same pcap with `[cluster]` off and on,
//! alternating (off on off on …). Reports the Redis commands per analysed
//! exchange (`sessionwatch_cluster_operations_total` over
//! `sessionwatch_http_exchanges_total`, from `--metrics-out`) and the
//! replay throughput both ways, into the `## Cluster` section of
//! BENCHMARKS.md.

use std::fmt::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench::rig::{free_port, metric_sum};
use crate::bench::{now_utc, rig};
use crate::pcapw::{ACK, PSH_ACK, PcapWriter, SYN};

/// Seconds of event time between two requests of one session.
const GAP_S: u64 = 2;
/// Session ID length (hex digits).
const ID_HEX: usize = 32;

/// One session's keep-alive connection.
struct Flow {
    client: ([u8; 4], u16),
    cseq: u32,
    sseq: u32,
    id: String,
    ua: &'static str,
}

/// `sessions` sessions × `requests` requests each, interleaved in event
/// time: session `s` sends its `i`-th request at `i × GAP_S` s plus a
/// per-session offset. The first response issues the ID; the rest use it.
fn generate(path: &Path, sessions: u32, requests: u32) -> Result<u64> {
    let mut w = PcapWriter::create(path)?;
    let server = ([192, 0, 2, 10], 8080u16);
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    ];
    let mut x: u64 = 0x005e_5510_57c1_u64;
    let mut rnd = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let t0: u64 = 1_764_000_000_000_000;
    let mut flows: Vec<Flow> = (0..sessions)
        .map(|s| Flow {
            client: (
                [198, 51, 100 + (s >> 8) as u8 % 100, s as u8],
                20_000 + (s % 40_000) as u16,
            ),
            cseq: 1000u32.wrapping_mul(s + 1),
            sseq: 7000u32.wrapping_mul(s + 1),
            id: format!("{:016x}{:016x}", rnd(), rnd())[..ID_HEX].to_owned(),
            ua: agents[(s % 3) as usize],
        })
        .collect();
    // Spread session starts over one gap.
    let offset = |s: u32| u64::from(s) * GAP_S * 1_000_000 / u64::from(sessions.max(1));
    for (s, f) in flows.iter_mut().enumerate() {
        let ts = t0 + offset(s as u32);
        w.tcp(ts, f.client, server, f.cseq, 0, SYN, &[])?;
        w.tcp(
            ts + 50,
            server,
            f.client,
            f.sseq,
            f.cseq + 1,
            SYN | ACK,
            &[],
        )?;
        f.cseq += 1;
        f.sseq += 1;
        w.tcp(ts + 100, f.client, server, f.cseq, f.sseq, ACK, &[])?;
    }
    let mut req = String::new();
    let mut resp = String::new();
    let mut written = 0u64;
    for i in 0..requests {
        for (s, f) in flows.iter_mut().enumerate() {
            let ts = t0 + offset(s as u32) + u64::from(i) * GAP_S * 1_000_000 + 1_000;
            req.clear();
            resp.clear();
            let _ = write!(
                req,
                "GET /products/{}?page={i} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {}\r\nAccept: text/html\r\nX-Forwarded-Proto: https\r\n",
                s % 977,
                f.ua
            );
            if i > 0 {
                let _ = write!(req, "Cookie: sessionid={}; theme=dark\r\n", f.id);
            }
            req.push_str("\r\n");
            resp.push_str("HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/html\r\n");
            if i == 0 {
                let _ = write!(
                    resp,
                    "Set-Cookie: sessionid={}; Path=/; Secure; HttpOnly; SameSite=Lax\r\n",
                    f.id
                );
            }
            resp.push_str("Content-Length: 12\r\n\r\nhello world\n");
            w.tcp(
                ts,
                f.client,
                server,
                f.cseq,
                f.sseq,
                PSH_ACK,
                req.as_bytes(),
            )?;
            f.cseq = f.cseq.wrapping_add(req.len() as u32);
            w.tcp(
                ts + 300,
                server,
                f.client,
                f.sseq,
                f.cseq,
                PSH_ACK,
                resp.as_bytes(),
            )?;
            f.sseq = f.sseq.wrapping_add(resp.len() as u32);
            written += 1;
        }
    }
    w.finish()?;
    Ok(written)
}

/// redis-server on a loopback port, killed on drop.
struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(dir: &Path, port: u16) -> Result<Redis> {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start redis-server (apt-get install redis-server)")?;
    let r = Redis(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(r)
}

/// One measured replay.
struct Run {
    wall_s: f64,
    cpu_s: f64,
    exchanges: f64,
    ops: f64,
    dropped: f64,
    errors: f64,
}

fn replay(sessionwatch: &Path, pcap: &Path, config: &Path, metrics: &Path) -> Result<Run> {
    let before = rig::children_cpu_seconds();
    let start = Instant::now();
    let out = Command::new(sessionwatch)
        .arg("replay")
        .arg(pcap)
        .arg("--config")
        .arg(config)
        .arg("--metrics-out")
        .arg(metrics)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("run sessionwatch replay")?;
    let wall_s = start.elapsed().as_secs_f64();
    let cpu_s = rig::children_cpu_seconds() - before;
    if !out.status.success() {
        bail!(
            "sessionwatch replay failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(metrics)?;
    Ok(Run {
        wall_s,
        cpu_s,
        exchanges: metric_sum(&text, "sessionwatch_http_exchanges_total"),
        ops: metric_sum(&text, "sessionwatch_cluster_operations_total"),
        dropped: metric_sum(&text, "sessionwatch_cluster_dropped_total"),
        errors: metric_sum(&text, "sessionwatch_cluster_errors_total"),
    })
}

/// `used_memory` (bytes) and `DBSIZE` of the benchmark's redis-server.
fn redis_memory(port: u16) -> (f64, f64) {
    let cli = |args: &[&str]| {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let used = cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let keys = cli(&["DBSIZE"]).trim().parse().unwrap_or(0.0);
    (used, keys)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// `cargo xtask bench cluster`.
pub fn cluster(
    root: &Path,
    sessionwatch: &Path,
    sessions: u32,
    requests: u32,
    rounds: usize,
) -> Result<()> {
    let dir: PathBuf = root.join("target/bench/cluster");
    std::fs::create_dir_all(&dir)?;
    let pcap = dir.join(format!("steady-{sessions}x{requests}.pcap"));
    if !pcap.exists() {
        eprintln!("bench: generating {}", pcap.display());
        generate(&pcap, sessions, requests)?;
    }
    let key = dir.join("hash.key");
    std::fs::write(&key, "5a".repeat(32) + "\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    let port = free_port()?;
    let _redis = start_redis(&dir, port)?;
    let off = dir.join("off.toml");
    std::fs::write(
        &off,
        format!(
            "[sessions]\nhash_key_file = \"{}\"\n[agent]\nnode_name = \"bench\"\n",
            key.display()
        ),
    )?;
    let (baseline, _) = redis_memory(port);
    let (mut off_runs, mut on_runs) = (Vec::new(), Vec::new());
    for r in 0..rounds.max(1) {
        off_runs.push(replay(sessionwatch, &pcap, &off, &dir.join("off.prom"))?);
        // A fresh key prefix per round: every round starts with an empty
        // shared store, like a first agent on a new deployment.
        let on = dir.join("on.toml");
        std::fs::write(
            &on,
            format!(
                "[sessions]\nhash_key_file = \"{}\"\n[agent]\nnode_name = \"bench\"\n\
                 [cluster]\nenabled = true\nredis_url = \"redis://127.0.0.1:{port}\"\nkey_prefix = \"bench{r}\"\n",
                key.display()
            ),
        )?;
        on_runs.push(replay(sessionwatch, &pcap, &on, &dir.join("on.prom"))?);
        eprintln!(
            "bench: round {}: off {:.2}s, on {:.2}s, {:.0} ops / {:.0} exchanges",
            r + 1,
            off_runs[r].wall_s,
            on_runs[r].wall_s,
            on_runs[r].ops,
            on_runs[r].exchanges
        );
    }
    let (used, keys) = redis_memory(port);
    let per_key = (used - baseline) / keys.max(1.0);
    let per_s = |v: &[Run]| median(v.iter().map(|r| r.exchanges / r.cpu_s.max(1e-9)).collect());
    let wall = |v: &[Run]| median(v.iter().map(|r| r.wall_s).collect());
    let cpu = |v: &[Run]| median(v.iter().map(|r| r.cpu_s).collect());
    let ops_per_ex = median(
        on_runs
            .iter()
            .map(|r| r.ops / r.exchanges.max(1.0))
            .collect(),
    );
    let exchanges = on_runs.first().map_or(0.0, |r| r.exchanges);
    let dropped: f64 = on_runs.iter().map(|r| r.dropped).sum();
    let errors: f64 = on_runs.iter().map(|r| r.errors).sum();
    let redis_version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| {
            let v = String::from_utf8_lossy(&o.stdout).into_owned();
            v.split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .map_or_else(|| v.trim().to_owned(), |v| format!("Redis {v}"))
        })
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "## Cluster\n");
    let _ = writeln!(
        md,
        "`cargo xtask bench cluster` (`--sessions {sessions} --requests {requests} --rounds {rounds}`), {}.",
        now_utc()
    );
    let _ = writeln!(
        md,
        "Steady keep-alive traffic: {sessions} sessions, each on its own keep-alive connection, one request every \
         {GAP_S} s of event time, {requests} requests per session ({exchanges:.0} exchanges, {:.0} minutes of event \
         time); the first response issues the ID, every later request presents it. One agent replays it with \
         `[cluster]` off and on (default `[cluster]` settings, {redis_version} on a loopback port, an empty key \
         prefix per round), alternating off/on {rounds} times; medians.\n",
        f64::from(requests) * GAP_S as f64 / 60.0
    );
    let _ = writeln!(md, "| | wall s | CPU s (agent) | exchanges/s/core |");
    let _ = writeln!(md, "|---|---|---|---|");
    let _ = writeln!(
        md,
        "| clustering off | {:.2} | {:.2} | {:.0} |",
        wall(&off_runs),
        cpu(&off_runs),
        per_s(&off_runs)
    );
    let _ = writeln!(
        md,
        "| clustering on | {:.2} | {:.2} | {:.0} |",
        wall(&on_runs),
        cpu(&on_runs),
        per_s(&on_runs)
    );
    let _ = writeln!(
        md,
        "\n- Redis commands per analysed exchange: **{ops_per_ex:.4}** (target ≤ 0.05: {}). Commands counted by \
         `sessionwatch_cluster_operations_total` (every HSET, HSETNX, EXPIRE and HGETALL), exchanges by \
         `sessionwatch_http_exchanges_total`.",
        if ops_per_ex <= 0.05 { "met" } else { "not met" }
    );
    let _ = writeln!(
        md,
        "- What they are: per session, its first sighting and first use (3 commands each, one `EXPIRE` per key \
         per batch), one `use` update per `idle_timeout / 4` of event time, and one `HGETALL` on first sight and \
         then at most once per `cache_ttl` of event time while the session is in use.",
    );
    let _ = writeln!(
        md,
        "- Throughput cost of clustering: {:.1} % CPU (on vs off). Changes dropped: {dropped:.0}; errors: {errors:.0}.",
        (cpu(&on_runs) / cpu(&off_runs).max(1e-9) - 1.0) * 100.0
    );
    let _ = writeln!(
        md,
        "- Redis memory: {per_key:.0} bytes per session key (`used_memory` growth over {keys:.0} keys, default \
         redis-server settings: small hashes are listpack-encoded).\n"
    );
    crate::bench::write_section(&root.join("BENCHMARKS.md"), "## Cluster", &md)?;
    eprint!("{md}");
    Ok(())
}
