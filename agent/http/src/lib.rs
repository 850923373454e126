//! HTTP exchanges from ordered byte streams.
//!
//! Input: [`sessionwatch_streams::StreamEvent`]s. Output: [`Exchange`]s — a
//! request head paired with its response head — handed to an
//! [`ExchangeSink`]. Bodies are skipped, never stored. HTTP/1.x lives in
//! [`h1`], HTTP/2 in [`h2`] (entered from the HTTP/1 stage when a
//! connection turns out to speak HTTP/2); both produce the same types.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::sync::Arc;

use sessionwatch_streams::{ConnectionMeta, Timestamp};

pub mod h1;
pub mod h2;

/// Protocol an exchange was carried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 (TLS with ALPN h2, or h2c with prior knowledge).
    Http2,
}

impl Protocol {
    /// Stable label value (`protocol` label of the metrics).
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// The header fields of a message head, in wire order.
///
/// Names are lower-cased ASCII; values are raw bytes (header values are not
/// guaranteed UTF-8, and cookies must round-trip), without surrounding
/// whitespace. Every value of a head lives in one buffer, back to back, so a
/// parsed head costs two allocations however many fields it has, rather
/// than one per value; well-known names (see [`header_name`]) are borrowed
/// from a static table.
///
/// Bounded by the parser (see [`h1::Limits`]): a head with more fields or
/// bigger values than the limits is counted as a parse error, not stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every value, back to back, in field order.
    values: Vec<u8>,
    /// Name of each field and where its value ends in `values` (it starts
    /// where the previous one ends).
    fields: Vec<(Cow<'static, str>, usize)>,
}

impl Headers {
    /// Empty, with room for `fields` fields and `value_bytes` bytes of values.
    pub fn with_capacity(fields: usize, value_bytes: usize) -> Headers {
        Headers {
            values: Vec::with_capacity(value_bytes),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// No field at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Every field as `(lower-case name, value)`, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let mut start = 0;
        self.fields.iter().map(move |(name, end)| {
            let value = self.values.get(start..*end).unwrap_or_default();
            start = *end;
            (&**name, value)
        })
    }

    /// First value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// First value of `name` as UTF-8 (lossy characters are rejected: `None`).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Appends a field; `name` is lower-cased (and interned when well known).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.push_named(header_name(name), value);
    }

    /// Appends a field whose name is already lower-case.
    pub(crate) fn push_named(&mut self, name: Cow<'static, str>, value: &[u8]) {
        self.values.extend_from_slice(value);
        self.fields.push((name, self.values.len()));
    }
}

/// A header name of at most 32 bytes as four little-endian words, zero
/// padded: names compare a word (eight bytes) at a time.
type NameWords = [u64; 4];

/// Lower-case header names common enough in requests and responses that
/// parsing every head would otherwise allocate a copy of each of them,
/// indexed by length, each with its [`NameWords`]: a lookup lower-cases the
/// raw name a word at a time and compares it with the few entries (at most
/// five) of its length, one word compare each for nearly every miss.
const WELL_KNOWN: [&[(&str, NameWords)]; 28] = [
    &[],
    &[],
    &[k("te")],
    &[k("age"), k("via")],
    &[k("date"), k("etag"), k("host"), k("vary")],
    &[k("range")],
    &[
        k("accept"),
        k("cookie"),
        k("origin"),
        k("pragma"),
        k("server"),
    ],
    &[k("expires"), k("referer"), k("upgrade")],
    &[k("location")],
    &[k("forwarded"), k("x-real-ip")],
    &[
        k("connection"),
        k("keep-alive"),
        k("set-cookie"),
        k("user-agent"),
    ],
    &[],
    &[k("x-csrf-token"), k("content-type"), k("x-xsrf-token")],
    &[
        k("authorization"),
        k("cache-control"),
        k("if-none-match"),
        k("accept-ranges"),
        k("last-modified"),
    ],
    &[
        k("content-length"),
        k("sec-fetch-dest"),
        k("sec-fetch-mode"),
        k("sec-fetch-site"),
        k("sec-fetch-user"),
    ],
    &[
        k("accept-encoding"),
        k("accept-language"),
        k("x-frame-options"),
        k("x-forwarded-for"),
    ],
    &[
        k("content-encoding"),
        k("x-requested-with"),
        k("x-forwarded-host"),
    ],
    &[
        k("x-forwarded-proto"),
        k("transfer-encoding"),
        k("if-modified-since"),
    ],
    &[],
    &[],
    &[],
    &[],
    &[k("x-content-type-options")],
    &[k("content-security-policy")],
    &[],
    &[
        k("upgrade-insecure-requests"),
        k("strict-transport-security"),
    ],
    &[],
    &[k("access-control-allow-origin")],
];

/// A table entry: the name and its words (computed at compile time).
const fn k(name: &'static str) -> (&'static str, NameWords) {
    let b = name.as_bytes();
    let mut words = [0u64; 4];
    let mut i = 0;
    while i < b.len() {
        words[i / 8] |= (b[i] as u64) << (8 * (i % 8));
        i += 1;
    }
    (name, words)
}

/// The lower-cased form of header name `raw`: a `'static` borrow when it is
/// a well-known name (compared ASCII case-insensitively, so `Content-Type`
/// and `content-type` both hit), an owned lower-case copy otherwise.
pub fn header_name(raw: &str) -> Cow<'static, str> {
    let candidates = WELL_KNOWN.get(raw.len()).copied().unwrap_or_default();
    if !candidates.is_empty() {
        // Every length with candidates is at most 27 bytes: the name fits.
        let mut buf = [0u8; 32];
        if let Some(dst) = buf.get_mut(..raw.len()) {
            dst.copy_from_slice(raw.as_bytes());
        }
        let mut words = [0u64; 4];
        for (w, chunk) in words.iter_mut().zip(buf.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(chunk);
            *w = ascii_lower_word(u64::from_le_bytes(le));
        }
        if let Some((name, _)) = candidates.iter().find(|(_, k)| *k == words) {
            return Cow::Borrowed(name);
        }
    }
    Cow::Owned(raw.to_ascii_lowercase())
}

