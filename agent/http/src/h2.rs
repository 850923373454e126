//! HTTP/2 (RFC 9113): ordered byte streams → request/response exchanges.
//!
//! The per-connection parser is created by the HTTP/1 stage
//! ([`crate::h1::H1Stage`]) at its protocol decision point — the client
//! connection preface (`PRI * HTTP/2.0…`, prior knowledge or h2 over
//! decrypted TLS) or a `101 Switching Protocols` to `h2c` — and from then on
//! receives that connection's bytes. Server bytes that look like the
//! server's SETTINGS and arrive before the client preface (both peers speak
//! at once after a TLS handshake) are held until the client decides.
//!
//! # Frame layer
//!
//! Each direction is cut into frames (9-byte header + payload) without
//! buffering more than needed:
//!
//! * `DATA`, `PRIORITY`, `PING`, `WINDOW_UPDATE` and unknown types are
//!   skipped byte-counted; their payload is never stored. A `Gap` inside a
//!   skipped payload is subtracted and framing continues.
//! * `HEADERS` (padding and priority stripped), `PUSH_PROMISE` and
//!   `CONTINUATION` fragments are assembled into one header block (bounded
//!   by [`H2Limits::max_header_block`] and the stage's buffer budget) and
//!   decoded once `END_HEADERS` arrives.
//! * `SETTINGS` entries are applied as they stream in:
//!   `SETTINGS_HEADER_TABLE_SIZE` bounds the dynamic table the peer's encoder
//!   may use, `SETTINGS_MAX_FRAME_SIZE` the frames the peer may receive.
//! * `RST_STREAM` ends a stream (its request is emitted unanswered);
//!   `GOAWAY` from the server ends the streams it never processed.
//!
//! # HPACK
//!
//! Every connection has one decoder per direction ([`hpack`], RFC 7541
//! with a compile-time Huffman tree and no allocation per field). Dynamic
//! table size updates are bounded by what the decoding peer advertised and
//! by [`H2Limits::max_table_size`]. A reference beyond the dynamic table
//! (possible only when header blocks were missed) is counted as
//! `hpack_index` and that block is skipped; any other decoding error means
//! the table can no longer be trusted and the direction stops (`hpack`,
//! `hpack_table_size`).
//!
//! # Streams and exchanges
//!
//! A client `HEADERS` block with `:method` and `:path` (or `:authority` for
//! `CONNECT`) opens a request (`target` = `:path`, `host` = `:authority`,
//! pseudo-headers removed, `cookie` crumbs joined with `"; "` into one
//! field). The server's first final (non-1xx) `HEADERS` on that stream
//! completes the exchange. Streams reset, refused by `GOAWAY`, or still open
//! when the connection ends are emitted with no response (`unanswered`).
//! At most [`H2Limits::max_streams`] streams wait per connection, and their
//! decoded heads share the stage-wide pending budget with HTTP/1; beyond
//! either bound a request is emitted at once, unanswered (`stream_overflow`,
//! `pending_budget`). A block that decodes to more than
//! [`H2Limits::max_decoded_block`] (an HPACK "bomb": a few bytes referencing
//! a large table entry many times) is decoded to keep the table in step,
//! then dropped (`headers_too_large`).
//!
//! # Losses
//!
//! HPACK state cannot be recovered after bytes are lost, so a `Gap` outside
//! a skipped payload, a malformed frame, or a header block over the bounds
//! stops parsing that direction (counted under `protocol="http2"`). Requests
//! seen before a loss of the server direction are emitted unanswered; after a
//! loss of the client direction responses to known streams still pair.
//!
//! # Joining mid-connection
//!
//! A connection whose client bytes neither start with the preface nor look
//! like HTTP/1, but contain a run of strictly plausible frame headers, or
//! are exactly one plausible frame ([`find_frames`]), is joined mid-stream
//! (`midstream_join`): each direction scans for such a run, then parses
//! from there. The HPACK
//! decoders start empty. That is safe: the dynamic table is indexed newest
//! first, so every entry inserted since the join sits at the same index as
//! in the real table, and a reference to an older (unknown) entry is an
//! index miss (`hpack_index`, block skipped), never a wrong value. Decoding
//! becomes complete as the peers' encoders re-insert what they use, or at
//! once after a size update to 0, or on the next connection.

use std::borrow::Cow;
use std::sync::Arc;

use sessionwatch_streams::{ConnectionMeta, Timestamp};

use crate::{Exchange, ExchangeSink, Headers, HttpStats, Protocol, Request, Response};

pub mod hpack;
mod tables;

