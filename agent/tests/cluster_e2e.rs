//! End-to-end: cross-node correlation through a real Redis (Debian
//! `redis-server`).
//!
//! A hijack and a logout journey are cut in two halves, as a load balancer
//! would spread them over two proxy replicas: the victim's requests (login,
//! use, logout) reach node A, the attacker's replay of the stolen cookies
//! reaches node B. Alone, each agent sees one fingerprint per session and
//! no logout followed by a use. Sharing sightings through Redis, agent B
//! must report `session_fingerprint_change` and `session_accepted_after_logout`
//! naming both nodes.
//!
//! - `two_agents_share_sightings_through_redis`: two `sessionwatch replay`
//!   processes (A to completion, then B) on one redis-server.
//! - `two_agents_share_sightings_through_redis_cluster`: the same on a
//!   3-node Redis Cluster started on loopback ports.
//! - `two_agents_share_sightings_through_rediss_with_client_certificates`:
//!   the same over TLS only, with a private CA and client certificates
//!   (`tls_ca_file`, `tls_cert_file`, `tls_key_file`); without them the
//!   agents cannot connect and say so.
//! - `two_agents_share_sightings_through_sentinel_across_a_failover`: A
//!   writes through a Redis Sentinel, the primary is killed and its replica
//!   promoted, B reaches the new primary through the sentinel.
//! - `a_replay_started_before_redis_waits_for_it`: B starts while Redis
//!   is down, its first attempt is refused, and it waits (within
//!   `lookup_timeout` of its start) for the retry that reaches A's
//!   sightings.
//! - `agents_survive_redis_restart`: two in-process agents (the library's
//!   pipeline, as `replay` builds it) keep analysing while redis-server is
//!   killed (`sessionwatch_cluster_up 0`, errors counted) and share again
//!   after it is restarted.
//! - `clustering_on_one_node_changes_no_finding`: on every recorded
//!   fixture, one agent reports the same findings with clustering on as off.
//!
//! Needs redis-server and redis-cli; without them the tests print a loud
//! SKIP line (or fail when `CI` or `SESSIONWATCH_E2E_REQUIRED=1` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sessionwatch::config::Config;
use sessionwatch::export::alerts::{FindingFanout, JsonLinesSink};
use sessionwatch::export::metrics::Metrics;
use sessionwatch::export::summary::Summary;
use sessionwatch::pipeline::Pipeline;
use sessionwatch_sessions::HashKey;
use sessionwatch_sessions::hash::SessionHasher;
use sessionwatch_streams::Timestamp;
use sessionwatch_streams::decode::LINKTYPE_ETHERNET;
use sessionwatch_streams::synth::{Conversation, PcapWriter, frame};

const VICTIM_IP: &str = "203.0.113.7";
const ATTACKER_IP: &str = "198.51.100.66";
const CURL: &str = "curl/8.5.0";
/// Event time of the first packet (2026-09-21).
const T0: u64 = 1_790_000_000;

fn tools() -> Option<(PathBuf, PathBuf)> {
    match (find_tool("redis-server"), find_tool("redis-cli")) {
        (Some(s), Some(c)) => Some((s, c)),
        _ => {
            let msg = "SKIP cluster_e2e: needs redis-server and redis-cli (apt-get install redis-server redis-tools)";
            assert!(!required(), "{msg}");
            eprintln!("{msg}");
            None
        }
    }
}

/// A session ID that looks like what frameworks issue (43 URL-safe
/// characters, ~256 bits).
fn id(seed: u64) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..43)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            A[(x % 64) as usize] as char
        })
        .collect()
}

/// One request/response on its own connection, `at` seconds after `T0`.
struct Ex {
    at: u64,
    request: String,
    response: String,
}

fn get(path: &str, ua: &str, cookie: Option<&str>) -> String {
    let mut r = format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: {ua}\r\n");
    if let Some(c) = cookie {
        r.push_str(&format!("Cookie: sessionid={c}\r\n"));
    }
    r + "\r\n"
}

fn response(status: &str, extra: &[String]) -> String {
    let mut r = format!("HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: 2\r\n");
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r + "\r\nok"
}

