//! HTTP/1.x: ordered byte streams → request/response exchanges.
//!
//! [`H1Stage`] is a [`StreamSink`]: it keeps one small parser state per
//! connection (in a bounded table), parses message heads with `httparse`,
//! skips bodies without storing them, pairs each final response with the
//! oldest outstanding request, and hands [`Exchange`]s to an
//! [`ExchangeSink`].
//!
//! # Framing (RFC 9112 §6)
//!
//! * Requests: `Transfer-Encoding` ending in `chunked` → chunked body;
//!   any other transfer coding → unframeable (`invalid_framing`); else
//!   `Content-Length`; else no body.
//! * Responses: to `HEAD`, and `1xx`/`204`/`304` → no body; `101` → the
//!   connection switches protocols and is no longer parsed (`upgrade`);
//!   `2xx` to `CONNECT` → tunnel, no longer parsed (`connect`); chunked;
//!   `Content-Length`; else the body runs until the connection closes.
//! * Interim `1xx` responses (`100 Continue`, `103 Early Hints`) are skipped;
//!   the final response is the one paired with the request.
//! * Chunked bodies are followed incrementally across `Data` events (chunk
//!   sizes, extensions, trailers) without buffering.
//! * Pipelining: requests queue up (bounded by [`Limits::max_pipeline`])
//!   and responses pair in order.
//!
//! # Heads
//!
//! A head that arrives whole in one `Data` event is parsed in place. A head
//! split across events is accumulated (bounded by
//! [`Limits::max_head_bytes`] per head and [`Limits::max_buffered_total`]
//! overall) and parsed once its terminating blank line has arrived, so a
//! head trickling in byte by byte costs linear, not quadratic, time.
//!
//! # Gaps and resynchronisation
//!
//! A `Gap` inside a body of known length (or inside one chunk's data) is
//! simply subtracted. Anywhere else framing is lost: the direction scans
//! forward for a plausible message start — a known method followed by a
//! space (requests) or `HTTP/1.` (responses) at the beginning of a line, or
//! right after the gap — and parsing resumes there (`resync`).
//!
//! Pairing after a loss is conservative, because a response paired with
//! the wrong request would make the detectors see a login succeed that did
//! not, or a logout that never happened:
//!
//! * Request bytes lost: an unknown number of requests is missing, so a
//!   *lost* marker is queued. A response that arrives while the marker is at
//!   the head of the queue belongs to a lost request (counted as an orphan)
//!   unless it arrived after the next known request was sent.
//! * Response bytes lost: every request sent up to the gap may have lost
//!   its response; those requests are emitted as unanswered.
//!
//! # Other protocols
//!
//! The client's first bytes decide the protocol of a connection. On the
//! HTTP/2 connection preface (`PRI * HTTP/2.0`, prior knowledge or h2 over
//! decrypted TLS), and after a `101` switching to `h2c`, the connection is
//! handed to the HTTP/2 parser ([`crate::h2`]) for the rest of its life; the
//! `h2c` upgrade request is answered on stream 1. Server bytes shaped like
//! an HTTP/2 SETTINGS frame that arrive before the client has spoken are
//! held until the client's first bytes decide. Client first bytes that are
//! no request line but a run of plausible HTTP/2 frames
//! ([`crate::h2::find_frames`]) mean a connection joined mid-stream, also
//! handed to HTTP/2. A TLS record on a
//! connection we were given as plaintext is counted as `not_http`.
//!
//! # Counters
//!
//! [`HttpStats::parse_errors`] kinds used here (protocol `http1` unless
//! noted): `invalid_head`, `too_many_headers`, `head_too_large`,
//! `buffer_budget`, `invalid_framing`, `invalid_content_length`,
//! `invalid_chunk`, `gap` (a gap broke framing), `resync` (parsing resumed
//! after a loss), `pipeline_overflow`, `pending_budget`, `upgrade`, `connect`, `not_http`,
//! `truncated_head` (connection closed mid-head), `conn_evicted`,
//! `no_open` (event for a connection never opened). HTTP/2 kinds are listed
//! in [`crate::h2::H2Error`].

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::sync::Arc;

use sessionwatch_streams::table::LruTable;
use sessionwatch_streams::{
    ConnectionId, ConnectionMeta, Direction, StreamEvent, StreamSink, Timestamp,
};

use crate::h2::{self, H2Conn, H2Limits};
use crate::{
    Exchange, ExchangeSink, Headers, HttpStats, Protocol, Request, Response, SpareHeaders,
};

/// Hard upper bound on [`Limits::max_headers`] (the size of the on-stack
/// header array handed to httparse).
pub const MAX_HEADERS_CAP: usize = 256;

/// Bounds of the HTTP/1 stage. Exceeding one is counted, never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message head (request/status line plus header fields).
    pub max_head_bytes: usize,
    /// Most header fields in one head (at most [`MAX_HEADERS_CAP`]).
    pub max_headers: usize,
    /// Most requests awaiting their response on one connection.
    pub max_pipeline: usize,
    /// Most connections tracked; the least recently active is evicted.
    pub max_connections: usize,
    /// Most bytes of partial heads buffered across all connections.
    pub max_buffered_total: usize,
    /// Most bytes of parsed requests waiting for their responses, across
    /// all connections (measured as the size of their heads on the wire).
    pub max_pending_total: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 128,
            max_pipeline: 64,
            max_connections: 131_072,
            max_buffered_total: 128 * 1024 * 1024,
            max_pending_total: 256 * 1024 * 1024,
        }
    }
}

const REQ: usize = 0;
const RESP: usize = 1;

/// Longest chunk extension accepted on one chunk-size line.
const MAX_CHUNK_EXT: u32 = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: u32 = 64 * 1024;
/// Bytes kept across events while a message start is ambiguous.
const CARRY: usize = 16;
/// Head buffers larger than this are released instead of kept for reuse.
const KEEP_BUFFER: usize = 16 * 1024;

/// What the client's first bytes say about the connection's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preface {
    /// Anything else: parsed as HTTP/1.
    Http1,
    /// The HTTP/2 connection preface.
    Http2,
    /// A TLS record: not plaintext HTTP.
    Tls,
    /// Too few bytes to tell.
    Undecided,
}