use hpack::{HpackDecoder, HpackError};

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_HEADER: usize = 9;
/// Initial `SETTINGS_MAX_FRAME_SIZE`.
const DEFAULT_MAX_FRAME: u32 = 16_384;
/// Largest frame size the protocol allows.
const MAX_FRAME_CAP: u32 = (1 << 24) - 1;
/// Initial `SETTINGS_HEADER_TABLE_SIZE`.
const DEFAULT_TABLE_SIZE: usize = 4096;
/// Offsets of an event scanned for frame sync when joining mid-stream.
const MAX_SYNC_SCAN: usize = 4096;
/// Consecutive plausible frame headers needed to assume frame sync.
const SYNC_FRAMES: usize = 2;
/// Header block buffers larger than this are released, not kept for reuse.
const KEEP_BUFFER: usize = 16 * 1024;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PRIORITY: u8 = 0x2;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// Index of the client → server direction.
pub(crate) const REQ: usize = 0;
/// Index of the server → client direction.
pub(crate) const RESP: usize = 1;

/// Bounds of the HTTP/2 parser. Exceeding one is counted, never fatal to
/// the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Limits {
    /// Most streams waiting for their response on one connection.
    pub max_streams: usize,
    /// Largest header block (HEADERS + CONTINUATION fragments) assembled.
    pub max_header_block: usize,
    /// Largest HPACK dynamic table accepted per direction, whatever the
    /// peer advertised (browsers ask for 64 KiB; servers default to 4 KiB).
    pub max_table_size: usize,
    /// Most regular header fields kept from one block (the rest are
    /// decoded, to keep HPACK state, but dropped: `too_many_headers`).
    pub max_headers: usize,
    /// Most decoded bytes (names + values) of one block. HPACK lets a few
    /// bytes reference a large table entry many times; a block decoding to
    /// more is decoded (to keep HPACK state) but dropped:
    /// `headers_too_large`.
    pub max_decoded_block: usize,
}

impl Default for H2Limits {
    fn default() -> Self {
        H2Limits {
            max_streams: 256,
            max_header_block: 64 * 1024,
            max_table_size: 64 * 1024,
            max_headers: 128,
            max_decoded_block: 256 * 1024,
        }
    }
}

/// Why HTTP/2 parsing of a header block or a direction stopped. The
/// [`H2Error::kind`] is the `kind` label of
/// `parse_errors_total{protocol="http2"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum H2Error {
    /// The client's first bytes diverged from the connection preface.
    #[error("invalid HTTP/2 connection preface")]
    Preface,
    /// Bytes were lost outside a skipped payload: frame sync and HPACK
    /// state are gone.
    #[error("bytes lost, frame sync lost")]
    Gap,
    /// A frame longer than the receiver's `SETTINGS_MAX_FRAME_SIZE`.
    #[error("frame larger than the advertised maximum")]
    FrameTooLarge,
    /// A frame whose length is invalid for its type (e.g. SETTINGS not a
    /// multiple of 6, RST_STREAM not 4).
    #[error("frame length invalid for its type")]
    FrameSize,
    /// Padding longer than the frame.
    #[error("invalid padding")]
    Padding,
    /// A frame other than CONTINUATION inside a header block, or a
    /// CONTINUATION outside one.
    #[error("CONTINUATION sequence broken")]
    Continuation,
    /// A header block larger than [`H2Limits::max_header_block`].
    #[error("header block too large")]
    HeaderBlockTooLarge,
    /// The stage-wide buffer budget is exhausted.
    #[error("buffer budget exhausted")]
    BufferBudget,
    /// A reference to a dynamic-table entry that is not there (blocks
    /// were missed); that block is skipped, not fatal.
    #[error("HPACK index beyond the dynamic table")]
    HpackIndex,
    /// A dynamic table size update beyond the advertised or configured
    /// maximum.
    #[error("HPACK table size update too large")]
    HpackTableSize,
    /// Any other HPACK decoding error (bad integer, string, Huffman code).
    #[error("HPACK decoding error")]
    Hpack,
    /// A header block without the pseudo-headers a request or response
    /// needs, or with an invalid `:status`.
    #[error("invalid message head")]
    InvalidHead,
    /// More regular fields than [`H2Limits::max_headers`].
    #[error("too many header fields")]
    TooManyHeaders,
    /// More open streams than [`H2Limits::max_streams`].
    #[error("too many open streams")]
    StreamOverflow,
    /// A block decoding to more than [`H2Limits::max_decoded_block`].
    #[error("decoded header block too large")]
    HeadersTooLarge,
    /// The stage-wide budget of requests waiting for a response is spent.
    #[error("pending request budget exhausted")]
    PendingBudget,
    /// A connection joined mid-stream (no preface seen): header blocks
    /// referring to older table entries will be skipped.
    #[error("HTTP/2 connection joined mid-stream")]
    MidstreamJoin,
}