fn set_cookie(v: &str) -> String {
    format!("Set-Cookie: sessionid={v}; Path=/; Secure; HttpOnly; SameSite=Lax")
}

/// Writes the exchanges from `client` as a pcap, one connection each.
fn write_pcap(path: &Path, client_ip: &str, port_base: u16, exchanges: &[Ex]) {
    let f = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = PcapWriter::new(f, LINKTYPE_ETHERNET, 262_144).unwrap();
    let server: SocketAddr = "192.0.2.80:80".parse().unwrap();
    for (i, ex) in exchanges.iter().enumerate() {
        let client: SocketAddr = format!("{client_ip}:{}", port_base + i as u16)
            .parse()
            .unwrap();
        let mut c = Conversation::new(client, server, 1000 + i as u32 * 7, 9000 + i as u32 * 11);
        let mut segs = c.handshake();
        segs.push(c.client_data(ex.request.as_bytes()));
        segs.push(c.server_data(ex.response.as_bytes()));
        segs.extend(c.close());
        for (j, s) in segs.iter().enumerate() {
            let ts = Timestamp::from_secs_nanos(T0 + ex.at, j as u32 * 1_000_000);
            w.write(ts, &frame(LINKTYPE_ETHERNET, &s.ip_packet()))
                .unwrap();
        }
    }
}

/// Victim half (node A) and attacker half (node B) of one round, `base`
/// seconds after `T0`: session `h` is hijacked while in use, session `l`
/// is replayed after the victim logged out.
fn round(dir: &Path, base: u64, tag: &str) -> (PathBuf, PathBuf) {
    let (h, l) = (id(base * 2 + 1), id(base * 2 + 2));
    let victim = vec![
        Ex {
            at: base,
            request: get("/", FIREFOX, None),
            response: response("200 OK", &[set_cookie(&h)]),
        },
        Ex {
            at: base + 2,
            request: get("/account", FIREFOX, Some(&h)),
            response: response("200 OK", &[]),
        },
        Ex {
            at: base + 4,
            request: format!(
                "POST /login HTTP/1.1\r\nHost: shop.test\r\nUser-Agent: {FIREFOX}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nuser=alice&"
            ),
            response: response("302 Found", &["Location: /account".into(), set_cookie(&l)]),
        },
        Ex {
            at: base + 6,
            request: get("/account", FIREFOX, Some(&l)),
            response: response("200 OK", &[]),
        },
        Ex {
            at: base + 8,
            request: get("/logout", FIREFOX, Some(&l)),
            response: response(
                "302 Found",
                &[
                    "Location: /".into(),
                    "Set-Cookie: sessionid=; Max-Age=0; Path=/".into(),
                ],
            ),
        },
    ];
    let attacker = vec![
        Ex {
            at: base + 60,
            request: get("/account", CURL, Some(&h)),
            response: response("200 OK", &[]),
        },
        Ex {
            at: base + 62,
            request: get("/orders", CURL, Some(&l)),
            response: response("200 OK", &[]),
        },
    ];
    let (a, b) = (
        dir.join(format!("victim-{tag}.pcap")),
        dir.join(format!("attacker-{tag}.pcap")),
    );
    write_pcap(&a, VICTIM_IP, 40000, &victim);
    write_pcap(&b, ATTACKER_IP, 50000, &attacker);
    (a, b)
}

fn key_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("hash.key");
    std::fs::write(&p, "8f".repeat(32) + "\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn config(dir: &Path, node: &str, url: &str, mode: &str, prefix: &str) -> PathBuf {
    config_with(dir, node, url, mode, prefix, "")
}

/// [`config`] with `extra` lines appended to `[cluster]`.
fn config_with(
    dir: &Path,
    node: &str,
    url: &str,
    mode: &str,
    prefix: &str,
    extra: &str,
) -> PathBuf {
    let p = dir.join(format!("{node}.toml"));
    std::fs::write(
        &p,
        format!(
            r#"[sessions]
hash_key_file = "{key}"

[agent]
node_name = "{node}"

[cluster]
enabled = true
redis_url = "{url}"
mode = "{mode}"
key_prefix = "{prefix}"
lookup_timeout = "3s"
command_timeout = "2s"
max_backoff = "500ms"
{extra}
"#,
            key = key_file(dir).display()
        ),
    )
    .unwrap();
    p
}

