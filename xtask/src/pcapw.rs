//! Classic pcap writer shared by the benchmarks that generate traffic
//! (`bench replay`, `bench cluster`): Ethernet link type, microsecond
//! timestamps, one IPv4/TCP segment per record.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

/// TCP flags of the generated segments.
pub(crate) const SYN: u8 = 0x02;
pub(crate) const ACK: u8 = 0x10;
pub(crate) const PSH_ACK: u8 = 0x18;
pub(crate) const FIN_ACK: u8 = 0x11;

/// Writes a classic pcap (Ethernet, microsecond timestamps).
pub(crate) struct PcapWriter {
    out: BufWriter<File>,
    /// One frame, reused: no allocation per packet.
    buf: Vec<u8>,
}

impl PcapWriter {
    pub(crate) fn create(path: &Path) -> Result<PcapWriter> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        // magic, v2.4, thiszone, sigfigs, snaplen, linktype ethernet
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&65535u32.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter {
            out,
            buf: Vec::with_capacity(2048),
        })
    }

    /// One Ethernet/IPv4/TCP packet. The IPv4 header checksum is correct;
    /// the TCP checksum is left zero (neither the agent's pcap reader nor
    /// tshark verifies it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tcp(
        &mut self,
        ts_us: u64,
        src: ([u8; 4], u16),
        dst: ([u8; 4], u16),
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
    ) -> Result<()> {
        let b = &mut self.buf;
        b.clear();
        b.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let total = (20 + 20 + payload.len()) as u16;
        b.extend_from_slice(&[0x45, 0]);
        b.extend_from_slice(&total.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        b.extend_from_slice(&src.0);
        b.extend_from_slice(&dst.0);
        let csum = ipv4_checksum(&b[14..34]);
        b[24..26].copy_from_slice(&csum.to_be_bytes());
        b.extend_from_slice(&src.1.to_be_bytes());
        b.extend_from_slice(&dst.1.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&ack.to_be_bytes());
        // Data offset 5 words, window 65535, checksum and urgent pointer 0.
        b.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        b.extend_from_slice(payload);
        let len = b.len() as u32;
        self.out
            .write_all(&((ts_us / 1_000_000) as u32).to_le_bytes())?;
        self.out
            .write_all(&((ts_us % 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&self.buf)?;
        Ok(())
    }

    /// Flushes the buffered records; an error here means a short file.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// RFC 1071 one's-complement sum over the IPv4 header.
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
