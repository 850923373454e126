//! Project automation: `cargo xtask <command>`.
//!
//! * `setup` — idempotent toolchain bootstrap for the eBPF part: rust-src for
//!   the nightly, a `bpf-linker` built against the nightly's own LLVM, tracefs.
//! * `build-ebpf` — builds `ebpf/programs` for `bpfel-unknown-none`.
//! * `build` — `build-ebpf`, then the agent in release mode (the eBPF object
//!   is embedded by `agent/build.rs`).
//! * `run [-- ARGS]` — `build`, then `target/release/sessionwatch run ARGS`.
//! * `bench replay|live|hooks|memory|all [--smoke]` — replay against tshark,
//!   live overhead on nginx TLS, kernel cost per hook, memory per session;
//!   figures to BENCHMARKS.md (`bench.rs`, `bench/`).
//! * `soak [--minutes N]` — steady nginx TLS load with the live agent for
//!   N minutes (default 30); RSS, fds and kernel tables must stay flat and
//!   nothing may be lost; figures to BENCHMARKS.md `## Soak` (`soak.rs`).
//! * `bench cluster` — Redis commands per exchange and replay throughput with
//!   cross-node correlation off and on (`bench_cluster.rs`).
//! * `test [-- ARGS]` — installs the Debian packages the tests use (as root),
//!   `build-ebpf`, the manifest validators, the Dockerfile's builder steps
//!   (`deploy.rs`), then `cargo test --workspace ARGS`.
//! * `deploy-tools` — the Python virtualenv with the Kubernetes manifest
//!   validators `agent/tests/deploy.rs` uses.
//!
//! Every command runs the setup steps whose check fails, so a fresh clone
//! needs nothing but `cargo xtask run` or `cargo xtask test`.
#![forbid(unsafe_code)]

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};

use crate::bench::rig::is_root;

mod bench;
mod bench_cluster;
mod deploy;
mod fuzz;
mod pcapw;
mod pgo;
mod rng;
mod soak;

/// bpf-linker release that builds against the nightly's LLVM (see
/// shared/design/toolchain.md).
const BPF_LINKER_VERSION: &str = "0.13.0";
const EBPF_TARGET: &str = "bpfel-unknown-none";
const EBPF_BIN: &str = "sessionwatch";

/// Debian packages the tests use, as (command that proves it is installed,
/// package). `cargo xtask test` installs the missing ones (as root, with
/// apt-get); add to this list when a test needs another tool.
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("nginx", "nginx-light"),
    ("haproxy", "haproxy"),
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("promtool", "prometheus"),
    ("prometheus-alertmanager", "prometheus-alertmanager"),
    // Benchmarks (their smoke runs are a step of `cargo xtask test`).
    ("wrk", "wrk"),
    ("tshark", "tshark"),
    ("bpftool", "bpftool"),
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    // The second HTTP/2 client of agent/tests/h2_e2e.rs (tests/fixtures/
    // h2client.py); a library, so a file of it proves it is installed (an
    // absolute path replaces the PATH directory in `find_command`).
    (
        "/usr/lib/python3/dist-packages/h2/__init__.py",
        "python3-h2",
    ),
    // agent/tests/randomness_e2e.rs: captures real traffic to the session-ID
    // generators of tests/fixtures/app/idgen.py on lo.
    ("tcpdump", "tcpdump"),
    ("python3", "python3"),
];