fn start_redis(server: &Path, dir: &Path, port: u16, extra: &[&str]) -> Guard {
    let child = Command::new(server)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let g = Guard(child);
    wait_port(port);
    g
}

fn redis_cli(cli: &Path, port: u16, args: &[&str]) -> String {
    let out = Command::new(cli)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn replay(config: &Path, pcap: &Path) -> (Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .arg("replay")
        .arg(pcap)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "replay failed: {stderr}");
    let findings = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (findings, stderr)
}

fn of<'a>(findings: &'a [Value], detector: &str) -> Vec<&'a Value> {
    findings
        .iter()
        .filter(|f| f["detector"] == detector)
        .collect()
}

/// What agent B must report on the attacker's half, naming both nodes.
fn assert_cross_node(b: &[Value]) {
    let fp = of(b, "session_fingerprint_change");
    assert!(!fp.is_empty(), "no fingerprint change on node B: {b:#?}");
    for f in &fp {
        assert_eq!(f["node"], "node-b");
        assert_eq!(f["severity"], "high", "{f}");
        assert_eq!(f["client"]["ip"], ATTACKER_IP);
        assert_eq!(f["evidence"]["previous_ip"], VICTIM_IP, "{f}");
        assert_eq!(f["evidence"]["previous_user_agent"], "firefox/128", "{f}");
        assert_eq!(f["evidence"]["previous_node"], "node-a", "{f}");
        assert_eq!(
            f["evidence"]["seen_on"],
            serde_json::json!(["node-a", "node-b"]),
            "{f}"
        );
    }
    let lo = of(b, "session_accepted_after_logout");
    assert_eq!(lo.len(), 1, "post-logout acceptance on node B: {b:#?}");
    assert_eq!(lo[0]["node"], "node-b");
    assert_eq!(lo[0]["request"]["path"], "/orders");
    assert_eq!(lo[0]["evidence"]["logout_node"], "node-a", "{}", lo[0]);
    assert_eq!(
        lo[0]["evidence"]["logout_signal"], "logout_route",
        "{}",
        lo[0]
    );
    assert_eq!(lo[0]["evidence"]["since_logout_seconds"], 54, "{}", lo[0]);
    assert_eq!(
        lo[0]["evidence"]["seen_on"],
        serde_json::json!(["node-a", "node-b"])
    );
    // Both stolen IDs were reported as a change of client.
    let sessions: std::collections::BTreeSet<_> =
        fp.iter().map(|f| f["session"].as_str().unwrap()).collect();
    assert_eq!(sessions.len(), 2, "{fp:#?}");
}

/// Runs A then B on the halves; checks that alone they are silent, and
/// together B reports both findings with both nodes.
fn two_agents(dir: &Path, url: &str, mode: &str, cli: impl Fn(&[&str]) -> String) {
    two_agents_with(dir, url, mode, "", cli);
}

