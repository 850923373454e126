//! Profile-guided optimisation (PGO) of the shipped build.
//!
//! `cargo xtask build` (the README's run command, `deploy/Dockerfile`) and
//! the full benchmark runs compile the agent the way rustc, CPython and
//! Firefox are built for release:
//!
//! 1. an instrumented build (`-Cprofile-generate`) in `target/pgo/instrumented`;
//! 2. a training run of that binary: `sessionwatch replay` over a generated
//!    mixed workload ([`write_training_pcap`]: six frameworks' session
//!    cookies, logins, logouts, static files, API posts, chunked and
//!    multi-segment bodies, conditional requests, clients behind a proxy),
//!    over the repository's captures thirty times (every detector's
//!    fixture, real nginx and Python HTTP/1 and HTTP/2 captures), and once
//!    over each adversarial capture (the error paths);
//! 3. `llvm-profdata merge` (rustup's `llvm-tools`, the LLVM of rustc);
//! 4. the release build with `-Cprofile-use`.
//!
//! Why: per exchange the analysis runs a long chain of small steps (HTTP
//! parsing, cookies, keyed hashing, the session table, twenty detectors),
//! none of them dominant; simulated with cachegrind it misses the L1
//! instruction cache about 24 times as often per exchange as the least
//! analysis (floor G of `bench replay`). The profile lets LLVM lay hot
//! code out together, move cold paths (errors, rare protocols) out of the
//! way and order branches by their measured direction.
//!
//! The training workload is not the benchmark's file: the benchmark
//! generator (`bench.rs`) writes one framework's cookie, ten exchanges per
//! connection, tiny bodies and no proxy; the training mix is broader than
//! that on purpose, so the profile describes HTTP session traffic, not the
//! benchmark.
//!
//! The profile is cached in `target/pgo/` under a key of the rustc version
//! and every source file of the agent; a change to either trains again
//! (and, the profile being a new file, compiles every crate with it).
//! `SESSIONWATCH_PGO=off` builds without PGO (quicker, for development);
//! so does a toolchain without `llvm-profdata`, with a warning.

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::fs;
use std::hash::Hasher as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::pcapw::{ACK, FIN_ACK, PSH_ACK, PcapWriter, SYN};
use crate::rng::Rng;

/// Exchanges in the generated training workload.
const TRAINING_EXCHANGES: u32 = 30_000;

/// Passes over the repository's captures (they are small: a few hundred
/// exchanges in all).
const CAPTURE_PASSES: usize = 30;

/// Largest TCP payload per generated segment (Ethernet MTU less headers).
const MSS: usize = 1448;

/// The `RUSTFLAGS` of the optimised build, or `None` to build without PGO
/// (switched off, or no `llvm-profdata`). Trains first when the cached
/// profile is missing or stale.
pub(crate) fn rustflags(target_dir: &Path, ebpf_object: &Path) -> Result<Option<String>> {
    if std::env::var("SESSIONWATCH_PGO").is_ok_and(|v| v == "off" || v == "0") {
        eprintln!("xtask: SESSIONWATCH_PGO=off: building without profile-guided optimisation");
        return Ok(None);
    }
    let Some(profdata) = llvm_profdata()? else {
        eprintln!(
            "xtask: warning: llvm-profdata not found (rustup component `llvm-tools`): building \
             without profile-guided optimisation.\n  Fix: `rustup component add llvm-tools`"
        );
        return Ok(None);
    };
    let dir = target_dir.join("pgo");
    // The key is in the file name: cargo fingerprints `RUSTFLAGS`, not the
    // profile's contents, so a new profile must be a new path for every
    // crate to be compiled with it.
    let key = source_key()?;
    let merged = dir.join(format!("sessionwatch-{key}.profdata"));
    if merged.is_file() {
        eprintln!("xtask: PGO profile is current ({})", merged.display());
    } else {
        train(&dir, &profdata, ebpf_object, &merged)?;
    }
    Ok(Some(with_user_flags(format!(
        "-Cprofile-use={} -Cllvm-args=-pgo-warn-missing-function=false",
        merged.display()
    ))))
}