impl H2Error {
    /// Stable, low-cardinality label value.
    pub const fn kind(self) -> &'static str {
        match self {
            H2Error::Preface => "invalid_preface",
            H2Error::Gap => "gap",
            H2Error::FrameTooLarge => "frame_too_large",
            H2Error::FrameSize => "frame_size",
            H2Error::Padding => "invalid_padding",
            H2Error::Continuation => "continuation",
            H2Error::HeaderBlockTooLarge => "header_block_too_large",
            H2Error::BufferBudget => "buffer_budget",
            H2Error::HpackIndex => "hpack_index",
            H2Error::HpackTableSize => "hpack_table_size",
            H2Error::Hpack => "hpack",
            H2Error::InvalidHead => "invalid_head",
            H2Error::TooManyHeaders => "too_many_headers",
            H2Error::StreamOverflow => "stream_overflow",
            H2Error::HeadersTooLarge => "headers_too_large",
            H2Error::PendingBudget => "pending_budget",
            H2Error::MidstreamJoin => "midstream_join",
        }
    }
}

/// What the HTTP/2 code needs from the stage: where exchanges go, the
/// counters, and the stage-wide buffer budget.
pub(crate) struct Out<'a, S> {
    pub(crate) sink: &'a mut S,
    pub(crate) stats: &'a mut HttpStats,
    pub(crate) limits: &'a H2Limits,
    /// Bytes buffered across the stage (shared with HTTP/1 heads).
    pub(crate) buffered: &'a mut usize,
    /// Upper bound of `buffered`.
    pub(crate) budget: usize,
    /// Decoded bytes of requests waiting for a response, across the stage
    /// (shared with HTTP/1).
    pub(crate) pending: &'a mut usize,
    /// Upper bound of `pending`.
    pub(crate) pending_budget: usize,
}

impl<S: ExchangeSink> Out<'_, S> {
    fn error(&mut self, e: H2Error) {
        self.stats.parse_error(Protocol::Http2, e.kind());
    }

    fn emit(&mut self, conn: &Arc<ConnectionMeta>, request: Request, response: Option<Response>) {
        self.stats.exchanges[1] += 1;
        if response.is_none() {
            self.stats.unanswered += 1;
        }
        self.sink.on_exchange(&mut Exchange {
            conn: conn.clone(),
            protocol: Protocol::Http2,
            request,
            response,
        });
    }
}

/// A frame being received.
#[derive(Debug, Clone, Copy)]
struct Frame {
    len: u32,
    ty: u8,
    flags: u8,
    stream: u32,
    /// Leading payload bytes stored for processing (the rest is skipped).
    keep: u32,
    /// Payload bytes consumed so far.
    got: u32,
    /// When the frame header began.
    ts: Timestamp,
}

#[derive(Debug, Clone, Copy)]
enum Rx {
    /// Client side: bytes of the connection preface matched so far.
    Preface(usize),
    /// Collecting a frame header.
    Head([u8; FRAME_HEADER], usize),
    /// Inside a frame's payload.
    Payload(Frame),
    /// Joined mid-stream: looking for a run of plausible frame headers.
    Sync,
    /// Framing lost: nothing more is parsed in this direction.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Headers,
    PushPromise,
}

/// A header block being assembled.
#[derive(Debug, Clone, Copy)]
struct Block {
    kind: BlockKind,
    stream: u32,
    end_stream: bool,
    ts: Timestamp,
}

/// One direction's parser. No `Debug`: the buffers hold cookies.
struct Dir {
    rx: Rx,
    /// Stored bytes of the current frame's payload.
    payload: Vec<u8>,
    /// Header block fragments assembled so far.
    block: Vec<u8>,
    /// The open header block, if a CONTINUATION is expected.
    open: Option<Block>,
    /// Decodes the header blocks sent in this direction.
    decoder: HpackDecoder,
    /// Largest `SETTINGS_MAX_FRAME_SIZE` the receiving peer advertised.
    max_frame: u32,
    /// Largest `SETTINGS_HEADER_TABLE_SIZE` the receiving peer advertised.
    table_size: usize,
    /// Joined mid-stream and no HEADERS seen yet: a CONTINUATION of a
    /// block that began before the join is skipped, not an error.
    midstream: bool,
}

impl Dir {
    fn new(rx: Rx, limits: &H2Limits) -> Self {
        Dir {
            rx,
            payload: Vec::new(),
            block: Vec::new(),
            open: None,
            decoder: HpackDecoder::new(DEFAULT_TABLE_SIZE.min(limits.max_table_size)),
            max_frame: DEFAULT_MAX_FRAME,
            table_size: DEFAULT_TABLE_SIZE,
            midstream: false,
        }
    }

    /// Releases the buffers and their share of the budget.
    fn clear_payload(&mut self, buffered: &mut usize) {
        *buffered = buffered.saturating_sub(self.payload.len());
        self.payload.clear();
    }

    fn clear_block(&mut self, buffered: &mut usize) {
        *buffered = buffered.saturating_sub(self.block.len());
        if self.block.capacity() > KEEP_BUFFER {
            self.block = Vec::new();
        } else {
            self.block.clear();
        }
        self.open = None;
    }
}

