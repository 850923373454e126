//! pcap/pcapng reader → TCP reassembly → HTTP/1 and HTTP/2 → session
//! analysis with every detector: the whole replay pipeline on an arbitrary
//! capture file held in memory.
//!
//! A read error is a normal outcome (it names the file and offset; the
//! agent exits 2); a panic, an unbounded buffer or an accounting leak is a
//! bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sessionwatch_fuzz::pipeline::run_capture(data));
