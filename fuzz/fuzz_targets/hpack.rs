//! HPACK decoder on its own, header blocks in sequence. See `sessionwatch_fuzz::hpack`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sessionwatch_fuzz::hpack::run(data));