/// A request waiting for its response.
struct Stream {
    id: u32,
    request: Request,
    /// Share of the pending budget.
    size: usize,
}

/// Regular and pseudo header fields of one decoded block.
#[derive(Default)]
struct Fields {
    method: Option<Box<str>>,
    path: Option<Box<str>>,
    authority: Option<Box<str>>,
    status: Option<Result<u16, ()>>,
    /// A pseudo-header was invalid (not UTF-8, unknown, after a regular field).
    invalid: bool,
    regular_seen: bool,
    headers: Headers,
    /// Cookie crumbs joined with `"; "` (RFC 9113 §8.2.3).
    cookie: Option<Vec<u8>>,
    dropped: bool,
    /// Decoded bytes so far.
    decoded: usize,
    /// Over [`H2Limits::max_decoded_block`]: the block is dropped.
    too_large: bool,
}

impl Fields {
    fn add(&mut self, name: &[u8], value: &[u8], limits: &H2Limits) {
        self.decoded += name.len() + value.len();
        if self.too_large || self.decoded > limits.max_decoded_block {
            self.too_large = true;
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.regular_seen {
                self.invalid = true;
                return;
            }
            let Ok(v) = std::str::from_utf8(value) else {
                self.invalid = true;
                return;
            };
            match pseudo {
                b"method" => self.method = Some(v.into()),
                b"path" => self.path = Some(v.into()),
                b"authority" => self.authority = Some(v.into()),
                b"status" => {
                    self.status = Some(match v.parse::<u16>() {
                        Ok(s) if (100..1000).contains(&s) && v.len() == 3 => Ok(s),
                        _ => Err(()),
                    })
                }
                // `:scheme` and `:protocol` carry nothing the session stage uses.
                b"scheme" | b"protocol" => {}
                _ => self.invalid = true,
            }
            return;
        }
        self.regular_seen = true;
        if name == b"cookie" {
            let c = self.cookie.get_or_insert_with(Vec::new);
            if !c.is_empty() {
                c.extend_from_slice(b"; ");
            }
            c.extend_from_slice(value);
            return;
        }
        if self.headers.len() >= limits.max_headers {
            self.dropped = true;
            return;
        }
        // HTTP/2 field names are lower-case by definition; anything else is
        // malformed and not worth keeping.
        let Ok(n) = std::str::from_utf8(name) else {
            self.dropped = true;
            return;
        };
        if n.bytes().any(|b| b.is_ascii_uppercase()) {
            self.dropped = true;
            return;
        }
        self.headers.push_named(crate::header_name(n), value);
    }

    /// The regular fields, with the joined cookie in the place of the
    /// first crumb's position (appended: order among fields is not
    /// significant for cookies).
    fn into_headers(mut self) -> Headers {
        if let Some(c) = self.cookie.take() {
            self.headers.push_named(Cow::Borrowed("cookie"), &c);
        }
        self.headers
    }
}

/// One connection's HTTP/2 state.
pub(crate) struct H2Conn {
    meta: Arc<ConnectionMeta>,
    dirs: [Dir; 2],
    /// Requests waiting for their response, oldest first.
    streams: Vec<Stream>,
}

impl H2Conn {
    /// A connection whose client preface starts with the next client byte
    /// (prior knowledge, or after a `101` to `h2c`). `upgraded` is the
    /// HTTP/1 request that asked for `h2c`: it is answered on stream 1.
    /// `client_synced` is false when client bytes were already lost.
    pub(crate) fn new(
        meta: Arc<ConnectionMeta>,
        limits: &H2Limits,
        upgraded: Option<Request>,
        client_synced: bool,
    ) -> Self {
        let req_rx = if client_synced {
            Rx::Preface(0)
        } else {
            Rx::Lost
        };
        let mut dirs = [
            Dir::new(req_rx, limits),
            Dir::new(Rx::Head([0; FRAME_HEADER], 0), limits),
        ];
        if upgraded.is_some() {
            // The client's SETTINGS travelled in an HTTP2-Settings header we
            // do not decode: accept whatever table size the server uses.
            dirs[RESP].decoder.set_allowed(limits.max_table_size);
            dirs[RESP].table_size = limits.max_table_size;
        }
        let streams = upgraded
            .map(|request| Stream {
                id: 1,
                request,
                size: 0,
            })
            .into_iter()
            .collect();
        H2Conn {
            meta,
            dirs,
            streams,
        }
    }