/// Classifies the first bytes a client sent on a connection.
pub fn classify_preface(first: &[u8]) -> Preface {
    const H2: &[u8] = b"PRI * HTTP/2.0";
    if first.starts_with(H2) {
        return Preface::Http2;
    }
    if !first.is_empty() && H2.starts_with(first) {
        return Preface::Undecided;
    }
    if first.first() == Some(&0x16) {
        return Preface::Tls;
    }
    Preface::Http1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MethodKind {
    Head,
    Connect,
    Other,
}

/// Incremental chunked-body state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, digits: u8 },
    Ext { value: u64, len: u32 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { line: u32, total: u32 },
}

impl Chunk {
    const START: Chunk = Chunk::Size {
        value: 0,
        digits: 0,
    };

    fn after_size(value: u64) -> Chunk {
        if value == 0 {
            Chunk::Trailer { line: 0, total: 0 }
        } else {
            Chunk::Data(value)
        }
    }

    /// Consumes chunked framing from `data`: bytes consumed and whether the
    /// message ended, or `Err` on a framing error.
    fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        let mut i = 0;
        while i < data.len() {
            if let Chunk::Data(n) = *self {
                let t = n.min((data.len() - i) as u64);
                i += t as usize;
                *self = if n == t {
                    Chunk::DataCr
                } else {
                    Chunk::Data(n - t)
                };
                continue;
            }
            let b = data[i];
            i += 1;
            *self = match *self {
                Chunk::Size { value, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 16 {
                            return Err(());
                        }
                        let d = match b {
                            b'0'..=b'9' => b - b'0',
                            b'a'..=b'f' => b - b'a' + 10,
                            _ => b - b'A' + 10,
                        };
                        Chunk::Size {
                            value: value * 16 + u64::from(d),
                            digits: digits + 1,
                        }
                    }
                    b';' | b' ' | b'\t' | b'\r' if digits > 0 => Chunk::Ext { value, len: 0 },
                    b'\n' if digits > 0 => Chunk::after_size(value),
                    _ => return Err(()),
                },
                Chunk::Ext { value, len } => match b {
                    b'\n' => Chunk::after_size(value),
                    _ if len >= MAX_CHUNK_EXT => return Err(()),
                    _ => Chunk::Ext {
                        value,
                        len: len + 1,
                    },
                },
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::START,
                    _ => return Err(()),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::START,
                    _ => return Err(()),
                },
                Chunk::Trailer { line, total } => match b {
                    b'\n' if line == 0 => {
                        *self = Chunk::START;
                        return Ok((i, true));
                    }
                    b'\n' => Chunk::Trailer { line: 0, total },
                    b'\r' => Chunk::Trailer { line, total },
                    _ if total >= MAX_TRAILERS => return Err(()),
                    _ => Chunk::Trailer {
                        line: line + 1,
                        total: total + 1,
                    },
                },
                Chunk::Data(_) => unreachable_data(),
            };
        }
        Ok((i, false))
    }
}

/// `Chunk::Data` is consumed before the per-byte match; keeping the arm
/// total without `unreachable!` (no panics on runtime paths).
fn unreachable_data() -> Chunk {
    Chunk::DataCr
}

/// Finds the blank line ending a head that arrives in pieces. Empty lines
/// before the first content are skipped, as httparse does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HeadScan {
    content: bool,
    lf: bool,
    lf_cr: bool,
}

