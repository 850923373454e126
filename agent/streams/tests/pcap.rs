//! pcap / pcapng reading, link types and IP decoding on synthetic files,
//! including broken ones.

mod common;

use std::io::Cursor;
use std::net::SocketAddr;

use common::Recorder;
use sessionwatch_streams::decode::{self, SkipReason, decode_frame};
use sessionwatch_streams::pcap::{Format, PcapReader, ReadError};
use sessionwatch_streams::reassembly::{Reassembler, ReassemblyConfig};
use sessionwatch_streams::replay::{replay, replay_into};
use sessionwatch_streams::synth::{self, Conversation, PcapNgWriter, PcapWriter, Segment};
use sessionwatch_streams::{ConnectionId, Direction, Timestamp};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn exchange_segments(client: &str, server: &str) -> Vec<Segment> {
    let mut c = Conversation::new(addr(client), addr(server), 100, 200);
    let mut segs = c.handshake();
    segs.push(c.client_data(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"));
    segs.push(c.server_data(b"HTTP/1.1 204 No Content\r\n\r\n"));
    segs.extend(c.close());
    segs
}

fn pcap_bytes(linktype: u32, segs: &[Segment]) -> Vec<u8> {
    synth::write_pcap(
        Vec::new(),
        linktype,
        Timestamp(1_700_000_000_000_000_000),
        segs,
    )
    .unwrap_or_else(|e| panic!("write: {e}"))
}

type Replayed = (Recorder, Reassembler, PcapReader<Cursor<Vec<u8>>>);

/// Reads a whole capture from memory through the reassembler.
fn replay_bytes(name: &str, bytes: Vec<u8>) -> Result<Replayed, ReadError> {
    let mut reader = PcapReader::new(name, Cursor::new(bytes))?;
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut rec = Recorder::default();
    replay_into(&mut reader, &mut r, &mut rec)?;
    r.finish(&mut rec);
    Ok((rec, r, reader))
}

fn must<T>(r: Result<T, ReadError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn assert_exchange(rec: &Recorder) {
    let opens = rec.opens();
    assert_eq!(opens.len(), 1, "{:?}", rec.events);
    assert_eq!(
        rec.bytes(opens[0].id, Direction::ToServer),
        b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    );
    assert_eq!(
        rec.bytes(opens[0].id, Direction::ToClient),
        b"HTTP/1.1 204 No Content\r\n\r\n"
    );
}

#[test]
fn every_supported_linktype_reassembles() {
    for lt in [
        decode::LINKTYPE_ETHERNET,
        decode::LINKTYPE_LINUX_SLL,
        decode::LINKTYPE_LINUX_SLL2,
        decode::LINKTYPE_RAW,
        decode::LINKTYPE_NULL,
    ] {
        for (c, s) in [
            ("192.0.2.1:40000", "192.0.2.2:80"),
            ("[2001:db8::1]:40000", "[2001:db8::2]:80"),
        ] {
            let (rec, r, _) = must(replay_bytes(
                "t.pcap",
                pcap_bytes(lt, &exchange_segments(c, s)),
            ));
            assert_exchange(&rec);
            assert_eq!(r.stats().skipped.total(), 0, "linktype {lt}");
            assert_eq!(rec.opens()[0].client, Some(addr(c)));
        }
    }
}

#[test]
fn raw_ipv4_and_ipv6_linktypes() {
    let v4 = exchange_segments("192.0.2.1:40000", "192.0.2.2:80");
    let mut w = must_io(PcapWriter::new(Vec::new(), decode::LINKTYPE_IPV4, 65535));
    for s in &v4 {
        must_io(w.write(Timestamp(1), &s.ip_packet()));
    }
    let (rec, _, _) = must(replay_bytes("v4.pcap", w.into_inner()));
    assert_exchange(&rec);
    let v6 = exchange_segments("[2001:db8::1]:40000", "[2001:db8::2]:80");
    let mut w = must_io(PcapWriter::new(Vec::new(), decode::LINKTYPE_IPV6, 65535));
    for s in &v6 {
        must_io(w.write(Timestamp(1), &s.ip_packet()));
    }
    let (rec, _, _) = must(replay_bytes("v6.pcap", w.into_inner()));
    assert_exchange(&rec);
}

fn must_io<T>(r: std::io::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn vlan_tagged_ethernet() {
    let segs = exchange_segments("192.0.2.1:40000", "192.0.2.2:80");
    let mut w = must_io(PcapWriter::new(
        Vec::new(),
        decode::LINKTYPE_ETHERNET,
        65535,
    ));
    for s in &segs {
        must_io(w.write(Timestamp(5), &synth::ethernet(&s.ip_packet(), Some(42))));
    }
    let (rec, _, _) = must(replay_bytes("vlan.pcap", w.into_inner()));
    assert_exchange(&rec);
    // QinQ: an 802.1ad tag around the 802.1Q one.
    let ip = segs[3].ip_packet();
    let mut f = synth::ethernet(&ip, Some(7));
    f.splice(12..12, [0x88, 0xa8, 0x00, 0x05]);
    let seg = decode_frame(decode::LINKTYPE_ETHERNET, &f).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(seg.payload, segs[3].payload.as_slice());
}

#[test]
fn bsd_loopback_families_and_byte_orders() {
    let ip4 = exchange_segments("192.0.2.1:40000", "192.0.2.2:80")[3].ip_packet();
    let ip6 = exchange_segments("[2001:db8::1]:40000", "[2001:db8::2]:80")[3].ip_packet();
    for fam in [24u32, 28, 30] {
        let f = synth::null_loopback(&ip6, fam);
        assert!(decode_frame(decode::LINKTYPE_NULL, &f).is_ok(), "AF {fam}");
        // Written by a big-endian host.
        let mut be = fam.to_be_bytes().to_vec();
        be.extend_from_slice(&ip6);
        assert!(
            decode_frame(decode::LINKTYPE_NULL, &be).is_ok(),
            "AF {fam} BE"
        );
        assert!(
            decode_frame(decode::LINKTYPE_LOOP, &be).is_ok(),
            "LOOP AF {fam}"
        );
    }
    assert!(decode_frame(decode::LINKTYPE_NULL, &synth::null_loopback(&ip4, 2)).is_ok());
    assert_eq!(
        decode_frame(decode::LINKTYPE_NULL, &synth::null_loopback(&ip4, 17)),
        Err(SkipReason::NotIp)
    );
}

#[test]
fn ipv4_options_and_fragments() {
    let seg = &exchange_segments("192.0.2.1:40000", "192.0.2.2:80")[3];
    let mut p = seg.ip_packet();
    // Insert 4 bytes of options (NOP NOP NOP EOL): IHL 6, total length + 4.
    p.splice(20..20, [1, 1, 1, 0]);
    p[0] = 0x46;
    let total = u16::from_be_bytes([p[2], p[3]]) + 4;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    let d = decode::decode_ipv4(&p).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(d.payload, seg.payload.as_slice());
    // Ethernet padding after the IP packet is not payload.
    let mut padded = p.clone();
    padded.extend_from_slice(&[0; 10]);
    assert_eq!(
        decode::decode_ipv4(&padded).map(|s| s.payload.len()),
        Ok(seg.payload.len())
    );
    // A non-first fragment has no TCP header.
    let mut frag = p.clone();
    frag[6..8].copy_from_slice(&100u16.to_be_bytes());
    assert_eq!(decode::decode_ipv4(&frag), Err(SkipReason::IpFragment));
    // First fragment (MF set, offset 0) is decoded.
    let mut first = p;
    first[6] = 0x20;
    assert!(decode::decode_ipv4(&first).is_ok());
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let seg = &exchange_segments("[2001:db8::1]:40000", "[2001:db8::2]:80")[3];
    let p = seg.ip_packet();
    let mut x = p[..40].to_vec();
    x[6] = 0; // hop-by-hop first
    // Hop-by-hop: next = 44 (fragment), len 0 → 8 bytes, PadN.
    x.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
    // Fragment: next = 60, offset 0, M = 0.
    x.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 1]);
    // Destination options: next = 6 (TCP), len 1 → 16 bytes.
    x.extend_from_slice(&[6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    x.extend_from_slice(&p[40..]);
    let plen = (x.len() - 40) as u16;
    x[4..6].copy_from_slice(&plen.to_be_bytes());
    let d = decode::decode_ipv6(&x).unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(d.payload, seg.payload.as_slice());
    assert_eq!(d.sport, 40000);
    // Non-first fragment.
    let mut nf = x.clone();
    nf[48 + 2..48 + 4].copy_from_slice(&(10u16 << 3).to_be_bytes());
    assert_eq!(decode::decode_ipv6(&nf), Err(SkipReason::IpFragment));
    // ESP: not TCP we can read.
    let mut esp = x;
    esp[6] = 50;
    assert_eq!(decode::decode_ipv6(&esp), Err(SkipReason::NotTcp));
}

#[test]
fn non_tcp_and_non_ip_are_counted() {
    let mut udp = exchange_segments("192.0.2.1:40000", "192.0.2.2:53")[0].ip_packet();
    udp[9] = 17;
    let mut arp = synth::ethernet(&[0u8; 28], None);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let mut w = must_io(PcapWriter::new(
        Vec::new(),
        decode::LINKTYPE_ETHERNET,
        65535,
    ));
    must_io(w.write(Timestamp(1), &synth::ethernet(&udp, None)));
    must_io(w.write(Timestamp(2), &arp));
    must_io(w.write(Timestamp(3), &[0u8; 5]));
    let (rec, r, _) = must(replay_bytes("mixed.pcap", w.into_inner()));
    assert!(rec.events.is_empty());
    let sk = r.stats().skipped;
    assert_eq!(sk.get(SkipReason::NotTcp), 1);
    assert_eq!(sk.get(SkipReason::NotIp), 1);
    assert_eq!(sk.get(SkipReason::Malformed), 1);
}

#[test]
fn unsupported_linktype_is_skipped_not_fatal() {
    let bytes = pcap_bytes(147, &exchange_segments("192.0.2.1:40000", "192.0.2.2:80"));
    let (rec, r, reader) = must(replay_bytes("user0.pcap", bytes));
    assert!(rec.events.is_empty());
    assert_eq!(r.stats().skipped.get(SkipReason::UnsupportedLinktype), 8);
    assert_eq!(reader.stats().packets, 8);
}

#[test]
fn nanosecond_and_big_endian_pcaps() {
    let segs = exchange_segments("192.0.2.1:40000", "192.0.2.2:80");
    let mut w = must_io(PcapWriter::with_precision(Vec::new(), 101, 65535, true));
    must_io(w.write(Timestamp(1_000_000_000_123_456_789), &segs[0].ip_packet()));
    let mut r = must(PcapReader::new("ns.pcap", Cursor::new(w.into_inner())));
    assert_eq!(
        r.format(),
        Format::Pcap {
            nanos: true,
            big_endian: false,
            modified: false
        }
    );
    let p = must(r.next_packet()).unwrap_or_else(|| panic!("packet"));
    assert_eq!(p.ts, Timestamp(1_000_000_000_123_456_789));

    // Big-endian microsecond file, written by hand.
    let ip = segs[0].ip_packet();
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_be_bytes());
    f.extend_from_slice(&2u16.to_be_bytes());
    f.extend_from_slice(&4u16.to_be_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_be_bytes());
    f.extend_from_slice(&101u32.to_be_bytes());
    f.extend_from_slice(&7u32.to_be_bytes());
    f.extend_from_slice(&250_000u32.to_be_bytes());
    f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
    f.extend_from_slice(&(ip.len() as u32).to_be_bytes());
    f.extend_from_slice(&ip);
    let mut r = must(PcapReader::new("be.pcap", Cursor::new(f)));
    let p = must(r.next_packet()).unwrap_or_else(|| panic!("packet"));
    assert_eq!(p.ts, Timestamp(7_250_000_000));
    assert_eq!(p.linktype, 101);
    assert_eq!(p.data, ip.as_slice());
    assert!(must(r.next_packet()).is_none());

    // Kuznetzov's modified format: 24-byte record headers (ifindex,
    // protocol, packet type after the four usual words), written by hand;
    // two records so that the second starts where the first one's extra
    // header bytes and data end.
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_cd34u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&101u32.to_le_bytes());
    for (sec, usec, orig) in [
        (9u32, 1u32, ip.len() as u32 + 100),
        (10, 2, ip.len() as u32),
    ] {
        f.extend_from_slice(&sec.to_le_bytes());
        f.extend_from_slice(&usec.to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&orig.to_le_bytes());
        f.extend_from_slice(&[0xee; 8]);
        f.extend_from_slice(&ip);
    }
    let mut r = must(PcapReader::new("kuznetzov.pcap", Cursor::new(f)));
    assert_eq!(
        r.format(),
        Format::Pcap {
            nanos: false,
            big_endian: false,
            modified: true
        }
    );
    let p = must(r.next_packet()).unwrap_or_else(|| panic!("packet"));
    assert_eq!(
        (p.ts, p.orig_len, p.data),
        (
            Timestamp(9_000_001_000),
            ip.len() as u32 + 100,
            ip.as_slice()
        )
    );
    let p = must(r.next_packet()).unwrap_or_else(|| panic!("second packet"));
    assert_eq!((p.ts, p.data), (Timestamp(10_000_002_000), ip.as_slice()));
    assert!(must(r.next_packet()).is_none());
    assert_eq!((r.stats().records, r.stats().packets), (3, 2));
}

#[test]
fn wrong_magic_is_fatal_with_offset() {
    let err = PcapReader::new(
        "notes.txt",
        Cursor::new(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    )
    .err()
    .unwrap_or_else(|| panic!("accepted text"));
    assert!(
        matches!(err, ReadError::BadMagic { offset: 0, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "notes.txt: byte offset 0: not a pcap or pcapng file (magic 0x20544547)"
    );
    assert_eq!(err.file(), "notes.txt");
}

#[test]
fn truncated_file_header_is_fatal() {
    let full = pcap_bytes(1, &exchange_segments("192.0.2.1:40000", "192.0.2.2:80"));
    for cut in [0, 3, 10, 23] {
        let err = PcapReader::new("cut.pcap", Cursor::new(full[..cut].to_vec()))
            .err()
            .unwrap_or_else(|| panic!("accepted {cut} bytes"));
        assert!(
            matches!(err, ReadError::TruncatedHeader { offset: 0, .. }),
            "{cut}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("cut.pcap: byte offset 0: truncated file header")
        );
    }
}

#[test]
fn absurd_snaplen_and_bad_version_are_fatal() {
    let mut f = pcap_bytes(1, &[]);
    f[16..20].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    let err = PcapReader::new("snap.pcap", Cursor::new(f)).err();
    assert!(
        matches!(
            err,
            Some(ReadError::AbsurdSnaplen {
                snaplen: 0x4000_0000,
                ..
            })
        ),
        "{err:?}"
    );
    let mut f = pcap_bytes(1, &[]);
    f[4..6].copy_from_slice(&3u16.to_le_bytes());
    let err = PcapReader::new("v.pcap", Cursor::new(f)).err();
    assert!(
        matches!(err, Some(ReadError::UnsupportedVersion { major: 3, .. })),
        "{err:?}"
    );
}

#[test]
fn truncated_final_record_is_counted_and_earlier_data_analysed() {
    let segs = exchange_segments("192.0.2.1:40000", "192.0.2.2:80");
    let full = pcap_bytes(1, &segs);
    // Cut 10 bytes into the last record's data.
    let last_len = synth::ethernet(&segs[7].ip_packet(), None).len();
    let last_off = full.len() - last_len - 16;
    let cut = full[..last_off + 16 + 10].to_vec();
    let (rec, _, reader) = must(replay_bytes("cut.pcap", cut));
    assert_exchange(&rec);
    let st = reader.stats();
    assert_eq!(st.skipped.get(SkipReason::TruncatedRecord), 1);
    let tail = st
        .truncated_tail
        .unwrap_or_else(|| panic!("no truncation recorded"));
    assert_eq!(tail.offset, last_off as u64);
    assert_eq!(tail.expected, (16 + last_len) as u64);
    assert_eq!(tail.available, 26);
    assert_eq!(st.packets, 7);
    // Cut inside a record header.
    let cut = full[..last_off + 5].to_vec();
    let (_, _, reader) = must(replay_bytes("cut2.pcap", cut));
    assert_eq!(
        reader.stats().truncated_tail.map(|t| t.offset),
        Some(last_off as u64)
    );
}

#[test]
fn oversized_record_is_fatal_with_its_offset() {
    let segs = exchange_segments("192.0.2.1:40000", "192.0.2.2:80");
    let mut f = pcap_bytes(1, &segs[..2]);
    let second = 24 + 16 + synth::ethernet(&segs[0].ip_packet(), None).len();
    f[second + 8..second + 12].copy_from_slice(&50_000_000u32.to_le_bytes());
    let mut r = must(PcapReader::new("big.pcap", Cursor::new(f)));
    assert!(must(r.next_packet()).is_some());
    let err = r.next_packet().err().unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(err, ReadError::OversizedRecord { .. }), "{err:?}");
    assert_eq!(err.offset(), second as u64);
    assert!(
        err.to_string()
            .starts_with(&format!("big.pcap: byte offset {second}: record of"))
    );
}

#[test]
fn records_larger_than_the_initial_buffer() {
    // 200 KiB payload in one (jumbo) frame, then a normal exchange.
    let mut c = Conversation::new(addr("192.0.2.1:40000"), addr("192.0.2.2:80"), 1, 1);
    let mut segs = c.handshake();
    let big: Vec<u8> = (0..60_000u32).map(|i| i as u8).collect();
    segs.push(c.client_data(&big));
    let mut w = must_io(PcapWriter::new(Vec::new(), 101, 262_144));
    for s in &segs {
        must_io(w.write(Timestamp(9), &s.ip_packet()));
    }
    // Many records: the file is far larger than the read buffer.
    for _ in 0..40 {
        let s = c.client_data(&big);
        must_io(w.write(Timestamp(9), &s.ip_packet()));
    }
    let (rec, _, reader) = must(replay_bytes("jumbo.pcap", w.into_inner()));
    assert_eq!(
        rec.bytes(ConnectionId(1), Direction::ToServer).len(),
        41 * 60_000
    );
    assert_eq!(reader.stats().packets, 44);
}

/// Packet `i` of [`records_straddle_every_refill`]: its own length and
/// bytes, so a record read from the wrong place cannot pass.
fn numbered_packet(i: u32) -> Vec<u8> {
    let len = (i.wrapping_mul(37) % 1500 + 1) as usize;
    (0..len).map(|k| (i as usize * 7 + k) as u8).collect()
}

#[test]
fn records_straddle_every_refill() {
    // Some 20,000 records of 1 to 1500 bytes, both formats: megabytes
    // through the 256 KiB read buffer, so records end at every offset of a
    // refill and the unfinished one is carried over each time.
    const N: u32 = 20_000;
    let mut legacy = must_io(PcapWriter::new(Vec::new(), 101, 65535));
    let mut ng = must_io(PcapNgWriter::new(Vec::new()));
    let iface = must_io(ng.add_interface(101, 65535, None));
    for i in 0..N {
        let ts = Timestamp(1_000_000_000 + u64::from(i) * 1000);
        must_io(legacy.write(ts, &numbered_packet(i)));
        must_io(ng.write(iface, ts, 1_000_000, &numbered_packet(i)));
    }
    for (name, bytes) in [
        ("many.pcap", legacy.into_inner()),
        ("many.pcapng", ng.into_inner()),
    ] {
        assert!(
            bytes.len() > 4 * 256 * 1024,
            "{name}: {} bytes",
            bytes.len()
        );
        let mut r = must(PcapReader::new(name, Cursor::new(bytes)));
        for i in 0..N {
            let p = must(r.next_packet()).unwrap_or_else(|| panic!("{name}: packet {i} missing"));
            assert_eq!(
                p.ts,
                Timestamp(1_000_000_000 + u64::from(i) * 1000),
                "{name} {i}"
            );
            assert_eq!(p.data, numbered_packet(i).as_slice(), "{name} {i}");
        }
        assert!(must(r.next_packet()).is_none(), "{name}");
        assert_eq!(r.stats().packets, u64::from(N), "{name}");
    }
}

fn pcapng_with(extra: impl FnOnce(&mut PcapNgWriter<Vec<u8>>)) -> Vec<u8> {
    let segs = exchange_segments("[2001:db8::1]:40000", "[2001:db8::2]:80");
    let mut w = must_io(PcapNgWriter::new(Vec::new()));
    let eth = must_io(w.add_interface(decode::LINKTYPE_ETHERNET as u16, 65535, None));
    let sll2 = must_io(w.add_interface(decode::LINKTYPE_LINUX_SLL2 as u16, 65535, Some(9)));
    extra(&mut w);
    for (i, s) in segs.iter().enumerate() {
        let ts = Timestamp(1_700_000_000_000_000_000 + i as u64 * 1000);
        if i % 2 == 0 {
            must_io(w.write(eth, ts, 1_000_000, &synth::ethernet(&s.ip_packet(), None)));
        } else {
            must_io(w.write(sll2, ts, 1_000_000_000, &synth::linux_sll2(&s.ip_packet())));
        }
        if i == 3 {
            // An unknown block type in the middle.
            must_io(w.block(0x0000_0123, b"opaque block body"));
            // A custom block (known type, vendor data): skipped silently.
            must_io(w.block(0x0000_0bad, b"\0\0\0\x01vendor"));
        }
    }
    w.into_inner()
}

#[test]
fn pcapng_with_unknown_blocks_and_mixed_interfaces() {
    let bytes = pcapng_with(|w| must_io(w.block(0x4242_4242, &[1, 2, 3, 4, 5, 6, 7, 8])));
    let mut reader = must(PcapReader::new("t.pcapng", Cursor::new(bytes.clone())));
    assert_eq!(reader.format(), Format::PcapNg);
    let first = must(reader.next_packet()).unwrap_or_else(|| panic!("packet"));
    assert_eq!(first.ts, Timestamp(1_700_000_000_000_000_000));
    let second = must(reader.next_packet()).unwrap_or_else(|| panic!("packet"));
    // Nanosecond interface.
    assert_eq!(second.ts, Timestamp(1_700_000_000_000_001_000));
    assert_eq!(second.linktype, decode::LINKTYPE_LINUX_SLL2);
    let (rec, r, reader) = must(replay_bytes("t.pcapng", bytes));
    assert_exchange(&rec);
    assert_eq!(reader.stats().skipped.get(SkipReason::UnknownBlock), 2);
    assert_eq!(r.stats().skipped.total(), 0);
}

#[test]
fn pcapng_packet_on_undescribed_interface_is_counted() {
    let bytes = pcapng_with(|w| {
        must_io(w.write(7, Timestamp(1), 1_000_000, &[0u8; 60]));
    });
    let (rec, _, reader) = must(replay_bytes("t.pcapng", bytes));
    assert_exchange(&rec);
    assert_eq!(reader.stats().skipped.get(SkipReason::UnknownInterface), 1);
}

#[test]
fn pcapng_corrupt_block_length_is_fatal_with_offset() {
    let bytes = pcapng_with(|_| {});
    // Find the first EPB (type 6) after the SHB and IDBs and corrupt its length.
    let mut off = 0usize;
    let mut epb = None;
    while off + 8 <= bytes.len() {
        let ty = u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]]);
        let len = u32::from_le_bytes([
            bytes[off + 4],
            bytes[off + 5],
            bytes[off + 6],
            bytes[off + 7],
        ]) as usize;
        if ty == 6 {
            epb = Some(off);
            break;
        }
        off += len;
    }
    let epb = epb.unwrap_or_else(|| panic!("no EPB"));
    let mut bad = bytes.clone();
    bad[epb + 4..epb + 8].copy_from_slice(&13u32.to_le_bytes());
    let mut r = must(PcapReader::new("bad.pcapng", Cursor::new(bad)));
    let err = r.next_packet().err().unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(err, ReadError::CorruptBlock { .. }), "{err:?}");
    assert_eq!(err.offset(), epb as u64);
    assert_eq!(
        err.to_string(),
        format!("bad.pcapng: byte offset {epb}: corrupt block: invalid block length")
    );
    // Trailing length disagreeing with the leading one.
    let mut bad = bytes.clone();
    let len = u32::from_le_bytes([bad[epb + 4], bad[epb + 5], bad[epb + 6], bad[epb + 7]]) as usize;
    bad[epb + len - 4..epb + len].copy_from_slice(&8u32.to_le_bytes());
    let mut r = must(PcapReader::new("bad2.pcapng", Cursor::new(bad)));
    let err = r.next_packet().err().unwrap_or_else(|| panic!("accepted"));
    assert_eq!(err.offset(), epb as u64);
    // Huge length.
    let mut bad = bytes;
    bad[epb + 4..epb + 8].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let mut r = must(PcapReader::new("bad3.pcapng", Cursor::new(bad)));
    let err = r.next_packet().err().unwrap_or_else(|| panic!("accepted"));
    assert!(matches!(err, ReadError::OversizedRecord { .. }), "{err:?}");
}