    /// A connection joined mid-stream: both directions look for frame sync;
    /// the peers' settings are unknown, so the protocol maxima apply.
    pub(crate) fn midstream<S: ExchangeSink>(
        meta: Arc<ConnectionMeta>,
        out: &mut Out<'_, S>,
    ) -> Self {
        out.error(H2Error::MidstreamJoin);
        let limits = out.limits;
        let dir = || {
            let mut d = Dir::new(Rx::Sync, limits);
            d.max_frame = MAX_FRAME_CAP;
            d.table_size = limits.max_table_size;
            d.decoder.set_allowed(limits.max_table_size);
            d.midstream = true;
            d
        };
        H2Conn {
            meta,
            dirs: [dir(), dir()],
            streams: Vec::new(),
        }
    }

    /// Bytes of direction `d` (`REQ` or `RESP`).
    pub(crate) fn data<S: ExchangeSink>(
        &mut self,
        d: usize,
        ts: Timestamp,
        mut data: &[u8],
        out: &mut Out<'_, S>,
    ) {
        while !data.is_empty() {
            match self.dirs[d].rx {
                Rx::Lost => return,
                Rx::Sync => match find_frames(data) {
                    Some(at) => {
                        data = &data[at..];
                        self.dirs[d].rx = Rx::Head([0; FRAME_HEADER], 0);
                    }
                    None => return,
                },
                Rx::Preface(n) => {
                    let take = (PREFACE.len() - n).min(data.len());
                    if data[..take] != PREFACE[n..n + take] {
                        out.error(H2Error::Preface);
                        self.lose(d, out);
                        return;
                    }
                    data = &data[take..];
                    self.dirs[d].rx = if n + take == PREFACE.len() {
                        Rx::Head([0; FRAME_HEADER], 0)
                    } else {
                        Rx::Preface(n + take)
                    };
                }
                Rx::Head(mut buf, n) => {
                    let take = (FRAME_HEADER - n).min(data.len());
                    buf[n..n + take].copy_from_slice(&data[..take]);
                    data = &data[take..];
                    if n + take < FRAME_HEADER {
                        self.dirs[d].rx = Rx::Head(buf, n + take);
                    } else {
                        self.frame_start(d, &buf, ts, out);
                    }
                }
                Rx::Payload(mut f) => {
                    let left = (f.len - f.got) as usize;
                    let take = left.min(data.len());
                    let (now, rest) = data.split_at(take);
                    data = rest;
                    if f.got < f.keep {
                        let k = ((f.keep - f.got) as usize).min(take);
                        if !self.store(d, &now[..k], out) {
                            return;
                        }
                    }
                    f.got += take as u32;
                    if f.ty == SETTINGS {
                        self.settings_entries(d, out.buffered);
                    }
                    if f.got == f.len {
                        self.dirs[d].rx = Rx::Head([0; FRAME_HEADER], 0);
                        self.frame_end(d, f, out);
                    } else {
                        self.dirs[d].rx = Rx::Payload(f);
                    }
                }
            }
        }
    }

    /// `len` bytes of direction `d` were lost.
    pub(crate) fn gap<S: ExchangeSink>(&mut self, d: usize, len: u64, out: &mut Out<'_, S>) {
        match self.dirs[d].rx {
            Rx::Lost | Rx::Sync => {}
            // Inside the skipped part of a payload: framing survives.
            Rx::Payload(mut f) if f.got >= f.keep && len <= u64::from(f.len - f.got) => {
                f.got += len as u32;
                if f.got == f.len {
                    self.dirs[d].rx = Rx::Head([0; FRAME_HEADER], 0);
                    self.frame_end(d, f, out);
                } else {
                    self.dirs[d].rx = Rx::Payload(f);
                }
            }
            _ => {
                out.error(H2Error::Gap);
                self.lose(d, out);
            }
        }
    }

    /// The connection ended: waiting requests are emitted unanswered.
    pub(crate) fn close<S: ExchangeSink>(&mut self, out: &mut Out<'_, S>) {
        for dir in &mut self.dirs {
            dir.clear_payload(out.buffered);
            dir.clear_block(out.buffered);
            dir.rx = Rx::Lost;
        }
        self.flush(out);
    }

    fn flush<S: ExchangeSink>(&mut self, out: &mut Out<'_, S>) {
        for s in std::mem::take(&mut self.streams) {
            *out.pending = out.pending.saturating_sub(s.size);
            out.emit(&self.meta, s.request, None);
        }
    }

    /// Removes stream `id` from the waiting list, releasing its budget.
    fn take_stream<S>(&mut self, id: u32, out: &mut Out<'_, S>) -> Option<Request> {
        let i = self.streams.iter().position(|s| s.id == id)?;
        let s = self.streams.remove(i);
        *out.pending = out.pending.saturating_sub(s.size);
        Some(s.request)
    }

    /// Direction `d` stops parsing.
    fn lose<S: ExchangeSink>(&mut self, d: usize, out: &mut Out<'_, S>) {
        let dir = &mut self.dirs[d];
        dir.rx = Rx::Lost;
        dir.clear_payload(out.buffered);
        dir.clear_block(out.buffered);
        dir.payload = Vec::new();
        dir.block = Vec::new();
        if d == RESP {
            // No response can be paired any more.
            self.flush(out);
        }
    }

