//! The "Targets" table at the top of BENCHMARKS.md: one row per target of
//! issue #7, each written by the benchmark that measures it, from the same
//! run as that benchmark's section below. A reader sees every target, its
//! figure, the floor measured beside it and its status in one place, and
//! no row can go stale while its section is renewed.

use std::path::Path;

use anyhow::{Context, Result};

/// Heading of the table's section.
const HEADING: &str = "## Targets";

/// Every target, in table order: the first cell of its row, which is also
/// its key.
pub const REPLAY_PER_CORE: &str = "Replay: ≥ 1,000,000 exchanges/s per core";
pub const REPLAY_VS_TSHARK: &str = "Replay: ≥ 50× tshark (CPU time)";
pub const REPLAY_RSS: &str = "Replay: peak RSS independent of the file size";
pub const LIVE_THROUGHPUT: &str = "Live: ≥ 97 % of the throughput at saturation";
pub const LIVE_P99: &str = "Live: p99 ≤ +5 %";
pub const LIVE_LOSS: &str = "Live: zero events lost at 20k requests/s";
pub const HOOKS: &str = "Kernel: ≤ 500 ns added per SSL call above an empty probe";
pub const MEMORY: &str = "Memory: ≤ 200 bytes per session at 1M sessions";

const ORDER: [&str; 8] = [
    REPLAY_PER_CORE,
    REPLAY_VS_TSHARK,
    REPLAY_RSS,
    LIVE_THROUGHPUT,
    LIVE_P99,
    LIVE_LOSS,
    HOOKS,
    MEMORY,
];

const PREAMBLE: &str = "Each row is written by the benchmark in its last column, from the run of \
that benchmark's section below; \"floor\" is what the same work costs when a tool does only the \
unavoidable part, measured in the same run.\n\n\
| target | measured | floor measured beside it | status | from |\n|---|---|---|---|---|\n";

/// One row of the table.
pub struct Row {
    /// One of the target constants above.
    pub target: &'static str,
    /// The figure this run measured.
    pub measured: String,
    /// The floor measured beside it ("–" when the target is met or has none).
    pub floor: String,
    /// "met", "not met", …, with the reason when not met.
    pub status: String,
}

/// Writes `rows` into the table of `path` (`bench` names the benchmark and
/// `date` its run), replacing the rows of the same targets and keeping
/// the others. The section is created before the first section of the
/// file when missing.
pub fn record(path: &Path, bench: &str, date: &str, rows: &[Row]) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = upsert(&old, bench, date, rows);
    std::fs::write(path, new).with_context(|| format!("write {}", path.display()))
}

/// Cells are one table line each: a `|` inside one would split it.
fn cell(s: &str) -> String {
    s.replace('|', "/").replace('\n', " ")
}

fn upsert(old: &str, bench: &str, date: &str, rows: &[Row]) -> String {
    // The section: from its heading to the next section (or the end).
    let (before, section, after) = match old.find(HEADING) {
        Some(start) => {
            let rest = &old[start + HEADING.len()..];
            let end = rest
                .find("\n## ")
                .map_or(old.len(), |e| start + HEADING.len() + e + 1);
            (&old[..start], &old[start..end], &old[end..])
        }
        None => {
            let at = old.find("\n## ").map_or(old.len(), |i| i + 1);
            (&old[..at], "", &old[at..])
        }
    };
    let mut lines: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| {
            let key = l.strip_prefix("| ")?.split(" | ").next()?;
            ORDER.contains(&key).then(|| (key.to_owned(), l.to_owned()))
        })
        .collect();
    for r in rows {
        let line = format!(
            "| {} | {} | {} | {} | `bench {bench}`, {date} |",
            r.target,
            cell(&r.measured),
            cell(&r.floor),
            cell(&r.status)
        );
        match lines.iter_mut().find(|(k, _)| k == r.target) {
            Some(l) => l.1 = line,
            None => lines.push((r.target.to_owned(), line)),
        }
    }
    lines.sort_by_key(|(k, _)| ORDER.iter().position(|o| o == k));
    let mut out = String::with_capacity(old.len() + 512);
    out.push_str(before);
    if !before.is_empty() && !before.ends_with("\n\n") {
        out.push('\n');
    }
    out.push_str(HEADING);
    out.push_str("\n\n");
    out.push_str(PREAMBLE);
    for (_, l) in &lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(after);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &'static str, measured: &str) -> Row {
        Row {
            target,
            measured: measured.into(),
            floor: "–".into(),
            status: "met".into(),
        }
    }

    #[test]
    fn rows_are_created_replaced_and_kept_in_order() {
        let file = "# Benchmarks\n\nIntro.\n\n## Replay throughput\n\nbody\n";
        let once = upsert(file, "memory", "D1", &[row(MEMORY, "186 B")]);
        assert!(
            once.starts_with("# Benchmarks\n\nIntro.\n\n## Targets\n\n"),
            "{once}"
        );
        assert!(
            once.ends_with("\n\n## Replay throughput\n\nbody\n"),
            "{once}"
        );
        let twice = upsert(
            &once,
            "replay",
            "D2",
            &[
                row(REPLAY_VS_TSHARK, "20× | 21×"),
                row(REPLAY_PER_CORE, "250000"),
            ],
        );
        let again = upsert(&twice, "memory", "D3", &[row(MEMORY, "190 B")]);
        let table: Vec<&str> = again.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(table.len(), 4, "{again}");
        assert!(table[1].starts_with(&format!("| {REPLAY_PER_CORE} | 250000 |")));
        assert!(
            table[2].contains("| 20× / 21× |"),
            "a `|` would split the cell"
        );
        assert!(table[3].starts_with(&format!("| {MEMORY} | 190 B |")));
        assert!(table[3].ends_with("| `bench memory`, D3 |"));
        assert_eq!(again.matches(HEADING).count(), 1);
        assert!(again.contains("## Replay throughput\n\nbody\n"));
        assert_eq!(
            upsert(&again, "memory", "D3", &[row(MEMORY, "190 B")]),
            again,
            "rewriting the same rows changes nothing"
        );
    }
}
