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
/// whitespace. Every value of a head lives in one buffer, so a parsed head
/// costs two allocations however many fields it has, rather than one per
/// value: an HTTP/1 head is copied into it whole, in one copy, and each
/// value is a range of that copy; values pushed one by one (HTTP/2) are
/// appended back to back. Well-known names (see [`header_name`]) are
/// borrowed from a static table.
///
/// Bounded by the parser (see [`h1::Limits`]): a head with more fields or
/// bigger values than the limits is counted as a parse error, not stored.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// The bytes the values are ranges of.
    values: Vec<u8>,
    /// Name of each field and where its value lies in `values`.
    fields: Vec<(Cow<'static, str>, u32, u32)>,
}

/// Equal when the fields are, in order: how the values are laid out in
/// the buffer (one copied head, or values back to back) does not matter.
impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

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
        self.fields
            .iter()
            .map(move |(name, start, end)| (&**name, self.value(*start, *end)))
    }

    /// First value of `name` (lower-case). Only names are compared on the
    /// way: the value slice is made for the match alone.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _, _)| **n == *name)
            .map(|(_, start, end)| self.value(*start, *end))
    }

    /// The value stored at `start..end`.
    fn value(&self, start: u32, end: u32) -> &[u8] {
        self.values
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// First value of `name` as UTF-8 (lossy characters are rejected: `None`).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _, _)| **n == *name)
            .map(|(_, start, end)| self.value(*start, *end))
    }

    /// Appends a field; `name` is lower-cased (and interned when well known).
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.push_named(header_name(name), value);
    }

    /// Appends a field whose name is already lower-case.
    pub(crate) fn push_named(&mut self, name: Cow<'static, str>, value: &[u8]) {
        let start = self.values.len() as u32;
        self.values.extend_from_slice(value);
        self.fields.push((name, start, self.values.len() as u32));
    }

    /// Copies a whole head into the (empty) value buffer, in one copy, for
    /// [`Headers::push_in_head`].
    pub(crate) fn copy_head(&mut self, head: &[u8]) {
        self.values.clear();
        self.values.extend_from_slice(head);
    }

    /// Appends a field whose value is `value`, a slice of the `head` given
    /// to [`Headers::copy_head`]: recorded as a range of the copy, not copied
    /// again. A value outside `head` (never from the parser) is appended.
    pub(crate) fn push_in_head(&mut self, name: Cow<'static, str>, head: &[u8], value: &[u8]) {
        // Offsets from the addresses: both slices are of the same buffer.
        let start = (value.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize);
        match start.checked_add(value.len()) {
            Some(end) if end <= head.len() && end <= self.values.len() => {
                self.fields.push((name, start as u32, end as u32));
            }
            _ => self.push_named(name, value),
        }
    }
}

/// A header name of at most 32 bytes as four little-endian words, zero
/// padded: names compare a word (eight bytes) at a time.
type NameWords = [u64; 4];

/// Lower-case header names common enough in requests and responses that
/// parsing every head would otherwise allocate a copy of each of them.
/// Found through [`NAME_SLOTS`]: one multiply picks the only candidate a
/// raw name can be, one compare of four words settles it.
const WELL_KNOWN: [&str; 51] = [
    "te",
    "age",
    "via",
    "date",
    "etag",
    "host",
    "vary",
    "range",
    "accept",
    "cookie",
    "origin",
    "pragma",
    "server",
    "expires",
    "referer",
    "upgrade",
    "location",
    "forwarded",
    "x-real-ip",
    "connection",
    "keep-alive",
    "set-cookie",
    "user-agent",
    "x-csrf-token",
    "content-type",
    "x-xsrf-token",
    "authorization",
    "cache-control",
    "if-none-match",
    "accept-ranges",
    "last-modified",
    "content-length",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "accept-encoding",
    "accept-language",
    "x-frame-options",
    "x-forwarded-for",
    "content-encoding",
    "x-requested-with",
    "x-forwarded-host",
    "x-forwarded-proto",
    "transfer-encoding",
    "if-modified-since",
    "x-content-type-options",
    "content-security-policy",
    "upgrade-insecure-requests",
    "strict-transport-security",
    "access-control-allow-origin",
];

/// The [`NameWords`] of each [`WELL_KNOWN`] name (computed at compile time).
const WELL_KNOWN_WORDS: [NameWords; WELL_KNOWN.len()] = {
    let mut out = [[0u64; 4]; WELL_KNOWN.len()];
    let mut i = 0;
    while i < WELL_KNOWN.len() {
        let b = WELL_KNOWN[i].as_bytes();
        assert!(b.len() <= 32, "well-known names fit in four words");
        let mut j = 0;
        while j < b.len() {
            assert!(
                !b[j].is_ascii_uppercase(),
                "well-known names are lower-case"
            );
            out[i][j / 8] |= (b[j] as u64) << (8 * (j % 8));
            j += 1;
        }
        i += 1;
    }
    out
};