/// `w` with each of its eight bytes that is an ASCII capital letter
/// lower-cased (0x20 added), every other byte unchanged: per byte, the
/// high bit of `x + (0x80 - 'A')` says `x >= 'A'` and that of
/// `x + (0x80 - 'Z' - 1)` says `x > 'Z'`, on the low seven bits so no
/// carry crosses bytes; bytes at or above 0x80 are masked out.
#[inline]
const fn ascii_lower_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = w & !HIGH;
    let at_least_a = low7 + ONES * (0x80 - b'A' as u64);
    let above_z = low7 + ONES * (0x80 - b'Z' as u64 - 1);
    let upper = at_least_a & !above_z & !w & HIGH;
    w | (upper >> 2)
}

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// When the first byte of the request head was seen.
    pub ts: Timestamp,
    /// Method, e.g. `POST`. (`String`s rather than boxed strings: the
    /// HTTP/1 stage reuses their buffers, see [`ExchangeSink`].)
    pub method: String,
    /// Request target as sent (origin-form path with query, or absolute-form).
    pub target: String,
    /// Host: the `Host` header (HTTP/1) or `:authority` (HTTP/2).
    pub host: Option<String>,
    /// Header fields (for HTTP/2: regular fields, pseudo-headers removed,
    /// cookie crumbs joined into one `cookie` field).
    pub headers: Headers,
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// When the first byte of the response head was seen.
    pub ts: Timestamp,
    /// Status code (final status; interim 1xx responses are skipped).
    pub status: u16,
    /// Header fields.
    pub headers: Headers,
}

/// A request and, when it arrived, its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The connection this exchange travelled on.
    pub conn: Arc<ConnectionMeta>,
    /// HTTP version family.
    pub protocol: Protocol,
    /// The request head.
    pub request: Request,
    /// The response head; `None` when the connection ended (or a gap hit)
    /// before a response could be paired.
    pub response: Option<Response>,
}

/// Consumer of exchanges (the session stage, or a test recorder).
pub trait ExchangeSink {
    /// Handles one completed exchange. The exchange is lent, not given: the
    /// HTTP stage reuses its buffers for the next heads it parses, so a
    /// parsed head costs no allocation in the steady state. A sink that
    /// keeps an exchange clones it. Mutable so that a sink can enrich it
    /// before passing it on (the pipeline adds the pod of a container).
    fn on_exchange(&mut self, exchange: &mut Exchange);
}

