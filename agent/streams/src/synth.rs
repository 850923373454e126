//! Synthetic captures: packet builders and pcap / pcapng writers.
//!
//! Used by the tests of this crate and the ones after it (adversarial
//! captures: reordering, retransmissions, truncation, odd link types) and by
//! the replay benchmark, which generates a large capture instead of
//! committing one. Everything here writes what real capture tools write:
//! correct IPv4 header and TCP checksums, libpcap and pcapng framing.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::Timestamp;
use crate::decode::{self, tcp_flags};

/// One TCP segment to be written. (`Debug` shows the payload length only.)
#[derive(Clone, PartialEq, Eq)]
pub struct Segment {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag bits ([`tcp_flags`]).
    pub flags: u8,
    /// Payload.
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("seq", &self.seq)
            .field("ack", &self.ack)
            .field("flags", &format_args!("{:#04x}", self.flags))
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Segment {
    /// The segment as an IP packet (IPv4 when both ends are IPv4, otherwise
    /// IPv6 with IPv4 ends mapped).
    pub fn ip_packet(&self) -> Vec<u8> {
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let tcp = tcp_bytes(self, &pseudo_v4(s.octets(), d.octets(), self.tcp_len()));
                let mut p = Vec::with_capacity(20 + tcp.len());
                let total = (20 + tcp.len()) as u16;
                p.extend_from_slice(&[
                    0x45,
                    0,
                    (total >> 8) as u8,
                    total as u8,
                    0,
                    1,
                    0x40,
                    0,
                    64,
                    6,
                    0,
                    0,
                ]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                let sum = checksum(&p[..20], 0);
                p[10..12].copy_from_slice(&sum.to_be_bytes());
                p.extend_from_slice(&tcp);
                p
            }
            (s, d) => {
                let s = to_v6(s);
                let d = to_v6(d);
                let tcp = tcp_bytes(self, &pseudo_v6(s.octets(), d.octets(), self.tcp_len()));
                let mut p = Vec::with_capacity(40 + tcp.len());
                let len = tcp.len() as u16;
                p.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, 6, 64]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&tcp);
                p
            }
        }
    }

    fn tcp_len(&self) -> usize {
        20 + self.payload.len()
    }
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn pseudo_v4(s: [u8; 4], d: [u8; 4], len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&s);
    v.extend_from_slice(&d);
    v.extend_from_slice(&[0, 6]);
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v
}

fn pseudo_v6(s: [u8; 16], d: [u8; 16], len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(40);
    v.extend_from_slice(&s);
    v.extend_from_slice(&d);
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 6]);
    v
}

fn tcp_bytes(seg: &Segment, pseudo: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + seg.payload.len());
    t.extend_from_slice(&seg.src.port().to_be_bytes());
    t.extend_from_slice(&seg.dst.port().to_be_bytes());
    t.extend_from_slice(&seg.seq.to_be_bytes());
    t.extend_from_slice(&seg.ack.to_be_bytes());
    t.extend_from_slice(&[0x50, seg.flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(&seg.payload);
    let sum = checksum(&t, sum_words(pseudo));
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

fn sum_words(b: &[u8]) -> u32 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum = sum.wrapping_add(u32::from(w));
    }
    sum
}