/// No well-known name in this slot of [`NAME_SLOTS`].
const EMPTY_SLOT: u8 = u8::MAX;

/// A perfect hash of the [`WELL_KNOWN`] names: the multiplier of
/// [`slot_of`] and, per slot, the index of the only name that lands there.
/// Searched for at compile time (a few hundred multipliers are tried for
/// 51 names in 256 slots), so adding a name can never leave a collision:
/// the build fails instead of a lookup missing.
const NAME_SLOTS: (u64, [u8; 256]) = {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut tries = 0;
    loop {
        assert!(tries < 100_000, "no perfect hash for WELL_KNOWN");
        tries += 1;
        // SplitMix64 steps: odd multipliers with well-spread high bits.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let mult = (z ^ (z >> 31)) | 1;
        let mut slots = [EMPTY_SLOT; 256];
        let mut i = 0;
        let mut ok = true;
        while i < WELL_KNOWN.len() {
            let s = slot_of(&WELL_KNOWN_WORDS[i], mult);
            if slots[s] != EMPTY_SLOT {
                ok = false;
                break;
            }
            slots[s] = i as u8;
            i += 1;
        }
        if ok {
            break (mult, slots);
        }
    }
};

/// The slot of a name with `words` in a 256-entry table: the words folded
/// into one (rotations keep names that share a prefix apart) and the top
/// byte of its product with `mult`. A name followed by NULs has the same
/// words, hence the same slot: the lookup also compares lengths.
#[inline]
const fn slot_of(words: &NameWords, mult: u64) -> usize {
    let folded = words[0] ^ words[1].rotate_left(21) ^ words[2].rotate_left(42) ^ words[3];
    (folded.wrapping_mul(mult) >> 56) as usize
}

/// The lower-cased [`NameWords`] of `raw`, at most 32 bytes long. Whole
/// words are loaded as such and the last partial one from two overlapping
/// loads, so no byte is copied one at a time.
#[inline]
fn lower_name_words(raw: &[u8]) -> NameWords {
    let mut words = [0u64; 4];
    let mut chunks = raw.chunks_exact(8);
    let mut n = 0;
    for (w, chunk) in words.iter_mut().zip(&mut chunks) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        *w = ascii_lower_word(u64::from_le_bytes(le));
        n += 1;
    }
    if let Some(w) = words.get_mut(n) {
        *w = ascii_lower_word(tail_word(chunks.remainder()));
    }
    words
}

/// The bytes of `r` (at most seven) as a little-endian word, zero padded:
/// two loads of four (or two) bytes that overlap in the middle; the
/// overlapping bytes are the same in both, so OR-ing them is exact.
#[inline]
fn tail_word(r: &[u8]) -> u64 {
    let n = r.len();
    let load4 = |at: usize| {
        let mut b = [0u8; 4];
        if let Some(src) = r.get(at..at + 4) {
            b.copy_from_slice(src);
        }
        u64::from(u32::from_le_bytes(b))
    };
    let load2 = |at: usize| {
        let mut b = [0u8; 2];
        if let Some(src) = r.get(at..at + 2) {
            b.copy_from_slice(src);
        }
        u64::from(u16::from_le_bytes(b))
    };
    match n {
        4..=7 => load4(0) | load4(n - 4) << (8 * (n - 4)),
        2..=3 => load2(0) | load2(n - 2) << (8 * (n - 2)),
        1 => r.first().map_or(0, |b| u64::from(*b)),
        _ => 0,
    }
}

/// The well-known name `raw` is (ASCII case-insensitively), if any.
#[inline]
fn well_known(raw: &str) -> Option<&'static str> {
    well_known_index(raw).and_then(|i| WELL_KNOWN.get(i).copied())
}

/// The index in [`WELL_KNOWN`] of the name `raw` is, if any.
#[inline]
fn well_known_index(raw: &str) -> Option<usize> {
    if raw.len() > 32 {
        return None;
    }
    let words = lower_name_words(raw.as_bytes());
    let (mult, slots) = &NAME_SLOTS;
    let i = usize::from(slots[slot_of(&words, *mult)]);
    let name = WELL_KNOWN.get(i)?;
    (name.len() == raw.len() && WELL_KNOWN_WORDS.get(i) == Some(&words)).then_some(i)
}