    /// Stores payload bytes within the budget; false (direction lost) if
    /// the budget is exhausted.
    fn store<S: ExchangeSink>(&mut self, d: usize, bytes: &[u8], out: &mut Out<'_, S>) -> bool {
        if *out.buffered + bytes.len() > out.budget {
            out.error(H2Error::BufferBudget);
            self.lose(d, out);
            return false;
        }
        *out.buffered += bytes.len();
        self.dirs[d].payload.extend_from_slice(bytes);
        true
    }

    fn frame_start<S: ExchangeSink>(
        &mut self,
        d: usize,
        h: &[u8; FRAME_HEADER],
        ts: Timestamp,
        out: &mut Out<'_, S>,
    ) {
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
        let ty = h[3];
        let flags = h[4];
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let dir = &self.dirs[d];
        if len > dir.max_frame {
            out.error(H2Error::FrameTooLarge);
            return self.lose(d, out);
        }
        let orphan_continuation = dir.midstream && ty == CONTINUATION && dir.open.is_none();
        if ty == HEADERS {
            self.dirs[d].midstream = false;
        }
        let dir = &self.dirs[d];
        if !orphan_continuation
            && (dir.open.is_some() != (ty == CONTINUATION)
                || dir.open.is_some_and(|b| b.stream != stream))
        {
            out.error(H2Error::Continuation);
            return self.lose(d, out);
        }
        let keep = match ty {
            // The rest of a block that began before a mid-stream join.
            CONTINUATION if orphan_continuation => 0,
            HEADERS | PUSH_PROMISE | CONTINUATION => {
                if dir.block.len() + len as usize > out.limits.max_header_block {
                    out.error(H2Error::HeaderBlockTooLarge);
                    return self.lose(d, out);
                }
                len
            }
            SETTINGS => {
                if !len.is_multiple_of(6) || (flags & FLAG_ACK != 0 && len != 0) {
                    out.error(H2Error::FrameSize);
                    return self.lose(d, out);
                }
                if flags & FLAG_ACK != 0 { 0 } else { len }
            }
            RST_STREAM => {
                if len != 4 {
                    out.error(H2Error::FrameSize);
                    return self.lose(d, out);
                }
                4
            }
            GOAWAY => {
                if len < 8 {
                    out.error(H2Error::FrameSize);
                    return self.lose(d, out);
                }
                8
            }
            // DATA, PRIORITY, PING, WINDOW_UPDATE, extensions: skipped.
            _ => 0,
        };
        let f = Frame {
            len,
            ty,
            flags,
            stream,
            keep,
            got: 0,
            ts,
        };
        if len == 0 {
            self.dirs[d].rx = Rx::Head([0; FRAME_HEADER], 0);
            self.frame_end(d, f, out);
        } else {
            self.dirs[d].rx = Rx::Payload(f);
        }
    }

    /// Applies the complete 6-byte SETTINGS entries stored so far (a
    /// SETTINGS frame is never stored whole). A setting sent in direction
    /// `d` configures the opposite direction.
    fn settings_entries(&mut self, d: usize, buffered: &mut usize) {
        let [a, b] = &mut self.dirs;
        let (this, other) = if d == REQ { (a, b) } else { (b, a) };
        let whole = this.payload.len() / 6 * 6;
        if whole == 0 {
            return;
        }
        for e in this.payload[..whole].chunks_exact(6) {
            let id = u16::from_be_bytes([e[0], e[1]]);
            let value = u32::from_be_bytes([e[2], e[3], e[4], e[5]]);
            match id {
                SETTINGS_HEADER_TABLE_SIZE => {
                    // The largest value ever advertised: the capture order of
                    // the two directions need not match the peers' view.
                    other.table_size = other.table_size.max(value as usize);
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    other.max_frame = other
                        .max_frame
                        .max(value.clamp(DEFAULT_MAX_FRAME, MAX_FRAME_CAP));
                }
                _ => {}
            }
        }
        this.payload.drain(..whole);
        *buffered = buffered.saturating_sub(whole);
    }

    /// A frame's payload is complete.
    fn frame_end<S: ExchangeSink>(&mut self, d: usize, f: Frame, out: &mut Out<'_, S>) {
        let payload = std::mem::take(&mut self.dirs[d].payload);
        *out.buffered = out.buffered.saturating_sub(payload.len());
        self.frame_payload(d, f, &payload, out);
        // Keep the allocation for the next frame.
        let dir = &mut self.dirs[d];
        if dir.payload.is_empty() && payload.capacity() <= KEEP_BUFFER {
            dir.payload = payload;
            dir.payload.clear();
        }
    }

