//! Property tests: reassembly is insensitive to segmentation, reordering and
//! duplication within its buffer bound; no input panics the reader, the
//! decoder or the reassembler, and the stream contract always holds.

mod common;

use std::io::Cursor;
use std::net::SocketAddr;

use common::Recorder;
use proptest::prelude::*;
use sessionwatch_streams::decode::{self, LINKTYPE_RAW, decode_frame, tcp_flags};
use sessionwatch_streams::pcap::PcapReader;
use sessionwatch_streams::reassembly::{Reassembler, ReassemblyConfig};
use sessionwatch_streams::synth::{self, Conversation, Segment};
use sessionwatch_streams::{ConnectionId, Direction, Timestamp};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Cuts `data` at the given chunk sizes (cycled).
fn cut(data: &[u8], sizes: &[usize]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut off = 0;
    let mut i = 0;
    while off < data.len() {
        let n = sizes[i % sizes.len()].max(1).min(data.len() - off);
        out.push((off, data[off..off + n].to_vec()));
        off += n;
        i += 1;
    }
    out
}

/// Reorders items by `index + jitter` (bounded displacement) and inserts
/// duplicates of the chosen items at later positions.
fn shuffle<T: Clone>(
    items: Vec<T>,
    jitter: &[usize],
    dups: &[(usize, usize)],
    keep_first: bool,
) -> Vec<T> {
    let n = items.len();
    let mut keyed: Vec<(usize, usize, T)> = items
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let j = if keep_first && i == 0 {
                0
            } else {
                i + jitter[i % jitter.len()] + usize::from(keep_first)
            };
            (j, i, t)
        })
        .collect();
    keyed.sort_by_key(|(k, i, _)| (*k, *i));
    let mut out: Vec<T> = keyed.into_iter().map(|(_, _, t)| t).collect();
    for (src, at) in dups {
        if n == 0 {
            break;
        }
        let item = out[src % n].clone();
        let pos = (at % (n + 1)).max(usize::from(keep_first));
        out.insert(pos.min(out.len()), item);
    }
    out
}