/// The raw names of the last head of one kind (requests, or responses),
/// position by position, each with the well-known name it is. Heads on a
/// keep-alive connection, and a server's responses in general, repeat the
/// same fields in the same order and spelling: an exact compare with the
/// name at the same position of the previous head settles most lookups
/// without lower-casing or hashing. A miss costs that one compare (nearly
/// always the length alone) before the full [`header_name`] lookup.
#[derive(Debug, Clone)]
pub(crate) struct NameMemo {
    slots: [MemoSlot; NameMemo::POSITIONS],
}

/// One position of a [`NameMemo`]: a raw name and its index in
/// [`WELL_KNOWN`], or [`EMPTY_SLOT`] (which no name, not even an empty
/// one, can match).
#[derive(Debug, Clone, Copy)]
struct MemoSlot {
    len: u8,
    index: u8,
    raw: [u8; 32],
}

impl Default for NameMemo {
    fn default() -> Self {
        NameMemo {
            slots: [MemoSlot {
                len: 0,
                index: EMPTY_SLOT,
                raw: [0; 32],
            }; NameMemo::POSITIONS],
        }
    }
}

impl NameMemo {
    /// Positions remembered: the fields of a typical head.
    const POSITIONS: usize = 24;

    /// [`header_name`] of the field at `pos` of a head.
    pub(crate) fn name(&mut self, pos: usize, raw: &str) -> Cow<'static, str> {
        let Some(slot) = self.slots.get_mut(pos) else {
            return header_name(raw);
        };
        if usize::from(slot.len) == raw.len()
            && slot.raw.get(..raw.len()) == Some(raw.as_bytes())
            && let Some(name) = WELL_KNOWN.get(usize::from(slot.index))
        {
            return Cow::Borrowed(name);
        }
        match well_known_index(raw) {
            Some(i) => {
                // Well-known names are at most 27 bytes: the raw name fits.
                if let Some(dst) = slot.raw.get_mut(..raw.len()) {
                    dst.copy_from_slice(raw.as_bytes());
                    slot.len = raw.len() as u8;
                    slot.index = i as u8;
                }
                Cow::Borrowed(WELL_KNOWN[i])
            }
            None => {
                slot.index = EMPTY_SLOT;
                Cow::Owned(raw.to_ascii_lowercase())
            }
        }
    }
}