    fn frame_payload<S: ExchangeSink>(
        &mut self,
        d: usize,
        f: Frame,
        p: &[u8],
        out: &mut Out<'_, S>,
    ) {
        match f.ty {
            HEADERS | PUSH_PROMISE => {
                let mut start = 0usize;
                let mut pad = 0usize;
                if f.flags & FLAG_PADDED != 0 {
                    pad = usize::from(p.first().copied().unwrap_or(0));
                    start = 1;
                }
                if f.ty == HEADERS && f.flags & FLAG_PRIORITY != 0 {
                    start += 5;
                }
                if f.ty == PUSH_PROMISE {
                    start += 4;
                }
                if start + pad > p.len() {
                    out.error(H2Error::Padding);
                    return self.lose(d, out);
                }
                let block = Block {
                    kind: if f.ty == HEADERS {
                        BlockKind::Headers
                    } else {
                        BlockKind::PushPromise
                    },
                    stream: f.stream,
                    end_stream: f.ty == HEADERS && f.flags & FLAG_END_STREAM != 0,
                    ts: f.ts,
                };
                self.fragment(d, block, &p[start..p.len() - pad], f.flags, out);
            }
            CONTINUATION => {
                if let Some(block) = self.dirs[d].open {
                    self.fragment(d, block, p, f.flags, out);
                }
            }
            RST_STREAM => {
                if let Some(request) = self.take_stream(f.stream, out) {
                    out.emit(&self.meta, request, None);
                }
            }
            GOAWAY if d == RESP && p.len() >= 4 => {
                // Streams above the last one the server processed were
                // never answered and never will be.
                let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                let (gone, kept): (Vec<Stream>, Vec<Stream>) = std::mem::take(&mut self.streams)
                    .into_iter()
                    .partition(|s| s.id > last);
                self.streams = kept;
                for s in gone {
                    *out.pending = out.pending.saturating_sub(s.size);
                    out.emit(&self.meta, s.request, None);
                }
            }
            // DATA (END_STREAM needs no action: the response head already
            // completed the exchange), SETTINGS (applied while streaming),
            // PING, PRIORITY, WINDOW_UPDATE, GOAWAY from the client.
            _ => {}
        }
    }

    /// Appends a header block fragment; decodes the block at `END_HEADERS`.
    fn fragment<S: ExchangeSink>(
        &mut self,
        d: usize,
        block: Block,
        bytes: &[u8],
        flags: u8,
        out: &mut Out<'_, S>,
    ) {
        let dir = &mut self.dirs[d];
        if *out.buffered + bytes.len() > out.budget {
            out.error(H2Error::BufferBudget);
            return self.lose(d, out);
        }
        *out.buffered += bytes.len();
        dir.block.extend_from_slice(bytes);
        if flags & FLAG_END_HEADERS == 0 {
            dir.open = Some(block);
            return;
        }
        let mut fields = Fields::default();
        let limits = out.limits;
        let allowed = dir.table_size.min(out.limits.max_table_size);
        dir.decoder.set_allowed(allowed);
        let res = dir
            .decoder
            .decode(&dir.block, |n, v| fields.add(n, v, limits));
        dir.clear_block(out.buffered);
        match res {
            Ok(()) => {}
            Err(HpackError::Index) => {
                out.error(H2Error::HpackIndex);
                return;
            }
            Err(HpackError::TableSize) => {
                out.error(H2Error::HpackTableSize);
                return self.lose(d, out);
            }
            Err(_) => {
                out.error(H2Error::Hpack);
                return self.lose(d, out);
            }
        }
        if block.kind == BlockKind::PushPromise {
            // Decoded only to keep the HPACK state; pushed responses are
            // not requests the client made.
            return;
        }
        if fields.too_large {
            out.error(H2Error::HeadersTooLarge);
            return;
        }
        if fields.dropped {
            out.error(H2Error::TooManyHeaders);
        }
        if d == REQ {
            self.on_request(block, fields, out);
        } else {
            self.on_response(block, fields, out);
        }
    }

