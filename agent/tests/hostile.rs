//! Hostile load through the real binary: a flood of distinct session IDs
//! with high-cardinality garbage (random hosts, paths, User-Agents, cookie
//! names), plus hostile heads (10 MB of header, 100,000 cookies, invalid
//! UTF-8, CR/LF smuggled into cookie values), piped as a pcap stream into
//! `sessionwatch replay /dev/stdin` with `max_sessions` bounded.
//!
//! Asserted: the peak RSS stays under an absolute bound, and — when the
//! baseline run (an eighth of the flood) is big enough to fill every
//! bounded table — the flood's peak stays within a small margin of the
//! baseline's (memory does not grow with the number of distinct IDs);
//! evictions are counted; the set of metric
//! series (names + label sets) is the same for the small and the flood run
//! (no label takes its values from the traffic); the hostile heads are
//! counted parse errors, not crashes.
//!
//! Size: `SESSIONWATCH_HOSTILE_EXCHANGES` (default 300,000 for the debug
//! build of `cargo test`). RELIABILITY.md's 10-million figure:
//! `SESSIONWATCH_HOSTILE_EXCHANGES=10000000 cargo test --release -p sessionwatch --test hostile -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::traffic::Traffic;

/// `[sessions] max_sessions` of the runs.
const MAX_SESSIONS: u64 = 20_000;
/// Event time between packets: the same packet rate in every run, so that
/// what depends on the rate rather than the total (connections within the
/// reassembler's idle timeout, sessions within their idle timeout) is the
/// same in the baseline and the flood; only the number of distinct IDs
/// differs.
const STEP_NANOS: u64 = 1_000_000;
/// Exchanges per keep-alive connection: few, so that the flood comes from
/// many client addresses (one per connection) and fills the per-client
/// state of the detectors as well.
const PER_CONN: u32 = 8;
/// Baselines of at least this many exchanges fill every fixed-size table
/// of the analysis, not only the session table: finding suppression
/// (2 generations × 262,144 scopes; each exchange yields ~1.25 findings
/// here) and the brute-force detector's 65,536 clients (one address per
/// connection). Below it only the absolute bound is asserted.
const SATURATING_BASELINE: u64 = 500_000;
/// Peak RSS no run may exceed (`max_sessions` = 20,000). The tables above
/// account for about 80 MiB; ten million distinct IDs kept unbounded would
/// take more than 400 MiB.
const ABSOLUTE_BOUND_KIB: i64 = 192 * 1024;

/// xorshift64*: reproducible garbage without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `n` characters of `[a-z0-9]`.
    fn word(&mut self, out: &mut Vec<u8>, n: usize) {
        const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        for _ in 0..n {
            out.push(A[(self.next() % A.len() as u64) as usize]);
        }
    }

    /// `n` arbitrary bytes that are legal in an HTTP/1 header value
    /// (visible ASCII, space, obs-text 0x80-0xff: invalid UTF-8 included).
    fn garbage(&mut self, out: &mut Vec<u8>, n: usize) {
        for _ in 0..n {
            let b = (self.next() % 224) as u8 + 0x20;
            out.push(if b == 0x7f { b'~' } else { b });
        }
    }
}

/// Figures of one run.
struct Run {
    exchanges: u64,
    ids: u64,
    max_rss_kib: i64,
    elapsed: Duration,
    metrics: String,
    stderr: String,
}

fn config(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("hostile.toml");
    std::fs::write(
        &p,
        format!(
            "[sessions]\ncookie_names = [\"sessionid\", \"JSESSIONID\"]\nmax_sessions = {MAX_SESSIONS}\n"
        ),
    )
    .unwrap();
    p
}