impl HeadScan {
    /// Index just past the head's final LF, if it is in `data`.
    ///
    /// Jumps from LF to LF with `memchr` (a head is mostly long lines):
    /// the head ends at an LF whose line, since the previous LF, is empty
    /// or a lone CR, once some content has been seen. The state carries
    /// across pieces: `lf` (the last byte was an LF) and `lf_cr` (the last
    /// two were LF CR) stand for the previous LF when a piece starts.
    fn find(&mut self, data: &[u8]) -> Option<usize> {
        let mut line_start = 0;
        for at in memchr::memchr_iter(b'\n', data) {
            let line = &data[line_start..at];
            // The line follows an LF: one in this piece, or the carried one.
            let after_lf = if line_start > 0 { true } else { self.lf };
            let blank = match line {
                [] => after_lf || (line_start == 0 && self.lf_cr),
                [b'\r'] => after_lf,
                _ => false,
            };
            if self.content && blank {
                *self = HeadScan::default();
                return Some(at + 1);
            }
            self.content |= line.iter().any(|b| *b != b'\r');
            line_start = at + 1;
        }
        let tail = &data[line_start..];
        let after_lf = if line_start > 0 { true } else { self.lf };
        self.content |= tail.iter().any(|b| *b != b'\r');
        match tail {
            [] => {
                if line_start > 0 {
                    (self.lf, self.lf_cr) = (true, false);
                }
            }
            [b'\r'] => (self.lf, self.lf_cr) = (false, after_lf),
            _ => (self.lf, self.lf_cr) = (false, false),
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a message head.
    Head,
    /// Fixed-length body, bytes remaining.
    Body(u64),
    /// Chunked body.
    Chunked(Chunk),
    /// Response body delimited by the connection's close.
    UntilClose,
    /// Request side after `CONNECT` or an `Upgrade` request, waiting for the
    /// server's verdict.
    Paused,
    /// Framing lost: scanning for a message start.
    Resync,
}

/// One direction's parser. No `Debug`: the head buffer holds cookies.
struct Side {
    state: State,
    /// Partial head.
    buf: Vec<u8>,
    scan: HeadScan,
    /// When the current head's first byte was seen.
    head_ts: Timestamp,
    /// Resync: a possible message start cut by the end of an event.
    carry: [u8; CARRY],
    carry_len: usize,
    /// Request side: pause once the current body ends (CONNECT / Upgrade).
    pause_after_body: bool,
    /// Bytes ignored while paused.
    paused_bytes: u64,
}

impl Side {
    fn new() -> Self {
        Side {
            state: State::Head,
            buf: Vec::new(),
            scan: HeadScan::default(),
            head_ts: Timestamp(0),
            carry: [0; CARRY],
            carry_len: 0,
            pause_after_body: false,
            paused_bytes: 0,
        }
    }

    /// Appends to the head buffer within the global budget.
    fn append(&mut self, bytes: &[u8], buffered: &mut usize, limit: usize) -> bool {
        if *buffered + bytes.len() > limit {
            return false;
        }
        *buffered += bytes.len();
        self.buf.extend_from_slice(bytes);
        true
    }

    fn clear_buf(&mut self, buffered: &mut usize) {
        *buffered -= self.buf.len();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.scan = HeadScan::default();
    }
}

enum Scan {
    At(usize),
    InCarry,
    NotFound,
}

#[derive(Debug, PartialEq, Eq)]
enum StartMatch {
    Match,
    Prefix,
    No,
}

/// Whether `bytes` begins a request line (known method + space) or a status
/// line (`HTTP/1.`), could still become one, or cannot.
fn classify_start(kind: usize, bytes: &[u8]) -> StartMatch {
    const METHODS: [&[u8]; 20] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
        b"PROPFIND ",
        b"PROPPATCH ",
        b"MKCOL ",
        b"COPY ",
        b"MOVE ",
        b"LOCK ",
        b"UNLOCK ",
        b"REPORT ",
        b"SEARCH ",
        b"PURGE ",
        b"QUERY ",
    ];
    const STATUS: [&[u8]; 1] = [b"HTTP/1."];
    let candidates: &[&[u8]] = if kind == REQ { &METHODS } else { &STATUS };
    let mut prefix = false;
    for c in candidates {
        if bytes.starts_with(c) {
            return StartMatch::Match;
        }
        if bytes.len() < c.len() && c.starts_with(bytes) {
            prefix = true;
        }
    }
    if prefix {
        StartMatch::Prefix
    } else {
        StartMatch::No
    }
}

impl Side {
    /// Resync: looks for a message start in `data`.
    fn scan_for_start(&mut self, kind: usize, data: &[u8]) -> Scan {
        if self.carry_len > 0 {
            let mut tmp = [0u8; 2 * CARRY];
            let cl = self.carry_len;
            tmp[..cl].copy_from_slice(&self.carry[..cl]);
            let take = data.len().min(2 * CARRY - cl);
            tmp[cl..cl + take].copy_from_slice(&data[..take]);
            match classify_start(kind, &tmp[..cl + take]) {
                StartMatch::Match => return Scan::InCarry,
                StartMatch::Prefix if cl + take <= CARRY && take == data.len() => {
                    self.carry[cl..cl + take].copy_from_slice(&data[..take]);
                    self.carry_len = cl + take;
                    return Scan::NotFound;
                }
                _ => {
                    self.carry_len = 0;
                }
            }
        }
        let mut i = 0;
        // Every event start is a candidate too: messages usually begin at
        // segment (or write) boundaries, and always right after a gap.
        let mut line_start = true;
        loop {
            if line_start && i < data.len() {
                match classify_start(kind, &data[i..]) {
                    StartMatch::Match => return Scan::At(i),
                    StartMatch::Prefix => {
                        let rest = &data[i..];
                        if rest.len() <= CARRY {
                            self.carry[..rest.len()].copy_from_slice(rest);
                            self.carry_len = rest.len();
                        }
                        return Scan::NotFound;
                    }
                    StartMatch::No => {}
                }
            }
            match memchr::memchr(b'\n', &data[i..]) {
                Some(p) => {
                    i += p + 1;
                    line_start = true;
                    if i == data.len() {
                        return Scan::NotFound;
                    }
                }
                None => {
                    return Scan::NotFound;
                }
            }
        }
    }
}

/// How a request's body is delimited.
enum ReqFraming {
    Length(u64),
    Chunked,
    Invalid,
}

/// Body-related header fields of one head.
#[derive(Default)]
struct BodyInfo {
    content_length: Option<Result<u64, ()>>,
    te_present: bool,
    chunked_last: bool,
    upgrade: bool,
}

impl BodyInfo {
    /// `name` is lower-case (from [`crate::header_name`]): an exact compare,
    /// where the length check alone rejects nearly every other field.
    fn observe(&mut self, name: &str, value: &[u8]) {
        if name == "content-length" {
            let parsed = parse_content_length(value);
            self.content_length = Some(match (self.content_length, parsed) {
                (None, v) => v,
                (Some(Ok(a)), Ok(b)) if a == b => Ok(a),
                _ => Err(()),
            });
        } else if name == "transfer-encoding" {
            self.te_present = true;
            if let Some(last) = value
                .split(|b| *b == b',')
                .map(trim)
                .rfind(|t| !t.is_empty())
            {
                self.chunked_last = last.eq_ignore_ascii_case(b"chunked");
            }
        } else if name == "upgrade" {
            self.upgrade = true;
        }
    }
}

/// `Content-Length`: digits, or a comma-separated list of identical values.
fn parse_content_length(value: &[u8]) -> Result<u64, ()> {
    let mut result: Option<u64> = None;
    for part in value.split(|b| *b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n = part
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        match result {
            Some(prev) if prev != n => return Err(()),
            _ => result = Some(n),
        }
    }
    result.ok_or(())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

fn owned_headers(
    kind: usize,
    head: &[u8],
    hs: &[httparse::Header<'_>],
    info: &mut BodyInfo,
    spare: &mut SpareHeaders,
) -> Headers {
    // The head is copied once; each value is a range of the copy.
    let mut out = spare.take(hs.len(), head.len());
    out.copy_head(head);
    // `kind` is REQ or RESP; the mask keeps the index in bounds regardless.
    let memo = &mut spare.names[kind & 1];
    for (pos, h) in hs.iter().enumerate() {
        let name = memo.name(pos, h.name);
        info.observe(&name, h.value);
        out.push_in_head(name, head, trim(h.value));
    }
    out
}

/// A parsed head, owned.
enum Head {
    Request {
        request: Request,
        method: MethodKind,
        framing: ReqFraming,
        upgrade: bool,
        size: usize,
    },
    Response {
        response: Response,
        body: BodyInfo,
    },
}

enum Outcome {
    Complete(usize, Head),
    Partial,
    Error(&'static str),
}

fn parse_request(
    cfg: &httparse::ParserConfig,
    buf: &[u8],
    ts: Timestamp,
    max_headers: usize,
    spare: &mut SpareHeaders,
) -> Outcome {
    let mut hdrs = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    match cfg.parse_request_with_uninit_headers(&mut req, buf, &mut hdrs[..max_headers]) {
        Ok(httparse::Status::Complete(n)) => {
            let (Some(method), Some(target)) = (req.method, req.path) else {
                return Outcome::Error("invalid_head");
            };
            let mut info = BodyInfo::default();
            let headers = owned_headers(
                REQ,
                buf.get(..n).unwrap_or(buf),
                req.headers,
                &mut info,
                spare,
            );
            let host = headers
                .get_str("host")
                .map(str::trim)
                .or_else(|| authority_of(target))
                .map(|h| spare.string(h));
            let kind = if method == "HEAD" {
                MethodKind::Head
            } else if method == "CONNECT" {
                MethodKind::Connect
            } else {
                MethodKind::Other
            };
            let framing = if info.te_present {
                if info.chunked_last {
                    ReqFraming::Chunked
                } else {
                    ReqFraming::Invalid
                }
            } else {
                match info.content_length {
                    Some(Ok(n)) => ReqFraming::Length(n),
                    Some(Err(())) => ReqFraming::Invalid,
                    None => ReqFraming::Length(0),
                }
            };
            let request = Request {
                ts,
                method: spare.string(method),
                target: spare.string(target),
                host,
                headers,
            };
            Outcome::Complete(
                n,
                Head::Request {
                    request,
                    method: kind,
                    framing,
                    upgrade: info.upgrade,
                    size: n,
                },
            )
        }
        Ok(httparse::Status::Partial) => Outcome::Partial,
        Err(httparse::Error::TooManyHeaders) => Outcome::Error("too_many_headers"),
        Err(_) => Outcome::Error("invalid_head"),
    }
}

fn parse_response(
    cfg: &httparse::ParserConfig,
    buf: &[u8],
    ts: Timestamp,
    max_headers: usize,
    spare: &mut SpareHeaders,
) -> Outcome {
    let mut hdrs = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut resp = httparse::Response::new(&mut []);
    match cfg.parse_response_with_uninit_headers(&mut resp, buf, &mut hdrs[..max_headers]) {
        Ok(httparse::Status::Complete(n)) => {
            let Some(status) = resp.code else {
                return Outcome::Error("invalid_head");
            };
            let mut body = BodyInfo::default();
            let headers = owned_headers(
                RESP,
                buf.get(..n).unwrap_or(buf),
                resp.headers,
                &mut body,
                spare,
            );
            Outcome::Complete(
                n,
                Head::Response {
                    response: Response {
                        ts,
                        status,
                        headers,
                    },
                    body,
                },
            )
        }
        Ok(httparse::Status::Partial) => Outcome::Partial,
        Err(httparse::Error::TooManyHeaders) => Outcome::Error("too_many_headers"),
        Err(_) => Outcome::Error("invalid_head"),
    }
}

/// The authority of an absolute-form target (`http://host:port/path`).
fn authority_of(target: &str) -> Option<&str> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    // Drop userinfo.
    let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    (!auth.is_empty()).then_some(auth)
}

struct PendingReq {
    request: Request,
    /// Head size on the wire, charged to the pending budget.
    size: usize,
    method: MethodKind,
    /// This request paused the request side (CONNECT / Upgrade).
    pauses: bool,
}

enum Queued {
    Req(PendingReq),
    /// An unknown number of requests was lost here.
    Lost,
}

/// Shared state the per-connection code needs.
struct Ctx<'a, S> {
    sink: &'a mut S,
    stats: &'a mut HttpStats,
    limits: &'a Limits,
    buffered: &'a mut usize,
    pending: &'a mut usize,
    req_cfg: &'a httparse::ParserConfig,
    resp_cfg: &'a httparse::ParserConfig,
    h2_limits: &'a H2Limits,
    spare: &'a mut SpareHeaders,
}

impl<S: ExchangeSink> Ctx<'_, S> {
    fn error(&mut self, kind: &'static str) {
        self.stats.parse_error(Protocol::Http1, kind);
    }

    /// The view the HTTP/2 parser gets.
    fn h2(&mut self) -> h2::Out<'_, S> {
        h2::Out {
            sink: &mut *self.sink,
            stats: &mut *self.stats,
            limits: self.h2_limits,
            buffered: &mut *self.buffered,
            budget: self.limits.max_buffered_total,
            pending: &mut *self.pending,
            pending_budget: self.limits.max_pending_total,
        }
    }