/// `flags` after whatever `RUSTFLAGS` the user set.
fn with_user_flags(flags: String) -> String {
    match std::env::var("RUSTFLAGS") {
        Ok(user) if !user.trim().is_empty() => format!("{user} {flags}"),
        _ => flags,
    }
}

/// `llvm-profdata` of the toolchain that builds the agent (rustup's
/// `llvm-tools` component), installing the component when rustup can.
fn llvm_profdata() -> Result<Option<PathBuf>> {
    let find = || -> Result<Option<PathBuf>> {
        let sysroot = crate::output(Command::new("rustc").args(["--print", "sysroot"]))?;
        let vv = crate::output(Command::new("rustc").arg("-vV"))?;
        let host = vv
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .context("rustc -vV names no host")?;
        let p = Path::new(sysroot.trim())
            .join("lib/rustlib")
            .join(host.trim())
            .join("bin/llvm-profdata");
        Ok(p.is_file().then_some(p))
    };
    if let Some(p) = find()? {
        return Ok(Some(p));
    }
    let installed = Command::new("rustup")
        .args(["component", "add", "llvm-tools"])
        .status()
        .is_ok_and(|s| s.success());
    if installed { find() } else { Ok(None) }
}

/// A key of what the profile depends on: the compiler and every source,
/// manifest and config file that goes into the agent.
fn source_key() -> Result<String> {
    let root = crate::root();
    let mut files = Vec::new();
    for dir in ["agent", "ebpf/common", "xtask/src/pgo.rs"] {
        collect_sources(&root.join(dir), &mut files)?;
    }
    files.push(root.join("Cargo.lock"));
    files.push(root.join("Cargo.toml"));
    files.sort();
    // SipHash with fixed keys: the same on every run of one toolchain
    // (whose version is part of the key).
    let mut h = DefaultHasher::new();
    h.write(crate::output(Command::new("rustc").arg("-vV"))?.as_bytes());
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        h.write(rel.to_string_lossy().as_bytes());
        h.write(&fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    Ok(format!("{:016x}", h.finish()))
}

/// Files under `path` that can change the agent binary: sources, manifests
/// and the embedded config, not tests, examples, benches or build output.
fn collect_sources(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
        let p = entry?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_dir() {
            if !matches!(name, "tests" | "examples" | "benches" | "target") {
                collect_sources(&p, out)?;
            }
        } else if name.ends_with(".rs") || name.ends_with(".toml") {
            out.push(p);
        }
    }
    Ok(())
}

/// Builds the instrumented agent, runs the training workload and merges
/// the raw profiles into `merged` (older profiles are removed).
fn train(dir: &Path, profdata: &Path, ebpf_object: &Path, merged: &Path) -> Result<()> {
    let root = crate::root();
    let raw = dir.join("raw");
    let _ = fs::remove_dir_all(&raw);
    fs::create_dir_all(&raw).with_context(|| format!("creating {}", raw.display()))?;
    let instrumented_dir = dir.join("instrumented");
    crate::run_cmd(
        Command::new(crate::cargo())
            .current_dir(&root)
            .args(crate::SHIPPED_BUILD)
            // The same profile settings as the optimised build (fat LTO,
            // one code generation unit): profiles are matched by function
            // name, and another partitioning names local functions
            // differently — an instrumented build without LTO measured no
            // gain at all.
            .env("CARGO_TARGET_DIR", &instrumented_dir)
            .env(
                "RUSTFLAGS",
                with_user_flags(format!("-Cprofile-generate={}", raw.display())),
            )
            .env("SESSIONWATCH_EBPF_OBJECT", ebpf_object),
        "PGO 1/4: building the instrumented agent (target/pgo/instrumented)",
    )?;
    let bin = instrumented_dir.join("release/sessionwatch");

    eprintln!("xtask: PGO 2/4: training (replay of a generated mix and the repository's captures)");
    let workload = dir.join("training.pcap");
    write_training_pcap(&workload, TRAINING_EXCHANGES)?;
    let replay = |files: &[PathBuf], must_succeed: bool| -> Result<()> {
        let status = Command::new(&bin)
            .arg("replay")
            .args(files)
            .args(["--alerts", "/dev/null"])
            .env("LLVM_PROFILE_FILE", raw.join("%m-%p.profraw"))
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("starting {}", bin.display()))?;
        // Adversarial captures end in exit status 2 (bad input); anything
        // else, or a signal, is a broken agent.
        if status.code() != Some(0) && (must_succeed || status.code() != Some(2)) {
            bail!("training replay of {files:?} failed: {status}");
        }
        Ok(())
    };
    replay(std::slice::from_ref(&workload), true)?;
    let (clean, adversarial) = repository_captures(&root)?;
    let repeated: Vec<PathBuf> = (0..CAPTURE_PASSES).flat_map(|_| clean.clone()).collect();
    replay(&repeated, true)?;
    for f in &adversarial {
        replay(std::slice::from_ref(f), false)?;
    }

    for old in fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())) {
        if old.extension().is_some_and(|x| x == "profdata") {
            let _ = fs::remove_file(old);
        }
    }
    crate::run_cmd(
        Command::new(profdata)
            .arg("merge")
            .arg("-o")
            .arg(merged)
            .arg(&raw),
        "PGO 3/4: merging the profiles (llvm-profdata)",
    )?;
    eprintln!("xtask: PGO 4/4: building the agent with the profile");
    Ok(())
}

