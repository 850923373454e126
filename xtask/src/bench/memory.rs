//! `cargo xtask bench memory`: bytes per tracked session.
//!
//! Runs the `session_memory` example of `sessionwatch-sessions`: a
//! `SessionTable` bounded by `max_sessions` = N is filled with N sessions,
//! then offered N more (each evicting the least recently seen). The example
//! counts the table's heap bytes exactly (a counting global allocator) and
//! the growth of its resident set, and checks that the second round leaves
//! the table — and its memory — at N sessions.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{Bins, Mode};

/// Target of the issue: bytes per tracked session at 1M sessions.
const TARGET_BYTES: f64 = 200.0;

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

pub fn run(root: &Path, bins: &Bins, mode: Mode, sessions: u64) -> Result<()> {
    let sessions = match mode {
        Mode::Full { .. } => sessions,
        Mode::Smoke => 20_000,
    };
    let out = Command::new(&bins.session_memory)
        .arg(sessions.to_string())
        .output()
        .with_context(|| format!("run {}", bins.session_memory.display()))?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        bail!(
            "session_memory failed ({}): {line} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let get = |k: &str| field(&line, k).with_context(|| format!("`{k}` missing in: {line}"));
    let heap = get("heap_bytes_per_session")?;
    let rss = get("rss_bytes_per_session")?;
    let heap_total = get("heap_bytes")?;
    let heap_after = get("heap_after_overflow")?;
    let record = get("record_size")?;
    if heap <= 0.0 || heap_after > heap_total * 1.01 {
        bail!("session memory not bounded: {line}");
    }
    if let Mode::Smoke = mode {
        eprintln!("bench memory (smoke): {line}");
        return Ok(());
    }
    let mut md = String::new();
    let _ = writeln!(md, "## Memory per session (`cargo xtask bench memory`)\n");
    let date = super::now_utc();
    let _ = writeln!(md, "- Date: {date}");
    let _ = writeln!(md, "- Machine: {}", super::machine());
    let _ = writeln!(
        md,
        "- Command: `cargo run --release -p sessionwatch-sessions --example session_memory -- {sessions}`: a `SessionTable` \
         with `max_sessions` = {sessions} filled with {sessions} sessions, then offered {sessions} more\n"
    );
    let _ = writeln!(md, "| measure | bytes per session |");
    let _ = writeln!(md, "|---|---|");
    let _ = writeln!(
        md,
        "| heap held by the table (counting allocator) | **{heap:.1}** |"
    );
    let _ = writeln!(md, "| resident set growth | {rss:.1} |");
    let _ = writeln!(md, "| of which the `SessionRecord` itself | {record:.0} |");
    let _ = writeln!(
        md,
        "\n- Heap after the second {sessions} (all evicting): {:.1} MiB vs {:.1} MiB after the first — bounded by `max_sessions`",
        heap_after / 1048576.0,
        heap_total / 1048576.0
    );
    let _ = writeln!(
        md,
        "- Layout: a slab of slots (key 8 B, record {record:.0} B, last seen 8 B, LRU links 8 B) and a hash index of \
         (key, slot) entries at ≤ 7/8 load; no per-session heap allocation, the raw ID is never stored"
    );
    let met = heap <= TARGET_BYTES && rss <= TARGET_BYTES * 1.1;
    let _ = writeln!(
        md,
        "- Target ≤ {TARGET_BYTES:.0} bytes per session at 1M sessions: {}\n",
        if met { "met" } else { "not met" }
    );
    super::targets::record(
        &root.join("BENCHMARKS.md"),
        "memory",
        &date,
        &[super::targets::Row {
            target: super::targets::MEMORY,
            measured: format!("{heap:.1} B heap, {rss:.1} B resident, at {sessions} sessions"),
            floor: "–".to_owned(),
            status: if met { "met" } else { "not met" }.to_owned(),
        }],
    )?;
    super::write_section(&root.join("BENCHMARKS.md"), "## Memory per session", &md)?;
    eprint!("{md}");
    Ok(())
}