    fn emit(&mut self, conn: &Arc<ConnectionMeta>, request: Request, response: Option<Response>) {
        self.stats.exchanges[0] += 1;
        if response.is_none() {
            self.stats.unanswered += 1;
        }
        let mut ex = Exchange {
            conn: conn.clone(),
            protocol: Protocol::Http1,
            request,
            response,
        };
        self.sink.on_exchange(&mut ex);
        self.spare.give_exchange(ex);
    }
}

/// One connection's HTTP/1 state.
struct Conn {
    meta: Arc<ConnectionMeta>,
    /// No longer parsed (upgrade, tunnel, other protocol, overflow).
    stopped: bool,
    /// The protocol has been decided from the client's first bytes.
    proto_decided: bool,
    sides: [Side; 2],
    pending: VecDeque<Queued>,
    /// Set once the connection speaks HTTP/2: it gets every later byte.
    h2: Option<Box<H2Conn>>,
}

impl Conn {
    fn new(meta: Arc<ConnectionMeta>) -> Self {
        Conn {
            meta,
            stopped: false,
            proto_decided: false,
            sides: [Side::new(), Side::new()],
            pending: VecDeque::new(),
            h2: None,
        }
    }

    fn data<S: ExchangeSink>(
        &mut self,
        kind: usize,
        ts: Timestamp,
        mut data: &[u8],
        ctx: &mut Ctx<'_, S>,
    ) {
        if kind == RESP && self.hold_server_preface(ts, data, ctx) {
            return;
        }
        while !data.is_empty() && !self.stopped {
            if let Some(h2) = self.h2.as_mut() {
                // Also reached mid-event, when a `101` to h2c was just parsed.
                h2.data(kind, ts, data, &mut ctx.h2());
                return;
            }
            match self.sides[kind].state {
                State::Head => {
                    let n = self.head_step(kind, ts, data, ctx);
                    data = &data[n.min(data.len())..];
                }
                State::Body(rem) => {
                    let t = rem.min(data.len() as u64);
                    data = &data[t as usize..];
                    if rem == t {
                        self.message_done(kind);
                    } else {
                        self.sides[kind].state = State::Body(rem - t);
                    }
                }
                State::Chunked(mut ch) => match ch.feed(data) {
                    Ok((n, done)) => {
                        data = &data[n..];
                        if done {
                            self.message_done(kind);
                        } else {
                            self.sides[kind].state = State::Chunked(ch);
                        }
                    }
                    Err(()) => {
                        ctx.error("invalid_chunk");
                        self.lose_sync(kind, ts, ctx);
                    }
                },
                State::UntilClose => data = &[],
                State::Paused => {
                    self.sides[kind].paused_bytes += data.len() as u64;
                    data = &[];
                }
                State::Resync => match self.sides[kind].scan_for_start(kind, data) {
                    Scan::At(i) => {
                        ctx.error("resync");
                        self.sides[kind].state = State::Head;
                        data = &data[i..];
                    }
                    Scan::InCarry => {
                        ctx.error("resync");
                        let side = &mut self.sides[kind];
                        let carry = side.carry;
                        let cl = side.carry_len;
                        side.carry_len = 0;
                        side.state = State::Head;
                        side.head_ts = ts;
                        if side.append(&carry[..cl], ctx.buffered, ctx.limits.max_buffered_total) {
                            side.scan.find(&carry[..cl]);
                        } else {
                            ctx.error("buffer_budget");
                            self.lose_sync(kind, ts, ctx);
                        }
                    }
                    Scan::NotFound => data = &[],
                },
            }
        }
    }

