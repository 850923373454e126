//! Bad capture files through the real CLI (`sessionwatch replay`): every
//! case of RELIABILITY.md's "Bad input" table. A file that cannot be read
//! on ends the run with exit 2 and one message naming the file and the byte
//! offset; a part the reader can step over is a counted skip
//! (`sessionwatch_parse_errors_total{protocol="capture"}`) and the analysis
//! goes on. Findings before a fatal spot are kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sessionwatch_streams::Timestamp;
use sessionwatch_streams::synth::PcapNgWriter;

/// A recorded fixture that yields findings (session fixation at login).
const GOOD: &str = "tests/fixtures/pcap/login_fixation.pcap";
const CONFIG: &str = "tests/fixtures/sessionwatch-test.toml";

struct Run {
    code: i32,
    stderr: String,
    alerts: String,
    metrics: String,
}

fn replay(dir: &Path, files: &[&Path]) -> Run {
    let alerts = dir.join("alerts.jsonl");
    let metrics = dir.join("metrics.prom");
    let _ = std::fs::remove_file(&alerts);
    let _ = std::fs::remove_file(&metrics);
    let out: Output = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .current_dir(common::repo())
        .arg("replay")
        .args(files)
        .arg("--config")
        .arg(CONFIG)
        .arg("--alerts")
        .arg(&alerts)
        .arg("--metrics-out")
        .arg(&metrics)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sessionwatch");
    Run {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        alerts: std::fs::read_to_string(&alerts).unwrap_or_default(),
        metrics: std::fs::read_to_string(&metrics).unwrap_or_default(),
    }
}

fn good_bytes() -> Vec<u8> {
    std::fs::read(common::repo().join(GOOD)).unwrap()
}

/// Offsets of the records of a little-endian microsecond pcap.
fn record_offsets(pcap: &[u8]) -> Vec<usize> {
    assert_eq!(&pcap[..4], &0xa1b2_c3d4u32.to_le_bytes(), "fixture format");
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= pcap.len() {
        out.push(at);
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + caplen;
    }
    out
}

fn detectors(alerts: &str) -> Vec<String> {
    let mut d: Vec<String> = alerts
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["detector"].as_str().unwrap().to_owned()
        })
        .collect();
    d.sort();
    d
}

fn metric(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Asserts exit 2 and a one-line error naming `file` and `offset`.
fn assert_fatal(run: &Run, file: &Path, offset: usize, what: &str) {
    assert_eq!(run.code, 2, "exit code; stderr:\n{}", run.stderr);
    let expected = format!(
        "sessionwatch: error: {}: byte offset {offset}: {what}",
        file.display()
    );
    assert!(
        run.stderr.lines().any(|l| l.starts_with(&expected)),
        "expected a line starting with {expected:?} in:\n{}",
        run.stderr
    );
}

#[test]
fn the_fixture_itself_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let run = replay(dir.path(), &[&common::repo().join(GOOD)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!detectors(&run.alerts).is_empty());
    assert!(
        !run.metrics.contains("protocol=\"capture\""),
        "{}",
        run.metrics
    );
}

#[test]
fn truncated_pcap_header_exits_2_at_offset_0() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_bytes();
    for cut in [0usize, 2, 4, 23] {
        let f = write(dir.path(), &format!("cut{cut}.pcap"), &good[..cut]);
        let run = replay(dir.path(), &[&f]);
        assert_fatal(&run, &f, 0, "truncated file header");
        assert!(run.alerts.is_empty());
    }
}

#[test]
fn wrong_magic_exits_2_at_offset_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = good_bytes();
    bytes[..4].copy_from_slice(b"GIF8");
    let f = write(dir.path(), "wrong-magic.pcap", &bytes);
    let run = replay(dir.path(), &[&f]);
    assert_fatal(&run, &f, 0, "not a pcap or pcapng file (magic 0x38464947)");
}

#[test]
fn absurd_snaplen_exits_2_at_offset_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = good_bytes();
    bytes[16..20].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let f = write(dir.path(), "snaplen.pcap", &bytes);
    let run = replay(dir.path(), &[&f]);
    assert_fatal(&run, &f, 0, "absurd snaplen 4294967280");
}

#[test]
fn oversized_record_exits_2_at_its_offset_keeping_earlier_findings() {
    let dir = tempfile::tempdir().unwrap();
    let clean = replay(dir.path(), &[&common::repo().join(GOOD)]);
    let mut bytes = good_bytes();
    let offsets = record_offsets(&bytes);
    let last = *offsets.last().unwrap();
    // A caplen beyond anything the snaplen allows (the record length the
    // message names includes the 16-byte record header).
    bytes[last + 8..last + 12].copy_from_slice(&1_000_000u32.to_le_bytes());
    let f = write(dir.path(), "oversized.pcap", &bytes);
    let run = replay(dir.path(), &[&f]);
    assert_fatal(&run, &f, last, "record of 1000016 bytes exceeds the limit");
    // Everything before the last record (a final ACK or FIN) was analysed.
    assert_eq!(detectors(&run.alerts), detectors(&clean.alerts));
}

