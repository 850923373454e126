//! Link, network and transport header decoding of captured frames.
//!
//! Turns one captured frame into a [`TcpSegment`] borrowing its payload, or
//! into the [`SkipReason`] why the frame carries no TCP segment we can use.
//! No allocation, no copying: every field is read in place.
//!
//! Checksums are deliberately not verified: captures taken on the sending
//! host (and every capture on `lo`) see checksums that the NIC or the kernel
//! fills in later, so a checksum check would reject exactly the traffic this
//! tool is pointed at.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// BSD loopback: 4-byte address family in the capturing host's byte order.
pub const LINKTYPE_NULL: u32 = 0;
/// Ethernet II (with optional 802.1Q / 802.1ad VLAN tags).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// `DLT_RAW` as numbered on most BSDs (raw IPv4 or IPv6).
pub const LINKTYPE_RAW_BSD12: u32 = 12;
/// `DLT_RAW` as numbered on OpenBSD (raw IPv4 or IPv6).
pub const LINKTYPE_RAW_BSD14: u32 = 14;
/// Raw IP: the frame starts with an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u32 = 101;
/// OpenBSD loopback: 4-byte address family in network byte order.
pub const LINKTYPE_LOOP: u32 = 108;
/// Linux "cooked" capture v1 (`tcpdump -i any` before libpcap 1.10).
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// Raw IPv4 only.
pub const LINKTYPE_IPV4: u32 = 228;
/// Raw IPv6 only.
pub const LINKTYPE_IPV6: u32 = 229;
/// Linux "cooked" capture v2 (`tcpdump -i any` with libpcap ≥ 1.10).
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// Whether frames of this link type can be decoded by [`decode_frame`].
pub fn linktype_supported(linktype: u32) -> bool {
    matches!(
        linktype,
        LINKTYPE_NULL
            | LINKTYPE_ETHERNET
            | LINKTYPE_RAW_BSD12
            | LINKTYPE_RAW_BSD14
            | LINKTYPE_RAW
            | LINKTYPE_LOOP
            | LINKTYPE_LINUX_SLL
            | LINKTYPE_IPV4
            | LINKTYPE_IPV6
            | LINKTYPE_LINUX_SLL2
    )
}

/// Why a record or packet was skipped instead of analysed.
///
/// Each reason is a stable, low-cardinality label value (see
/// [`SkipReason::as_str`]), so the counts can be exported as metrics and
/// shown in the replay summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SkipReason {
    /// The capture's link type is not one we decode.
    UnsupportedLinktype,
    /// The frame carries neither IPv4 nor IPv6 (ARP, LLDP, ...).
    NotIp,
    /// The IP packet carries something other than TCP (UDP, ICMP, ESP, ...).
    NotTcp,
    /// A non-first IP fragment: it has no TCP header of its own.
    IpFragment,
    /// A header is shorter than its own length fields say (snaplen cut it,
    /// or the frame is corrupt).
    Malformed,
    /// A pcapng block type we do not know; the format lets us step over it.
    UnknownBlock,
    /// A pcapng packet block naming an interface that was never described.
    UnknownInterface,
    /// The file ends in the middle of a record (capture killed mid-write).
    TruncatedRecord,
    /// A TCP segment whose sequence number is more than 1 GiB away from the
    /// expected one: not part of the stream we are following.
    OutOfWindow,
    /// A packet for a connection that has already been closed (late
    /// retransmissions, the final ACK).
    AfterClose,
}

impl SkipReason {
    /// Number of reasons (size of [`SkipCounts`]).
    pub const COUNT: usize = 10;

    /// Every reason, in declaration order.
    pub const ALL: [SkipReason; Self::COUNT] = [
        SkipReason::UnsupportedLinktype,
        SkipReason::NotIp,
        SkipReason::NotTcp,
        SkipReason::IpFragment,
        SkipReason::Malformed,
        SkipReason::UnknownBlock,
        SkipReason::UnknownInterface,
        SkipReason::TruncatedRecord,
        SkipReason::OutOfWindow,
        SkipReason::AfterClose,
    ];

