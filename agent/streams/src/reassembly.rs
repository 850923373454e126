//! TCP reassembly: captured segments → ordered per-direction byte streams.
//!
//! The [`Reassembler`] follows every TCP connection in a capture and emits
//! the same [`StreamEvent`]s live capture produces: `Open` once the client
//! and server are known, `Data` in stream order per direction, `Gap` where
//! bytes are known to be missing, `Close` exactly once.
//!
//! # Behaviour
//!
//! * **Roles.** A SYN names the client (a SYN+ACK names the server). A
//!   capture that starts mid-connection has no SYN: the first side to send
//!   payload is the client if the payload starts like an HTTP request, the
//!   server if it starts like a status line, and otherwise the side with the
//!   ephemeral (non-well-known, else higher) port is the client. `Open` is
//!   emitted when the roles are decided, so a mid-connection flow that only
//!   ever carries empty ACKs produces no events at all.
//! * **Sequence numbers** are compared with wrapping arithmetic and turned
//!   into 64-bit stream offsets, so wraparound is invisible downstream.
//!   Segments more than 1 GiB away from the expected sequence number are not
//!   part of the stream and are counted as [`SkipReason::OutOfWindow`].
//! * **Retransmissions and overlaps: first wins.** Bytes already delivered
//!   are never revised, and among bytes still waiting in the out-of-order
//!   buffer the copy that arrived first is kept. A later copy only
//!   contributes bytes nobody has supplied yet. (This matches what the
//!   receiving host's stack does for data it has already accepted, and it
//!   means an attacker injecting an overlapping segment cannot rewrite what
//!   the analysis already saw.) Dropped duplicate bytes are counted in
//!   [`Stats::retransmitted_bytes`].
//! * **Out-of-order segments** are copied into a per-direction buffer,
//!   bounded in bytes and segments per direction and in bytes overall. In-
//!   order segments are handed out as slices of the captured packet,
//!   without copying.
//! * **Gaps.** A hole is declared unfillable, and reported as a `Gap` with
//!   its exact length, when the out-of-order buffer would overflow, when
//!   the connection closes (FIN seen both ways, or RST) with the hole still
//!   open, when the flow is evicted, and at the end of the input. A packet
//!   cut short by the capture's snaplen yields its captured bytes followed
//!   by a `Gap` for the rest.
//! * **Close.** FIN in both directions → `Close(Closed)`; RST →
//!   `Close(Reset)`; a new SYN with a different initial sequence number on
//!   a known flow (port reuse) closes the old connection and opens a new
//!   one. After `Close` the flow lingers as a tombstone so that the final
//!   ACK and late retransmissions do not start a phantom connection; they
//!   are counted as [`SkipReason::AfterClose`].
//! * **Bounded flow table.** At most [`ReassemblyConfig::max_flows`] flows;
//!   a flow idle (in packet time) for longer than
//!   [`ReassemblyConfig::idle_timeout`], or the least recently active flow
//!   when the table is full, is flushed and closed with
//!   `Close(Evicted)` and counted.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::decode::{SkipCounts, SkipReason, TcpSegment, decode_frame, tcp_flags};
use crate::pcap::Packet;
use crate::table::LruTable;
use crate::{
    CloseReason, ConnectionId, ConnectionMeta, Direction, Source, StreamEvent, StreamSink,
    Timestamp,
};

/// Segments further than this from the expected sequence number (either
/// way) are not considered part of the stream.
const MAX_WINDOW: i64 = 1 << 30;

/// Released out-of-order buffers kept for reuse.
const POOL_SIZE: usize = 256;

/// Limits of the reassembler. Every table and buffer is bounded by one of
/// these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Most flows tracked at once; the least recently active one is evicted
    /// to make room.
    pub max_flows: usize,
    /// A flow with no packet for this long (packet time) is evicted.
    pub idle_timeout: Duration,
    /// Most out-of-order bytes buffered per direction of a connection.
    pub max_buffered_per_direction: usize,
    /// Most out-of-order segments buffered per direction of a connection.
    pub max_segments_per_direction: usize,
    /// Most out-of-order bytes buffered across all connections.
    pub max_buffered_total: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_flows: 262_144,
            idle_timeout: Duration::from_secs(300),
            max_buffered_per_direction: 1024 * 1024,
            max_segments_per_direction: 1024,
            max_buffered_total: 256 * 1024 * 1024,
        }
    }
}

