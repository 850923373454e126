//! `cargo xtask fuzz`: the libFuzzer targets of `fuzz/` (a cargo-fuzz
//! crate outside the workspace, built with the nightly toolchain).
//!
//! * `cargo xtask fuzz [--seconds N] [TARGET...]` — a campaign: each target
//!   for N seconds (default 600), one after another, one job each. New
//!   inputs go to `fuzz/work/<target>` (not committed); crashes to
//!   `fuzz/artifacts/<target>`. `--merge` then minimises the work corpus
//!   into `fuzz/corpus/<target>` (the committed corpus: seeds plus the
//!   smallest coverage-adding inputs, 48 KiB and 256 files per target).
//! * `cargo xtask fuzz --smoke` — what `cargo xtask test` runs: the
//!   committed corpora and crash regressions on the stable toolchain
//!   (`fuzz/tests/corpus.rs`), then 30 seconds of libFuzzer per target.
//!   Any crash fails the command.
//!
//! Why the binaries are run directly instead of through `cargo fuzz run`:
//! `cargo fuzz run` rebuilds before every target, and the exit status is
//! all that is needed. The flags are the ones `cargo fuzz build -O` uses.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, nightly, root, run_cmd};

/// Every target, in campaign order (`fuzz/Cargo.toml` `[[bin]]`s).
pub const TARGETS: [&str; 6] = ["h1", "h2", "hpack", "cookie", "pcap", "config"];

/// cargo-fuzz release installed when `cargo fuzz` is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds per target of the smoke run in `cargo xtask test`.
pub const SMOKE_SECONDS: u64 = 30;

/// Options of `cargo xtask fuzz`.
#[derive(Debug, Clone)]
pub struct FuzzOptions {
    /// Corpus + regression replay and a short run per target.
    pub smoke: bool,
    /// Seconds per target (default: 30 with `--smoke`, else 600).
    pub seconds: Option<u64>,
    /// Minimise the work corpus into the committed corpus afterwards.
    pub merge: bool,
    /// Targets to run (default: all).
    pub targets: Vec<String>,
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// Installs cargo-fuzz into `~/.cargo/bin` when `cargo fuzz` does not run
/// (CI caches `~/.cargo`, so this happens once).
pub fn ensure_cargo_fuzz() -> Result<()> {
    let works = Command::new(cargo())
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if works {
        return Ok(());
    }
    run_cmd(
        Command::new(cargo()).args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]),
        "installing cargo-fuzz",
    )
    .context("cargo-fuzz is missing and could not be installed (needs crates.io)")
}

/// Builds every target with sanitizer coverage and AddressSanitizer.
fn build() -> Result<()> {
    ensure_cargo_fuzz()?;
    let mut cmd = nightly("cargo");
    cmd.current_dir(fuzz_dir()).args(["fuzz", "build", "-O"]);
    run_cmd(&mut cmd, "building the fuzz targets (nightly, ASan)")
}

fn binary(target: &str) -> PathBuf {
    fuzz_dir()
        .join("target/x86_64-unknown-linux-gnu/release")
        .join(target)
}

/// Replays the committed corpora and crash regressions (stable toolchain).
fn replay_committed() -> Result<()> {
    run_cmd(
        Command::new(cargo())
            .current_dir(root())
            .args(["test", "--manifest-path"])
            .arg(fuzz_dir().join("Cargo.toml"))
            .args(["--test", "corpus"]),
        "replaying the committed fuzz corpora and crash regressions",
    )
}

