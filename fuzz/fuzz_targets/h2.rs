//! HTTP/2 frames and HPACK through the real stage: every connection starts
//! with the client preface, so all script bytes are parsed as frames
//! (SETTINGS, HEADERS/CONTINUATION with HPACK blocks, DATA, padding,
//! RST_STREAM, GOAWAY …) in both directions, cut at fuzzer-chosen points.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sessionwatch_fuzz::h2(data));