/// One ordinary flood exchange: a new session ID presented, a random
/// host, path and User-Agent; every fourth response issues another new ID.
fn flood_exchange(rng: &mut Rng, n: u64, req: &mut Vec<u8>, resp: &mut Vec<u8>, ids: &mut u64) {
    req.clear();
    resp.clear();
    req.extend_from_slice(b"GET /");
    rng.word(req, 6 + (n % 20) as usize);
    req.push(b'/');
    rng.word(req, 8);
    req.extend_from_slice(b"?q=");
    rng.word(req, 10);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    rng.word(req, 12);
    req.extend_from_slice(b".example\r\nUser-Agent: ");
    if n.is_multiple_of(3) {
        req.extend_from_slice(b"Mozilla/5.0 (X11; Linux x86_64) Firefox/");
        req.extend_from_slice((rng.next() % 1000).to_string().as_bytes());
        req.extend_from_slice(b".0 ");
        rng.word(req, 8);
    } else {
        rng.garbage(req, 40);
    }
    req.extend_from_slice(b"\r\nCookie: ");
    rng.word(req, 5);
    req.extend_from_slice(b"=x; sessionid=");
    req.extend_from_slice(format!("{n:016x}{:016x}", rng.next()).as_bytes());
    *ids += 1;
    req.extend_from_slice(b"\r\n\r\n");
    resp.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n");
    if n.is_multiple_of(4) {
        resp.extend_from_slice(b"Set-Cookie: sessionid=");
        resp.extend_from_slice(format!("s{n:015x}{:016x}", rng.next()).as_bytes());
        resp.extend_from_slice(b"; Path=/; HttpOnly; Secure; SameSite=Lax\r\n");
        *ids += 1;
    }
    resp.extend_from_slice(b"\r\n");
}

/// The hostile heads, written once per run (same set in every run).
fn hostile_heads<W: Write>(t: &mut Traffic<W>) {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    // 10 MB of header value.
    let mut big = b"GET /big HTTP/1.1\r\nHost: h\r\nX-Big: ".to_vec();
    big.resize(big.len() + 10 * 1024 * 1024, b'a');
    big.extend_from_slice(b"\r\nCookie: sessionid=bigheadsession0000000001\r\n\r\n");
    t.exchange(&big, ok).unwrap();
    // 100,000 cookies in one Cookie header.
    let mut many = b"GET /many HTTP/1.1\r\nHost: h\r\nCookie: ".to_vec();
    for i in 0..100_000 {
        many.extend_from_slice(format!("c{i}=v; ").as_bytes());
    }
    many.extend_from_slice(b"sessionid=manycookiessession00000001\r\n\r\n");
    t.exchange(&many, ok).unwrap();
    // 1,000 Set-Cookie headers in one response (more fields than a head
    // may have: the response head is skipped and counted).
    let mut sc = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n".to_vec();
    for i in 0..1_000 {
        sc.extend_from_slice(format!("Set-Cookie: k{i}=v\r\n").as_bytes());
    }
    sc.extend_from_slice(b"\r\n");
    t.exchange(b"GET /sc HTTP/1.1\r\nHost: h\r\n\r\n", &sc)
        .unwrap();
    // 500+ pairs within the head limit: the per-request pair cap.
    let mut pairs = b"GET /pairs HTTP/1.1\r\nHost: h\r\nCookie: ".to_vec();
    for i in 0..2_000 {
        pairs.extend_from_slice(format!("p{i}=1; ").as_bytes());
    }
    pairs.extend_from_slice(b"sessionid=paircapsession000000000001\r\n\r\n");
    t.exchange(&pairs, ok).unwrap();
    // Invalid UTF-8 in the cookie name, value, host and path.
    t.exchange(
        b"GET /\xff\xfe/p HTTP/1.1\r\nHost: \xc3\x28.example\r\nCookie: \xf0\x28=1; sessionid=\xc0\xafutf8session000000001\r\n\r\n",
        ok,
    )
    .unwrap();
    // A bare CR inside a cookie value (request head rejected).
    t.exchange(
        b"GET /cr HTTP/1.1\r\nHost: h\r\nCookie: sessionid=crinjected000000001\rSet-Cookie: x=1\r\n\r\n",
        ok,
    )
    .unwrap();
    // CR/LF inside a cookie value over HTTP/2 (prior knowledge), where no
    // line syntax stops it.
    t.end_connection().unwrap();
    t.exchange(&h2_request_with_crlf_cookie(), &h2_response())
        .unwrap();
    t.end_connection().unwrap();
    // CR/LF smuggled into a Set-Cookie value by an obsolete line fold.
    t.exchange(
        b"GET /fold HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nSet-Cookie: sessionid=foldsession00000000001\r\n Injected: 1; Path=/\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
}

/// An HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Preface, SETTINGS, and a GET whose `cookie` field (an HPACK literal)
/// carries CR/LF inside the session ID.
fn h2_request_with_crlf_cookie() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 10];
    block.extend_from_slice(b"h2.example");
    let cookie = b"sessionid=h2crlfsession0000000001\r\nX-Injected: 1";
    block.extend_from_slice(&[0x00, 6]);
    block.extend_from_slice(b"cookie");
    block.push(cookie.len() as u8);
    block.extend_from_slice(cookie);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    out.extend(h2_frame(1, 0x05, 1, &block));
    out
}

