//! TOML → `Config` → validation → analysis settings, as `sessionwatch
//! check-config` and startup do it.
//!
//! A config that is accepted must also build the analysis stage (route
//! globs, CIDRs, detector ids, services) or be rejected by
//! `sessionwatch_sessions::validate` — never panic — and the effective
//! config printed by `check-config` must load again to the same value.

use std::path::Path;

use sessionwatch::config::Config;
use sessionwatch_sessions::{Analyzer, HashKey};

/// Runs one input (see the module documentation for its format).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = Config::parse(text, Path::new("fuzz.toml")) else {
        return;
    };
    // The key file is read at startup; the fuzzer must not open arbitrary
    // paths of the host.
    config.sessions.hash_key_file = None;
    let printed = config.to_toml();
    let again = Config::parse(&printed, Path::new("effective.toml"))
        .unwrap_or_else(|e| panic!("effective config does not load again: {e}\n{printed}"));
    assert_eq!(again, config, "effective config loads to a different value");
    if sessionwatch_sessions::validate(&config.analysis()).is_ok() {
        Analyzer::new(config.analysis(), HashKey::from_bytes([7; 32]))
            .expect("a validated config builds the analyzer");
    }
}
