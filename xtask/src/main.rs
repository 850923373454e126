//! Project automation: `cargo xtask <command>`.
//!
//! * `setup` — idempotent toolchain bootstrap for the eBPF part: rust-src for
//!   the nightly, a `bpf-linker` built against the nightly's own LLVM, tracefs.
//! * `build-ebpf` — builds `ebpf/programs` for `bpfel-unknown-none`.
//! * `build` — `build-ebpf`, then the agent in release mode (the eBPF object
//!   is embedded by `agent/build.rs`).
//! * `run [-- ARGS]` — `build`, then `target/release/sessionwatch run ARGS`.
//! * `bench replay` — replay throughput against tshark (`bench.rs`).
//! * `test [-- ARGS]` — installs the Debian packages the tests use (as root),
//!   `build-ebpf`, then `cargo test --workspace ARGS`.
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

mod bench;

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
    /// Benchmarks (results go to BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// `sessionwatch replay` throughput against tshark on a generated pcap.
    Replay {
        /// HTTP exchanges in the generated pcap.
        #[arg(long, default_value_t = 1_000_000)]
        exchanges: u64,
        /// Alternating rounds (A B A B ...).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
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
        Cmd::Bench {
            what: BenchCmd::Replay { exchanges, rounds },
        } => bench_replay(exchanges, rounds),
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

fn build() -> Result<()> {
    build_ebpf(true)?;
    run_cmd(
        Command::new(cargo())
            .current_dir(root())
            .args(["build", "--release", "-p", "sessionwatch"])
            .env("SESSIONWATCH_EBPF_OBJECT", ebpf_object(true)),
        "building the agent (release)",
    )
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

/// Replay needs no eBPF: build the agent and time it against tshark.
fn bench_replay(exchanges: u64, rounds: usize) -> Result<()> {
    run_cmd(
        Command::new(cargo()).current_dir(root()).args([
            "build",
            "--release",
            "-p",
            "sessionwatch",
        ]),
        "building the agent (release)",
    )?;
    bench::replay(
        &root(),
        exchanges,
        rounds,
        &host_target_dir().join("release/sessionwatch"),
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

fn is_root() -> bool {
    // /proc/self/status: "Uid: real effective saved fs".
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
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
    ];
    for step in &steps {
        eprintln!("xtask: == test step: {}", step.name);
        (step.run)().with_context(|| format!("test step `{}` failed", step.name))?;
    }
    eprintln!("xtask: all {} test steps passed", steps.len());
    Ok(())
}
