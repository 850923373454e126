//! Replays every committed fuzz input — the seed/minimised corpora and the
//! inputs of crashes that were found and fixed (`regressions/<target>/`) —
//! through the same code the fuzz targets run, on the stable toolchain.
//! `cargo xtask test` runs this before the timed libFuzzer smoke.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use sessionwatch_fuzz::{TARGETS, run_target};

fn replay_dir(target: &str, dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let outcome = std::panic::catch_unwind(|| run_target(target, &data));
        assert!(
            matches!(outcome, Ok(Some(()))),
            "{target}: {} fails",
            file.display()
        );
    }
    files.len()
}

#[test]
fn committed_corpora_and_regressions_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in TARGETS {
        let seeds = replay_dir(target, &root.join("corpus").join(target));
        assert!(seeds > 0, "{target}: no committed corpus");
        replay_dir(target, &root.join("regressions").join(target));
    }
}