/// The repository's captures: well-formed ones (detector fixtures, real
/// captures) and adversarial ones (truncated, corrupt, bad magic).
fn repository_captures(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let list = |dir: &str| -> Result<Vec<PathBuf>> {
        let d = root.join(dir);
        let mut v: Vec<PathBuf> = fs::read_dir(&d)
            .with_context(|| format!("reading {}", d.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut clean = list("tests/fixtures/pcap")?;
    clean.extend(list("agent/http/tests/data")?);
    let adversarial = list("agent/streams/tests/data/adversarial")?;
    if clean.is_empty() {
        bail!("no training captures under tests/fixtures/pcap");
    }
    Ok((clean, adversarial))
}

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_HEX: &[u8] = b"0123456789ABCDEF";
const LOWER_HEX: &[u8] = b"0123456789abcdef";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// One application of the training mix: its host, session cookie and how
/// it writes IDs.
struct App {
    host: &'static str,
    cookie: &'static str,
    id: fn(&mut Rng) -> String,
    attrs: &'static str,
}

const APPS: [App; 6] = [
    App {
        host: "php.example",
        cookie: "PHPSESSID",
        id: |r| r.token(LOWER_ALNUM, 26),
        attrs: "; path=/; HttpOnly",
    },
    App {
        host: "java.example",
        cookie: "JSESSIONID",
        id: |r| r.token(UPPER_HEX, 32),
        attrs: "; Path=/; Secure; HttpOnly",
    },
    App {
        host: "node.example",
        cookie: "connect.sid",
        id: |r| format!("s%3A{}.{}", r.token(BASE64URL, 32), r.token(BASE64URL, 43)),
        attrs: "; Path=/; HttpOnly; SameSite=Strict",
    },
    App {
        host: "django.example",
        cookie: "sessionid",
        id: |r| r.token(LOWER_ALNUM, 32),
        attrs: "; expires=Thu, 10 Dec 2026 10:00:00 GMT; HttpOnly; Max-Age=1209600; Path=/; SameSite=Lax",
    },
    App {
        host: "rails.example",
        cookie: "_app_session",
        id: |r| r.token(BASE64URL, 120),
        attrs: "; path=/; secure; httponly; samesite=lax",
    },
    App {
        host: "laravel.example",
        cookie: "laravel_session",
        id: |r| r.token(LOWER_HEX, 40),
        attrs: "; expires=Fri, 27 Nov 2026 12:00:00 GMT; Max-Age=7200; path=/; httponly; samesite=lax",
    },
];

const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "okhttp/4.12.0",
    "curl/8.5.0",
];

/// Writes the training workload: keep-alive connections of 1 to 16
/// exchanges to six applications, with logins that rotate the ID,
/// logouts, static files without cookies, JSON posts, conditional
/// requests, chunked and multi-segment bodies, and clients behind a proxy
/// (`X-Forwarded-For`).
pub(crate) fn write_training_pcap(path: &Path, exchanges: u32) -> Result<()> {
    let mut w = PcapWriter::create(path)?;
    let mut rng = Rng(0x7a11_0c0f_fee5_eed5);
    let mut ts: u64 = 1_764_100_000_000_000;
    let (mut written, mut conn) = (0u32, 0u32);
    let (mut req, mut resp, mut body) = (String::new(), String::new(), String::new());
    while written < exchanges {
        conn += 1;
        let app = &APPS[rng.below(APPS.len() as u64) as usize];
        let ua = AGENTS[rng.below(AGENTS.len() as u64) as usize];
        let proxied = rng.below(4) == 0;
        let client = (
            [203, 0, (conn >> 8) as u8, conn as u8],
            1024 + (conn % 60_000) as u16,
        );
        let server = ([192, 0, 2, 20 + rng.below(4) as u8], 80u16);
        let (mut c, mut s) = (rng.next() as u32, rng.next() as u32);
        w.tcp(ts, client, server, c, 0, SYN, &[])?;
        w.tcp(
            ts + 40,
            server,
            client,
            s,
            c.wrapping_add(1),
            SYN | ACK,
            &[],
        )?;
        (c, s) = (c.wrapping_add(1), s.wrapping_add(1));
        w.tcp(ts + 80, client, server, c, s, ACK, &[])?;
        let mut sid = (rng.below(3) > 0).then(|| (app.id)(&mut rng));
        let n = 1 + rng.below(16) as u32;
        for i in 0..n {
            ts += 500 + rng.below(5_000_000);
            req.clear();
            resp.clear();
            body.clear();
            let kind = rng.below(10);
            let login = i == 1 || (sid.is_none() && kind == 9);
            let logout = !login && i + 1 == n && rng.below(3) == 0;
            let (method, target) = match kind {
                _ if login => ("POST", "/login".to_owned()),
                _ if logout => ("POST", "/logout".to_owned()),
                0..=4 => (
                    "GET",
                    format!("/catalog/{}/item/{}", rng.below(50), rng.below(5000)),
                ),
                5 => ("GET", format!("/static/app.{}.js", rng.below(20))),
                6 | 7 => ("POST", format!("/api/v1/cart/{}", rng.below(1000))),
                _ => (
                    "GET",
                    format!(
                        "/search?q={}&page={}",
                        rng.token(LOWER_ALNUM, 6),
                        rng.below(9)
                    ),
                ),
            };
            let _ = write!(
                req,
                "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {ua}\r\n\
                 Accept: */*\r\nAccept-Language: en-GB,en;q=0.8\r\nAccept-Encoding: gzip, br\r\n",
                app.host
            );
            if proxied {
                let _ = write!(
                    req,
                    "X-Forwarded-For: 198.51.{}.{}\r\n",
                    conn % 200,
                    conn % 250
                );
            }
            if let (Some(id), false) = (&sid, kind == 5) {
                let _ = write!(
                    req,
                    "Cookie: {}={id}; _ga=GA1.2.{}\r\n",
                    app.cookie,
                    rng.below(1 << 30)
                );
            }
            if kind == 8 {
                let _ = write!(req, "If-None-Match: \"{}\"\r\n", rng.token(LOWER_HEX, 16));
            }
            if method == "POST" {
                let (ctype, payload) = if login {
                    (
                        "application/x-www-form-urlencoded",
                        "username=alice&password=correct-horse".to_owned(),
                    )
                } else {
                    (
                        "application/json",
                        format!(
                            "{{\"item\":{},\"qty\":{}}}",
                            rng.below(1000),
                            1 + rng.below(3)
                        ),
                    )
                };
                let _ = write!(
                    req,
                    "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{payload}",
                    payload.len()
                );
            } else {
                req.push_str("Referer: https://example.org/\r\n\r\n");
            }
            let status = match () {
                _ if login => "302 Found",
                _ if kind == 8 => "304 Not Modified",
                _ if sid.is_some() && rng.below(40) == 0 => "401 Unauthorized",
                _ => "200 OK",
            };
            let _ = write!(
                resp,
                "HTTP/1.1 {status}\r\nServer: nginx\r\nDate: Fri, 27 Nov 2026 10:{:02}:{:02} GMT\r\n\
                 Cache-Control: private, no-store\r\n",
                rng.below(60),
                rng.below(60)
            );
            if login {
                let id = (app.id)(&mut rng);
                let _ = write!(
                    resp,
                    "Location: /account\r\nSet-Cookie: {}={id}{}\r\n",
                    app.cookie, app.attrs
                );
                sid = Some(id);
            } else if logout {
                let _ = write!(
                    resp,
                    "Set-Cookie: {}=deleted; Max-Age=0; path=/\r\n",
                    app.cookie
                );
            } else if sid.is_none() && kind < 5 {
                let id = (app.id)(&mut rng);
                let _ = write!(resp, "Set-Cookie: {}={id}{}\r\n", app.cookie, app.attrs);
                sid = Some(id);
            }
            if status.starts_with("304") {
                resp.push_str("\r\n");
            } else {
                let len = rng.below(4_000) as usize;
                body.extend((0..len).map(|k| char::from(b'a' + (k % 26) as u8)));
                // Two chunks, neither empty (an empty one ends the body).
                if rng.below(3) == 0 && body.len() >= 2 {
                    let half = body.len() / 2;
                    let _ = write!(
                        resp,
                        "Content-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n\
                         {half:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                        &body[..half],
                        body.len() - half,
                        &body[half..]
                    );
                } else {
                    let _ = write!(
                        resp,
                        "Content-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
            for chunk in req.as_bytes().chunks(MSS) {
                w.tcp(ts, client, server, c, s, PSH_ACK, chunk)?;
                c = c.wrapping_add(chunk.len() as u32);
            }
            for chunk in resp.as_bytes().chunks(MSS) {
                w.tcp(ts + 200, server, client, s, c, PSH_ACK, chunk)?;
                s = s.wrapping_add(chunk.len() as u32);
            }
            written += 1;
        }
        ts += 1_000;
        w.tcp(ts, client, server, c, s, FIN_ACK, &[])?;
        w.tcp(ts + 40, server, client, s, c.wrapping_add(1), FIN_ACK, &[])?;
        w.tcp(
            ts + 80,
            client,
            server,
            c.wrapping_add(1),
            s.wrapping_add(1),
            ACK,
            &[],
        )?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_workload_is_deterministic_and_mixed() {
        let dir = std::env::temp_dir().join(format!("sw-pgo-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
        write_training_pcap(&a, 300).expect("write a");
        write_training_pcap(&b, 300).expect("write b");
        let (x, y) = (fs::read(&a).expect("read a"), fs::read(&b).expect("read b"));
        assert_eq!(x, y, "the same bytes on every build");
        let text = String::from_utf8_lossy(&x);
        for app in &APPS {
            assert!(
                text.contains(&format!("Set-Cookie: {}=", app.cookie)),
                "{} issues IDs",
                app.cookie
            );
        }
        for needle in [
            "Transfer-Encoding: chunked",
            "X-Forwarded-For:",
            "304 Not Modified",
            "Max-Age=0",
            "/static/",
        ] {
            assert!(text.contains(needle), "mix has {needle}");
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_covers_agent_sources_not_tests() {
        let mut files = Vec::new();
        collect_sources(&crate::root().join("agent"), &mut files).expect("walk");
        assert!(
            files
                .iter()
                .any(|f| f.ends_with("sessions/src/analyzer.rs"))
        );
        assert!(files.iter().any(|f| f.ends_with("src/default-config.toml")));
        assert!(
            !files
                .iter()
                .any(|f| f.components().any(|c| c.as_os_str() == "tests"))
        );
    }
}