    /// Stable label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::UnsupportedLinktype => "unsupported_linktype",
            SkipReason::NotIp => "not_ip",
            SkipReason::NotTcp => "not_tcp",
            SkipReason::IpFragment => "ip_fragment",
            SkipReason::Malformed => "malformed",
            SkipReason::UnknownBlock => "unknown_block",
            SkipReason::UnknownInterface => "unknown_interface",
            SkipReason::TruncatedRecord => "truncated_record",
            SkipReason::OutOfWindow => "out_of_window",
            SkipReason::AfterClose => "after_close",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-reason skip counters (a fixed array: counting never allocates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipCounts([u64; SkipReason::COUNT]);

impl SkipCounts {
    /// Counts one skip.
    #[inline]
    pub fn add(&mut self, reason: SkipReason) {
        self.0[reason.index()] += 1;
    }

    /// The count for one reason.
    pub fn get(&self, reason: SkipReason) -> u64 {
        self.0[reason.index()]
    }

    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counts, in [`SkipReason::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (SkipReason, u64)> + '_ {
        SkipReason::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }

    /// Adds every count of `other` to `self`.
    pub fn merge(&mut self, other: &SkipCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += *b;
        }
    }
}

/// TCP header flag bits (byte 13 of the header).
pub mod tcp_flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
}

/// One TCP segment, borrowed from the captured frame.
///
/// `Debug` shows the payload's length only: payloads carry session IDs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag bits ([`tcp_flags`]).
    pub flags: u8,
    /// The captured payload bytes.
    pub payload: &'a [u8],
    /// The payload length on the wire, per the IP length fields. Larger than
    /// `payload.len()` when the capture's snaplen cut the packet; the
    /// reassembler reports the difference as a gap.
    pub wire_len: u32,
}

impl std::fmt::Debug for TcpSegment<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSegment")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("sport", &self.sport)
            .field("dport", &self.dport)
            .field("seq", &self.seq)
            .field("ack", &self.ack)
            .field("flags", &format_args!("{:#04x}", self.flags))
            .field("payload_len", &self.payload.len())
            .field("wire_len", &self.wire_len)
            .finish()
    }
}

impl TcpSegment<'_> {
    /// Whether all bits of `flag` are set.
    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }
}

#[inline]
fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

#[inline]
fn be32(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
/// At most this many stacked VLAN tags are followed (QinQ uses two).
const MAX_VLAN_TAGS: usize = 4;
/// At most this many IPv6 extension headers are walked.
const MAX_IPV6_EXT_HEADERS: usize = 12;

/// Decodes one captured frame of `linktype` down to its TCP segment.
pub fn decode_frame(linktype: u32, frame: &[u8]) -> Result<TcpSegment<'_>, SkipReason> {
    match linktype {
        LINKTYPE_ETHERNET => {
            let ethertype = be16(frame, 12).ok_or(SkipReason::Malformed)?;
            decode_ethertype(ethertype, frame, 14)
        }
        LINKTYPE_LINUX_SLL => {
            // packet type(2) ARPHRD(2) addr len(2) addr(8) protocol(2)
            let proto = be16(frame, 14).ok_or(SkipReason::Malformed)?;
            decode_ethertype(proto, frame, 16)
        }
        LINKTYPE_LINUX_SLL2 => {
            // protocol(2) reserved(2) ifindex(4) ARPHRD(2) pkttype(1) addr len(1) addr(8)
            if frame.len() < 20 {
                return Err(SkipReason::Malformed);
            }
            let proto = be16(frame, 0).ok_or(SkipReason::Malformed)?;
            decode_ethertype(proto, frame, 20)
        }
        LINKTYPE_RAW | LINKTYPE_RAW_BSD12 | LINKTYPE_RAW_BSD14 => match frame.first() {
            Some(b) if b >> 4 == 4 => decode_ipv4(frame),
            Some(b) if b >> 4 == 6 => decode_ipv6(frame),
            Some(_) => Err(SkipReason::NotIp),
            None => Err(SkipReason::Malformed),
        },
        LINKTYPE_IPV4 => decode_ipv4(frame),
        LINKTYPE_IPV6 => decode_ipv6(frame),
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            let raw = frame.get(..4).ok_or(SkipReason::Malformed)?;
            let raw = [raw[0], raw[1], raw[2], raw[3]];
            let family = if linktype == LINKTYPE_LOOP {
                u32::from_be_bytes(raw)
            } else {
                // Host byte order of the capturing machine: address families
                // are small numbers, so a value with high bits set was
                // written in the other byte order.
                let le = u32::from_le_bytes(raw);
                if le & 0xffff_0000 != 0 {
                    le.swap_bytes()
                } else {
                    le
                }
            };
            let ip = &frame[4..];
            match family {
                2 => decode_ipv4(ip),
                // AF_INET6: NetBSD/OpenBSD 24, FreeBSD 28, Darwin 30.
                24 | 28 | 30 => decode_ipv6(ip),
                _ => Err(SkipReason::NotIp),
            }
        }
        _ => Err(SkipReason::UnsupportedLinktype),
    }
}

fn decode_ethertype(
    mut ethertype: u16,
    frame: &[u8],
    mut off: usize,
) -> Result<TcpSegment<'_>, SkipReason> {
    let mut tags = 0;
    while matches!(
        ethertype,
        ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD
    ) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return Err(SkipReason::Malformed);
        }
        // TCI(2) then the encapsulated ethertype(2).
        ethertype = be16(frame, off + 2).ok_or(SkipReason::Malformed)?;
        off += 4;
    }
    let ip = frame.get(off..).ok_or(SkipReason::Malformed)?;
    match ethertype {
        ETHERTYPE_IPV4 => decode_ipv4(ip),
        ETHERTYPE_IPV6 => decode_ipv6(ip),
        _ => Err(SkipReason::NotIp),
    }
}

/// Decodes an IPv4 packet (with options) carrying TCP.
pub fn decode_ipv4(d: &[u8]) -> Result<TcpSegment<'_>, SkipReason> {
    if d.len() < 20 {
        return Err(SkipReason::Malformed);
    }
    if d[0] >> 4 != 4 {
        return Err(SkipReason::Malformed);
    }
    let ihl = usize::from(d[0] & 0x0f) * 4;
    if ihl < 20 || d.len() < ihl {
        return Err(SkipReason::Malformed);
    }
    let total = usize::from(be16(d, 2).ok_or(SkipReason::Malformed)?);
    // A total length of 0 is what segmentation offload leaves in captures
    // taken on the sending host: the real length is what was captured.
    let wire_end = if total == 0 { d.len() } else { total };
    if wire_end < ihl {
        return Err(SkipReason::Malformed);
    }
    let frag = be16(d, 6).ok_or(SkipReason::Malformed)?;
    if frag & 0x1fff != 0 {
        return Err(SkipReason::IpFragment);
    }
    if d[9] != 6 {
        return Err(SkipReason::NotTcp);
    }
    let src = IpAddr::V4(Ipv4Addr::new(d[12], d[13], d[14], d[15]));
    let dst = IpAddr::V4(Ipv4Addr::new(d[16], d[17], d[18], d[19]));
    // Trailing link-layer padding (short Ethernet frames) is cut off here.
    let captured_end = wire_end.min(d.len());
    decode_tcp(src, dst, &d[ihl..captured_end], wire_end - ihl)
}

/// Decodes an IPv6 packet carrying TCP, walking its extension headers.
pub fn decode_ipv6(d: &[u8]) -> Result<TcpSegment<'_>, SkipReason> {
    if d.len() < 40 {
        return Err(SkipReason::Malformed);
    }
    if d[0] >> 4 != 6 {
        return Err(SkipReason::Malformed);
    }
    let payload_len = usize::from(be16(d, 4).ok_or(SkipReason::Malformed)?);
    // 0 means a jumbogram or offload: trust the captured length.
    let wire_end = if payload_len == 0 {
        d.len()
    } else {
        40 + payload_len
    };
    let captured_end = wire_end.min(d.len());
    let mut src = [0u8; 16];
    src.copy_from_slice(&d[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&d[24..40]);
    let mut next = d[6];
    let mut off = 40usize;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            6 => {
                if off > captured_end {
                    return Err(SkipReason::Malformed);
                }
                return decode_tcp(
                    IpAddr::V6(Ipv6Addr::from(src)),
                    IpAddr::V6(Ipv6Addr::from(dst)),
                    &d[off..captured_end],
                    wire_end.saturating_sub(off),
                );
            }
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6:
            // length in 8-octet units, not counting the first 8 octets.
            0 | 43 | 60 | 135 | 139 | 140 => {
                if off + 8 > captured_end {
                    return Err(SkipReason::Malformed);
                }
                next = d[off];
                off += (usize::from(d[off + 1]) + 1) * 8;
            }
            // Fragment header: fixed 8 octets.
            44 => {
                if off + 8 > captured_end {
                    return Err(SkipReason::Malformed);
                }
                let frag_off = be16(d, off + 2).ok_or(SkipReason::Malformed)? >> 3;
                if frag_off != 0 {
                    return Err(SkipReason::IpFragment);
                }
                next = d[off];
                off += 8;
            }
            // Authentication header: length in 4-octet units, minus 2.
            51 => {
                if off + 8 > captured_end {
                    return Err(SkipReason::Malformed);
                }
                next = d[off];
                off += (usize::from(d[off + 1]) + 2) * 4;
            }
            // ESP (encrypted), no next header, or any upper layer but TCP.
            _ => return Err(SkipReason::NotTcp),
        }
    }
    Err(SkipReason::Malformed)
}

fn decode_tcp(
    src: IpAddr,
    dst: IpAddr,
    d: &[u8],
    wire_l4_len: usize,
) -> Result<TcpSegment<'_>, SkipReason> {
    if d.len() < 20 {
        return Err(SkipReason::Malformed);
    }
    let data_off = usize::from(d[12] >> 4) * 4;
    if data_off < 20 || d.len() < data_off {
        return Err(SkipReason::Malformed);
    }
    let payload = &d[data_off..];
    let wire_len = wire_l4_len.saturating_sub(data_off).max(payload.len());
    Ok(TcpSegment {
        src,
        dst,
        sport: be16(d, 0).ok_or(SkipReason::Malformed)?,
        dport: be16(d, 2).ok_or(SkipReason::Malformed)?,
        seq: be32(d, 4).ok_or(SkipReason::Malformed)?,
        ack: be32(d, 8).ok_or(SkipReason::Malformed)?,
        flags: d[13],
        payload,
        wire_len: u32::try_from(wire_len).unwrap_or(u32::MAX),
    })
}