/// SETTINGS, SETTINGS ACK, `:status 200` on stream 1.
fn h2_response() -> Vec<u8> {
    let mut out = h2_frame(4, 0, 0, &[]);
    out.extend(h2_frame(4, 1, 0, &[]));
    out.extend(h2_frame(1, 0x05, 1, &[0x88]));
    out
}

// The child is reaped with wait4(2) (for its rusage), not Child::wait.
#[allow(clippy::zombie_processes)]
fn flood(dir: &Path, exchanges: u64, seed: u64) -> Run {
    let metrics = dir.join(format!("metrics-{exchanges}.prom"));
    let stderr = dir.join(format!("stderr-{exchanges}.txt"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .arg("replay")
        .arg("/dev/stdin")
        .arg("--config")
        .arg(config(dir))
        // Every flood session is cleartext (pcap): millions of findings,
        // written and discarded.
        .arg("--alerts")
        .arg("/dev/null")
        .arg("--metrics-out")
        .arg(&metrics)
        .env("RUST_LOG", "warn")
        .env("NODE_NAME", "hostile")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start sessionwatch replay");
    let started = Instant::now();
    let stdin = child.stdin.take().unwrap();
    let mut t = Traffic::new(
        BufWriter::with_capacity(1 << 20, stdin),
        PER_CONN,
        STEP_NANOS,
    )
    .unwrap();
    let mut rng = Rng(seed | 1);
    let (mut req, mut resp) = (Vec::new(), Vec::new());
    let mut ids = 0;
    for n in 0..exchanges {
        if n == exchanges / 2 {
            hostile_heads(&mut t);
        }
        flood_exchange(&mut rng, n, &mut req, &mut resp, &mut ids);
        t.exchange(&req, &resp).unwrap();
    }
    let mut out = t.finish().unwrap();
    out.flush().unwrap();
    drop(out);
    // wait4 rather than Child::wait: the kernel's peak RSS of this child.
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own unreaped child; both pointers are to live
    // locals of the right types.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    let elapsed = started.elapsed();
    let stderr = std::fs::read_to_string(&stderr).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "replay of {exchanges} exchanges failed (status {status}):\n{stderr}"
    );
    Run {
        exchanges,
        ids,
        max_rss_kib: usage.ru_maxrss,
        elapsed,
        metrics: std::fs::read_to_string(&metrics).unwrap(),
        stderr,
    }
}

/// Series (name + label set) of a Prometheus text exposition.
fn series(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

fn value(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn report(what: &str, r: &Run) {
    eprintln!(
        "hostile {what}: {} exchanges, {} distinct session IDs, peak RSS {} MiB, {:.1} s ({:.0} exchanges/s)",
        r.exchanges,
        r.ids,
        r.max_rss_kib / 1024,
        r.elapsed.as_secs_f64(),
        r.exchanges as f64 / r.elapsed.as_secs_f64()
    );
}

#[test]
fn flood_of_distinct_sessions_and_garbage_stays_bounded() {
    let exchanges: u64 = std::env::var("SESSIONWATCH_HOSTILE_EXCHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let small_n = (exchanges / 8).max(3 * MAX_SESSIONS);
    assert!(
        exchanges >= 4 * small_n,
        "the flood must dwarf the baseline"
    );
    let dir = tempfile::tempdir().unwrap();

    // The small run fills every bounded table; the flood only adds IDs.
    let small = flood(dir.path(), small_n, 7);
    report("small", &small);
    let big = flood(dir.path(), exchanges, 11);
    report("flood", &big);
    if std::env::var_os("SESSIONWATCH_HOSTILE_SHOW").is_some() {
        eprintln!("{}\n{}", big.metrics, big.stderr);
    }

    // Memory: bounded by the configuration and the fixed-size tables, not
    // by the traffic.
    for r in [&small, &big] {
        assert!(
            r.max_rss_kib <= ABSOLUTE_BOUND_KIB,
            "peak RSS {} KiB over {ABSOLUTE_BOUND_KIB} KiB ({} exchanges)",
            r.max_rss_kib,
            r.exchanges
        );
    }
    if small_n >= SATURATING_BASELINE {
        // Every table is full after the baseline: eight times the traffic
        // must not need more memory.
        let margin_kib = small.max_rss_kib / 4 + 16 * 1024;
        assert!(
            big.max_rss_kib <= small.max_rss_kib + margin_kib,
            "peak RSS grew from {} KiB ({} exchanges) to {} KiB ({} exchanges)",
            small.max_rss_kib,
            small.exchanges,
            big.max_rss_kib,
            big.exchanges
        );
    }

    // Evictions are counted: every ID beyond the table's size left it.
    for r in [&small, &big] {
        let evicted = value(
            &r.metrics,
            "sessionwatch_sessions_evicted_total{reason=\"capacity\"}",
        ) + value(
            &r.metrics,
            "sessionwatch_sessions_evicted_total{reason=\"ttl\"}",
        );
        assert!(
            evicted + MAX_SESSIONS >= r.ids - r.ids / 100,
            "{} IDs, {evicted} evictions counted:\n{}",
            r.ids,
            r.metrics
        );
        let tracked: Vec<u64> = r
            .metrics
            .lines()
            .filter(|l| l.starts_with("sessionwatch_sessions_tracked{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
            .collect();
        assert!(!tracked.is_empty(), "no sessions_tracked series");
        assert!(
            tracked.iter().sum::<u64>() <= MAX_SESSIONS,
            "{tracked:?} sessions tracked"
        );
    }

    // The same series, whatever the traffic: no label from the input.
    let (a, b) = (series(&small.metrics), series(&big.metrics));
    assert_eq!(
        a.symmetric_difference(&b).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "metric series differ between {} and {} exchanges",
        small.exchanges,
        big.exchanges
    );
    assert!(b.len() < 200, "{} series", b.len());

    // The hostile heads are counted parse errors (both runs carry them).
    for r in [&small, &big] {
        let too_large = value(
            &r.metrics,
            "sessionwatch_parse_errors_total{kind=\"head_too_large\",protocol=\"http1\"}",
        );
        assert!(
            too_large >= 2,
            "10 MB header, 100,000 cookies:\n{}",
            r.metrics
        );
        let invalid = value(
            &r.metrics,
            "sessionwatch_parse_errors_total{kind=\"invalid_head\",protocol=\"http1\"}",
        );
        assert!(invalid >= 1, "bare CR in a cookie value:\n{}", r.metrics);
        let fields = value(
            &r.metrics,
            "sessionwatch_parse_errors_total{kind=\"too_many_headers\",protocol=\"http1\"}",
        );
        assert!(fields >= 1, "1,000 Set-Cookie headers:\n{}", r.metrics);
        for kind in ["id_invalid", "set_cookie_invalid", "pairs_capped"] {
            let n = value(
                &r.metrics,
                &format!("sessionwatch_parse_errors_total{{kind=\"{kind}\",protocol=\"cookie\"}}"),
            );
            assert!(n >= 1, "{kind} not counted:\n{}", r.metrics);
        }
        // Full analysis tables are exported, every table from the start:
        // random User-Agents overflow the family table, the rest stay 0.
        for table in ["services", "user_agents", "suppression", "detector_state"] {
            let series = format!("sessionwatch_analysis_table_full_total{{table=\"{table}\"}}");
            assert!(
                r.metrics.contains(&series),
                "{series} missing:\n{}",
                r.metrics
            );
        }
        let uas = value(
            &r.metrics,
            "sessionwatch_analysis_table_full_total{table=\"user_agents\"}",
        );
        assert!(
            uas >= 1,
            "random User-Agents never overflowed:\n{}",
            r.metrics
        );
        assert!(
            r.stderr.contains("analysis tables full") && r.stderr.contains("user_agents"),
            "summary does not show the full tables:\n{}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
}