#[test]
fn pcapng_truncated_tail_is_not_fatal() {
    let bytes = pcapng_with(|_| {});
    let cut = bytes[..bytes.len() - 7].to_vec();
    let (_, _, reader) = must(replay_bytes("t.pcapng", cut));
    assert_eq!(reader.stats().skipped.get(SkipReason::TruncatedRecord), 1);
    assert_eq!(reader.stats().packets, 7);
}

#[test]
fn pcapng_bad_byte_order_magic_is_fatal() {
    let mut bytes = pcapng_with(|_| {});
    bytes[8] ^= 0xff;
    let err = PcapReader::new("bom.pcapng", Cursor::new(bytes)).err();
    assert!(
        matches!(err, Some(ReadError::CorruptBlock { offset: 0, .. })),
        "{err:?}"
    );
}

#[test]
fn replay_convenience_on_a_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("x.pcap");
    std::fs::write(
        &path,
        pcap_bytes(1, &exchange_segments("192.0.2.1:40000", "192.0.2.2:80")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut rec = Recorder::default();
    let stats = must(replay(&path, &ReassemblyConfig::default(), &mut rec));
    assert_exchange(&rec);
    assert_eq!(stats.read.packets, 8);
    assert_eq!(stats.reassembly.packets, 8);
    assert_eq!(stats.reassembly.flows_opened, 1);
    assert_eq!(stats.skipped().total(), 0);

    let missing = dir.path().join("missing.pcap");
    let err = replay(&missing, &ReassemblyConfig::default(), &mut rec).err();
    assert!(matches!(err, Some(ReadError::Io { .. })), "{err:?}");
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("missing.pcap: byte offset 0: read error"),
        "{msg}"
    );
}