    fn on_request<S: ExchangeSink>(&mut self, block: Block, f: Fields, out: &mut Out<'_, S>) {
        if block.stream.is_multiple_of(2) {
            // Stream 0 or a server-initiated id: a protocol error the
            // server answers with GOAWAY, not a request it processes.
            out.error(H2Error::InvalidHead);
            return;
        }
        if self.streams.iter().any(|s| s.id == block.stream) {
            // Trailers of a request already seen.
            return;
        }
        if f.method.is_none() && block.end_stream && !f.invalid {
            // Trailers of a request no longer tracked.
            return;
        }
        let (Some(method), false) = (f.method.clone(), f.invalid) else {
            out.error(H2Error::InvalidHead);
            return;
        };
        let target = match (&f.path, &*method) {
            (Some(p), _) => p.clone(),
            (None, "CONNECT") => match &f.authority {
                Some(a) => a.clone(),
                None => {
                    out.error(H2Error::InvalidHead);
                    return;
                }
            },
            (None, _) => {
                out.error(H2Error::InvalidHead);
                return;
            }
        };
        let mut host = f.authority.clone();
        let headers = f.into_headers();
        if host.is_none() {
            host = headers
                .get_str("host")
                .map(|h| h.trim().to_owned().into_boxed_str());
        }
        let request = Request {
            ts: block.ts,
            method: method.into(),
            target: target.into(),
            host: host.map(Into::into),
            headers,
        };
        if matches!(self.dirs[RESP].rx, Rx::Lost) {
            // No response can be paired.
            return out.emit(&self.meta, request, None);
        }
        if self.streams.len() >= out.limits.max_streams {
            out.error(H2Error::StreamOverflow);
            return out.emit(&self.meta, request, None);
        }
        let size = request_size(&request);
        if *out.pending + size > out.pending_budget {
            out.error(H2Error::PendingBudget);
            return out.emit(&self.meta, request, None);
        }
        *out.pending += size;
        self.streams.push(Stream {
            id: block.stream,
            request,
            size,
        });
    }

    fn on_response<S: ExchangeSink>(&mut self, block: Block, f: Fields, out: &mut Out<'_, S>) {
        if block.stream.is_multiple_of(2) {
            // A pushed response (even, server-initiated stream): no request
            // of the client's to pair it with.
            return;
        }
        let status = match f.status {
            Some(Ok(s)) if !f.invalid => s,
            None if block.end_stream && !f.invalid => return, // trailers
            _ => {
                out.error(H2Error::InvalidHead);
                return;
            }
        };
        if (100..200).contains(&status) {
            // Interim (100 Continue, 103 Early Hints): the final one follows.
            return;
        }
        let Some(request) = self.take_stream(block.stream, out) else {
            out.stats.orphan_responses += 1;
            return;
        };
        let response = Response {
            ts: block.ts,
            status,
            headers: f.into_headers(),
        };
        out.emit(&self.meta, request, Some(response));
    }
}

/// Where in `data` a run of plausible frame headers starts that runs to
/// the end of `data`: at least two frames (the last may continue in later
/// bytes), or exactly one frame that fills the whole event from its first
/// byte to its last. Used only to join a connection mid-stream; the checks
/// follow RFC 9113 §6 (types, defined flags, stream 0 or not, fixed
/// lengths), which random bytes rarely pass twice in a row.
///
/// The single-frame case is the common one on a long-lived connection: a
/// client's `GET` is one `HEADERS` frame with `END_STREAM`, written with
/// one `SSL_write` and read by the server with one `SSL_read`, so the event
/// is exactly that frame. Its 24-bit length matching the event's length
/// exactly, on top of the type/flag/stream checks, is as strong a signal as
/// a second frame header.
pub fn find_frames(data: &[u8]) -> Option<usize> {
    (0..data.len().min(MAX_SYNC_SCAN)).find(|&start| {
        let mut at = start;
        let mut n = 0;
        while at < data.len() {
            let Some(h) = data.get(at..at + FRAME_HEADER) else {
                // A header cut by the end of the event.
                return false;
            };
            let Some(len) = plausible_frame(h) else {
                return false;
            };
            at += FRAME_HEADER + len;
            n += 1;
        }
        n >= SYNC_FRAMES || (n == 1 && start == 0 && at == data.len())
    })
}

/// The payload length of frame header `h` if it is a plausible one.
fn plausible_frame(h: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let (ty, flags) = (h[3], h[4]);
    if h[5] & 0x80 != 0 || len > DEFAULT_MAX_FRAME {
        return None;
    }
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
    let (allowed_flags, on_stream, len_ok) = match ty {
        DATA => (0x09, Some(true), true),
        HEADERS => (0x2d, Some(true), true),
        PRIORITY => (0, Some(true), len == 5),
        RST_STREAM => (0, Some(true), len == 4),
        SETTINGS => (0x01, Some(false), len.is_multiple_of(6)),
        PUSH_PROMISE => (0x0c, Some(true), len >= 4),
        PING => (0x01, Some(false), len == 8),
        GOAWAY => (0, Some(false), len >= 8),
        WINDOW_UPDATE => (0, None, len == 4),
        CONTINUATION => (0x04, Some(true), true),
        _ => return None,
    };
    let stream_ok = on_stream.is_none_or(|s| s == (stream != 0));
    (flags & !allowed_flags == 0 && stream_ok && len_ok).then_some(len as usize)
}

/// What a waiting request costs of the pending budget: its decoded size.
fn request_size(r: &Request) -> usize {
    r.method.len()
        + r.target.len()
        + r.host.as_ref().map_or(0, |h| h.len())
        + r.headers
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>()
}
