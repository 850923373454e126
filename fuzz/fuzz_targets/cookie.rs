//! `Cookie` and `Set-Cookie` parsers and the cookie date parser. See `sessionwatch_fuzz::cookie`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sessionwatch_fuzz::cookie::run(data));