/// [`two_agents`] with `extra` lines in both agents' `[cluster]`.
fn two_agents_with(
    dir: &Path,
    url: &str,
    mode: &str,
    extra: &str,
    cli: impl Fn(&[&str]) -> String,
) {
    let (victim, attacker) = round(dir, 0, "r0");
    // Alone (no cluster): the attacker's half shows nothing history-based.
    let alone = dir.join("alone.toml");
    std::fs::write(&alone, "[agent]\nnode_name = \"node-b\"\n").unwrap();
    let (solo, _) = replay(&alone, &attacker);
    assert!(
        of(&solo, "session_fingerprint_change").is_empty(),
        "{solo:#?}"
    );
    assert!(
        of(&solo, "session_accepted_after_logout").is_empty(),
        "{solo:#?}"
    );

    let prefix = format!("swtest{}", std::process::id());
    let a_cfg = config_with(dir, "node-a", url, mode, &prefix, extra);
    let b_cfg = config_with(dir, "node-b", url, mode, &prefix, extra);
    let (a, a_err) = replay(&a_cfg, &victim);
    assert!(
        of(&a, "session_fingerprint_change").is_empty(),
        "node A sees one client per session: {a:#?}"
    );
    // A flushed its queue before exiting: both sessions are in Redis, as
    // keyed hashes with a TTL, and nothing in Redis is a raw ID.
    let keys = cli(&["--scan", "--pattern", &format!("{prefix}:s:*")]);
    assert_eq!(keys.lines().count(), 2, "keys: {keys:?}\n{a_err}");
    for k in keys.lines() {
        let dump = cli(&["HGETALL", k]);
        assert!(dump.contains("node-a"), "{dump}");
        assert!(dump.contains(VICTIM_IP), "{dump}");
        assert!(
            !dump.contains(&id(1)) && !dump.contains(&id(2)),
            "raw ID stored: {dump}"
        );
        let ttl: i64 = cli(&["TTL", k]).trim().parse().unwrap();
        assert!(ttl > 24 * 3600, "TTL {ttl}");
    }
    let (b, b_err) = replay(&b_cfg, &attacker);
    assert_cross_node(&b);
    let all = serde_json::to_string(&b).unwrap() + &b_err + &a_err;
    assert!(
        !all.contains(&id(1)) && !all.contains(&id(2)),
        "raw ID leaked"
    );
}