#[derive(Parser)]
#[command(name = "xtask", about = "sessionwatch project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and loading the eBPF programs needs (idempotent).
    Setup {
        /// Rebuild bpf-linker even if a working one is installed.
        #[arg(long)]
        force: bool,
    },
    /// Build the kernel programs (ebpf/programs) with the nightly toolchain.
    BuildEbpf {
        /// Build the debug profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Build the eBPF programs and the agent (release).
    Build,
    /// Build, then run `sessionwatch run` with the given arguments.
    Run {
        /// Arguments passed to `sessionwatch run`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build the eBPF programs, then run the workspace tests.
    Test {
        /// Arguments passed to `cargo test --workspace`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Install the Kubernetes manifest validators (a Python virtualenv).
    DeployTools,
    /// Fuzz the parsers with libFuzzer (`fuzz/`, nightly; see RELIABILITY.md).
    Fuzz {
        /// Replay the committed corpora, then 30 s per target; fail on a crash.
        #[arg(long)]
        smoke: bool,
        /// Seconds per target (default 600, or 30 with --smoke).
        #[arg(long)]
        seconds: Option<u64>,
        /// Minimise the new inputs into the committed corpus afterwards.
        #[arg(long)]
        merge: bool,
        /// Targets (default: all): h1 h2 hpack cookie pcap config.
        targets: Vec<String>,
    },
    /// Soak: steady TLS load through nginx with the live agent for a long
    /// time; RSS, fds and kernel tables must stay flat and nothing may be
    /// lost (not in CI; figures to BENCHMARKS.md `## Soak`).
    Soak {
        /// Duration in minutes.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Seconds of warm-up before the flatness baseline (the session
        /// table fills up in the first minutes).
        #[arg(long, default_value_t = 300)]
        warmup: u64,
        /// wrk connections.
        #[arg(long, default_value_t = 16)]
        connections: u32,
        /// Milliseconds each connection pauses after a response.
        #[arg(long, default_value_t = 20)]
        pace_ms: u32,
        /// Seconds per wrk run (connections reopen between runs).
        #[arg(long, default_value_t = 300)]
        reconnect: u64,
        /// Print the figures only; leave BENCHMARKS.md alone.
        #[arg(long)]
        no_write: bool,
    },
    /// Benchmarks (results go to BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Cross-node correlation: Redis commands per exchange and replay
    /// throughput with `[cluster]` off and on (needs redis-server).
    Cluster {
        /// Sessions in the generated steady keep-alive traffic.
        #[arg(long, default_value_t = 1000)]
        sessions: u32,
        /// Requests per session (one every 2 s of event time).
        #[arg(long, default_value_t = 300)]
        requests: u32,
        /// Alternating rounds (off on off on ...).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// `sessionwatch replay` throughput against tshark on a generated pcap.
    Replay {
        /// HTTP exchanges in the generated pcap.
        #[arg(long, default_value_t = 1_000_000)]
        exchanges: u64,
        /// Alternating rounds (A B A B ...).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds end to end, no thresholds, nothing written.
        #[arg(long)]
        smoke: bool,
    },
    /// Live overhead: nginx TLS under wrk without/with the agent, and with
    /// empty probes (the floor); a paced phase at 20k requests/s.
    Live {
        /// Alternating rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds end to end, no thresholds, nothing written.
        #[arg(long)]
        smoke: bool,
    },
    /// Kernel cost per hook (`kernel.bpf_stats_enabled=1`) and the uprobe
    /// trap floor.
    Hooks {
        /// Alternating rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds end to end, no thresholds, nothing written.
        #[arg(long)]
        smoke: bool,
    },
    /// Memory per tracked session.
    Memory {
        /// Sessions (and `max_sessions`).
        #[arg(long, default_value_t = 1_000_000)]
        sessions: u64,
        /// Seconds end to end, no thresholds, nothing written.
        #[arg(long)]
        smoke: bool,
    },
    /// replay, memory, hooks and live.
    All {
        /// Alternating rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds end to end, no thresholds, nothing written.
        #[arg(long)]
        smoke: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup { force } => setup(force),
        Cmd::BuildEbpf { debug } => setup(false).and_then(|()| build_ebpf(!debug)),
        Cmd::Build => setup(false).and_then(|()| build()),
        Cmd::Run { args } => setup(false).and_then(|()| run(&args)),
        Cmd::Test { args } => setup(false).and_then(|()| test(&args)),
        Cmd::DeployTools => deploy::tools(),
        Cmd::Fuzz {
            smoke,
            seconds,
            merge,
            targets,
        } => fuzz::fuzz(&fuzz::FuzzOptions {
            smoke,
            seconds,
            merge,
            targets,
        }),
        Cmd::Soak {
            minutes,
            interval,
            warmup,
            connections,
            pace_ms,
            reconnect,
            no_write,
        } => setup(false).and_then(|()| build()).and_then(|()| {
            soak::run(
                &root(),
                &host_target_dir().join("release/sessionwatch"),
                &soak::SoakOptions {
                    minutes: minutes.max(1),
                    interval_s: interval.max(5),
                    warmup_s: warmup,
                    connections: connections.max(1),
                    pace_ms,
                    reconnect_s: reconnect.max(10),
                    write: !no_write,
                },
            )
        }),
        Cmd::Bench {
            what:
                BenchCmd::Replay {
                    exchanges,
                    rounds,
                    smoke,
                },
        } => bench_cmd(bench::Name::Replay, smoke, rounds, exchanges, 0),
        Cmd::Bench {
            what: BenchCmd::Live { rounds, smoke },
        } => bench_cmd(bench::Name::Live, smoke, rounds, 0, 0),
        Cmd::Bench {
            what: BenchCmd::Hooks { rounds, smoke },
        } => bench_cmd(bench::Name::Hooks, smoke, rounds, 0, 0),
        Cmd::Bench {
            what: BenchCmd::Memory { sessions, smoke },
        } => bench_cmd(bench::Name::Memory, smoke, 1, 0, sessions),
        Cmd::Bench {
            what: BenchCmd::All { rounds, smoke },
        } => bench_cmd(bench::Name::All, smoke, rounds, 1_000_000, 1_000_000),
        Cmd::Bench {
            what:
                BenchCmd::Cluster {
                    sessions,
                    requests,
                    rounds,
                },
        } => bench_cluster(sessions, requests, rounds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Repository root (parent of `xtask/`).
fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Path of the built kernel object that `agent/build.rs` embeds.
fn ebpf_object(release: bool) -> PathBuf {
    root()
        .join("ebpf/programs/target")
        .join(EBPF_TARGET)
        .join(if release { "release" } else { "debug" })
        .join(EBPF_BIN)
}

/// The host build's target directory (honours `CARGO_TARGET_DIR`).
fn host_target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { root().join(p) } else { p })
        .unwrap_or_else(|| root().join("target"))
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs a command, failing with its description when it does not succeed.
fn run_cmd(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{what}: {:?} failed with {status}", cmd.get_program());
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} {:?} failed with {}: {}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command on the nightly toolchain, with the outer cargo's toolchain
/// selection removed from the environment.
fn nightly(program: &str) -> Command {
    let mut c = Command::new(program);
    c.arg("+nightly");
    c.env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    c
}

// ---------------------------------------------------------------------------
// setup

/// Facts about the installed nightly toolchain.
struct Nightly {
    sysroot: PathBuf,
    llvm_major: u32,
    commit: String,
}

fn nightly_info() -> Result<Nightly> {
    let vv = output(nightly("rustc").arg("-vV")).map_err(|e| {
        anyhow!(
            "the nightly Rust toolchain is missing or broken ({e:#}).\n  \
             The eBPF programs need it (`-Z build-std=core` for {EBPF_TARGET}).\n  \
             Fix: `rustup toolchain install nightly --profile minimal --component rust-src`"
        )
    })?;
    let field = |name: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let llvm = field("LLVM version:")
        .ok_or_else(|| anyhow!("`rustc +nightly -vV` does not report an LLVM version"))?;
    let llvm_major = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| anyhow!("cannot parse LLVM version {llvm:?} of the nightly"))?;
    let commit = field("commit-hash:").unwrap_or_else(|| "unknown".into());
    let sysroot = PathBuf::from(output(nightly("rustc").arg("--print").arg("sysroot"))?.trim());
    Ok(Nightly {
        sysroot,
        llvm_major,
        commit,
    })
}

/// Where the project's bpf-linker lives: keyed by the nightly's commit, so
/// a nightly update (new libLLVM) gets a matching linker.
fn linker_prefix(n: &Nightly) -> PathBuf {
    let base = env::var_os("SESSIONWATCH_TOOLCHAIN_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("sessionwatch")))
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sessionwatch")))
        .unwrap_or_else(|| root().join("target/xtask"));
    let short: String = n.commit.chars().take(12).collect();
    base.join(format!(
        "bpf-linker-{BPF_LINKER_VERSION}-llvm{}-{short}",
        n.llvm_major
    ))
}

fn linker_works(prefix: &Path) -> bool {
    Command::new(prefix.join("bin/bpf-linker"))
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn setup(force: bool) -> Result<()> {
    let n = nightly_info()?;

    // rust-src for `-Z build-std=core`.
    let core_src = n.sysroot.join("lib/rustlib/src/rust/library/core");
    if !core_src.is_dir() {
        run_cmd(
            Command::new("rustup")
                .args(["component", "add", "rust-src", "--toolchain", "nightly"])
                .env_remove("RUSTUP_TOOLCHAIN"),
            "installing rust-src for the nightly toolchain",
        )
        .context(
            "rust-src is missing for the nightly toolchain and could not be installed.\n  \
             Fix: `rustup component add rust-src --toolchain nightly` (needs network access to \
             the Rust distribution server)",
        )?;
    }

    // bpf-linker against the nightly's own libLLVM.
    let prefix = linker_prefix(&n);
    if force || !linker_works(&prefix) {
        install_bpf_linker(&n, &prefix)?;
    }

    // tracefs: aya resolves tracepoint ids through it.
    ensure_tracefs()?;
    Ok(())
}

fn install_bpf_linker(n: &Nightly, prefix: &Path) -> Result<()> {
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let llvm = fs::read_dir(n.sysroot.join("lib"))
        .with_context(|| format!("reading {}", n.sysroot.join("lib").display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("libLLVM.so.") || f.starts_with("libLLVM-"))
        })
        .ok_or_else(|| {
            anyhow!(
                "the nightly toolchain at {} ships no libLLVM shared library; bpf-linker \
                 cannot be built against it.\n  Fix: install a nightly from rustup (it ships \
                 lib/libLLVM.so.*), or install LLVM {} development files and set LLVM_PREFIX",
                n.sysroot.display(),
                n.llvm_major
            )
        })?;
    let soname = llvm
        .file_name()
        .ok_or_else(|| anyhow!("bad libLLVM path {}", llvm.display()))?;
    // `libLLVM.so` for the linker at build time, the soname for the loader
    // at run time (the binary's RUNPATH is `$prefix/lib`).
    for name in [OsString::from("libLLVM.so"), soname.to_os_string()] {
        let link = lib.join(&name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), llvm.display()))?;
    }
    let feature = format!("llvm-{}", n.llvm_major);
    run_cmd(
        Command::new(cargo())
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                &feature,
                "--root",
            ])
            .arg(prefix)
            .env("LLVM_PREFIX", prefix)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR"),
        &format!(
            "building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {} into {}",
            n.llvm_major,
            prefix.display()
        ),
    )
    .context(
        "bpf-linker could not be built.\n  It needs crates.io access and a C/C++ toolchain \
         (Debian: `apt-get install build-essential`).",
    )?;
    if !linker_works(prefix) {
        bail!(
            "{}/bin/bpf-linker was built but does not run (`--version` failed); check that {} \
             resolves to the nightly's libLLVM",
            prefix.display(),
            lib.join(soname).display()
        );
    }
    Ok(())
}

fn tracefs_mounted() -> bool {
    Path::new("/sys/kernel/tracing/events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir()
}

fn ensure_tracefs() -> Result<()> {
    if tracefs_mounted() {
        return Ok(());
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status();
    if matches!(status, Ok(s) if s.success()) && tracefs_mounted() {
        eprintln!("xtask: mounted tracefs at /sys/kernel/tracing");
        return Ok(());
    }
    // Building works without tracefs; only loading needs it. Say so and go on.
    eprintln!(
        "xtask: warning: tracefs is not mounted and could not be mounted (needs root).\n  \
         Attaching tracepoints will fail until it is: \
         `sudo mount -t tracefs nodev /sys/kernel/tracing`"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// build / run / test

fn build_ebpf(release: bool) -> Result<()> {
    let n = nightly_info()?;
    let prefix = linker_prefix(&n);
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![prefix.join("bin")];
    paths.extend(env::split_paths(&path));
    let path = env::join_paths(paths).context("building PATH")?;
    let manifest = root().join("ebpf/programs/Cargo.toml");
    let mut cmd = nightly("cargo");
    cmd.current_dir(root().join("ebpf/programs"))
        .args(["build", "--target", EBPF_TARGET, "-Z", "build-std=core"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(root().join("ebpf/programs/target"))
        .env("PATH", path)
        // BTF for the loader; bpf-linker is found on PATH by the target spec.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            ["-C", "debuginfo=2", "-C", "link-arg=--btf"].join("\x1f"),
        )
        .env_remove("CARGO_TARGET_DIR");
    if release {
        cmd.arg("--release");
    }
    run_cmd(
        &mut cmd,
        "building the eBPF programs (nightly, bpfel-unknown-none)",
    )?;
    let obj = ebpf_object(release);
    if !obj.is_file() {
        bail!("the eBPF build succeeded but {} is missing", obj.display());
    }
    eprintln!("xtask: eBPF object: {}", obj.display());
    Ok(())
}

/// `cargo build` arguments of the shipped agent (README, deploy/Dockerfile):
/// release, with the optional Kubernetes enrichment (`[kubernetes]
/// enabled` stays off by default).
pub(crate) const SHIPPED_BUILD: [&str; 6] = [
    "build",
    "--release",
    SHIPPED_AGENT[0],
    SHIPPED_AGENT[1],
    SHIPPED_AGENT[2],
    SHIPPED_AGENT[3],
];

/// The package and features of [`SHIPPED_BUILD`], for the debug build of
/// the same binary (smoke benchmarks).
const SHIPPED_AGENT: [&str; 4] = ["-p", "sessionwatch", "--features", "kubernetes"];

/// Builds the shipped agent: [`SHIPPED_BUILD`], profile-guided (see
/// [`pgo`]) when `release`; the debug build of the same package and
/// features otherwise. Returns the `RUSTFLAGS` of the profile-guided build
/// (none when switched off or without `llvm-profdata`), for other release
/// builds to share: the same flags keep one set of compiled dependencies.
fn build_agent(release: bool) -> Result<Option<String>> {
    build_ebpf(true)?;
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root()).arg("build");
    if release {
        cmd.arg("--release");
    }
    cmd.args(SHIPPED_AGENT)
        .env("SESSIONWATCH_EBPF_OBJECT", ebpf_object(true));
    let flags = if release {
        pgo::rustflags(&host_target_dir(), &ebpf_object(true))?
    } else {
        None
    };
    let what = match (&flags, release) {
        (Some(flags), _) => {
            cmd.env("RUSTFLAGS", flags);
            "building the agent (release, profile-guided)"
        }
        (None, true) => "building the agent (release)",
        (None, false) => "building the agent (debug)",
    };
    run_cmd(&mut cmd, what)?;
    Ok(flags)
}

fn build() -> Result<()> {
    build_agent(true).map(drop)
}

fn run(args: &[OsString]) -> Result<()> {
    build()?;
    let bin = host_target_dir().join("release/sessionwatch");
    let mut cmd = Command::new(&bin);
    cmd.arg("run").args(args);
    eprintln!("xtask: exec {} run {:?}", bin.display(), args);
    use std::os::unix::process::CommandExt as _;
    let err = cmd.exec();
    Err(anyhow!("could not exec {}: {err}", bin.display()))
}

/// Builds what the benchmarks run (the agent with its eBPF object, the
/// floor and memory examples), release or debug, and
/// returns their paths.
fn bench_bins(release: bool) -> Result<bench::Bins> {
    let profile = if release { "release" } else { "debug" };
    // The agent measured is the shipped binary, built by the shipped
    // command and nothing else: cargo unifies features across the targets
    // of one invocation, and the examples below pull in the packages'
    // dev-dependencies, whose features change the code of shared
    // dependencies. Built together, the agent was another binary, one that
    // matched the PGO profile (trained on the shipped binary) only in part
    // and ran up to a half slower than it. The floors are built with the
    // same profile.
    let flags = build_agent(release)?;

    let mut floors = Command::new(cargo());
    floors.current_dir(root()).arg("build");
    if release {
        floors.arg("--release");
    }
    floors
        .args([
            "-p",
            "sessionwatch",
            "--example",
            "probe_floor",
            "-p",
            "sessionwatch-sessions",
            "--example",
            "session_memory",
            "--example",
            "session_floor",
            "-p",
            "sessionwatch-http",
            "--example",
            "replay_throughput",
        ])
        .env("SESSIONWATCH_EBPF_OBJECT", ebpf_object(true));
    if let Some(flags) = &flags {
        floors.env("RUSTFLAGS", flags);
    }
    run_cmd(&mut floors, "building the benchmark floors")?;
    let dir = host_target_dir().join(profile);
    Ok(bench::Bins {
        sessionwatch: dir.join("sessionwatch"),
        probe_floor: dir.join("examples/probe_floor"),
        session_memory: dir.join("examples/session_memory"),
        replay_floor: dir.join("examples/replay_throughput"),
        session_floor: dir.join("examples/session_floor"),
        pgo: flags.is_some(),
    })
}

/// `cargo xtask bench NAME`: full runs use release builds; smoke runs use
/// debug builds (they check that the benchmark works, not its figures).
fn bench_cmd(
    name: bench::Name,
    smoke: bool,
    rounds: usize,
    exchanges: u64,
    sessions: u64,
) -> Result<()> {
    setup(false)?;
    let mode = if smoke {
        bench::Mode::Smoke
    } else {
        bench::Mode::Full {
            rounds: rounds.max(1),
        }
    };
    let bins = bench_bins(!smoke)?;
    bench::run(
        &root(),
        &bins,
        name,
        mode,
        bench::Sizes {
            exchanges,
            sessions,
        },
    )
}

/// Cross-node correlation cost: build the agent, replay with `[cluster]`
/// off and on against a local redis-server.
fn bench_cluster(sessions: u32, requests: u32, rounds: usize) -> Result<()> {
    build()?;
    bench_cluster::cluster(
        &root(),
        &host_target_dir().join("release/sessionwatch"),
        sessions,
        requests,
        rounds,
    )
}

/// One step of `cargo xtask test`; the list in [`test`] is the place to
/// add more (dashboards, rules, benches).
struct Step {
    name: &'static str,
    run: Box<dyn Fn() -> Result<()>>,
}

fn find_command(name: &str) -> bool {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .any(|d| d.join(name).is_file())
}

/// Installs the missing [`TEST_PACKAGES`] with apt-get. Without root or
/// apt-get it says what is missing; the tests that need it then SKIP
/// loudly (or fail in CI).
fn test_packages() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(cmd, _)| !find_command(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || !find_command("apt-get") {
        eprintln!(
            "xtask: warning: test packages missing: {} — end-to-end tests will SKIP.\n  \
             Fix: `sudo apt-get install -y {}`",
            missing.join(" "),
            missing.join(" ")
        );
        return Ok(());
    }
    run_cmd(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update",
    )?;
    // Debian's maintainer scripts start nginx and haproxy as services on
    // ports 80/443 after installing them. The tests start their own
    // instances on their own ports, so service starts are refused for the
    // duration of the install (policy-rc.d exit 101 = "action forbidden"),
    // unless the machine already has a policy of its own.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let own_policy = !policy.exists()
        && std::fs::write(
            policy,
            "#!/bin/sh\n# written by cargo xtask test during apt-get install\nexit 101\n",
        )
        .is_ok()
        && std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .is_ok();
    let result = run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("installing test packages: {}", missing.join(" ")),
    );
    if own_policy {
        let _ = std::fs::remove_file(policy);
    }
    result.context("the Debian packages the end-to-end tests use could not be installed")
}

fn test(args: &[OsString]) -> Result<()> {
    let args = args.to_vec();
    let steps = vec![
        Step {
            name: "test packages",
            run: Box::new(test_packages),
        },
        Step {
            name: "build-ebpf",
            run: Box::new(|| build_ebpf(true)),
        },
        Step {
            name: "manifest validators (deploy/kubernetes)",
            run: Box::new(deploy::tools),
        },
        Step {
            name: "Dockerfile builder steps (deploy/Dockerfile)",
            run: Box::new(deploy::dockerfile),
        },
        Step {
            name: "cargo test --workspace",
            run: Box::new(move || {
                run_cmd(
                    Command::new(cargo())
                        .current_dir(root())
                        .args(["test", "--workspace"])
                        .args(&args)
                        .env("SESSIONWATCH_EBPF_OBJECT", ebpf_object(true)),
                    "running the workspace tests",
                )
            }),
        },
        Step {
            // The workspace run builds without optional features; the
            // `kubernetes` feature's code and its fake-API-server, pipeline,
            // live end-to-end and manifest tests (check-config of the
            // enrichment overlay needs the feature) run here.
            name: "cargo test -p sessionwatch --features kubernetes",
            run: Box::new(|| {
                run_cmd(
                    Command::new(cargo())
                        .current_dir(root())
                        .args([
                            "test",
                            "-p",
                            "sessionwatch",
                            "--features",
                            "kubernetes",
                            "--lib",
                            "--test",
                            "kubernetes",
                            "--test",
                            "kubernetes_e2e",
                            "--test",
                            "deploy",
                        ])
                        .env("SESSIONWATCH_EBPF_OBJECT", ebpf_object(true)),
                    "running the kubernetes feature's tests",
                )
            }),
        },
        Step {
            name: "fuzz smoke (committed corpora + 30 s of libFuzzer per target)",
            run: Box::new(|| {
                fuzz::fuzz(&fuzz::FuzzOptions {
                    smoke: true,
                    seconds: None,
                    merge: false,
                    targets: Vec::new(),
                })
            }),
        },
        Step {
            name: "bench smoke (every benchmark end to end, seconds, no thresholds)",
            run: Box::new(|| bench_cmd(bench::Name::All, true, 1, 0, 0)),
        },
    ];
    for step in &steps {
        eprintln!("xtask: == test step: {}", step.name);
        (step.run)().with_context(|| format!("test step `{}` failed", step.name))?;
    }
    eprintln!("xtask: all {} test steps passed", steps.len());
    Ok(())
}