// --- Bad files (RELIABILITY.md, "Bad input") --------------------------------

/// The exchange's pcap with a zero-length record (caplen 0, wire length
/// 60) written before segment `at`.
fn pcap_with_empty_record(at: usize) -> Vec<u8> {
    let segs = exchange_segments("192.0.2.1:40000", "192.0.2.2:80");
    let mut w = must_io(PcapWriter::new(
        Vec::new(),
        decode::LINKTYPE_ETHERNET,
        65535,
    ));
    for (i, s) in segs.iter().enumerate() {
        let ts = Timestamp(1_700_000_000_000_000_000 + i as u64 * 1000);
        if i == at {
            must_io(w.write_truncated(ts, &[], 60));
        }
        must_io(w.write(ts, &synth::ethernet(&s.ip_packet(), None)));
    }
    w.into_inner()
}

#[test]
fn zero_length_pcap_records_are_counted_skips() {
    for at in [0, 3, 7] {
        let (rec, r, reader) = must(replay_bytes("empty.pcap", pcap_with_empty_record(at)));
        assert_exchange(&rec);
        assert_eq!(reader.stats().packets, 9, "at {at}");
        assert_eq!(r.stats().skipped.get(SkipReason::Malformed), 1, "at {at}");
    }
}

#[test]
fn zero_length_pcapng_packets_are_counted_skips() {
    let bytes = pcapng_with(|w| {
        must_io(w.write(0, Timestamp(1_700_000_000_000_000_000), 1_000_000, &[]));
        // A simple packet block with no data.
        must_io(w.block(3, &0u32.to_le_bytes()));
    });
    let (rec, r, reader) = must(replay_bytes("empty.pcapng", bytes));
    assert_exchange(&rec);
    // The one unknown block of `pcapng_with` (its custom block is silent).
    assert_eq!(reader.stats().skipped.get(SkipReason::UnknownBlock), 1);
    assert_eq!(r.stats().skipped.get(SkipReason::Malformed), 2);
}