/// Counters of the reassembler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames handed to the reassembler.
    pub packets: u64,
    /// Captured bytes of those frames.
    pub bytes: u64,
    /// Frames that decoded to a TCP segment.
    pub tcp_segments: u64,
    /// Payload bytes delivered in `Data` events.
    pub payload_bytes: u64,
    /// Frames and segments not analysed, by reason.
    pub skipped: SkipCounts,
    /// Sum of all `Gap` lengths: bytes known to be missing.
    pub bytes_missing: u64,
    /// Number of `Gap` events.
    pub gaps: u64,
    /// Duplicate payload bytes dropped (retransmissions, overlaps).
    pub retransmitted_bytes: u64,
    /// Segments that arrived ahead of a hole and were buffered.
    pub out_of_order_segments: u64,
    /// Times a hole was given up on because the out-of-order buffer was full.
    pub buffer_overflows: u64,
    /// Connections opened (`Open` events).
    pub flows_opened: u64,
    /// Connections closed by idle eviction.
    pub flows_evicted_idle: u64,
    /// Connections closed to make room in a full flow table.
    pub flows_evicted_capacity: u64,
    /// Connections closed because a new SYN reused their address pair.
    pub flows_reused: u64,
}

impl Stats {
    /// Connections evicted for any reason.
    pub fn flows_evicted(&self) -> u64 {
        self.flows_evicted_idle + self.flows_evicted_capacity
    }
}

/// Canonical flow key: the two endpoints in sorted order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    lo: (IpAddr, u16),
    hi: (IpAddr, u16),
}

/// Bytes that arrived ahead of the stream position. Covers
/// `[start, start + data.len() + missing)`: captured bytes, then bytes the
/// capture cut off (snaplen). No `Debug`: it holds payload.
struct Seg {
    start: u64,
    data: Vec<u8>,
    missing: u64,
}

impl Seg {
    fn end(&self) -> u64 {
        self.start + self.data.len() as u64 + self.missing
    }
}

/// One direction of a flow, indexed by the sending side.
#[derive(Default)]
struct Half {
    /// The sequence origin is known.
    started: bool,
    /// A SYN was seen from this side; `isn` is its sequence number.
    syn: bool,
    isn: u32,
    /// Sequence number of the next byte expected.
    next_seq: u32,
    /// Stream offset of `next_seq` (bytes delivered plus gaps).
    offset: u64,
    /// Stream offset of this side's FIN, once seen.
    fin: Option<u64>,
    /// Out-of-order segments, sorted by start, non-overlapping.
    ooo: std::collections::VecDeque<Seg>,
    ooo_bytes: usize,
}

struct Flow {
    id: ConnectionId,
    /// Endpoint of each side (side 0 = the key's `lo`).
    ends: [SocketAddr; 2],
    /// Side index of the client, once decided (then `Open` was emitted).
    client: Option<usize>,
    closed: bool,
    last_seen: Timestamp,
    halves: [Half; 2],
}

/// Shared state the per-flow code needs besides the flow itself.
struct Ctx<'a> {
    stats: &'a mut Stats,
    pool: &'a mut Vec<Vec<u8>>,
    buffered_total: &'a mut usize,
    config: &'a ReassemblyConfig,
}

/// Where one direction's events go.
#[derive(Clone, Copy)]
struct Out {
    conn: ConnectionId,
    dir: Direction,
    ts: Timestamp,
}

impl Out {
    fn data<S: StreamSink + ?Sized>(&self, bytes: &[u8], stats: &mut Stats, sink: &mut S) {
        if bytes.is_empty() {
            return;
        }
        stats.payload_bytes += bytes.len() as u64;
        sink.on_event(StreamEvent::Data {
            conn: self.conn,
            dir: self.dir,
            ts: self.ts,
            bytes,
        });
    }