#[test]
fn zero_length_records_are_counted_skips() {
    let dir = tempfile::tempdir().unwrap();
    let clean = replay(dir.path(), &[&common::repo().join(GOOD)]);
    let good = good_bytes();
    let offsets = record_offsets(&good);
    // An empty record (caplen 0, wire length 60) before every third record.
    let mut bytes = good[..24].to_vec();
    let mut inserted = 0;
    for (i, &at) in offsets.iter().enumerate() {
        let end = offsets.get(i + 1).copied().unwrap_or(good.len());
        if i % 3 == 0 {
            bytes.extend_from_slice(&good[at..at + 8]); // timestamp
            bytes.extend_from_slice(&0u32.to_le_bytes());
            bytes.extend_from_slice(&60u32.to_le_bytes());
            inserted += 1;
        }
        bytes.extend_from_slice(&good[at..end]);
    }
    let f = write(dir.path(), "zero-length.pcap", &bytes);
    let run = replay(dir.path(), &[&f]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(detectors(&run.alerts), detectors(&clean.alerts));
    assert_eq!(
        metric(
            &run.metrics,
            "sessionwatch_parse_errors_total{kind=\"malformed\",protocol=\"capture\"}"
        ),
        inserted
    );
}

#[test]
fn truncated_final_record_exits_2_after_reporting_findings() {
    let dir = tempfile::tempdir().unwrap();
    let clean = replay(dir.path(), &[&common::repo().join(GOOD)]);
    let good = good_bytes();
    let last = *record_offsets(&good).last().unwrap();
    let f = write(dir.path(), "cut-record.pcap", &good[..last + 20]);
    let run = replay(dir.path(), &[&f]);
    assert_fatal(&run, &f, last, "file ends inside a record");
    assert_eq!(detectors(&run.alerts), detectors(&clean.alerts));
    assert_eq!(
        metric(
            &run.metrics,
            "sessionwatch_parse_errors_total{kind=\"truncated_record\",protocol=\"capture\"}"
        ),
        1
    );
}

/// The fixture's packets rewritten as pcapng, with unknown block types
/// (and a zero-length enhanced packet block) between them.
fn as_pcapng_with_unknown_blocks(good: &[u8]) -> (Vec<u8>, u64) {
    let offsets = record_offsets(good);
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.block(0x0000_0777, b"before any interface").unwrap();
    let eth = w.add_interface(1, 65535, None).unwrap();
    let mut unknown = 1;
    for (i, &at) in offsets.iter().enumerate() {
        let secs = u32::from_le_bytes(good[at..at + 4].try_into().unwrap());
        let usecs = u32::from_le_bytes(good[at + 4..at + 8].try_into().unwrap());
        let caplen = u32::from_le_bytes(good[at + 8..at + 12].try_into().unwrap()) as usize;
        let ts = Timestamp::from_secs_nanos(u64::from(secs), usecs * 1000);
        w.write(eth, ts, 1_000_000, &good[at + 16..at + 16 + caplen])
            .unwrap();
        if i % 4 == 1 {
            w.block(0x4000_1234 + i as u32, &vec![0xee; i * 13])
                .unwrap();
            unknown += 1;
        }
        if i == 2 {
            w.write(eth, ts, 1_000_000, &[]).unwrap();
        }
    }
    (w.into_inner(), unknown)
}

#[test]
fn pcapng_unknown_blocks_are_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let clean = replay(dir.path(), &[&common::repo().join(GOOD)]);
    let (bytes, unknown) = as_pcapng_with_unknown_blocks(&good_bytes());
    let f = write(dir.path(), "unknown-blocks.pcapng", &bytes);
    let run = replay(dir.path(), &[&f]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(detectors(&run.alerts), detectors(&clean.alerts));
    assert_eq!(
        metric(
            &run.metrics,
            "sessionwatch_parse_errors_total{kind=\"unknown_block\",protocol=\"capture\"}"
        ),
        unknown
    );
    assert_eq!(
        metric(
            &run.metrics,
            "sessionwatch_parse_errors_total{kind=\"malformed\",protocol=\"capture\"}"
        ),
        1
    );
}

#[test]
fn pcapng_corrupt_block_length_exits_2_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, _) = as_pcapng_with_unknown_blocks(&good_bytes());
    // Walk to the fifth block and make its trailing length disagree.
    let mut at = 0;
    for _ in 0..4 {
        at += u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    }
    let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
    bytes[at + 4..at + 8].copy_from_slice(&(len + 4).to_le_bytes());
    let f = write(dir.path(), "corrupt.pcapng", &bytes);
    let run = replay(dir.path(), &[&f]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let prefix = format!("sessionwatch: error: {}: byte offset {at}: ", f.display());
    assert!(
        run.stderr.lines().any(|l| l.starts_with(&prefix)),
        "{prefix:?} in:\n{}",
        run.stderr
    );
}

#[test]
fn a_bad_second_file_keeps_the_first_files_findings() {
    let dir = tempfile::tempdir().unwrap();
    let clean = replay(dir.path(), &[&common::repo().join(GOOD)]);
    let bad = write(dir.path(), "notes.txt", b"just some text, no capture\n");
    let run = replay(dir.path(), &[&common::repo().join(GOOD), &bad]);
    assert_fatal(&run, &bad, 0, "not a pcap or pcapng file");
    assert_eq!(detectors(&run.alerts), detectors(&clean.alerts));
}

#[test]
fn missing_and_unreadable_inputs_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("does-not-exist.pcap");
    let run = replay(dir.path(), &[&missing]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "{}",
        run.stderr
    );
    // A directory given as a capture file.
    let run = replay(dir.path(), &[dir.path()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(&dir.path().display().to_string()),
        "{}",
        run.stderr
    );
}
