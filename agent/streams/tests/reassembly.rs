//! TCP reassembly behaviour on synthetic, adversarial segment sequences.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Chunk, Ev, Recorder};
use sessionwatch_streams::decode::{LINKTYPE_RAW, SkipReason, tcp_flags};
use sessionwatch_streams::reassembly::{Reassembler, ReassemblyConfig};
use sessionwatch_streams::synth::{Conversation, Segment};
use sessionwatch_streams::{CloseReason, ConnectionId, Direction, Source, Timestamp};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn conv() -> Conversation {
    Conversation::new(addr("10.0.0.1:51000"), addr("10.0.0.2:80"), 1000, 5000)
}

/// Feeds segments as raw IP frames, 1 ms apart starting at `t0` seconds.
fn feed_at(r: &mut Reassembler, t0: u64, segs: &[Segment], rec: &mut Recorder) {
    for (i, s) in segs.iter().enumerate() {
        let ts = Timestamp(t0 * 1_000_000_000 + i as u64 * 1_000_000);
        r.process_frame(LINKTYPE_RAW, ts, &s.ip_packet(), rec);
    }
}

fn run(segs: &[Segment]) -> (Recorder, Reassembler) {
    run_with(ReassemblyConfig::default(), segs)
}

fn run_with(cfg: ReassemblyConfig, segs: &[Segment]) -> (Recorder, Reassembler) {
    let mut r = Reassembler::new(cfg);
    let mut rec = Recorder::default();
    feed_at(&mut r, 1_700_000_000, segs, &mut rec);
    r.finish(&mut rec);
    (rec, r)
}

const C1: ConnectionId = ConnectionId(1);