    fn gap<S: StreamSink + ?Sized>(&self, len: u64, stats: &mut Stats, sink: &mut S) {
        if len == 0 {
            return;
        }
        stats.bytes_missing += len;
        stats.gaps += 1;
        sink.on_event(StreamEvent::Gap {
            conn: self.conn,
            dir: self.dir,
            ts: self.ts,
            len,
        });
    }
}

impl Half {
    fn advance(&mut self, n: u64) {
        self.offset += n;
        self.next_seq = self.next_seq.wrapping_add(n as u32);
    }

    fn start_at(&mut self, seq: u32) {
        self.started = true;
        self.next_seq = seq;
        self.offset = 0;
    }

    /// Stream offset of sequence number `seq`, if within the window.
    fn offset_of(&self, seq: u32) -> Option<i64> {
        let rel = i64::from(seq.wrapping_sub(self.next_seq) as i32);
        if !(-MAX_WINDOW..=MAX_WINDOW).contains(&rel) {
            return None;
        }
        Some(self.offset as i64 + rel)
    }

    fn finished(&self) -> bool {
        self.fin.is_some_and(|f| self.offset >= f)
    }

    /// Accepts a segment's payload: `seq` is the sequence number of its
    /// first payload byte, `wire_len` its length on the wire.
    fn accept<S: StreamSink + ?Sized>(
        &mut self,
        seq: u32,
        payload: &[u8],
        wire_len: u64,
        out: Out,
        ctx: &mut Ctx<'_>,
        sink: &mut S,
    ) {
        if !self.started {
            self.start_at(seq);
        }
        let Some(start) = self.offset_of(seq) else {
            ctx.stats.skipped.add(SkipReason::OutOfWindow);
            return;
        };
        let end = start + wire_len as i64;
        let pos = self.offset as i64;
        if end <= pos {
            ctx.stats.retransmitted_bytes += wire_len;
            return;
        }
        // Never deliver bytes past this side's FIN.
        let (payload, wire_len) = match self.fin {
            Some(fin) if end > fin as i64 => {
                let keep = (fin as i64 - start).max(0) as u64;
                (&payload[..payload.len().min(keep as usize)], keep)
            }
            _ => (payload, wire_len),
        };
        let end = start + wire_len as i64;
        if end <= pos {
            return;
        }
        if start <= pos {
            if start < pos {
                ctx.stats.retransmitted_bytes += (pos - start) as u64;
            }
            self.deliver_in_order(start, payload, wire_len, out, ctx, sink);
        } else {
            self.buffer_ahead(start as u64, payload, wire_len, out, ctx, sink);
        }
    }

    /// Delivers a segment starting at or before the stream position,
    /// interleaved with buffered segments (which win where they overlap).
    fn deliver_in_order<S: StreamSink + ?Sized>(
        &mut self,
        start: i64,
        payload: &[u8],
        wire_len: u64,
        out: Out,
        ctx: &mut Ctx<'_>,
        sink: &mut S,
    ) {
        let seg_end = start + wire_len as i64;
        let cap_end = start + payload.len() as i64;
        loop {
            self.drain_ready(out, ctx, sink);
            let pos = self.offset as i64;
            if pos >= seg_end {
                break;
            }
            let limit = match self.ooo.front() {
                Some(s) => seg_end.min(s.start as i64),
                None => seg_end,
            };
            if pos < cap_end {
                let to = limit.min(cap_end);
                let bytes = &payload[(pos - start) as usize..(to - start) as usize];
                out.data(bytes, ctx.stats, sink);
                self.advance(bytes.len() as u64);
            }
            let pos = self.offset as i64;
            if pos < limit {
                out.gap((limit - pos) as u64, ctx.stats, sink);
                self.advance((limit - pos) as u64);
            }
        }
    }

    /// Delivers buffered segments that the stream position has reached.
    fn drain_ready<S: StreamSink + ?Sized>(&mut self, out: Out, ctx: &mut Ctx<'_>, sink: &mut S) {
        while self.ooo.front().is_some_and(|s| s.start <= self.offset) {
            let Some(seg) = self.ooo.pop_front() else {
                break;
            };
            let end = seg.end();
            if end > self.offset {
                let cap_end = seg.start + seg.data.len() as u64;
                if self.offset < cap_end {
                    let bytes = &seg.data[(self.offset - seg.start) as usize..];
                    out.data(bytes, ctx.stats, sink);
                    self.advance(bytes.len() as u64);
                }
                if self.offset < end {
                    out.gap(end - self.offset, ctx.stats, sink);
                    self.advance(end - self.offset);
                }
            } else {
                ctx.stats.retransmitted_bytes += seg.data.len() as u64;
            }
            self.release(seg, ctx);
        }
    }