    /// Parses (part of) a head from `data`; returns the bytes consumed.
    fn head_step<S: ExchangeSink>(
        &mut self,
        kind: usize,
        ts: Timestamp,
        data: &[u8],
        ctx: &mut Ctx<'_, S>,
    ) -> usize {
        if kind == REQ && !self.proto_decided {
            let side = &self.sides[REQ];
            let verdict = if side.buf.is_empty() {
                classify_preface(data)
            } else {
                let mut tmp = [0u8; 16];
                let nb = side.buf.len().min(16);
                tmp[..nb].copy_from_slice(&side.buf[..nb]);
                let nd = data.len().min(16 - nb);
                tmp[nb..nb + nd].copy_from_slice(&data[..nd]);
                classify_preface(&tmp[..nb + nd])
            };
            match verdict {
                Preface::Http2 => {
                    // The bytes held while undecided are the preface's start;
                    // server bytes held are its SETTINGS (sent concurrently).
                    let held = std::mem::take(&mut self.sides[REQ].buf);
                    let held_resp = std::mem::take(&mut self.sides[RESP].buf);
                    let held_resp_ts = self.sides[RESP].head_ts;
                    *ctx.buffered -= held.len() + held_resp.len();
                    let mut h2 = self.on_http2_preface(None, true, ctx);
                    let mut out = ctx.h2();
                    h2.data(h2::REQ, ts, &held, &mut out);
                    h2.data(h2::REQ, ts, data, &mut out);
                    h2.data(h2::RESP, held_resp_ts, &held_resp, &mut out);
                    self.h2 = Some(h2);
                    return data.len();
                }
                Preface::Tls => {
                    ctx.error("not_http");
                    self.stop(ctx);
                    return data.len();
                }
                Preface::Http1 => {
                    // Neither a preface nor a request line, but HTTP/2
                    // frames: a connection joined mid-stream.
                    if self.sides[REQ].buf.is_empty()
                        && classify_start(REQ, data) == StartMatch::No
                        && h2::find_frames(data).is_some()
                    {
                        self.proto_decided = true;
                        let held_resp = std::mem::take(&mut self.sides[RESP].buf);
                        *ctx.buffered -= held_resp.len();
                        let mut out = ctx.h2();
                        let mut h2 = Box::new(H2Conn::midstream(self.meta.clone(), &mut out));
                        h2.data(h2::REQ, ts, data, &mut out);
                        h2.data(h2::RESP, ts, &held_resp, &mut out);
                        self.h2 = Some(h2);
                        return data.len();
                    }
                    self.proto_decided = true;
                    // Server bytes held as a possible HTTP/2 server preface
                    // are parsed as what they are, in their original order.
                    let resp = &mut self.sides[RESP];
                    if !resp.buf.is_empty() {
                        let held = std::mem::take(&mut resp.buf);
                        *ctx.buffered -= held.len();
                        let held_ts = resp.head_ts;
                        self.data(RESP, held_ts, &held, ctx);
                    }
                    if self.stopped {
                        return data.len();
                    }
                }
                Preface::Undecided => {
                    // Could still become the HTTP/2 preface: hold the bytes
                    // (fewer than 14) without parsing them as HTTP/1.
                    let side = &mut self.sides[REQ];
                    if side.buf.is_empty() {
                        side.head_ts = ts;
                    }
                    if !side.append(data, ctx.buffered, ctx.limits.max_buffered_total) {
                        ctx.error("buffer_budget");
                        self.lose_sync(REQ, ts, ctx);
                    }
                    return data.len();
                }
            }
        }
        let limits = ctx.limits;
        let side = &mut self.sides[kind];
        if side.buf.is_empty() {
            // Fast path: the whole head in this event, parsed in place.
            side.head_ts = ts;
            match parse_head(kind, data, ts, ctx) {
                Outcome::Complete(n, head) => {
                    self.on_head(head, ts, ctx);
                    n
                }
                Outcome::Partial => {
                    if data.len() >= limits.max_head_bytes {
                        ctx.error("head_too_large");
                        self.lose_sync(kind, ts, ctx);
                    } else if side.append(data, ctx.buffered, limits.max_buffered_total) {
                        side.scan = HeadScan::default();
                        side.scan.find(data);
                    } else {
                        ctx.error("buffer_budget");
                        self.lose_sync(kind, ts, ctx);
                    }
                    data.len()
                }
                Outcome::Error(what) => {
                    ctx.error(what);
                    self.lose_sync(kind, ts, ctx);
                    1
                }
            }
        } else {
            // Slow path: accumulate until the blank line, then parse once.
            let (k, found) = match side.scan.find(data) {
                Some(k) => (k, true),
                None => (data.len(), false),
            };
            if side.buf.len() + k > limits.max_head_bytes {
                ctx.error("head_too_large");
                self.lose_sync(kind, ts, ctx);
                return k;
            }
            if !side.append(&data[..k], ctx.buffered, limits.max_buffered_total) {
                ctx.error("buffer_budget");
                self.lose_sync(kind, ts, ctx);
                return k;
            }
            if !found {
                return k;
            }
            let head_ts = side.head_ts;
            let buf = std::mem::take(&mut side.buf);
            let outcome = parse_head(kind, &buf, head_ts, ctx);
            let side = &mut self.sides[kind];
            side.buf = buf;
            match outcome {
                Outcome::Complete(n, head) => {
                    let leftover = side.buf.len().saturating_sub(n);
                    side.clear_buf(ctx.buffered);
                    self.on_head(head, head_ts, ctx);
                    // Bytes after the head (if httparse ended it earlier than
                    // the scanner) are parsed again as what follows.
                    k.saturating_sub(leftover)
                }
                Outcome::Partial => k,
                Outcome::Error(what) => {
                    ctx.error(what);
                    self.lose_sync(kind, ts, ctx);
                    k
                }
            }
        }
    }

    /// Server bytes before the client's first bytes decided the protocol:
    /// an HTTP/2 server may send its SETTINGS as soon as the connection
    /// (or TLS session) is up, before the client preface is seen. Bytes
    /// that are (or may become) a SETTINGS frame header are held (bounded
    /// by the head limits) until the client decides; anything else is
    /// parsed as HTTP/1 right away. Returns whether `data` was held.
    fn hold_server_preface<S: ExchangeSink>(
        &mut self,
        ts: Timestamp,
        data: &[u8],
        ctx: &mut Ctx<'_, S>,
    ) -> bool {
        let side = &mut self.sides[RESP];
        if self.proto_decided || self.h2.is_some() || self.stopped || side.state != State::Head {
            return false;
        }
        let held = side.buf.len();
        let looks_h2 = (0..9.min(held + data.len())).all(|i| {
            let b = if i < held {
                side.buf[i]
            } else {
                data[i - held]
            };
            match i {
                0 => b == 0,    // length < 64 KiB
                1 | 2 => true,  // length
                3 => b == 0x04, // SETTINGS
                4 => b & !0x01 == 0,
                _ => b == 0, // stream 0
            }
        });
        if !looks_h2 {
            return false;
        }
        if held + data.len() > ctx.limits.max_head_bytes
            || !side.append(data, ctx.buffered, ctx.limits.max_buffered_total)
        {
            // Not a plausible preface any more: parse it as HTTP/1.
            return false;
        }
        if held == 0 {
            side.head_ts = ts;
        }
        true
    }

    /// The decision point for HTTP/2 (prior knowledge, or `h2c` upgrade of
    /// `upgraded`): HTTP/1 parsing ends and an HTTP/2 parser takes over.
    /// `client_synced` is false when client bytes after the upgrade request
    /// were already consumed (or lost) as HTTP/1.
    fn on_http2_preface<S: ExchangeSink>(
        &mut self,
        upgraded: Option<Request>,
        client_synced: bool,
        ctx: &mut Ctx<'_, S>,
    ) -> Box<H2Conn> {
        // Requests queued before the switch cannot be answered any more
        // (there are none in a well-formed upgrade).
        self.flush_pending(ctx);
        for side in &mut self.sides {
            side.clear_buf(ctx.buffered);
        }
        Box::new(H2Conn::new(
            self.meta.clone(),
            ctx.h2_limits,
            upgraded,
            client_synced,
        ))
    }