#[test]
fn pcapng_unknown_blocks_before_any_interface_are_skipped() {
    let segs = exchange_segments("192.0.2.1:40000", "192.0.2.2:80");
    let mut w = must_io(PcapNgWriter::new(Vec::new()));
    // Unknown and vendor blocks of every size class first, then the data.
    must_io(w.block(0x0000_0777, &[]));
    must_io(w.block(0x8000_0777, &[0xab; 4000]));
    let eth = must_io(w.add_interface(decode::LINKTYPE_ETHERNET as u16, 65535, None));
    for (i, s) in segs.iter().enumerate() {
        let ts = Timestamp(1_700_000_000_000_000_000 + i as u64 * 1000);
        must_io(w.write(eth, ts, 1_000_000, &synth::ethernet(&s.ip_packet(), None)));
        must_io(w.block(0x4000_0000 + i as u32, &[i as u8; 7]));
    }
    let (rec, _, reader) = must(replay_bytes("unknown.pcapng", w.into_inner()));
    assert_exchange(&rec);
    assert_eq!(
        reader.stats().skipped.get(SkipReason::UnknownBlock),
        2 + segs.len() as u64
    );
}

#[test]
fn snaplen_at_and_above_the_limit() {
    use sessionwatch_streams::pcap::MAX_SNAPLEN;
    let segs = exchange_segments("192.0.2.1:40000", "192.0.2.2:80");
    let mut f = pcap_bytes(1, &segs);
    f[16..20].copy_from_slice(&MAX_SNAPLEN.to_le_bytes());
    let (rec, _, _) = must(replay_bytes("max.pcap", f.clone()));
    assert_exchange(&rec);
    for snaplen in [MAX_SNAPLEN + 1, u32::MAX] {
        f[16..20].copy_from_slice(&snaplen.to_le_bytes());
        let err = PcapReader::new("absurd.pcap", Cursor::new(f.clone()))
            .err()
            .unwrap_or_else(|| panic!("accepted snaplen {snaplen}"));
        assert_eq!(
            err.to_string(),
            format!("absurd.pcap: byte offset 0: absurd snaplen {snaplen} (limit {MAX_SNAPLEN})")
        );
    }
}

#[test]
fn record_length_beyond_the_limit_in_either_byte_order_is_fatal() {
    let segs = exchange_segments("192.0.2.1:40000", "192.0.2.2:80");
    let f = pcap_bytes(1, &segs[..1]);
    // The first record's caplen: just above the limit, and u32::MAX.
    for len in [
        sessionwatch_streams::pcap::MAX_RECORD_LEN as u32 + 1,
        u32::MAX,
    ] {
        let mut bad = f.clone();
        bad[24 + 8..24 + 12].copy_from_slice(&len.to_le_bytes());
        let mut r = must(PcapReader::new("huge.pcap", Cursor::new(bad)));
        let err = r
            .next_packet()
            .err()
            .unwrap_or_else(|| panic!("accepted {len}"));
        assert!(matches!(err, ReadError::OversizedRecord { .. }), "{err:?}");
        assert_eq!(err.offset(), 24);
    }
}