    fn release(&mut self, mut seg: Seg, ctx: &mut Ctx<'_>) {
        self.ooo_bytes -= seg.data.len();
        *ctx.buffered_total -= seg.data.len();
        if ctx.pool.len() < POOL_SIZE && seg.data.capacity() <= 64 * 1024 {
            seg.data.clear();
            ctx.pool.push(seg.data);
        }
    }

    /// Bytes and segments buffering `[start, start + wire_len)` would add,
    /// counting only what no buffered segment covers yet (first wins).
    fn uncovered(&self, start: u64, cap_end: u64, end: u64) -> (usize, usize) {
        let (mut bytes, mut segs) = (0usize, 0usize);
        let mut cursor = start;
        for s in &self.ooo {
            if cursor >= end {
                break;
            }
            if s.end() <= cursor {
                continue;
            }
            if s.start >= end {
                break;
            }
            if s.start > cursor {
                bytes += (s.start.min(cap_end).saturating_sub(cursor)) as usize;
                segs += 1;
            }
            cursor = cursor.max(s.end());
        }
        if cursor < end {
            bytes += cap_end.saturating_sub(cursor) as usize;
            segs += 1;
        }
        (bytes, segs)
    }

    /// Buffers a segment that starts beyond the stream position.
    fn buffer_ahead<S: StreamSink + ?Sized>(
        &mut self,
        start: u64,
        payload: &[u8],
        wire_len: u64,
        out: Out,
        ctx: &mut Ctx<'_>,
        sink: &mut S,
    ) {
        let end = start + wire_len;
        let cap_end = start + payload.len() as u64;
        let mut overflowed = false;
        loop {
            if start <= self.offset {
                // Giving up on holes brought the stream up to this segment.
                self.deliver_in_order(start as i64, payload, wire_len, out, ctx, sink);
                return;
            }
            let (bytes, segs) = self.uncovered(start, cap_end, end);
            if segs == 0 {
                ctx.stats.retransmitted_bytes += payload.len() as u64;
                return;
            }
            let fits = self.ooo_bytes + bytes <= ctx.config.max_buffered_per_direction
                && self.ooo.len() + segs <= ctx.config.max_segments_per_direction
                && *ctx.buffered_total + bytes <= ctx.config.max_buffered_total;
            if fits {
                break;
            }
            if !overflowed {
                overflowed = true;
                ctx.stats.buffer_overflows += 1;
            }
            // The hole in front cannot be waited for any longer.
            let next = self.ooo.front().map_or(start, |s| s.start.min(start));
            out.gap(next - self.offset, ctx.stats, sink);
            self.advance(next - self.offset);
            self.drain_ready(out, ctx, sink);
        }
        ctx.stats.out_of_order_segments += 1;
        let mut i = 0;
        let mut cursor = start;
        while cursor < end {
            while i < self.ooo.len() && self.ooo[i].end() <= cursor {
                i += 1;
            }
            if let Some(s) = self.ooo.get(i)
                && s.start <= cursor
            {
                cursor = s.end();
                i += 1;
                continue;
            }
            let piece_end = self.ooo.get(i).map_or(end, |s| s.start.min(end));
            let data_end = piece_end.min(cap_end);
            let mut data = ctx.pool.pop().unwrap_or_default();
            if cursor < data_end {
                data.extend_from_slice(
                    &payload[(cursor - start) as usize..(data_end - start) as usize],
                );
            }
            let missing = piece_end - cursor.max(data_end);
            self.ooo_bytes += data.len();
            *ctx.buffered_total += data.len();
            self.ooo.insert(
                i,
                Seg {
                    start: cursor,
                    data,
                    missing,
                },
            );
            i += 1;
            cursor = piece_end;
        }
    }