impl<S: ExchangeSink + ?Sized> ExchangeSink for &mut S {
    fn on_exchange(&mut self, exchange: &mut Exchange) {
        (**self).on_exchange(exchange)
    }
}

impl ExchangeSink for Vec<Exchange> {
    fn on_exchange(&mut self, exchange: &mut Exchange) {
        self.push(exchange.clone())
    }
}

/// Buffers of emitted exchanges, kept for the next heads: a head parsed
/// into a spare [`Headers`] reuses its two allocations, a request line its
/// method, target and host strings.
///
/// Bounded twice: at most [`SpareHeaders::MAX_SPARE`] spares of each kind,
/// and only spares whose buffers stayed small (one huge head does not pin
/// its buffer for the rest of the run).
#[derive(Debug, Default)]
pub(crate) struct SpareHeaders {
    spare: Vec<Headers>,
    strings: Vec<String>,
}

impl SpareHeaders {
    /// Most spares kept: a few pipelined requests and their responses.
    const MAX_SPARE: usize = 8;
    /// Largest value buffer kept (bytes); larger ones are freed.
    const MAX_VALUE_BYTES: usize = 8 * 1024;
    /// Largest field table kept (fields).
    const MAX_FIELDS: usize = 64;

    /// An empty [`Headers`] with room for `fields` fields and `value_bytes`
    /// bytes: a spare when there is one.
    pub(crate) fn take(&mut self, fields: usize, value_bytes: usize) -> Headers {
        match self.spare.pop() {
            Some(mut h) => {
                h.values.reserve(value_bytes);
                h.fields.reserve(fields);
                h
            }
            None => Headers::with_capacity(fields, value_bytes),
        }
    }

    /// Keeps `h`'s buffers (emptied) for a later [`SpareHeaders::take`],
    /// or frees them when the pool is full or they grew large.
    pub(crate) fn give(&mut self, mut h: Headers) {
        if self.spare.len() < Self::MAX_SPARE
            && h.values.capacity() <= Self::MAX_VALUE_BYTES
            && h.fields.capacity() <= Self::MAX_FIELDS
        {
            h.values.clear();
            h.fields.clear();
            self.spare.push(h);
        }
    }

    /// `text` in a spare string when there is one.
    pub(crate) fn string(&mut self, text: &str) -> String {
        match self.strings.pop() {
            Some(mut s) => {
                s.push_str(text);
                s
            }
            None => text.to_owned(),
        }
    }

    /// Keeps `s`'s buffer (emptied) for a later [`SpareHeaders::string`].
    fn give_string(&mut self, mut s: String) {
        if self.strings.len() < 3 * Self::MAX_SPARE && s.capacity() <= Self::MAX_VALUE_BYTES {
            s.clear();
            self.strings.push(s);
        }
    }

    /// Takes back the buffers of an exchange the sink has handled.
    pub(crate) fn give_exchange(&mut self, ex: Exchange) {
        let Request {
            method,
            target,
            host,
            headers,
            ..
        } = ex.request;
        self.give(headers);
        self.give_string(method);
        self.give_string(target);
        if let Some(h) = host {
            self.give_string(h);
        }
        if let Some(r) = ex.response {
            self.give(r.headers);
        }
    }
}

/// Counters of the HTTP stage, read by the exporter
/// (`sessionwatch_parse_errors_total{protocol,kind}`, exchanges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Exchanges emitted, per protocol: `[http1, http2]`.
    pub exchanges: [u64; 2],
    /// Parse errors by protocol and kind (`kind` is a stable, low-cardinality
    /// string such as `invalid_head`, `head_too_large`, `resync`).
    pub parse_errors: std::collections::BTreeMap<(&'static str, &'static str), u64>,
    /// Requests whose response never arrived.
    pub unanswered: u64,
    /// Responses with no request to pair with (capture joined mid-stream).
    pub orphan_responses: u64,
}