/// Internet checksum of `b`, starting from the partial sum `initial`.
fn checksum(b: &[u8], initial: u32) -> u16 {
    let mut sum = initial.wrapping_add(sum_words(b));
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Wraps an IP packet in an Ethernet II header, with an 802.1Q tag when
/// `vlan` is given.
pub fn ethernet(ip: &[u8], vlan: Option<u16>) -> Vec<u8> {
    let ethertype: u16 = if ip.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    let mut f = Vec::with_capacity(18 + ip.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    if let Some(tag) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&(tag & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    // Ethernet minimum frame size (without FCS): pad like a NIC would.
    while f.len() < 60 {
        f.push(0);
    }
    f
}

fn ethertype_of(ip: &[u8]) -> u16 {
    if ip.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    }
}

/// Wraps an IP packet in a Linux cooked v1 header.
pub fn linux_sll(ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(16 + ip.len());
    f.extend_from_slice(&[0, 0, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 0x01, 0, 0]);
    f.extend_from_slice(&ethertype_of(ip).to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// Wraps an IP packet in a Linux cooked v2 header.
pub fn linux_sll2(ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(20 + ip.len());
    f.extend_from_slice(&ethertype_of(ip).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 0x02, 0, 0, 0, 0, 0x01, 0, 0]);
    f.extend_from_slice(ip);
    f
}

/// Wraps an IP packet in a BSD loopback (`LINKTYPE_NULL`) header with the
/// given address family, in little-endian host order.
pub fn null_loopback(ip: &[u8], family: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(4 + ip.len());
    f.extend_from_slice(&family.to_le_bytes());
    f.extend_from_slice(ip);
    f
}

/// Writes a classic libpcap file (little-endian, microsecond or nanosecond
/// timestamps).
pub struct PcapWriter<W: Write> {
    out: W,
    nanos: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header: microsecond timestamps.
    pub fn new(out: W, linktype: u32, snaplen: u32) -> io::Result<Self> {
        Self::with_precision(out, linktype, snaplen, false)
    }

    /// Writes the file header, nanosecond timestamps when `nanos`.
    pub fn with_precision(
        mut out: W,
        linktype: u32,
        snaplen: u32,
        nanos: bool,
    ) -> io::Result<Self> {
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        out.write_all(&magic.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&snaplen.to_le_bytes())?;
        out.write_all(&linktype.to_le_bytes())?;
        Ok(PcapWriter { out, nanos })
    }

    /// Writes one record holding all of `frame`.
    pub fn write(&mut self, ts: Timestamp, frame: &[u8]) -> io::Result<()> {
        self.write_truncated(ts, frame, frame.len() as u32)
    }

    /// Writes one record whose captured bytes are `frame` but whose wire
    /// length is `orig_len` (what a small snaplen produces).
    pub fn write_truncated(
        &mut self,
        ts: Timestamp,
        frame: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        let frac = if self.nanos {
            ts.subsec_nanos()
        } else {
            ts.subsec_nanos() / 1000
        };
        self.out.write_all(&(ts.secs() as u32).to_le_bytes())?;
        self.out.write_all(&frac.to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&orig_len.to_le_bytes())?;
        self.out.write_all(frame)
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Writes a pcapng file (little-endian, one section).
pub struct PcapNgWriter<W: Write> {
    out: W,
    interfaces: u32,
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes the section header block.
    pub fn new(out: W) -> io::Result<Self> {
        let mut w = PcapNgWriter { out, interfaces: 0 };
        let mut body = Vec::new();
        body.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes());
        w.block(0x0a0d_0d0a, &body)?;
        Ok(w)
    }

    /// Describes an interface; returns its id. `tsresol` is the raw
    /// `if_tsresol` option (None: the default, microseconds).
    pub fn add_interface(
        &mut self,
        linktype: u16,
        snaplen: u32,
        tsresol: Option<u8>,
    ) -> io::Result<u32> {
        let mut body = Vec::new();
        body.extend_from_slice(&linktype.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&snaplen.to_le_bytes());
        if let Some(r) = tsresol {
            // if_tsresol (code 9, length 1, padded), then opt_endofopt.
            body.extend_from_slice(&9u16.to_le_bytes());
            body.extend_from_slice(&1u16.to_le_bytes());
            body.extend_from_slice(&[r, 0, 0, 0]);
            body.extend_from_slice(&[0, 0, 0, 0]);
        }
        self.block(1, &body)?;
        self.interfaces += 1;
        Ok(self.interfaces - 1)
    }

    /// Writes an enhanced packet block. `ts` is converted to the
    /// interface's resolution given as units per second.
    pub fn write(
        &mut self,
        if_id: u32,
        ts: Timestamp,
        units_per_sec: u64,
        frame: &[u8],
    ) -> io::Result<()> {
        let ticks = (u128::from(ts.0) * u128::from(units_per_sec)
            / u128::from(Timestamp::NANOS_PER_SEC)) as u64;
        let mut body = Vec::with_capacity(20 + frame.len() + 3);
        body.extend_from_slice(&if_id.to_le_bytes());
        body.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ticks as u32).to_le_bytes());
        body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        body.extend_from_slice(frame);
        while body.len() % 4 != 0 {
            body.push(0);
        }
        self.block(6, &body)
    }

    /// Writes an arbitrary block (`body` is padded to 32 bits).
    pub fn block(&mut self, block_type: u32, body: &[u8]) -> io::Result<()> {
        let padded = body.len().div_ceil(4) * 4;
        let len = (12 + padded) as u32;
        self.out.write_all(&block_type.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(body)?;
        self.out.write_all(&[0u8; 3][..padded - body.len()])?;
        self.out.write_all(&len.to_le_bytes())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Generates the segments of one TCP connection, tracking sequence and
/// acknowledgment numbers like the two endpoints would.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Client endpoint.
    pub client: SocketAddr,
    /// Server endpoint.
    pub server: SocketAddr,
    /// Next sequence number of the client.
    pub client_seq: u32,
    /// Next sequence number of the server.
    pub server_seq: u32,
}

impl Conversation {
    /// A connection with the given initial sequence numbers.
    pub fn new(client: SocketAddr, server: SocketAddr, client_isn: u32, server_isn: u32) -> Self {
        Conversation {
            client,
            server,
            client_seq: client_isn,
            server_seq: server_isn,
        }
    }

    fn seg(&self, from_client: bool, flags: u8, payload: &[u8]) -> Segment {
        let (src, dst, seq, ack) = if from_client {
            (self.client, self.server, self.client_seq, self.server_seq)
        } else {
            (self.server, self.client, self.server_seq, self.client_seq)
        };
        Segment {
            src,
            dst,
            seq,
            ack,
            flags,
            payload: payload.to_vec(),
        }
    }

    /// SYN, SYN+ACK, ACK.
    pub fn handshake(&mut self) -> Vec<Segment> {
        let syn = Segment {
            ack: 0,
            ..self.seg(true, tcp_flags::SYN, b"")
        };
        self.client_seq = self.client_seq.wrapping_add(1);
        let synack = Segment {
            ack: self.client_seq,
            ..self.seg(false, tcp_flags::SYN | tcp_flags::ACK, b"")
        };
        self.server_seq = self.server_seq.wrapping_add(1);
        let ack = self.seg(true, tcp_flags::ACK, b"");
        vec![syn, synack, ack]
    }

    /// One data segment from the client.
    pub fn client_data(&mut self, payload: &[u8]) -> Segment {
        let s = self.seg(true, tcp_flags::ACK | tcp_flags::PSH, payload);
        self.client_seq = self.client_seq.wrapping_add(payload.len() as u32);
        s
    }

    /// One data segment from the server.
    pub fn server_data(&mut self, payload: &[u8]) -> Segment {
        let s = self.seg(false, tcp_flags::ACK | tcp_flags::PSH, payload);
        self.server_seq = self.server_seq.wrapping_add(payload.len() as u32);
        s
    }

    /// `payload` from the client cut into segments of at most `mss` bytes.
    pub fn client_stream(&mut self, payload: &[u8], mss: usize) -> Vec<Segment> {
        payload
            .chunks(mss.max(1))
            .map(|c| self.client_data(c))
            .collect()
    }

    /// `payload` from the server cut into segments of at most `mss` bytes.
    pub fn server_stream(&mut self, payload: &[u8], mss: usize) -> Vec<Segment> {
        payload
            .chunks(mss.max(1))
            .map(|c| self.server_data(c))
            .collect()
    }

    /// An ACK-only segment from the client.
    pub fn client_ack(&self) -> Segment {
        self.seg(true, tcp_flags::ACK, b"")
    }

    /// FIN from the client.
    pub fn client_fin(&mut self) -> Segment {
        let s = self.seg(true, tcp_flags::FIN | tcp_flags::ACK, b"");
        self.client_seq = self.client_seq.wrapping_add(1);
        s
    }

    /// FIN from the server.
    pub fn server_fin(&mut self) -> Segment {
        let s = self.seg(false, tcp_flags::FIN | tcp_flags::ACK, b"");
        self.server_seq = self.server_seq.wrapping_add(1);
        s
    }

    /// RST from the client.
    pub fn client_rst(&self) -> Segment {
        self.seg(true, tcp_flags::RST | tcp_flags::ACK, b"")
    }

    /// FIN from the client, then FIN from the server, then the last ACK.
    pub fn close(&mut self) -> Vec<Segment> {
        let a = self.client_fin();
        let b = self.server_fin();
        let c = self.client_ack();
        vec![a, b, c]
    }
}

/// Frames `segments` for `linktype` (Ethernet, SLL, SLL2, raw, null) and
/// writes them as a pcap file, one millisecond apart from `start`.
pub fn write_pcap<W: Write>(
    out: W,
    linktype: u32,
    start: Timestamp,
    segments: &[Segment],
) -> io::Result<W> {
    let mut w = PcapWriter::new(out, linktype, 262_144)?;
    for (i, s) in segments.iter().enumerate() {
        let ts = Timestamp(start.0 + i as u64 * 1_000_000);
        w.write(ts, &frame(linktype, &s.ip_packet()))?;
    }
    Ok(w.into_inner())
}

/// Wraps an IP packet for `linktype`; unknown link types get the raw packet.
pub fn frame(linktype: u32, ip: &[u8]) -> Vec<u8> {
    match linktype {
        decode::LINKTYPE_ETHERNET => ethernet(ip, None),
        decode::LINKTYPE_LINUX_SLL => linux_sll(ip),
        decode::LINKTYPE_LINUX_SLL2 => linux_sll2(ip),
        decode::LINKTYPE_NULL => {
            let family = if ip.first().is_some_and(|b| b >> 4 == 6) {
                30
            } else {
                2
            };
            null_loopback(ip, family)
        }
        _ => ip.to_vec(),
    }
}

/// Deterministic adversarial capture files: `(file name, bytes)`.
///
/// Every capture carries the same two HTTP/1.1 exchanges on one connection
/// (`POST /login` → `302` with a `Set-Cookie`, then `GET /account` → `200`)
/// between `192.0.2.10:51000` and `192.0.2.80:80` (IPv6 in `mixed.pcapng`),
/// distorted in one way each:
///
/// | file | distortion | expected replay |
/// |---|---|---|
/// | `reordered.pcap` | data segments of both directions in reverse order within each burst | both exchanges, no gap |
/// | `retransmits.pcap` | every data segment twice, plus an overlapping retransmission with different bytes | both exchanges (first copy wins), no gap |
/// | `no-syn.pcap` | capture starts after the handshake and the first request segment | `GET /account` only, responses to the lost request orphaned |
/// | `lost-segment.pcap` | the middle segment of the login response body is missing | both exchanges, one 17-byte gap absorbed by the body |
/// | `truncated.pcap` | file cut in the middle of its last record | both exchanges, one truncated record counted |
/// | `bad-magic.pcap` | not a capture file | error at byte offset 0 |
/// | `corrupt-block.pcapng` | an enhanced packet block with an impossible length | error at that block's offset |
/// | `mixed.pcapng` | IPv6; Ethernet with an 802.1Q tag and Linux cooked v2 interfaces; unknown blocks | both exchanges, unknown blocks counted |
pub fn adversarial_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let v4 = ("192.0.2.10:51000", "192.0.2.80:80");
    let v6 = ("[2001:db8::10]:51000", "[2001:db8::80]:80");
    let start = Timestamp(1_764_000_000_000_000_000);
    let mut out = Vec::new();

    // Clean reference: handshake, login, account, close.
    let bursts = fixture_bursts(v4);
    let flat: Vec<Segment> = bursts.iter().flatten().cloned().collect();

    let mut reordered = Vec::new();
    for b in &bursts {
        let (data, ctl): (Vec<_>, Vec<_>) = b.iter().cloned().partition(|s| !s.payload.is_empty());
        reordered.extend(ctl);
        reordered.extend(data.into_iter().rev());
    }
    out.push(("reordered.pcap", pcap_of(&reordered, start)));

    let mut retrans = Vec::new();
    for s in &flat {
        retrans.push(s.clone());
        if !s.payload.is_empty() {
            retrans.push(s.clone());
            if s.payload.len() > 8 {
                // Same sequence range, different bytes: must lose.
                let mut forged = s.clone();
                forged.payload = vec![b'#'; s.payload.len()];
                retrans.push(forged);
            }
        }
    }
    out.push(("retransmits.pcap", pcap_of(&retrans, start)));

    // Drop everything up to and including the first request segment.
    let first_req = flat
        .iter()
        .position(|s| s.payload.starts_with(b"POST"))
        .unwrap_or(0);
    out.push(("no-syn.pcap", pcap_of(&flat[first_req + 1..], start)));

    let mut lost = flat.clone();
    if let Some(i) = lost
        .iter()
        .position(|s| s.payload.starts_with(b"login-body-part-2"))
    {
        lost.remove(i);
    }
    out.push(("lost-segment.pcap", pcap_of(&lost, start)));

    let mut truncated = pcap_of(&flat, start);
    truncated.truncate(truncated.len() - 30);
    out.push(("truncated.pcap", truncated));

    out.push((
        "bad-magic.pcap",
        b"GET / HTTP/1.1\r\nHost: not-a-capture\r\n\r\n".to_vec(),
    ));

    // pcapng: v6 traffic alternating between two interfaces, unknown blocks.
    let mixed = ng_of(&fixture_bursts(v6).concat(), start, true);
    out.push(("mixed.pcapng", mixed));

    let mut corrupt = ng_of(&flat, start, false);
    // The 4th block is the first EPB after SHB, IDB, IDB: give it a length
    // that is not a multiple of 4.
    let mut off = 0usize;
    for _ in 0..3 {
        let len = u32::from_le_bytes([
            corrupt[off + 4],
            corrupt[off + 5],
            corrupt[off + 6],
            corrupt[off + 7],
        ]);
        off += len as usize;
    }
    corrupt[off + 4..off + 8].copy_from_slice(&4099u32.to_le_bytes());
    out.push(("corrupt-block.pcapng", corrupt));
    out
}

/// The fixture conversation, cut into bursts (a burst is what one side
/// sends before the other answers).
fn fixture_bursts((client, server): (&str, &str)) -> Vec<Vec<Segment>> {
    let parse = |s: &str| {
        s.parse::<SocketAddr>()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    };
    let mut c = Conversation::new(parse(client), parse(server), 0x1000_0000, 0xfff0_0000);
    let login = b"POST /login HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\nuser=alice&password=hunter2";
    let login_resp_head = b"HTTP/1.1 302 Found\r\nLocation: /account\r\nSet-Cookie: sessionid=synthetic-fixture-id; Path=/; HttpOnly\r\nContent-Length: 48\r\n\r\n";
    let account = b"GET /account HTTP/1.1\r\nHost: shop.example\r\nCookie: sessionid=synthetic-fixture-id\r\n\r\n";
    let account_resp =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello alice\n";
    let mut bursts = vec![c.handshake()];
    bursts.push(c.client_stream(login, 40));
    bursts.push(vec![
        c.server_data(login_resp_head),
        c.server_data(b"login-body-part-1"),
        c.server_data(b"login-body-part-2"),
        c.server_data(b"login-body-3"),
        c.server_data(b"--"),
    ]);
    bursts.push(c.client_stream(account, 30));
    bursts.push(c.server_stream(account_resp, 25));
    bursts.push(c.close());
    bursts
}

fn pcap_of(segs: &[Segment], start: Timestamp) -> Vec<u8> {
    write_pcap(Vec::new(), decode::LINKTYPE_ETHERNET, start, segs).unwrap_or_default()
}

fn ng_of(segs: &[Segment], start: Timestamp, mixed: bool) -> Vec<u8> {
    let build = || -> io::Result<Vec<u8>> {
        let mut w = PcapNgWriter::new(Vec::new())?;
        let eth = w.add_interface(decode::LINKTYPE_ETHERNET as u16, 262_144, None)?;
        let sll2 = w.add_interface(decode::LINKTYPE_LINUX_SLL2 as u16, 262_144, Some(9))?;
        for (i, s) in segs.iter().enumerate() {
            let ts = Timestamp(start.0 + i as u64 * 1_000_000);
            let ip = s.ip_packet();
            if mixed && i % 2 == 1 {
                w.write(sll2, ts, 1_000_000_000, &linux_sll2(&ip))?;
            } else {
                w.write(eth, ts, 1_000_000, &ethernet(&ip, mixed.then_some(100)))?;
            }
            if mixed && i % 5 == 2 {
                w.block(0x0000_0042, b"unknown block kind")?;
            }
        }
        Ok(w.into_inner())
    };
    build().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksums_verify() {
        let seg = Segment {
            src: "10.0.0.1:1234".parse().unwrap_or_else(|_| unreachable!()),
            dst: "10.0.0.2:80".parse().unwrap_or_else(|_| unreachable!()),
            seq: 1,
            ack: 2,
            flags: tcp_flags::ACK,
            payload: b"hello".to_vec(),
        };
        let p = seg.ip_packet();
        // A correct header sums to zero (0xffff before complement).
        assert_eq!(checksum(&p[..20], 0), 0);
        let pseudo = pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], p.len() - 20);
        assert_eq!(checksum(&p[20..], sum_words(&pseudo)), 0);
    }
}