    /// Gives up on every hole: delivers what is buffered with `Gap`s in
    /// between, then a `Gap` up to the FIN if bytes before it are missing.
    fn flush<S: StreamSink + ?Sized>(&mut self, out: Out, ctx: &mut Ctx<'_>, sink: &mut S) {
        while let Some(first) = self.ooo.front() {
            let first_start = first.start;
            if self.fin.is_some_and(|f| first_start >= f) {
                // Bytes beyond the FIN are not part of the stream.
                while let Some(seg) = self.ooo.pop_front() {
                    self.release(seg, ctx);
                }
                break;
            }
            if first_start > self.offset {
                out.gap(first_start - self.offset, ctx.stats, sink);
                self.advance(first_start - self.offset);
            }
            self.drain_ready(out, ctx, sink);
        }
        if let Some(fin) = self.fin
            && fin > self.offset
        {
            out.gap(fin - self.offset, ctx.stats, sink);
            self.advance(fin - self.offset);
        }
    }

    /// Drops buffered segments without delivering them (flow discarded
    /// before any event was emitted).
    fn discard(&mut self, ctx: &mut Ctx<'_>) {
        while let Some(seg) = self.ooo.pop_front() {
            self.release(seg, ctx);
        }
    }
}

impl Flow {
    fn new(id: ConnectionId, ends: [SocketAddr; 2], ts: Timestamp) -> Self {
        Flow {
            id,
            ends,
            client: None,
            closed: false,
            last_seen: ts,
            halves: Default::default(),
        }
    }

    fn out(&self, side: usize, ts: Timestamp) -> Out {
        let dir = if self.client == Some(side) {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        Out {
            conn: self.id,
            dir,
            ts,
        }
    }

    fn open<S: StreamSink + ?Sized>(&mut self, client: usize, stats: &mut Stats, sink: &mut S) {
        if self.client.is_some() {
            return;
        }
        self.client = Some(client);
        stats.flows_opened += 1;
        let meta = ConnectionMeta {
            id: self.id,
            client: Some(self.ends[client]),
            server: Some(self.ends[1 - client]),
            tls: false,
            source: Source::Pcap,
            process: None,
        };
        sink.on_event(StreamEvent::Open(&meta));
    }

    /// Flushes both directions and emits `Close` (if the flow was opened).
    fn close<S: StreamSink + ?Sized>(
        &mut self,
        reason: CloseReason,
        ts: Timestamp,
        ctx: &mut Ctx<'_>,
        sink: &mut S,
    ) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.client.is_none() {
            for h in &mut self.halves {
                h.discard(ctx);
            }
            return;
        }
        for side in 0..2 {
            let out = self.out(side, ts);
            self.halves[side].flush(out, ctx, sink);
        }
        sink.on_event(StreamEvent::Close {
            conn: self.id,
            ts,
            reason,
        });
    }

    /// Processes one segment sent by `side`.
    fn segment<S: StreamSink + ?Sized>(
        &mut self,
        side: usize,
        seg: &TcpSegment<'_>,
        ts: Timestamp,
        ctx: &mut Ctx<'_>,
        sink: &mut S,
    ) {
        if ts > self.last_seen {
            self.last_seen = ts;
        }
        if self.closed {
            // The final ACK is expected; only packets that still carry
            // something are worth counting.
            if seg.wire_len > 0 || seg.flags & (tcp_flags::SYN | tcp_flags::FIN) != 0 {
                ctx.stats.skipped.add(SkipReason::AfterClose);
            }
            return;
        }
        let syn = seg.has(tcp_flags::SYN);
        if seg.has(tcp_flags::RST) {
            self.close(CloseReason::Reset, ts, ctx, sink);
            return;
        }
        if syn {
            let half = &mut self.halves[side];
            if !half.started {
                half.start_at(seg.seq.wrapping_add(1));
                half.syn = true;
                half.isn = seg.seq;
            }
            // A SYN names the client, a SYN+ACK the server.
            let client = if seg.has(tcp_flags::ACK) {
                1 - side
            } else {
                side
            };
            self.open(client, ctx.stats, sink);
        }
        let data_seq = seg.seq.wrapping_add(u32::from(syn));
        let wire_len = u64::from(seg.wire_len);
        if wire_len > 0 {
            if self.client.is_none() {
                let client = guess_client(side, seg);
                self.open(client, ctx.stats, sink);
            }
            let out = self.out(side, ts);
            self.halves[side].accept(data_seq, seg.payload, wire_len, out, ctx, sink);
        }
        if seg.has(tcp_flags::FIN) {
            let half = &mut self.halves[side];
            let fin_seq = data_seq.wrapping_add(seg.wire_len);
            if !half.started {
                half.start_at(fin_seq);
            }
            if half.fin.is_none()
                && let Some(off) = half.offset_of(fin_seq)
                && off >= half.offset as i64
            {
                half.fin = Some(off as u64);
                // Anything buffered beyond the FIN is not stream data.
                while half.ooo.back().is_some_and(|s| s.start >= off as u64) {
                    if let Some(s) = half.ooo.pop_back() {
                        half.release(s, ctx);
                    }
                }
            }
        }
        let [a, b] = &self.halves;
        if a.fin.is_some() && b.fin.is_some() {
            // Both sides are done sending: holes will not be filled any more.
            self.close(CloseReason::Closed, ts, ctx, sink);
        } else if a.finished() && b.finished() {
            self.close(CloseReason::Closed, ts, ctx, sink);
        }
    }
}