impl HttpStats {
    /// Counts one parse error.
    pub fn parse_error(&mut self, protocol: Protocol, kind: &'static str) {
        *self
            .parse_errors
            .entry((protocol.as_str(), kind))
            .or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_headers_are_emptied_reused_and_bounded() {
        let mut pool = SpareHeaders::default();
        let mut h = pool.take(2, 16);
        h.push("Cookie", b"sid=1");
        h.push("X-Odd", b"2");
        let values_at = h.values.as_ptr();
        pool.give(h);
        // The same buffers come back, empty.
        let h = pool.take(1, 4);
        assert!(h.is_empty() && h.values.is_empty());
        assert_eq!(h.values.as_ptr(), values_at);
        assert_eq!(h.get("cookie"), None);
        // A buffer that grew large is freed, not kept.
        let mut big = h;
        big.push("x-big", &vec![b'v'; SpareHeaders::MAX_VALUE_BYTES + 1]);
        pool.give(big);
        assert!(pool.spare.is_empty());
        // At most MAX_SPARE are kept.
        for _ in 0..SpareHeaders::MAX_SPARE + 3 {
            pool.give(Headers::with_capacity(4, 64));
        }
        assert_eq!(pool.spare.len(), SpareHeaders::MAX_SPARE);
        // Request-line strings: the text is the new one, the buffer the old.
        let first = pool.string("/a/long/target?with=query");
        let at = first.as_ptr();
        pool.give_string(first);
        let again = pool.string("GET");
        assert_eq!((again.as_str(), again.as_ptr()), ("GET", at));
        pool.give_string("x".repeat(SpareHeaders::MAX_VALUE_BYTES + 1));
        assert!(pool.strings.is_empty());
    }

    #[test]
    fn word_lower_casing_is_ascii_lower_casing_for_every_byte() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                // The byte at `pos`, neighbours that carry or borrow the most.
                let mut bytes = [0xffu8; 8];
                bytes[pos] = b;
                let got = ascii_lower_word(u64::from_le_bytes(bytes)).to_le_bytes();
                let want = bytes.map(|x| x.to_ascii_lowercase());
                assert_eq!(got, want, "byte {b:#04x} at {pos}");
                let mut bytes = [b'Z'; 8];
                bytes[pos] = b;
                let got = ascii_lower_word(u64::from_le_bytes(bytes)).to_le_bytes();
                assert_eq!(
                    got,
                    bytes.map(|x| x.to_ascii_lowercase()),
                    "byte {b:#04x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn header_names_are_lowercased_and_interned() {
        assert!(matches!(
            header_name("Content-Type"),
            Cow::Borrowed("content-type")
        ));
        assert!(matches!(header_name("COOKIE"), Cow::Borrowed("cookie")));
        assert!(
            matches!(header_name("X-Custom-Thing"), Cow::Owned(ref s) if s == "x-custom-thing")
        );
        for (len, names) in WELL_KNOWN.iter().enumerate() {
            for (k, _) in *names {
                assert_eq!(k.len(), len, "{k}");
                assert!(!k.bytes().any(|b| b.is_ascii_uppercase()), "{k}");
                assert!(
                    matches!(header_name(&k.to_ascii_uppercase()), Cow::Borrowed(b) if b == *k)
                );
            }
        }
        // Mixed case hits; a byte that only differs by 0x20 from a
        // non-letter (`-` vs CR, `0` vs DLE) or from a non-ASCII byte misses.
        for names in WELL_KNOWN {
            for (k, _) in names.iter() {
                let mixed: String = k
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                assert!(matches!(header_name(&mixed), Cow::Borrowed(b) if b == *k));
                for i in 0..k.len() {
                    let mut near = k.as_bytes().to_vec();
                    near[i] ^= 0x20;
                    if near[i].is_ascii_alphabetic() {
                        continue;
                    }
                    let near = String::from_utf8_lossy(&near).into_owned();
                    assert!(matches!(header_name(&near), Cow::Owned(_)), "{near:?}");
                }
            }
        }
        assert!(matches!(header_name(""), Cow::Owned(ref s) if s.is_empty()));
        assert!(matches!(header_name(&"x".repeat(200)), Cow::Owned(_)));
        let mut h = Headers::default();
        h.push("Set-Cookie", b"a=b");
        h.push("X-Odd", b"1");
        assert_eq!(h.get("set-cookie"), Some(&b"a=b"[..]));
        assert_eq!(h.get("x-odd"), Some(&b"1"[..]));
    }
}