    fn on_head<S: ExchangeSink>(&mut self, head: Head, ts: Timestamp, ctx: &mut Ctx<'_, S>) {
        match head {
            Head::Request {
                request,
                method,
                framing,
                upgrade,
                size,
            } => {
                if self.pending.len() >= ctx.limits.max_pipeline {
                    ctx.error("pipeline_overflow");
                    self.stop(ctx);
                    ctx.emit(&self.meta.clone(), request, None);
                    return;
                }
                if *ctx.pending + size > ctx.limits.max_pending_total {
                    ctx.error("pending_budget");
                    self.stop(ctx);
                    ctx.emit(&self.meta.clone(), request, None);
                    return;
                }
                *ctx.pending += size;
                let pauses = method == MethodKind::Connect || upgrade;
                let side = &mut self.sides[REQ];
                side.pause_after_body = pauses;
                self.pending.push_back(Queued::Req(PendingReq {
                    request,
                    size,
                    method,
                    pauses,
                }));
                match framing {
                    ReqFraming::Length(0) => self.message_done(REQ),
                    ReqFraming::Length(n) => self.sides[REQ].state = State::Body(n),
                    ReqFraming::Chunked => self.sides[REQ].state = State::Chunked(Chunk::START),
                    ReqFraming::Invalid => {
                        ctx.error("invalid_framing");
                        self.lose_sync(REQ, ts, ctx);
                    }
                }
            }
            Head::Response { response, body } => self.on_response(response, body, ts, ctx),
        }
    }

    fn on_response<S: ExchangeSink>(
        &mut self,
        response: Response,
        body: BodyInfo,
        ts: Timestamp,
        ctx: &mut Ctx<'_, S>,
    ) {
        let status = response.status;
        if (100..200).contains(&status) && status != 101 {
            // Interim response: the final one is still to come.
            self.sides[RESP].state = State::Head;
            return;
        }
        let paired = self.pair(ts, ctx);
        let method = paired.as_ref().map_or(MethodKind::Other, |p| p.method);
        let pauses = paired.as_ref().is_some_and(|p| p.pauses);
        let meta = self.meta.clone();
        if status == 101 {
            let h2c = response
                .headers
                .get("upgrade")
                .is_some_and(|u| trim(u).eq_ignore_ascii_case(b"h2c"));
            if h2c {
                // HTTP/2 over cleartext by upgrade: the same decision point
                // as the prior-knowledge preface. The upgrade request is
                // answered by the first HTTP/2 response on stream 1.
                let req = &self.sides[REQ];
                let client_synced = req.state == State::Paused && req.paused_bytes == 0;
                let h2 = self.on_http2_preface(paired.map(|p| p.request), client_synced, ctx);
                self.h2 = Some(h2);
            } else {
                if let Some(p) = paired {
                    ctx.emit(&meta, p.request, Some(response));
                }
                ctx.error("upgrade");
                self.stop(ctx);
            }
            return;
        }
        if method == MethodKind::Connect && (200..300).contains(&status) {
            if let Some(p) = paired {
                ctx.emit(&meta, p.request, Some(response));
            }
            ctx.error("connect");
            self.stop(ctx);
            return;
        }
        if pauses {
            // The server refused the tunnel / upgrade: HTTP/1 continues.
            let req = &mut self.sides[REQ];
            req.pause_after_body = false;
            if req.state == State::Paused {
                req.state = if req.paused_bytes == 0 {
                    State::Head
                } else {
                    State::Resync
                };
            }
            req.paused_bytes = 0;
        }
        let next = if method == MethodKind::Head || status == 204 || status == 304 {
            Some(State::Head)
        } else if body.te_present {
            Some(if body.chunked_last {
                State::Chunked(Chunk::START)
            } else {
                State::UntilClose
            })
        } else {
            match body.content_length {
                Some(Ok(0)) => Some(State::Head),
                Some(Ok(n)) => Some(State::Body(n)),
                Some(Err(())) => None,
                None => Some(State::UntilClose),
            }
        };
        if let Some(p) = paired {
            ctx.emit(&meta, p.request, Some(response));
        }
        match next {
            Some(s) => self.sides[RESP].state = s,
            None => {
                ctx.error("invalid_content_length");
                self.lose_sync(RESP, ts, ctx);
            }
        }
    }

    /// The request a final response answers, if it can be known.
    fn pair<S: ExchangeSink>(&mut self, ts: Timestamp, ctx: &mut Ctx<'_, S>) -> Option<PendingReq> {
        loop {
            match self.pending.front() {
                None => {
                    ctx.stats.orphan_responses += 1;
                    return None;
                }
                Some(Queued::Req(_)) => {
                    return match self.pop_pending(ctx.pending) {
                        Some(Queued::Req(p)) => Some(p),
                        _ => None,
                    };
                }
                Some(Queued::Lost) => match self.pending.get(1) {
                    // Sent before this response: the lost requests were
                    // answered before it (or never), so it answers this one.
                    Some(Queued::Req(r)) if r.request.ts <= ts => {
                        self.pop_pending(ctx.pending);
                    }
                    _ => {
                        ctx.stats.orphan_responses += 1;
                        return None;
                    }
                },
            }
        }
    }

    /// Removes the oldest queue entry, releasing its budget.
    fn pop_pending(&mut self, pending_bytes: &mut usize) -> Option<Queued> {
        let q = self.pending.pop_front();
        if let Some(Queued::Req(p)) = &q {
            *pending_bytes -= p.size;
        }
        q
    }

    fn message_done(&mut self, kind: usize) {
        let side = &mut self.sides[kind];
        side.state = if kind == REQ && side.pause_after_body {
            State::Paused
        } else {
            State::Head
        };
        side.pause_after_body = false;
    }

    /// Framing of one direction is lost at time `ts`.
    fn lose_sync<S: ExchangeSink>(&mut self, kind: usize, ts: Timestamp, ctx: &mut Ctx<'_, S>) {
        let side = &mut self.sides[kind];
        side.clear_buf(ctx.buffered);
        side.state = State::Resync;
        side.carry_len = 0;
        side.pause_after_body = false;
        if kind == REQ {
            if !matches!(self.pending.back(), Some(Queued::Lost)) {
                self.pending.push_back(Queued::Lost);
            }
        } else {
            // Responses up to here may be lost: do not pair them with
            // requests they might not answer.
            let meta = self.meta.clone();
            while let Some(front) = self.pending.front() {
                match front {
                    Queued::Lost => {
                        self.pop_pending(ctx.pending);
                    }
                    Queued::Req(r) if r.request.ts <= ts => {
                        if let Some(Queued::Req(p)) = self.pop_pending(ctx.pending) {
                            ctx.emit(&meta, p.request, None);
                        }
                    }
                    Queued::Req(_) => break,
                }
            }
        }
    }