/// Decides which side is the client of a connection seen without its SYN,
/// from the first payload-carrying segment (sent by `side`).
fn guess_client(side: usize, seg: &TcpSegment<'_>) -> usize {
    if looks_like_request(seg.payload) {
        return side;
    }
    if seg.payload.starts_with(b"HTTP/") {
        return 1 - side;
    }
    // Port heuristics: the non-well-known, else the ephemeral, else the
    // higher port is the client's.
    let (mine, theirs) = (seg.sport, seg.dport);
    let sender_is_client = if (mine < 1024) != (theirs < 1024) {
        mine >= 1024
    } else if (mine >= 32768) != (theirs >= 32768) {
        mine >= 32768
    } else {
        mine > theirs
    };
    if sender_is_client { side } else { 1 - side }
}

/// Whether `p` starts like an HTTP/1 request line (or the HTTP/2 preface).
pub fn looks_like_request(p: &[u8]) -> bool {
    const STARTS: [&[u8]; 14] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
        b"PRI * HTTP/2",
        b"PROPFIND ",
        b"PROPPATCH ",
        b"MKCOL ",
        b"REPORT ",
    ];
    STARTS.iter().any(|s| p.starts_with(s))
}

/// TCP reassembler: feed it frames (or decoded segments) in capture order,
/// it drives a [`StreamSink`].
pub struct Reassembler {
    config: ReassemblyConfig,
    table: LruTable<FlowKey, Flow>,
    stats: Stats,
    pool: Vec<Vec<u8>>,
    buffered_total: usize,
    next_id: u64,
    now: Timestamp,
}