/// The lower-cased form of header name `raw`: a `'static` borrow when it is
/// a well-known name (compared ASCII case-insensitively, so `Content-Type`
/// and `content-type` both hit), an owned lower-case copy otherwise.
pub fn header_name(raw: &str) -> Cow<'static, str> {
    match well_known(raw) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(raw.to_ascii_lowercase()),
    }
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
    /// Header names of the last request head and the last response head.
    pub(crate) names: [NameMemo; 2],
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

    /// The plain reading of [`header_name`]: the well-known name equal to
    /// `raw` ignoring ASCII case, else a lower-cased copy.
    fn reference_header_name(raw: &str) -> Cow<'static, str> {
        match WELL_KNOWN.iter().find(|k| k.eq_ignore_ascii_case(raw)) {
            Some(k) => Cow::Borrowed(k),
            None => Cow::Owned(raw.to_ascii_lowercase()),
        }
    }

    #[test]
    fn tail_words_are_the_zero_padded_bytes() {
        for n in 0..8 {
            let r: Vec<u8> = (1..=n as u8).map(|b| b.wrapping_mul(37) | 0x80).collect();
            let mut want = [0u8; 8];
            want[..n].copy_from_slice(&r);
            assert_eq!(tail_word(&r), u64::from_le_bytes(want), "{n} bytes");
        }
    }

    #[test]
    fn well_known_lookup_agrees_with_the_plain_reading() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        // Every name, prefixes and extensions of it, case flips, and
        // arbitrary token-ish strings of every length around the table's.
        for k in WELL_KNOWN {
            for end in 0..=k.len() {
                let cut = &k[..end];
                assert_eq!(header_name(cut), reference_header_name(cut), "{cut:?}");
                let upper = cut.to_ascii_uppercase();
                assert_eq!(header_name(&upper), reference_header_name(&upper));
            }
            for extra in ["s", "-", "\0", "xxxxxxxx", "\u{e9}"] {
                let long = format!("{k}{extra}");
                assert_eq!(header_name(&long), reference_header_name(&long), "{long:?}");
            }
        }
        let mut runner = TestRunner::new(Config {
            cases: 4096,
            ..Config::default()
        });
        let names = prop_oneof![
            "[a-zA-Z-]{0,40}",
            "[a-eA-E\\-x]{1,12}",
            proptest::sample::select(WELL_KNOWN.to_vec()).prop_flat_map(|k| {
                proptest::collection::vec(any::<bool>(), k.len()).prop_map(move |flips| {
                    k.chars()
                        .zip(flips)
                        .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                        .collect::<String>()
                })
            }),
            any::<String>(),
        ];
        runner
            .run(&names, |raw| {
                prop_assert_eq!(header_name(&raw), reference_header_name(&raw));
                Ok(())
            })
            .map_err(|e| e.to_string())
            .expect("lookup agrees with the plain reading");
    }

    #[test]
    fn name_memo_agrees_with_the_lookup_head_after_head() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        // Heads drawn from a small pool (so positions repeat, as on a
        // keep-alive connection) with case changes, odd names and names
        // beyond the memo's positions.
        let name = prop_oneof![
            proptest::sample::select(WELL_KNOWN.to_vec()).prop_map(str::to_owned),
            proptest::sample::select(vec!["Cookie", "COOKIE", "Host", "X-Odd", "x-odd", "hosT"])
                .prop_map(str::to_owned),
            "[a-zA-Z-]{0,34}",
        ];
        let heads = proptest::collection::vec(
            proptest::collection::vec(name, 0..NameMemo::POSITIONS + 4),
            1..12,
        );
        let mut runner = TestRunner::new(Config {
            cases: 512,
            ..Config::default()
        });
        runner
            .run(&heads, |heads| {
                let mut memo = NameMemo::default();
                for head in &heads {
                    for (pos, raw) in head.iter().enumerate() {
                        prop_assert_eq!(memo.name(pos, raw), header_name(raw), "{}", raw);
                    }
                }
                Ok(())
            })
            .map_err(|e| e.to_string())
            .expect("the memo is the lookup");
        // A repeated head is answered from the memo.
        let mut memo = NameMemo::default();
        memo.name(0, "Content-Type");
        assert_eq!(memo.slots[0].len, 12);
        assert!(matches!(
            memo.name(0, "Content-Type"),
            Cow::Borrowed("content-type")
        ));
        memo.name(0, "X-Unknown");
        assert_eq!(
            memo.slots[0].index, EMPTY_SLOT,
            "a name that is not well known empties its slot"
        );
    }

    #[test]
    fn values_in_a_copied_head_are_ranges_of_it() {
        let head = b"GET / HTTP/1.1\r\nHost: a.example\r\nCookie: sid=1\r\n\r\n";
        let mut h = Headers::default();
        h.copy_head(head);
        h.push_in_head(header_name("Host"), head, &head[22..31]);
        h.push_in_head(header_name("Cookie"), head, &head[41..46]);
        // Not a slice of the head: appended after it.
        h.push_in_head(header_name("X-Extra"), head, b"elsewhere");
        assert_eq!(
            h.values.len(),
            head.len() + 9,
            "values are not copied twice"
        );
        assert_eq!(h.get("host"), Some(&b"a.example"[..]));
        assert_eq!(h.get("cookie"), Some(&b"sid=1"[..]));
        assert_eq!(h.get("x-extra"), Some(&b"elsewhere"[..]));
        // The same fields pushed one by one are the same headers.
        let mut pushed = Headers::default();
        pushed.push("host", b"a.example");
        pushed.push("cookie", b"sid=1");
        pushed.push("x-extra", b"elsewhere");
        assert_eq!(h, pushed);
        pushed.push("x-more", b"");
        assert_ne!(h, pushed);
        // A value that would run past the head is appended, not trusted.
        let mut g = Headers::default();
        g.copy_head(&head[..20]);
        g.push_in_head(header_name("Cookie"), &head[..20], &head[41..46]);
        assert_eq!(g.get("cookie"), Some(&b"sid=1"[..]));
        assert_eq!(g.values.len(), 25);
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
        for k in WELL_KNOWN {
            assert!(!k.bytes().any(|b| b.is_ascii_uppercase()), "{k}");
            assert!(matches!(header_name(&k.to_ascii_uppercase()), Cow::Borrowed(b) if b == k));
        }
        // Mixed case hits; a byte that only differs by 0x20 from a
        // non-letter (`-` vs CR, `0` vs DLE) or from a non-ASCII byte misses.
        for k in WELL_KNOWN {
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
            assert!(matches!(header_name(&mixed), Cow::Borrowed(b) if b == k));
            for i in 0..k.len() {
                let mut near = k.as_bytes().to_vec();
                near[i] ^= 0x20;
                if near[i].is_ascii_alphabetic() {
                    continue;
                }
                let near = String::from_utf8_lossy(&near).into_owned();
                assert!(matches!(header_name(&near), Cow::Owned(_)), "{near:?}");
            }
            // Trailing NULs must not pass for the zero padding (they land
            // in the slot of the name itself).
            for nuls in 1..=32 - k.len().min(32) {
                let padded = format!("{k}{}", "\0".repeat(nuls));
                assert!(matches!(header_name(&padded), Cow::Owned(_)), "{padded:?}");
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