#[test]
fn clean_connection() {
    let mut c = conv();
    let mut segs = c.handshake();
    segs.push(c.client_data(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    segs.push(c.server_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"));
    segs.extend(c.close());
    let (rec, r) = run(&segs);
    let opens = rec.opens();
    assert_eq!(opens.len(), 1);
    assert_eq!(opens[0].client, Some(addr("10.0.0.1:51000")));
    assert_eq!(opens[0].server, Some(addr("10.0.0.2:80")));
    assert_eq!(opens[0].source, Source::Pcap);
    assert!(!opens[0].tls);
    assert!(opens[0].process.is_none());
    assert_eq!(
        rec.bytes(C1, Direction::ToServer),
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    );
    assert_eq!(
        rec.bytes(C1, Direction::ToClient),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    );
    assert_eq!(rec.closes().get(&C1), Some(&CloseReason::Closed));
    let st = r.stats();
    assert_eq!(st.bytes_missing, 0);
    assert_eq!(st.flows_opened, 1);
    assert_eq!(st.payload_bytes, 27 + 40);
    // The final ACK after both FINs is expected and not counted as a skip.
    assert_eq!(st.skipped.total(), 0);
    assert!(matches!(
        rec.events.last(),
        Some(Ev::Close(C1, CloseReason::Closed))
    ));
}

#[test]
fn reordered_segments_are_put_back_in_order() {
    let mut c = conv();
    let mut segs = c.handshake();
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut data = c.client_stream(&body, 500);
    data.reverse();
    segs.extend(data);
    segs.extend(c.close());
    let (rec, r) = run(&segs);
    assert_eq!(rec.bytes(C1, Direction::ToServer), body);
    assert_eq!(r.stats().bytes_missing, 0);
    assert_eq!(r.stats().out_of_order_segments, 9);
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn retransmissions_are_dropped_and_counted() {
    let mut c = conv();
    let mut segs = c.handshake();
    let d1 = c.client_data(b"hello ");
    let d2 = c.client_data(b"world");
    segs.extend([d1.clone(), d1.clone(), d2.clone(), d1, d2]);
    segs.extend(c.close());
    let (rec, r) = run(&segs);
    assert_eq!(rec.bytes(C1, Direction::ToServer), b"hello world");
    assert_eq!(r.stats().retransmitted_bytes, 6 + 6 + 5);
}

#[test]
fn overlaps_first_copy_wins() {
    let mut c = conv();
    let mut segs = c.handshake();
    let base = c.client_seq;
    let seg = |off: u32, p: &[u8]| Segment {
        src: c.client,
        dst: c.server,
        seq: base.wrapping_add(off),
        ack: c.server_seq,
        flags: tcp_flags::ACK,
        payload: p.to_vec(),
    };
    // Delivered first, then contradicted by an overlapping copy.
    segs.push(seg(0, b"hello"));
    segs.push(seg(0, b"HELLO world"));
    // Buffered out of order first (10..15), then covered by a wider copy.
    segs.push(seg(18, b"x"));
    segs.push(seg(13, b"ABCDE"));
    segs.push(seg(11, b"abcdefgh"));
    let (rec, _) = run(&segs);
    // 0..5 "hello" (delivered first), 5..11 " world", 11..13 "ab" (new),
    // 13..18 "ABCDE" (buffered first), 18 "x".
    assert_eq!(rec.bytes(C1, Direction::ToServer), b"hello worldabABCDEx");
}

#[test]
fn lost_segment_becomes_exact_gap_at_close() {
    let mut c = conv();
    let mut segs = c.handshake();
    let a = c.client_data(b"first ");
    let _lost = c.client_data(b"LOST-BYTES");
    let b = c.client_data(b" last");
    segs.extend([a, b]);
    segs.extend(c.close());
    let (rec, r) = run(&segs);
    assert_eq!(
        rec.chunks(C1, Direction::ToServer),
        vec![
            Chunk::Bytes(b"first ".to_vec()),
            Chunk::Gap(10),
            Chunk::Bytes(b" last".to_vec())
        ]
    );
    assert_eq!(r.stats().bytes_missing, 10);
    assert_eq!(rec.closes().get(&C1), Some(&CloseReason::Closed));
}

#[test]
fn lost_tail_before_fin_is_a_gap() {
    let mut c = conv();
    let mut segs = c.handshake();
    segs.push(c.server_data(b"HTTP/1.1 200 OK\r\n\r\n"));
    let _lost = c.server_data(b"tail that never made it");
    segs.extend(c.close());
    let (rec, _) = run(&segs);
    assert_eq!(rec.gap_total(C1, Direction::ToClient), 23);
}

#[test]
fn buffer_overflow_gives_up_on_the_hole() {
    let cfg = ReassemblyConfig {
        max_buffered_per_direction: 1000,
        ..Default::default()
    };
    let mut c = conv();
    let mut segs = c.handshake();
    segs.push(c.client_data(&[b'a'; 100]));
    let _lost = c.client_data(&[b'L'; 50]);
    for _ in 0..30 {
        segs.push(c.client_data(&[b'b'; 100]));
    }
    let mut r = Reassembler::new(cfg);
    let mut rec = Recorder::default();
    feed_at(&mut r, 100, &segs, &mut rec);
    // Before the end of input: the gap has already been declared.
    let chunks = rec.chunks(C1, Direction::ToServer);
    assert_eq!(chunks[0], Chunk::Bytes(vec![b'a'; 100]));
    assert_eq!(chunks[1], Chunk::Gap(50));
    assert_eq!(r.stats().buffer_overflows, 1);
    r.finish(&mut rec);
    assert_eq!(rec.bytes(C1, Direction::ToServer).len(), 100 + 3000);
    assert_eq!(r.stats().bytes_missing, 50);
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn global_buffer_budget_is_respected() {
    let cfg = ReassemblyConfig {
        max_buffered_total: 300,
        ..Default::default()
    };
    let mut r = Reassembler::new(cfg);
    let mut rec = Recorder::default();
    for i in 0..10u16 {
        let mut c = Conversation::new(
            addr(&format!("10.0.1.{}:40000", i + 1)),
            addr("10.0.0.2:80"),
            7,
            9,
        );
        let mut segs = c.handshake();
        let _lost = c.client_data(b"xx");
        segs.push(c.client_data(&[b'z'; 100]));
        feed_at(&mut r, 10, &segs, &mut rec);
        assert!(r.buffered_bytes() <= 300);
    }
    r.finish(&mut rec);
    assert_eq!(r.stats().bytes_missing, 20);
}

#[test]
fn mid_connection_request_names_the_client() {
    // No handshake; the server's port is the higher one, so only the
    // payload can tell who the client is.
    let mut c = Conversation::new(addr("10.0.0.1:80"), addr("10.0.0.2:50000"), 77, 99);
    let segs = vec![
        c.client_data(b"POST /login HTTP/1.1\r\n\r\n"),
        c.server_data(b"HTTP/1.1 302 Found\r\n\r\n"),
    ];
    let (rec, _) = run(&segs);
    let open = &rec.opens()[0];
    assert_eq!(open.client, Some(addr("10.0.0.1:80")));
    assert_eq!(
        rec.bytes(C1, Direction::ToServer),
        b"POST /login HTTP/1.1\r\n\r\n"
    );
    assert_eq!(rec.closes().get(&C1), Some(&CloseReason::EndOfInput));
}

#[test]
fn mid_connection_response_names_the_server() {
    let mut c = Conversation::new(addr("10.0.0.1:51000"), addr("10.0.0.2:8080"), 77, 99);
    let segs = vec![
        c.server_data(b"HTTP/1.1 200 OK\r\n\r\n"),
        c.client_data(b"GET / HTTP/1.1\r\n\r\n"),
    ];
    let (rec, _) = run(&segs);
    assert_eq!(rec.opens()[0].client, Some(addr("10.0.0.1:51000")));
    assert_eq!(
        rec.bytes(C1, Direction::ToClient),
        b"HTTP/1.1 200 OK\r\n\r\n"
    );
}

#[test]
fn mid_connection_without_http_hint_uses_ports() {
    let mut c = Conversation::new(addr("10.0.0.1:45678"), addr("10.0.0.2:443"), 1, 1);
    // Server speaks first with something that is not HTTP.
    let segs = vec![
        c.server_data(b"\x16\x03\x01 opaque"),
        c.client_data(b"\x16\x03\x01 more"),
    ];
    let (rec, _) = run(&segs);
    assert_eq!(rec.opens()[0].client, Some(addr("10.0.0.1:45678")));
    // Ephemeral vs registered port.
    let mut c = Conversation::new(addr("10.0.0.1:50001"), addr("10.0.0.2:8080"), 1, 1);
    let (rec, _) = run(&[c.server_data(b"??")]);
    assert_eq!(rec.opens()[0].client, Some(addr("10.0.0.1:50001")));
}

#[test]
fn syn_ack_without_syn_names_the_server() {
    let mut c = Conversation::new(addr("10.0.0.1:80"), addr("10.0.0.2:9000"), 10, 20);
    let hs = c.handshake();
    let segs = vec![
        hs[1].clone(),
        hs[2].clone(),
        c.client_data(b"\x00\x01binary"),
    ];
    let (rec, _) = run(&segs);
    assert_eq!(rec.opens()[0].client, Some(addr("10.0.0.1:80")));
}

#[test]
fn ack_only_mid_connection_flow_emits_nothing() {
    let c = conv();
    let (rec, r) = run(&[c.client_ack(), c.client_ack()]);
    assert!(rec.events.is_empty());
    assert_eq!(r.stats().flows_opened, 0);
}

#[test]
fn reset_closes_after_flushing() {
    let mut c = conv();
    let mut segs = c.handshake();
    segs.push(c.client_data(b"abc"));
    let _lost = c.client_data(b"defg");
    segs.push(c.client_data(b"hij"));
    segs.push(c.client_rst());
    segs.push(c.server_data(b"late"));
    let (rec, r) = run(&segs);
    assert_eq!(
        rec.chunks(C1, Direction::ToServer),
        vec![
            Chunk::Bytes(b"abc".to_vec()),
            Chunk::Gap(4),
            Chunk::Bytes(b"hij".to_vec())
        ]
    );
    assert_eq!(rec.closes().get(&C1), Some(&CloseReason::Reset));
    assert_eq!(r.stats().skipped.get(SkipReason::AfterClose), 1);
}

#[test]
fn sequence_wraparound_is_invisible() {
    let mut c = Conversation::new(
        addr("10.0.0.1:51000"),
        addr("10.0.0.2:80"),
        u32::MAX - 10,
        u32::MAX - 3,
    );
    let mut segs = c.handshake();
    let body: Vec<u8> = (0..200u8).collect();
    let mut data = c.client_stream(&body, 7);
    data.swap(1, 3);
    segs.extend(data);
    segs.extend(c.server_stream(&body, 13));
    segs.extend(c.close());
    let (rec, r) = run(&segs);
    assert_eq!(rec.bytes(C1, Direction::ToServer), body);
    assert_eq!(rec.bytes(C1, Direction::ToClient), body);
    assert_eq!(r.stats().bytes_missing, 0);
    assert_eq!(rec.closes().get(&C1), Some(&CloseReason::Closed));
}

#[test]
fn idle_flows_are_evicted_on_packet_time() {
    let cfg = ReassemblyConfig {
        idle_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let mut r = Reassembler::new(cfg);
    let mut rec = Recorder::default();
    let mut a = conv();
    let mut segs = a.handshake();
    segs.push(a.client_data(b"GET /a HTTP/1.1\r\n\r\n"));
    feed_at(&mut r, 1000, &segs, &mut rec);
    let mut b = Conversation::new(addr("10.0.0.3:52000"), addr("10.0.0.2:80"), 1, 1);
    feed_at(&mut r, 1030, &b.handshake(), &mut rec);
    assert!(rec.closes().is_empty());
    // 61 s after the first flow's last packet, 31 s after the second's.
    feed_at(&mut r, 1061, &[b.client_data(b"x")], &mut rec);
    assert_eq!(rec.closes().get(&C1), Some(&CloseReason::Evicted));
    assert_eq!(rec.closes().get(&ConnectionId(2)), None);
    assert_eq!(r.stats().flows_evicted_idle, 1);
    assert_eq!(r.flows(), 1);
}

#[test]
fn full_flow_table_evicts_least_recently_active() {
    let cfg = ReassemblyConfig {
        max_flows: 2,
        ..Default::default()
    };
    let mut r = Reassembler::new(cfg);
    let mut rec = Recorder::default();
    let mut convs: Vec<Conversation> = (0..3)
        .map(|i| {
            Conversation::new(
                addr(&format!("10.0.0.{}:5000{i}", i + 10)),
                addr("10.0.0.2:80"),
                1,
                1,
            )
        })
        .collect();
    for (i, c) in convs.iter_mut().enumerate() {
        feed_at(&mut r, 10 + i as u64, &c.handshake(), &mut rec);
    }
    assert_eq!(rec.closes().get(&C1), Some(&CloseReason::Evicted));
    assert_eq!(r.stats().flows_evicted_capacity, 1);
    assert_eq!(r.flows(), 2);
}

#[test]
fn new_syn_on_known_pair_starts_a_new_connection() {
    let mut c = conv();
    let mut segs = c.handshake();
    segs.push(c.client_data(b"one"));
    segs.extend(c.close());
    // Same 4-tuple, new ISN.
    let mut c2 = conv();
    c2.client_seq = 900_000;
    segs.extend(c2.handshake());
    segs.push(c2.client_data(b"two"));
    let (rec, _) = run(&segs);
    let opens = rec.opens();
    assert_eq!(opens.len(), 2);
    assert_eq!(rec.bytes(opens[0].id, Direction::ToServer), b"one");
    assert_eq!(rec.bytes(opens[1].id, Direction::ToServer), b"two");
    assert_ne!(opens[0].id, opens[1].id);

    // Reuse without having seen the old connection close.
    let mut c = conv();
    let mut segs = c.handshake();
    segs.push(c.client_data(b"one"));
    let mut c2 = conv();
    c2.client_seq = 12345;
    segs.extend(c2.handshake());
    segs.push(c2.client_data(b"two"));
    let (rec, r) = run(&segs);
    assert_eq!(rec.opens().len(), 2);
    assert_eq!(rec.closes().get(&C1), Some(&CloseReason::Closed));
    assert_eq!(r.stats().flows_reused, 1);
}

#[test]
fn retransmitted_syn_is_not_a_new_connection() {
    let mut c = conv();
    let hs = c.handshake();
    let segs = vec![
        hs[0].clone(),
        hs[0].clone(),
        hs[1].clone(),
        hs[2].clone(),
        c.client_data(b"x"),
    ];
    let (rec, _) = run(&segs);
    assert_eq!(rec.opens().len(), 1);
    assert_eq!(rec.bytes(C1, Direction::ToServer), b"x");
}

#[test]
fn snaplen_cut_payload_yields_data_then_gap() {
    let mut c = conv();
    let hs = c.handshake();
    let big = c.client_data(&[b'q'; 1000]);
    let after = c.client_data(b"next");
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut rec = Recorder::default();
    for s in &hs {
        r.process_frame(LINKTYPE_RAW, Timestamp(1), &s.ip_packet(), &mut rec);
    }
    let pkt = big.ip_packet();
    // Capture only the headers and 100 payload bytes.
    r.process_frame(LINKTYPE_RAW, Timestamp(2), &pkt[..40 + 100], &mut rec);
    r.process_frame(LINKTYPE_RAW, Timestamp(3), &after.ip_packet(), &mut rec);
    assert_eq!(
        rec.chunks(C1, Direction::ToServer),
        vec![
            Chunk::Bytes(vec![b'q'; 100]),
            Chunk::Gap(900),
            Chunk::Bytes(b"next".to_vec())
        ]
    );
}

#[test]
fn fast_open_payload_on_syn_is_delivered() {
    let mut c = conv();
    let syn = Segment {
        src: c.client,
        dst: c.server,
        seq: c.client_seq,
        ack: 0,
        flags: tcp_flags::SYN,
        payload: b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    };
    c.client_seq = c.client_seq.wrapping_add(1 + 18);
    let more = c.client_data(b"more");
    let (rec, _) = run(&[syn, more]);
    assert_eq!(
        rec.bytes(C1, Direction::ToServer),
        b"GET / HTTP/1.1\r\n\r\nmore"
    );
}

#[test]
fn out_of_window_segments_are_skipped() {
    let mut c = conv();
    let mut segs = c.handshake();
    segs.push(c.client_data(b"ok"));
    let mut wild = c.client_data(b"garbage");
    wild.seq = wild.seq.wrapping_add(0x8000_0000);
    segs.push(wild);
    let (rec, r) = run(&segs);
    assert_eq!(rec.bytes(C1, Direction::ToServer), b"ok");
    assert_eq!(r.stats().skipped.get(SkipReason::OutOfWindow), 1);
    assert_eq!(r.stats().bytes_missing, 0);
}

#[test]
fn finish_closes_everything_and_reassembler_can_continue() {
    let mut r = Reassembler::new(ReassemblyConfig::default());
    let mut rec = Recorder::default();
    let mut c = conv();
    let mut segs = c.handshake();
    segs.push(c.client_data(b"GET / HTTP/1.1\r\n\r\n"));
    feed_at(&mut r, 5, &segs, &mut rec);
    r.finish(&mut rec);
    assert_eq!(rec.closes().get(&C1), Some(&CloseReason::EndOfInput));
    assert_eq!(r.flows(), 0);
    let mut c = conv();
    feed_at(&mut r, 6, &c.handshake(), &mut rec);
    assert_eq!(rec.opens()[1].id, ConnectionId(2));
}

#[test]
fn interleaved_connections_keep_their_own_streams() {
    let mut a = conv();
    let mut b = Conversation::new(addr("[2001:db8::1]:40000"), addr("[2001:db8::2]:80"), 3, 4);
    let mut segs = Vec::new();
    let (ha, hb) = (a.handshake(), b.handshake());
    for i in 0..3 {
        segs.push(ha[i].clone());
        segs.push(hb[i].clone());
    }
    for i in 0..5u8 {
        segs.push(a.client_data(&[b'a', i]));
        segs.push(b.client_data(&[b'b', i]));
    }
    let (rec, _) = run(&segs);
    let opens = rec.opens();
    assert_eq!(opens.len(), 2);
    assert_eq!(opens[1].client, Some(addr("[2001:db8::1]:40000")));
    assert_eq!(
        rec.bytes(opens[0].id, Direction::ToServer),
        b"a\x00a\x01a\x02a\x03a\x04"
    );
    assert_eq!(
        rec.bytes(opens[1].id, Direction::ToServer),
        b"b\x00b\x01b\x02b\x03b\x04"
    );
}
