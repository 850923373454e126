//! TOML → `Config` → validation → analysis settings. See `sessionwatch_fuzz::config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sessionwatch_fuzz::config::run(data));
