//! Deployment checks that need tools from outside the Rust toolchain.
//!
//! * [`tools`] — a Python virtualenv with the manifest validators that
//!   `agent/tests/deploy.rs` runs (`deploy/kubernetes/validate.py`):
//!   kubernetes-validate (the Kubernetes OpenAPI schemas, per version) and
//!   the prometheus-operator models generated from its CRDs.
//! * [`dockerfile`] — runs the `cargo xtask` steps of `deploy/Dockerfile`'s
//!   builder stage here, the way `docker build` would run them in the
//!   builder's WORKDIR, and checks that every file the runtime stage copies
//!   from the builder then exists. There is no Docker engine on these
//!   machines: the base images' own steps (`rustup`, `apt-get`) are not
//!   run, only the project's.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{host_target_dir, root, run_cmd};

/// The validators, pinned (the newest releases that install on Debian 12's
/// Python 3.11).
const REQUIREMENTS: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "cloudcoil-models-prometheus-operator==0.80.1.0",
];

/// The project's tool cache (as for bpf-linker).
fn cache_dir() -> PathBuf {
    env::var_os("SESSIONWATCH_TOOLCHAIN_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("sessionwatch")))
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sessionwatch")))
        .unwrap_or_else(|| root().join("target/xtask"))
}

/// The validator virtualenv (`agent/tests/deploy.rs` looks for the same path).
pub(crate) fn venv() -> PathBuf {
    cache_dir().join("deploy-venv")
}

/// Creates or updates the validator virtualenv (idempotent: a marker file
/// records the installed requirements).
pub(crate) fn tools() -> Result<()> {
    let venv = venv();
    let marker = venv.join("sessionwatch-requirements.txt");
    let wanted = REQUIREMENTS.join("\n") + "\n";
    let python = venv.join("bin/python");
    if python.is_file() && fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(());
    }
    let _ = fs::remove_dir_all(&venv);
    run_cmd(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        &format!(
            "creating the manifest-validator virtualenv {}",
            venv.display()
        ),
    )
    .context(
        "python3 with the venv module is needed to validate the Kubernetes manifests \
         (Debian: `apt-get install python3-venv`)",
    )?;
    run_cmd(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(REQUIREMENTS),
        &format!("installing {}", REQUIREMENTS.join(" ")),
    )
    .context("the manifest validators could not be installed from PyPI")?;
    fs::write(&marker, wanted).with_context(|| format!("writing {}", marker.display()))?;
    Ok(())
}

/// `deploy/Dockerfile`'s instructions: (KEYWORD, arguments), continuation
/// lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (kw, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        out.push((kw.to_ascii_uppercase(), rest.trim().to_owned()));
        cur.clear();
    }
    out
}

/// Runs the builder stage's `cargo xtask` steps and checks the runtime
/// stage's `COPY --from=builder` sources.
pub(crate) fn dockerfile() -> Result<()> {
    let path = root().join("deploy/Dockerfile");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let ins = instructions(&text);
    let mut stage = String::new();
    let mut workdir = PathBuf::from("/");
    let mut ran = 0;
    let mut copied = 0;
    for (kw, args) in &ins {
        match kw.as_str() {
            "FROM" => {
                stage = args
                    .split_whitespace()
                    .skip_while(|w| !w.eq_ignore_ascii_case("as"))
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
            }
            "WORKDIR" if stage == "builder" => workdir = workdir.join(args),
            "RUN" if stage == "builder" => {
                for part in args.split("&&").map(str::trim) {
                    if part.starts_with("cargo xtask ") {
                        // As `docker build` runs it: a shell in WORKDIR
                        // (here, the repository root).
                        run_cmd(
                            Command::new("sh").arg("-c").arg(part).current_dir(root()),
                            &format!("Dockerfile builder step `{part}`"),
                        )?;
                        ran += 1;
                    }
                }
            }
            "COPY" if args.starts_with("--from=builder") => {
                let src = args.split_whitespace().nth(1).unwrap_or_default();
                let rel = Path::new(src).strip_prefix(&workdir).with_context(|| {
                    format!("COPY source {src} is not under the builder's WORKDIR")
                })?;
                let local = match rel.strip_prefix("target") {
                    Ok(out) => host_target_dir().join(out),
                    Err(_) => root().join(rel),
                };
                if !local.is_file() {
                    bail!(
                        "the Dockerfile copies {src}, but the builder steps did not produce {}",
                        local.display()
                    );
                }
                copied += 1;
            }
            _ => {}
        }
    }
    if ran == 0 || copied == 0 {
        bail!("deploy/Dockerfile: found {ran} `cargo xtask` builder steps and {copied} copies");
    }
    eprintln!("xtask: Dockerfile: {ran} builder steps ran, {copied} runtime copies present");
    Ok(())
}