fn segments_for(
    c: &mut Conversation,
    client_bytes: &[u8],
    server_bytes: &[u8],
    sizes: &[usize],
) -> (Vec<Segment>, Vec<Segment>) {
    let base_c = c.client_seq;
    let base_s = c.server_seq;
    let cs = cut(client_bytes, sizes)
        .into_iter()
        .map(|(off, p)| Segment {
            src: c.client,
            dst: c.server,
            seq: base_c.wrapping_add(off as u32),
            ack: base_s,
            flags: tcp_flags::ACK,
            payload: p,
        })
        .collect();
    let ss = cut(
        server_bytes,
        &sizes.iter().rev().copied().collect::<Vec<_>>(),
    )
    .into_iter()
    .map(|(off, p)| Segment {
        src: c.server,
        dst: c.client,
        seq: base_s.wrapping_add(off as u32),
        ack: base_c,
        flags: tcp_flags::ACK,
        payload: p,
    })
    .collect();
    (cs, ss)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn reordering_and_duplication_preserve_the_stream(
        client_bytes in proptest::collection::vec(any::<u8>(), 1..3000),
        server_bytes in proptest::collection::vec(any::<u8>(), 1..3000),
        sizes in proptest::collection::vec(1usize..400, 1..8),
        jitter in proptest::collection::vec(0usize..6, 1..16),
        dups in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..6),
        client_isn in any::<u32>(),
        server_isn in any::<u32>(),
        handshake in any::<bool>(),
    ) {
        let mut c = Conversation::new(addr("10.1.1.1:40001"), addr("10.1.1.2:8080"), client_isn, server_isn);
        let hs = c.handshake();
        let (cs, ss) = segments_for(&mut c, &client_bytes, &server_bytes, &sizes);
        // Without a handshake the first segment seen per direction defines
        // the stream origin, so it must stay first.
        let cs = shuffle(cs, &jitter, &dups, !handshake);
        let ss = shuffle(ss, &jitter, &dups, !handshake);
        let mut all = if handshake { hs } else { Vec::new() };
        // Interleave the directions.
        let (mut i, mut j) = (0, 0);
        while i < cs.len() || j < ss.len() {
            if i < cs.len() { all.push(cs[i].clone()); i += 1; }
            if j < ss.len() { all.push(ss[j].clone()); j += 1; }
        }
        let mut r = Reassembler::new(ReassemblyConfig::default());
        let mut rec = Recorder::default();
        for (k, s) in all.iter().enumerate() {
            r.process_frame(LINKTYPE_RAW, Timestamp(k as u64), &s.ip_packet(), &mut rec);
        }
        r.finish(&mut rec);
        let conn = ConnectionId(1);
        let opens = rec.opens();
        prop_assert_eq!(opens.len(), 1);
        // Without a handshake the role comes from the ports here (8080 vs
        // ephemeral), so the client is always the 40001 side.
        prop_assert_eq!(opens[0].client, Some(addr("10.1.1.1:40001")));
        prop_assert_eq!(rec.bytes(conn, Direction::ToServer), client_bytes);
        prop_assert_eq!(rec.bytes(conn, Direction::ToClient), server_bytes);
        prop_assert_eq!(r.stats().bytes_missing, 0);
        prop_assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn arbitrary_segments_never_break_the_contract(
        ops in proptest::collection::vec(
            (0u8..3, any::<bool>(), 0u32..4000, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200), 0u64..5),
            0..120,
        ),
    ) {
        let cfg = ReassemblyConfig {
            max_flows: 3,
            idle_timeout: std::time::Duration::from_secs(3),
            max_buffered_per_direction: 500,
            max_segments_per_direction: 4,
            max_buffered_total: 1200,
        };
        let mut r = Reassembler::new(cfg);
        let mut rec = Recorder::default();
        let mut t = 0u64;
        for (flow, reverse, seq, flags, payload, dt) in ops {
            t += dt * 1_000_000_000;
            let a = addr(&format!("10.0.0.{}:{}", flow + 1, 40000 + u16::from(flow)));
            let b = addr("10.0.0.100:80");
            let (src, dst) = if reverse { (b, a) } else { (a, b) };
            let s = Segment { src, dst, seq: seq.wrapping_mul(7919), ack: 0, flags, payload };
            r.process_frame(LINKTYPE_RAW, Timestamp(t), &s.ip_packet(), &mut rec);
            prop_assert!(r.buffered_bytes() <= 1200);
            prop_assert!(r.flows() <= 3);
        }
        r.finish(&mut rec);
        prop_assert_eq!(r.flows(), 0);
        prop_assert_eq!(r.buffered_bytes(), 0);
        // Every opened connection was closed exactly once (Recorder checks "once").
        prop_assert_eq!(rec.opens().len(), rec.closes().len());
    }

    #[test]
    fn decoder_never_panics(linktype in prop_oneof![
            Just(decode::LINKTYPE_NULL), Just(decode::LINKTYPE_ETHERNET), Just(decode::LINKTYPE_RAW),
            Just(decode::LINKTYPE_LOOP), Just(decode::LINKTYPE_LINUX_SLL), Just(decode::LINKTYPE_IPV4),
            Just(decode::LINKTYPE_IPV6), Just(decode::LINKTYPE_LINUX_SLL2), any::<u32>()],
        frame in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Ok(seg) = decode_frame(linktype, &frame) {
            prop_assert!(seg.payload.len() <= seg.wire_len as usize);
        }
    }

    #[test]
    fn decoder_survives_mutated_real_frames(
        ipv6 in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut_to in any::<usize>(),
    ) {
        let (c, s) = if ipv6 { ("[2001:db8::1]:1000", "[2001:db8::2]:80") } else { ("1.2.3.4:1000", "5.6.7.8:80") };
        let mut conv = Conversation::new(addr(c), addr(s), 1, 2);
        let seg = conv.client_data(b"GET / HTTP/1.1\r\n\r\n");
        let mut f = synth::ethernet(&seg.ip_packet(), Some(3));
        for (at, v) in flips {
            let n = f.len();
            f[at % n] = v;
        }
        let n = f.len();
        f.truncate(cut_to % (n + 1));
        let _ = decode_frame(decode::LINKTYPE_ETHERNET, &f);
    }

    #[test]
    fn reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        drain(bytes);
    }

    #[test]
    fn reader_never_panics_on_mutated_captures(
        ng in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12),
        cut_to in any::<usize>(),
    ) {
        let mut c = Conversation::new(addr("10.0.0.1:5555"), addr("10.0.0.2:80"), 1, 2);
        let mut segs = c.handshake();
        segs.push(c.client_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        segs.push(c.server_data(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        segs.extend(c.close());
        let mut bytes = if ng {
            let mut w = synth::PcapNgWriter::new(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
            let id = w.add_interface(1, 65535, Some(9)).unwrap_or_else(|e| panic!("{e}"));
            for s in &segs {
                w.write(id, Timestamp(5), 1_000_000_000, &synth::ethernet(&s.ip_packet(), None))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            w.into_inner()
        } else {
            synth::write_pcap(Vec::new(), 1, Timestamp(5), &segs).unwrap_or_else(|e| panic!("{e}"))
        };
        // Keep the magic intact most of the time so the body gets parsed.
        for (at, v) in flips {
            let n = bytes.len();
            bytes[4 + at % (n - 4)] = v;
        }
        let n = bytes.len();
        bytes.truncate(cut_to % (n + 1));
        drain(bytes);
    }
}

/// Reads everything, through the reassembler, until the end or an error.
fn drain(bytes: Vec<u8>) {
    let Ok(mut reader) = PcapReader::new("fuzz", Cursor::new(bytes)) else {
        return;
    };
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut rec = Recorder::default();
    for _ in 0..10_000 {
        match reader.next_packet() {
            Ok(Some(p)) => r.process_packet(&p, &mut rec),
            Ok(None) | Err(_) => break,
        }
    }
    r.finish(&mut rec);
}