impl Reassembler {
    /// A reassembler with the given limits.
    pub fn new(config: ReassemblyConfig) -> Self {
        Reassembler {
            table: LruTable::new(config.max_flows),
            config,
            stats: Stats::default(),
            pool: Vec::new(),
            buffered_total: 0,
            next_id: 1,
            now: Timestamp(0),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Flows currently tracked (including closed ones kept as tombstones).
    pub fn flows(&self) -> usize {
        self.table.len()
    }

    /// Out-of-order bytes currently buffered across all flows.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_total
    }

    /// Processes one packet read from a capture file.
    pub fn process_packet<S: StreamSink + ?Sized>(&mut self, packet: &Packet<'_>, sink: &mut S) {
        self.process_frame(packet.linktype, packet.ts, packet.data, sink);
    }

    /// Processes one captured frame of `linktype`.
    pub fn process_frame<S: StreamSink + ?Sized>(
        &mut self,
        linktype: u32,
        ts: Timestamp,
        frame: &[u8],
        sink: &mut S,
    ) {
        self.stats.packets += 1;
        self.stats.bytes += frame.len() as u64;
        match decode_frame(linktype, frame) {
            Ok(seg) => self.process_segment(ts, &seg, sink),
            Err(reason) => self.stats.skipped.add(reason),
        }
    }

    /// Processes one decoded TCP segment.
    pub fn process_segment<S: StreamSink + ?Sized>(
        &mut self,
        ts: Timestamp,
        seg: &TcpSegment<'_>,
        sink: &mut S,
    ) {
        self.stats.tcp_segments += 1;
        if ts > self.now {
            self.now = ts;
        }
        self.expire(sink);
        let src = (seg.src, seg.sport);
        let dst = (seg.dst, seg.dport);
        let (key, side) = if src <= dst {
            (FlowKey { lo: src, hi: dst }, 0)
        } else {
            (FlowKey { lo: dst, hi: src }, 1)
        };
        let mut ctx = Ctx {
            stats: &mut self.stats,
            pool: &mut self.pool,
            buffered_total: &mut self.buffered_total,
            config: &self.config,
        };
        let pure_syn = seg.has(tcp_flags::SYN) && !seg.has(tcp_flags::ACK);
        let handle = match self.table.find(&key) {
            Some(h) => {
                let reuse = pure_syn
                    && self.table.get(h).is_some_and(|(_, f)| {
                        let half = &f.halves[side];
                        // Not a retransmission of the SYN we already have.
                        f.closed || !(half.syn && half.isn == seg.seq)
                    });
                if reuse {
                    if let Some((_, mut old)) = self.table.remove(h)
                        && !old.closed
                    {
                        ctx.stats.flows_reused += 1;
                        old.close(CloseReason::Closed, ts, &mut ctx, sink);
                    }
                    None
                } else {
                    Some(h)
                }
            }
            None => None,
        };
        let handle = match handle {
            Some(h) => {
                self.table.touch(h);
                h
            }
            None => {
                if self.table.is_full()
                    && let Some((_, mut victim)) = self.table.pop_lru()
                    && !victim.closed
                {
                    if victim.client.is_some() {
                        ctx.stats.flows_evicted_capacity += 1;
                    }
                    victim.close(CloseReason::Evicted, ts, &mut ctx, sink);
                }
                let id = ConnectionId(self.next_id);
                let ends = [
                    SocketAddr::new(key.lo.0, key.lo.1),
                    SocketAddr::new(key.hi.0, key.hi.1),
                ];
                match self.table.insert(key, Flow::new(id, ends, ts)) {
                    Ok(h) => {
                        self.next_id += 1;
                        h
                    }
                    // Unreachable: the table had room and the key was absent.
                    Err(_) => return,
                }
            }
        };
        if let Some(flow) = self.table.get_mut(handle) {
            flow.segment(side, seg, ts, &mut ctx, sink);
        }
    }

    /// Evicts flows idle for longer than the idle timeout.
    fn expire<S: StreamSink + ?Sized>(&mut self, sink: &mut S) {
        let now = self.now;
        let idle = self.config.idle_timeout;
        while let Some((_, _, flow)) = self.table.peek_lru() {
            if flow.last_seen.saturating_add(idle) >= now {
                break;
            }
            let Some((_, mut flow)) = self.table.pop_lru() else {
                break;
            };
            let mut ctx = Ctx {
                stats: &mut self.stats,
                pool: &mut self.pool,
                buffered_total: &mut self.buffered_total,
                config: &self.config,
            };
            if !flow.closed {
                if flow.client.is_some() {
                    ctx.stats.flows_evicted_idle += 1;
                }
                flow.close(CloseReason::Evicted, now, &mut ctx, sink);
            }
        }
    }

    /// End of input: flushes every flow (gaps for unfilled holes) and closes
    /// it with [`CloseReason::EndOfInput`], oldest first. The reassembler
    /// can be fed again afterwards (connection ids keep counting up, so a
    /// multi-file replay never reuses one).
    pub fn finish<S: StreamSink + ?Sized>(&mut self, sink: &mut S) {
        let now = self.now;
        while let Some((_, mut flow)) = self.table.pop_lru() {
            let mut ctx = Ctx {
                stats: &mut self.stats,
                pool: &mut self.pool,
                buffered_total: &mut self.buffered_total,
                config: &self.config,
            };
            flow.close(CloseReason::EndOfInput, now, &mut ctx, sink);
        }
    }
}