    fn gap<S: ExchangeSink>(&mut self, kind: usize, len: u64, ts: Timestamp, ctx: &mut Ctx<'_, S>) {
        if self.stopped {
            return;
        }
        if let Some(h2) = self.h2.as_mut() {
            return h2.gap(kind, len, &mut ctx.h2());
        }
        let side = &mut self.sides[kind];
        match side.state {
            State::Body(rem) if len < rem => side.state = State::Body(rem - len),
            State::Body(rem) if len == rem => self.message_done(kind),
            State::Chunked(Chunk::Data(n)) if len < n => {
                side.state = State::Chunked(Chunk::Data(n - len))
            }
            State::Chunked(Chunk::Data(n)) if len == n => {
                side.state = State::Chunked(Chunk::DataCr)
            }
            State::UntilClose => {}
            State::Paused => side.paused_bytes += len,
            State::Resync => self.lose_sync(kind, ts, ctx),
            _ => {
                ctx.error("gap");
                self.lose_sync(kind, ts, ctx);
            }
        }
    }

    /// Stops parsing: outstanding requests are emitted unanswered.
    fn stop<S: ExchangeSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        self.stopped = true;
        self.flush_pending(ctx);
        for side in &mut self.sides {
            side.clear_buf(ctx.buffered);
        }
    }

    fn flush_pending<S: ExchangeSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        let meta = self.meta.clone();
        while let Some(q) = self.pop_pending(ctx.pending) {
            if let Queued::Req(p) = q {
                ctx.emit(&meta, p.request, None);
            }
        }
    }

    fn close<S: ExchangeSink>(&mut self, ctx: &mut Ctx<'_, S>) {
        if let Some(mut h2) = self.h2.take() {
            h2.close(&mut ctx.h2());
        }
        if !self.stopped {
            for side in &self.sides {
                if side.state == State::Head && !side.buf.is_empty() {
                    ctx.error("truncated_head");
                }
            }
        }
        self.stop(ctx);
    }
}

fn parse_head<S>(kind: usize, buf: &[u8], ts: Timestamp, ctx: &mut Ctx<'_, S>) -> Outcome {
    let max = ctx.limits.max_headers.clamp(1, MAX_HEADERS_CAP);
    if kind == REQ {
        parse_request(ctx.req_cfg, buf, ts, max, ctx.spare)
    } else {
        parse_response(ctx.resp_cfg, buf, ts, max, ctx.spare)
    }
}

/// The HTTP stage: stream events in, exchanges out. Connections start as
/// HTTP/1 and switch to HTTP/2 on its connection preface or an `h2c`
/// upgrade.
pub struct H1Stage<S: ExchangeSink> {
    sink: S,
    limits: Limits,
    conns: LruTable<ConnectionId, Conn>,
    stats: HttpStats,
    buffered: usize,
    pending: usize,
    req_cfg: httparse::ParserConfig,
    resp_cfg: httparse::ParserConfig,
    h2_limits: H2Limits,
    /// Header buffers of emitted exchanges, reused by the next heads.
    spare: SpareHeaders,
}

impl<S: ExchangeSink> H1Stage<S> {
    /// A stage handing exchanges to `sink`.
    pub fn new(sink: S, limits: Limits) -> Self {
        let mut req_cfg = httparse::ParserConfig::default();
        req_cfg.allow_multiple_spaces_in_request_line_delimiters(true);
        let mut resp_cfg = httparse::ParserConfig::default();
        // Servers in the wild are sloppier than clients; a passive observer
        // must follow whatever the real client accepted.
        resp_cfg
            .allow_spaces_after_header_name_in_responses(true)
            .allow_obsolete_multiline_headers_in_responses(true)
            .allow_multiple_spaces_in_response_status_delimiters(true);
        H1Stage {
            sink,
            conns: LruTable::new(limits.max_connections),
            limits,
            stats: HttpStats::default(),
            buffered: 0,
            pending: 0,
            req_cfg,
            resp_cfg,
            h2_limits: H2Limits::default(),
            spare: SpareHeaders::default(),
        }
    }

    /// Replaces the bounds of the HTTP/2 parser (connections that turn out
    /// to speak HTTP/2 are parsed by [`crate::h2`] inside this stage).
    pub fn with_h2_limits(mut self, limits: H2Limits) -> Self {
        self.h2_limits = limits;
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> &HttpStats {
        &self.stats
    }

    /// The exchange sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The exchange sink, mutably.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Consumes the stage, returning the sink. Call [`H1Stage::finish`]
    /// first if connections may still be open.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Connections currently tracked.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Bytes of partial heads currently buffered.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Bytes (head sizes) of requests currently waiting for a response.
    pub fn pending_bytes(&self) -> usize {
        self.pending
    }

    /// Ends every connection as if closed (requests still waiting are
    /// emitted unanswered). Stream sources close their connections
    /// themselves; this is for a source that stops without doing so.
    pub fn finish(&mut self) {
        while let Some((_, mut c)) = self.conns.pop_lru() {
            let mut ctx = Ctx {
                sink: &mut self.sink,
                stats: &mut self.stats,
                limits: &self.limits,
                buffered: &mut self.buffered,
                pending: &mut self.pending,
                req_cfg: &self.req_cfg,
                resp_cfg: &self.resp_cfg,
                h2_limits: &self.h2_limits,
                spare: &mut self.spare,
            };
            c.close(&mut ctx);
        }
    }

    fn open(&mut self, meta: &ConnectionMeta) {
        let mut ctx = Ctx {
            sink: &mut self.sink,
            stats: &mut self.stats,
            limits: &self.limits,
            buffered: &mut self.buffered,
            pending: &mut self.pending,
            req_cfg: &self.req_cfg,
            resp_cfg: &self.resp_cfg,
            h2_limits: &self.h2_limits,
            spare: &mut self.spare,
        };
        if let Some(h) = self.conns.find(&meta.id)
            && let Some((_, mut old)) = self.conns.remove(h)
        {
            old.close(&mut ctx);
        }
        if self.conns.is_full()
            && let Some((_, mut victim)) = self.conns.pop_lru()
        {
            ctx.error("conn_evicted");
            victim.close(&mut ctx);
        }
        // The table has room and no entry for this id.
        let _ = self
            .conns
            .insert(meta.id, Conn::new(Arc::new(meta.clone())));
    }
}

impl<S: ExchangeSink> StreamSink for H1Stage<S> {
    fn body_remaining(&mut self, conn: ConnectionId, dir: Direction) -> Option<u64> {
        let h = self.conns.find(&conn)?;
        let c = self.conns.get_mut(h)?;
        if c.stopped || c.h2.is_some() {
            return None;
        }
        let side = match dir {
            Direction::ToServer => REQ,
            Direction::ToClient => RESP,
        };
        // Exactly the states `gap` subtracts from without losing framing.
        match c.sides[side].state {
            State::Body(rem) => Some(rem),
            State::Chunked(Chunk::Data(n)) => Some(n),
            State::UntilClose => Some(sessionwatch_streams::UNTIL_CLOSE),
            _ => None,
        }
    }

