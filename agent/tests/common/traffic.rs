//! Synthetic HTTP/1 traffic as a classic pcap stream: keep-alive
//! connections carrying whatever request/response heads a test makes up,
//! written packet by packet (nothing accumulates, so a stream of millions of
//! exchanges can be piped straight into `sessionwatch replay /dev/stdin`).

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use sessionwatch_streams::Timestamp;
use sessionwatch_streams::synth::{self, Conversation, PcapWriter, Segment};

/// Writes exchanges on keep-alive connections, `per_conn` per connection,
/// from a new client address and port for every connection.
pub struct Traffic<W: Write> {
    out: PcapWriter<W>,
    /// Event time of the next packet, nanoseconds.
    ts: u64,
    /// Event time between packets.
    step: u64,
    per_conn: u32,
    conns: u32,
    current: Option<(Conversation, u32)>,
    /// Exchanges written.
    pub exchanges: u64,
}

impl<W: Write> Traffic<W> {
    /// Starts the pcap stream. `step_nanos` apart, from 2026-11-26.
    pub fn new(out: W, per_conn: u32, step_nanos: u64) -> io::Result<Self> {
        Ok(Traffic {
            out: PcapWriter::new(out, 1, 262_144)?,
            ts: 1_795_651_200 * 1_000_000_000,
            step: step_nanos,
            per_conn: per_conn.max(1),
            conns: 0,
            current: None,
            exchanges: 0,
        })
    }

    fn write(&mut self, segs: &[Segment]) -> io::Result<()> {
        for s in segs {
            self.out
                .write(Timestamp(self.ts), &synth::ethernet(&s.ip_packet(), None))?;
            self.ts += self.step;
        }
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some((mut conv, _)) = self.current.take() {
            let segs = conv.close();
            self.write(&segs)?;
        }
        Ok(())
    }

    /// One request and its response (`response` empty: none is sent).
    pub fn exchange(&mut self, request: &[u8], response: &[u8]) -> io::Result<()> {
        let fresh = match &self.current {
            Some((_, n)) => *n >= self.per_conn,
            None => true,
        };
        if fresh {
            self.close_current()?;
            let n = self.conns;
            self.conns = self.conns.wrapping_add(1);
            let client = SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
                1024 + (n % 60_000) as u16,
            ));
            let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 80), 80));
            let mut conv = Conversation::new(client, server, n.wrapping_mul(7919), 1);
            let hs = conv.handshake();
            self.write(&hs)?;
            self.current = Some((conv, 0));
        }
        let Some((conv, n)) = self.current.as_mut() else {
            unreachable!("a connection was just opened");
        };
        *n += 1;
        let mut segs = conv.client_stream(request, 1460);
        if !response.is_empty() {
            segs.extend(conv.server_stream(response, 1460));
        }
        self.write(&segs)?;
        self.exchanges += 1;
        Ok(())
    }

    /// Ends the current connection: the next exchange opens a new one
    /// (for streams that must start a connection, e.g. HTTP/2).
    pub fn end_connection(&mut self) -> io::Result<()> {
        self.close_current()
    }

    /// Closes the last connection and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.close_current()?;
        Ok(self.out.into_inner())
    }
}