/// One libFuzzer run of `target` for `seconds`; new inputs go to `work`.
/// Fails when the target crashed, leaked, timed out or ran out of memory.
/// With `log`, libFuzzer's progress goes to that file and only its last
/// lines are shown on failure (CI logs stay readable).
fn run_target(target: &str, seconds: u64, work: &Path, log: Option<&Path>) -> Result<()> {
    let artifacts = fuzz_dir().join("artifacts").join(target);
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    let started = Instant::now();
    let mut cmd = Command::new(binary(target));
    if let Some(log) = log {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stderr(file).stdout(std::process::Stdio::null());
    }
    let status = cmd
        .current_dir(fuzz_dir())
        .arg(format!("-max_total_time={seconds}"))
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(work)
        .arg(fuzz_dir().join("corpus").join(target))
        .status()
        .with_context(|| format!("starting fuzz target {target} (built?)"))?;
    eprintln!(
        "xtask: fuzz {target}: {status} after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        if let Some(text) = log.and_then(|l| std::fs::read_to_string(l).ok()) {
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("  {line}");
            }
        }
        bail!(
            "fuzz target {target} failed ({status}); the crashing input is in {}: \
             fix the bug, then keep the input in fuzz/regressions/{target}/",
            artifacts.display()
        );
    }
    Ok(())
}

/// Bytes of non-seed inputs kept in a committed corpus: the repository
/// stays small, and a campaign (`fuzz/work/`) starts from them anyway.
const CORPUS_BUDGET: u64 = 48 * 1024;
/// Most non-seed inputs kept in a committed corpus.
const CORPUS_MAX_FILES: usize = 256;

/// Minimises `work` + the committed corpus into the committed corpus: the
/// inputs libFuzzer's merge keeps (each adds coverage), smallest first, up
/// to [`CORPUS_BUDGET`] bytes and [`CORPUS_MAX_FILES`] files per target.
fn merge(target: &str, work: &Path) -> Result<()> {
    let corpus = fuzz_dir().join("corpus").join(target);
    let merged = fuzz_dir().join("work").join(format!("{target}.merged"));
    let _ = std::fs::remove_dir_all(&merged);
    std::fs::create_dir_all(&merged)?;
    run_cmd(
        Command::new(binary(target))
            .current_dir(fuzz_dir())
            .arg("-merge=1")
            .arg(&merged)
            .arg(&corpus)
            .arg(work),
        &format!("minimising the {target} corpus"),
    )?;
    // Seeds stay (they document the input format); the rest is replaced.
    for entry in std::fs::read_dir(&corpus)? {
        let path = entry?.path();
        let seed = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"));
        if !seed {
            std::fs::remove_file(&path)?;
        }
    }
    let mut kept = Vec::new();
    for entry in std::fs::read_dir(&merged)? {
        let entry = entry?;
        kept.push((entry.metadata()?.len(), entry.path()));
    }
    kept.sort();
    let mut budget = CORPUS_BUDGET;
    for (len, path) in kept.into_iter().take(CORPUS_MAX_FILES) {
        if len > budget {
            break;
        }
        budget -= len;
        if let Some(name) = path.file_name() {
            let dest = corpus.join(name);
            std::fs::copy(&path, &dest)
                .with_context(|| format!("copying into {}", dest.display()))?;
        }
    }
    std::fs::remove_dir_all(&merged)?;
    Ok(())
}

/// `cargo xtask fuzz`.
pub fn fuzz(opts: &FuzzOptions) -> Result<()> {
    let targets: Vec<&str> = if opts.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        for t in &opts.targets {
            if !TARGETS.contains(&t.as_str()) {
                bail!("unknown fuzz target {t:?}; targets: {}", TARGETS.join(", "));
            }
        }
        opts.targets.iter().map(String::as_str).collect()
    };
    let seconds = opts
        .seconds
        .unwrap_or(if opts.smoke { SMOKE_SECONDS } else { 600 });
    if opts.smoke {
        replay_committed()?;
    }
    build()?;
    for target in targets {
        // A smoke run starts from the committed corpus in a fresh work
        // directory each time and leaves nothing behind in the checkout.
        let work = if opts.smoke {
            std::env::temp_dir().join(format!("sessionwatch-fuzz-{}-{target}", std::process::id()))
        } else {
            fuzz_dir().join("work").join(target)
        };
        let log = opts.smoke.then(|| work.with_extension("log"));
        let result = run_target(target, seconds, &work, log.as_deref());
        if opts.smoke {
            let _ = std::fs::remove_dir_all(&work);
            if let Some(log) = &log {
                let _ = std::fs::remove_file(log);
            }
        }
        result?;
        if opts.merge && !opts.smoke {
            merge(target, &work)?;
        }
    }
    Ok(())
}
