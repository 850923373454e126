//! HTTP/1 parser: arbitrary bytes, split at fuzzer-chosen points, in both
//! directions of up to four connections, with gaps, closes and re-opens
//! (script format: `sessionwatch_fuzz::run_stream_script`). Connections
//! whose first bytes are the HTTP/2 preface or an `h2c` upgrade switch to
//! the HTTP/2 parser, as in the agent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sessionwatch_fuzz::h1(data));