#[test]
fn two_agents_share_sightings_through_redis() {
    let Some((server, cli)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _redis = start_redis(&server, dir.path(), port, &[]);
    let url = format!("redis://127.0.0.1:{port}");
    two_agents(dir.path(), &url, "standalone", |args| {
        redis_cli(&cli, port, args)
    });
}

/// `rediss://` to a redis-server that only speaks TLS and requires client
/// certificates from a private CA: with `tls_ca_file`, `tls_cert_file`
/// and `tls_key_file` the agents share sightings; without the client
/// certificate, or trusting only the system store, they cannot connect,
/// say so, count it and still analyse locally.
#[test]
fn two_agents_share_sightings_through_rediss_with_client_certificates() {
    let Some((server, cli)) = tools() else { return };
    if find_tool("openssl").is_none() {
        let msg = "SKIP cluster_e2e TLS: needs openssl";
        assert!(!required(), "{msg}");
        eprintln!("{msg}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let [ca, cert, key, client_cert, client_key] = test_ca(dir.path());
    let (plain, tls_port) = (free_port(), free_port());
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let _redis = start_redis(
        &server,
        dir.path(),
        plain,
        &[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &path(&cert),
            "--tls-key-file",
            &path(&key),
            "--tls-ca-cert-file",
            &path(&ca),
            "--tls-auth-clients",
            "yes",
        ],
    );
    wait_port(tls_port);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let files = format!(
        "tls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        ca.display(),
        client_cert.display(),
        client_key.display()
    );
    let tls_cli = |args: &[&str]| {
        let out = Command::new(&cli)
            .args(["-h", "127.0.0.1", "-p", &tls_port.to_string(), "--tls"])
            .args(["--cacert", &path(&ca), "--cert", &path(&client_cert)])
            .args(["--key", &path(&client_key)])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    two_agents_with(dir.path(), &url, "standalone", &files, tls_cli);

    // The same agent B without its client certificate (the server refuses
    // the handshake), and trusting only the system store (it refuses the
    // server): local analysis only, the connection failure logged.
    let (_, attacker) = round(dir.path(), 100, "r-notls");
    let ca_only = format!("tls_ca_file = \"{}\"\n", ca.display());
    for (tag, extra) in [("no-client-cert", ca_only.as_str()), ("system-store", "")] {
        let cfg = config_with(
            dir.path(),
            &format!("node-{tag}"),
            &url,
            "standalone",
            "swtls",
            extra,
        );
        let (b, err) = replay(&cfg, &attacker);
        assert!(
            of(&b, "session_fingerprint_change").is_empty(),
            "{tag}: {b:#?}"
        );
        assert!(err.contains("cannot connect to Redis"), "{tag}: {err}");
        assert!(!err.contains("BEGIN"), "{tag}: a PEM in the log: {err}");
    }

    // A world-readable client key is refused before anything starts.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&client_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = config_with(dir.path(), "node-bad", &url, "standalone", "swtls", &files);
    let out = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .arg("replay")
        .arg(&attacker)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tls_key_file") && err.contains("world-readable"),
        "{err}"
    );
}

/// Sentinel: agent A writes through the sentinel to the primary; the
/// primary dies, the sentinel promotes its replica, and agent B, asking
/// the sentinel again, reaches the new primary and still sees A's
/// sightings (replicated before the failover).
#[test]
fn two_agents_share_sightings_through_sentinel_across_a_failover() {
    let Some((server, cli)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2, sp) = (free_port(), free_port(), free_port());
    let (d1, d2, ds) = (
        dir.path().join("primary"),
        dir.path().join("replica"),
        dir.path().join("sentinel"),
    );
    for d in [&d1, &d2, &ds] {
        std::fs::create_dir(d).unwrap();
    }
    let mut primary = start_redis(&server, &d1, p1, &[]);
    let _replica = start_redis(
        &server,
        &d2,
        p2,
        &["--replicaof", "127.0.0.1", &p1.to_string()],
    );
    // One sentinel, quorum 1, quick failure detection.
    let conf = ds.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sp}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {p1} 1\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 10000\n",
            ds.display()
        ),
    )
    .unwrap();
    let _sentinel = Guard(
        Command::new(&server)
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(sp);
    let master_port = || {
        let out = redis_cli(
            &cli,
            sp,
            &["SENTINEL", "get-master-addr-by-name", "mymaster"],
        );
        out.lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<u16>().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis_cli(&cli, p2, &["INFO", "replication"]).contains("master_link_status:down")
        || master_port() != Some(p1)
    {
        assert!(
            Instant::now() < deadline,
            "replication or sentinel not ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (victim, attacker) = round(dir.path(), 0, "sentinel");
    let url = format!("redis://127.0.0.1:{sp}");
    let prefix = format!("swsent{}", std::process::id());
    let a_cfg = config(dir.path(), "node-a", &url, "sentinel", &prefix);
    let b_cfg = config(dir.path(), "node-b", &url, "sentinel", &prefix);
    let (a, a_err) = replay(&a_cfg, &victim);
    assert!(of(&a, "session_fingerprint_change").is_empty(), "{a:#?}");
    let pattern = format!("{prefix}:s:*");
    let keys = |port| redis_cli(&cli, port, &["--scan", "--pattern", &pattern]);
    assert_eq!(
        keys(p1).lines().count(),
        2,
        "A wrote to the primary: {a_err}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys(p2).lines().count() < 2 {
        assert!(Instant::now() < deadline, "not replicated");
        std::thread::sleep(Duration::from_millis(50));
    }

    primary.0.kill().unwrap();
    let _ = primary.0.wait();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The sentinel names the replica once it is promoted; wait for the
    // replica to answer as a primary too, so B's first connection (and
    // with it the first lookup) does not race the promotion.
    while master_port() != Some(p2) || !redis_cli(&cli, p2, &["ROLE"]).starts_with("master") {
        assert!(Instant::now() < deadline, "sentinel did not fail over");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (b, b_err) = replay(&b_cfg, &attacker);
    assert!(
        !of(&b, "session_fingerprint_change").is_empty(),
        "B after the failover: {b:#?}\n{b_err}"
    );
    assert_cross_node(&b);
    assert!(b_err.contains("connected to Redis"), "{b_err}");
}

/// A replay started while its Redis is still down (restarting here, a
/// Sentinel settling after a failover in production) waits through the
/// refused first attempts for a retry, within `lookup_timeout` of its
/// start, instead of judging its first sessions on local state alone.
#[test]
fn a_replay_started_before_redis_waits_for_it() {
    let Some((server, cli)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = start_redis(&server, dir.path(), port, &[]);
    let (victim, attacker) = round(dir.path(), 0, "late");
    let url = format!("redis://127.0.0.1:{port}");
    let prefix = format!("swlate{}", std::process::id());
    let a_cfg = config(dir.path(), "node-a", &url, "standalone", &prefix);
    let b_cfg = config(dir.path(), "node-b", &url, "standalone", &prefix);
    let (a, _) = replay(&a_cfg, &victim);
    assert!(of(&a, "session_fingerprint_change").is_empty(), "{a:#?}");
    // Keep A's sightings across the restart: dump.rdb in the same dir.
    assert!(redis_cli(&cli, port, &["SAVE"]).contains("OK"));
    redis.0.kill().unwrap();
    let _ = redis.0.wait();

    let b = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .arg("replay")
        .arg(&attacker)
        .arg("--config")
        .arg(&b_cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Well after B's first attempt was refused, well inside its 3 s grace.
    std::thread::sleep(Duration::from_millis(700));
    let _redis = start_redis(&server, dir.path(), port, &[]);
    let out = b.wait_with_output().unwrap();
    let b_err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{b_err}");
    let b: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refused = b_err.find("cannot connect to Redis");
    let connected = b_err.find("connected to Redis");
    assert!(
        matches!((refused, connected), (Some(r), Some(c)) if r < c),
        "B's first attempt was refused, a retry connected: {b_err}"
    );
    assert_cross_node(&b);
}

#[test]
fn two_agents_share_sightings_through_redis_cluster() {
    let Some((server, cli)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for p in &ports {
        let d = dir.path().join(format!("n{p}"));
        std::fs::create_dir(&d).unwrap();
        nodes.push(start_redis(
            &server,
            &d,
            *p,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ],
        ));
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new(&cli)
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster create: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !redis_cli(&cli, ports[0], &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
        assert!(Instant::now() < deadline, "cluster never became ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = addrs
        .iter()
        .map(|a| format!("redis://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    two_agents(dir.path(), &url, "cluster", |args| {
        // `-c` follows MOVED; `--scan` must visit every node.
        if args.first() == Some(&"--scan") {
            ports
                .iter()
                .map(|p| redis_cli(&cli, *p, args))
                .collect::<String>()
        } else {
            let mut a = vec!["-c"];
            a.extend_from_slice(args);
            redis_cli(&cli, ports[0], &a)
        }
    });
    drop(nodes);
}

/// One in-process agent: the pipeline `replay` builds, its metrics and its
/// findings file.
struct Agent {
    pipeline: Pipeline,
    metrics: Arc<Mutex<Metrics>>,
    findings: PathBuf,
}

impl Agent {
    fn new(config: &Path, findings: PathBuf) -> Agent {
        let config = Config::load(config).unwrap();
        let metrics = Arc::new(Mutex::new(Metrics::new().unwrap()));
        let fanout = FindingFanout {
            json: JsonLinesSink::open(findings.to_str().unwrap()).unwrap(),
            alertmanager: None,
            metrics: metrics.clone(),
            summary: Summary::default(),
        };
        Agent {
            pipeline: Pipeline::new(&config, fanout).unwrap(),
            metrics,
            findings,
        }
    }

    fn metric(&self, series: &str) -> f64 {
        let text = self.metrics.lock().unwrap().render();
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn wait_metric(&self, series: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.metric(series) != want {
            assert!(
                Instant::now() < deadline,
                "{series} != {want}:\n{}",
                self.metrics.lock().unwrap().render()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn findings(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.findings)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Waits until node A's writes for the sessions of round `base` are in
/// Redis (the in-process agent keeps running, so nothing flushes on exit).
fn wait_round_keys(cli: &Path, port: u16, dir: &Path, prefix: &str, base: u64) {
    let key = HashKey::from_file(&dir.join("hash.key")).unwrap();
    let hasher = SessionHasher::new(&key);
    let deadline = Instant::now() + Duration::from_secs(10);
    for raw in [id(base * 2 + 1), id(base * 2 + 2)] {
        let k = format!("{prefix}:s:{{{}}}", hasher.hash(raw.as_bytes()).to_hex());
        // The logout is the last change of the round.
        while !redis_cli(cli, port, &["HGETALL", &k]).contains(if raw == id(base * 2 + 2) {
            "logout:node-a"
        } else {
            "use:node-a"
        }) {
            assert!(Instant::now() < deadline, "{k} not written");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn agents_survive_redis_restart() {
    let Some((server, cli)) = tools() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let mut redis = start_redis(&server, d, port, &[]);
    let url = format!("redis://127.0.0.1:{port}");
    let prefix = format!("swkill{}", std::process::id());
    let a_cfg = config(d, "node-a", &url, "standalone", &prefix);
    let b_cfg = config(d, "node-b", &url, "standalone", &prefix);
    let mut a = Agent::new(&a_cfg, d.join("a.jsonl"));
    let mut b = Agent::new(&b_cfg, d.join("b.jsonl"));
    a.wait_metric("sessionwatch_cluster_up", 1.0);
    b.wait_metric("sessionwatch_cluster_up", 1.0);

    // Round 1: shared.
    let (v1, x1) = round(d, 0, "r1");
    a.pipeline.replay_file(&v1).unwrap();
    wait_round_keys(&cli, port, d, &prefix, 0);
    b.pipeline.replay_file(&x1).unwrap();
    assert_cross_node(&b.findings());
    let before = b.findings().len();

    // Redis dies: both agents keep analysing on local state.
    redis.stop_within(Duration::from_secs(2));
    let (v2, x2) = round(d, 1000, "r2");
    a.pipeline.replay_file(&v2).unwrap();
    b.pipeline.replay_file(&x2).unwrap();
    a.wait_metric("sessionwatch_cluster_up", 0.0);
    b.wait_metric("sessionwatch_cluster_up", 0.0);
    assert!(a.metric("sessionwatch_cluster_errors_total") >= 1.0);
    assert!(b.metric("sessionwatch_cluster_errors_total") >= 1.0);
    let during = b.findings();
    assert!(
        during.len() > before,
        "node B stopped analysing while Redis was down"
    );
    assert!(
        of(&during[before..], "session_fingerprint_change").is_empty(),
        "nothing shared while Redis is down: {:#?}",
        &during[before..]
    );
    // A's exchanges were still analysed and counted.
    a.pipeline.sync_metrics(&mut a.metrics.lock().unwrap());
    assert_eq!(a.metric("sessionwatch_http_exchanges_total"), 10.0);

    // Restart (empty): both reconnect and sharing resumes.
    let _redis = start_redis(&server, d, port, &[]);
    a.wait_metric("sessionwatch_cluster_up", 1.0);
    b.wait_metric("sessionwatch_cluster_up", 1.0);
    let n = b.findings().len();
    let (v3, x3) = round(d, 2000, "r3");
    a.pipeline.replay_file(&v3).unwrap();
    wait_round_keys(&cli, port, d, &prefix, 2000);
    b.pipeline.replay_file(&x3).unwrap();
    assert_cross_node(&b.findings()[n..]);
    a.pipeline.finish();
    b.pipeline.finish();
}

/// One agent with clustering on reports exactly what it reports alone, on
/// every recorded fixture: its own sightings coming back from Redis add
/// nothing and take nothing away.
#[test]
fn clustering_on_one_node_changes_no_finding() {
    let Some((server, _cli)) = tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let _redis = start_redis(&server, d, port, &[]);
    let fixtures = repo().join("tests/fixtures");
    let base = std::fs::read_to_string(fixtures.join("sessionwatch-test.toml"))
        .unwrap()
        .replace(
            "[sessions]\n",
            &format!(
                "[sessions]\nhash_key_file = \"{}\"\n",
                key_file(d).display()
            ),
        );
    let off = d.join("off.toml");
    std::fs::write(&off, &base).unwrap();
    let mut pcaps: Vec<PathBuf> = std::fs::read_dir(fixtures.join("pcap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    pcaps.sort();
    assert!(pcaps.len() >= 20, "{pcaps:?}");
    for (i, pcap) in pcaps.iter().enumerate() {
        let on = d.join("on.toml");
        std::fs::write(
            &on,
            format!(
                "{base}\n[cluster]\nenabled = true\nredis_url = \"redis://127.0.0.1:{port}\"\nkey_prefix = \"fx{i}\"\n"
            ),
        )
        .unwrap();
        let (alone, _) = replay(&off, pcap);
        let (clustered, err) = replay(&on, pcap);
        assert_eq!(alone, clustered, "{}: {err}", pcap.display());
    }
}