    fn on_event(&mut self, event: StreamEvent<'_>) {
        let (conn, kind, ts, bytes, gap) = match event {
            StreamEvent::Open(meta) => return self.open(meta),
            StreamEvent::Data {
                conn,
                dir,
                ts,
                bytes,
            } => (conn, dir, ts, bytes, 0),
            StreamEvent::Gap { conn, dir, ts, len } => (conn, dir, ts, &[][..], len),
            StreamEvent::Close { conn, .. } => {
                if let Some(h) = self.conns.find(&conn)
                    && let Some((_, mut c)) = self.conns.remove(h)
                {
                    let mut ctx = Ctx {
                        sink: &mut self.sink,
                        stats: &mut self.stats,
                        limits: &self.limits,
                        buffered: &mut self.buffered,
                        pending: &mut self.pending,
                        req_cfg: &self.req_cfg,
                        resp_cfg: &self.resp_cfg,
                        h2_limits: &self.h2_limits,
                        spare: &mut self.spare,
                    };
                    c.close(&mut ctx);
                }
                return;
            }
        };
        let Some(h) = self.conns.find(&conn) else {
            self.stats.parse_error(Protocol::Http1, "no_open");
            return;
        };
        self.conns.touch(h);
        let mut ctx = Ctx {
            sink: &mut self.sink,
            stats: &mut self.stats,
            limits: &self.limits,
            buffered: &mut self.buffered,
            pending: &mut self.pending,
            req_cfg: &self.req_cfg,
            resp_cfg: &self.resp_cfg,
            h2_limits: &self.h2_limits,
            spare: &mut self.spare,
        };
        let Some(c) = self.conns.get_mut(h) else {
            return;
        };
        let side = match kind {
            Direction::ToServer => REQ,
            Direction::ToClient => RESP,
        };
        if gap > 0 {
            c.gap(side, gap, ts, &mut ctx);
        } else {
            c.data(side, ts, bytes, &mut ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_chunks(parts: &[&[u8]]) -> Result<(usize, bool), ()> {
        let mut c = Chunk::START;
        let mut total = 0;
        for p in parts {
            let (n, done) = c.feed(p)?;
            total += n;
            if done {
                return Ok((total, true));
            }
        }
        Ok((total, false))
    }

    /// The byte-at-a-time state machine [`HeadScan::find`] must agree
    /// with, piece by piece.
    fn reference_find(scan: &mut HeadScan, data: &[u8]) -> Option<usize> {
        for (i, &b) in data.iter().enumerate() {
            match b {
                b'\n' => {
                    if scan.content && (scan.lf || scan.lf_cr) {
                        *scan = HeadScan::default();
                        return Some(i + 1);
                    }
                    scan.lf = true;
                    scan.lf_cr = false;
                }
                b'\r' => {
                    scan.lf_cr = scan.lf;
                    scan.lf = false;
                }
                _ => {
                    scan.content = true;
                    scan.lf = false;
                    scan.lf_cr = false;
                }
            }
        }
        None
    }

    #[test]
    fn head_scan_agrees_with_the_byte_state_machine() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config {
            cases: 8192,
            ..Config::default()
        });
        let pieces = proptest::collection::vec("[\\r\\na]{0,6}", 1..8);
        let result = runner.run(&pieces, |pieces| {
            let (mut fast, mut slow) = (HeadScan::default(), HeadScan::default());
            for p in &pieces {
                let got = fast.find(p.as_bytes());
                prop_assert_eq!(got, reference_find(&mut slow, p.as_bytes()), "{:?}", pieces);
                prop_assert_eq!(fast, slow, "{:?}", pieces);
                if got.is_some() {
                    break;
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    #[test]
    fn chunked_framing_across_splits() {
        let body = b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for cut in 0..body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(
                feed_chunks(&[a, b]),
                Ok((body.len() - 4, true)),
                "cut at {cut}"
            );
        }
        assert_eq!(feed_chunks(&[b"0\r\n\r\n"]), Ok((5, true)));
        assert_eq!(feed_chunks(&[b"3\n", b"abc\n0\n\n"]), Ok((9, true)));
        assert!(feed_chunks(&[b"zz\r\n"]).is_err());
        assert!(feed_chunks(&[b"\r\n"]).is_err());
        assert!(feed_chunks(&[b"11111111111111111\r\n"]).is_err());
        assert!(feed_chunks(&[b"3\r\nabcX"]).is_err());
    }

    #[test]
    fn head_scan_finds_blank_line() {
        let head = b"\r\nGET / HTTP/1.1\r\nA: b\r\n\r\nBODY";
        for cut in 0..head.len() {
            let mut s = HeadScan::default();
            let (a, b) = head.split_at(cut);
            let found = s.find(a).or_else(|| s.find(b).map(|k| k + a.len()));
            assert_eq!(found, Some(head.len() - 4), "cut at {cut}");
        }
        let mut s = HeadScan::default();
        assert_eq!(s.find(b"HTTP/1.0 200 OK\n\nx"), Some(17));
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_content_length(b"42"), Ok(42));
        assert_eq!(parse_content_length(b" 7 , 7"), Ok(7));
        assert_eq!(parse_content_length(b"7, 8"), Err(()));
        assert_eq!(parse_content_length(b"-1"), Err(()));
        assert_eq!(parse_content_length(b""), Err(()));
        assert_eq!(parse_content_length(b"99999999999999999999"), Err(()));
    }

    #[test]
    fn preface_classification() {
        assert_eq!(
            classify_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Preface::Http2
        );
        assert_eq!(classify_preface(b"PRI * HT"), Preface::Undecided);
        assert_eq!(classify_preface(b"GET / HTTP/1.1\r\n"), Preface::Http1);
        assert_eq!(classify_preface(b"\x16\x03\x01\x02\x00"), Preface::Tls);
    }

    #[test]
    fn start_classification() {
        assert_eq!(classify_start(REQ, b"GET /"), StartMatch::Match);
        assert_eq!(classify_start(REQ, b"PO"), StartMatch::Prefix);
        assert_eq!(classify_start(REQ, b"GETX"), StartMatch::No);
        assert_eq!(classify_start(RESP, b"HTTP/1.1 200"), StartMatch::Match);
        assert_eq!(classify_start(RESP, b"HTT"), StartMatch::Prefix);
        assert_eq!(classify_start(RESP, b"HTTP/2"), StartMatch::No);
    }

    #[test]
    fn authority_from_absolute_form() {
        assert_eq!(
            authority_of("http://user@example.com:8080/x?y"),
            Some("example.com:8080")
        );
        assert_eq!(authority_of("https://h"), Some("h"));
        assert_eq!(authority_of("/path"), None);
    }
}
