//! The committed adversarial captures are exactly what
//! `synth::adversarial_fixtures` generates, and replay the way its table
//! documents at the stream level.

mod common;

use std::path::PathBuf;

use common::{Chunk, Recorder};
use sessionwatch_streams::decode::SkipReason;
use sessionwatch_streams::pcap::ReadError;
use sessionwatch_streams::reassembly::ReassemblyConfig;
use sessionwatch_streams::replay::{ReplayStats, replay};
use sessionwatch_streams::synth::adversarial_fixtures;
use sessionwatch_streams::{ConnectionId, Direction};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/adversarial")
}

fn run(name: &str) -> Result<(Recorder, ReplayStats), ReadError> {
    let mut rec = Recorder::default();
    let stats = replay(&dir().join(name), &ReassemblyConfig::default(), &mut rec)?;
    Ok((rec, stats))
}

fn ok(name: &str) -> (Recorder, ReplayStats) {
    run(name).unwrap_or_else(|e| panic!("{e}"))
}

const LOGIN: &[u8] = b"POST /login HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\nuser=alice&password=hunter2";
const C: ConnectionId = ConnectionId(1);

#[test]
fn committed_files_match_the_generator() {
    for (name, bytes) in adversarial_fixtures() {
        let on_disk = std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            on_disk == bytes,
            "{name} differs from the generator: run the gen_adversarial example"
        );
    }
}

#[test]
fn reordered_and_retransmitted_streams_are_clean() {
    for name in ["reordered.pcap", "retransmits.pcap"] {
        let (rec, st) = ok(name);
        let up = rec.bytes(C, Direction::ToServer);
        assert!(up.starts_with(LOGIN), "{name}");
        assert!(!up.contains(&b'#'), "{name}: forged retransmission won");
        assert_eq!(st.reassembly.bytes_missing, 0, "{name}");
        assert_eq!(rec.opens().len(), 1);
    }
    let (_, st) = ok("retransmits.pcap");
    assert!(st.reassembly.retransmitted_bytes > 0);
}

#[test]
fn no_syn_capture_is_followed() {
    let (rec, _) = ok("no-syn.pcap");
    let open = &rec.opens()[0];
    assert_eq!(
        open.client,
        Some(
            "192.0.2.10:51000"
                .parse()
                .unwrap_or_else(|_| unreachable!())
        )
    );
    let up = rec.bytes(open.id, Direction::ToServer);
    assert!(up.ends_with(b"Cookie: sessionid=synthetic-fixture-id\r\n\r\n"));
}

#[test]
fn lost_segment_is_an_exact_gap() {
    let (rec, st) = ok("lost-segment.pcap");
    assert_eq!(st.reassembly.bytes_missing, 17);
    assert!(rec.chunks(C, Direction::ToClient).contains(&Chunk::Gap(17)));
}

#[test]
fn truncated_file_is_analysed_up_to_the_cut() {
    let (rec, st) = ok("truncated.pcap");
    assert_eq!(st.read.skipped.get(SkipReason::TruncatedRecord), 1);
    assert!(st.read.truncated_tail.is_some());
    assert!(
        rec.bytes(C, Direction::ToClient)
            .ends_with(b"hello alice\n")
    );
}

#[test]
fn broken_files_fail_with_offsets() {
    let e = run("bad-magic.pcap")
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(e, ReadError::BadMagic { offset: 0, .. }));
    assert!(
        e.to_string()
            .contains("bad-magic.pcap: byte offset 0: not a pcap or pcapng file")
    );
    let e = run("corrupt-block.pcapng")
        .err()
        .unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(e, ReadError::CorruptBlock { .. }), "{e:?}");
    assert!(e.offset() > 0);
}

#[test]
fn mixed_pcapng_is_clean() {
    let (rec, st) = ok("mixed.pcapng");
    assert!(rec.bytes(C, Direction::ToServer).starts_with(LOGIN));
    assert_eq!(st.reassembly.bytes_missing, 0);
    assert!(st.read.skipped.get(SkipReason::UnknownBlock) > 0);
    assert_eq!(st.reassembly.skipped.total(), 0);
}
