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

/// Lower-case header names common enough in requests and responses that
/// parsing every head would otherwise allocate a copy of each of them,
/// indexed by length: a lookup compares the raw name only against the few
/// entries (at most five) of its length, each exiting at the first
/// differing byte.
const WELL_KNOWN: [&[&str]; 28] = [
    &[],
    &[],
    &["te"],
    &["age", "via"],
    &["date", "etag", "host", "vary"],
    &["range"],
    &["accept", "cookie", "origin", "pragma", "server"],
    &["expires", "referer", "upgrade"],
    &["location"],
    &["forwarded", "x-real-ip"],
    &["connection", "keep-alive", "set-cookie", "user-agent"],
    &[],
    &["x-csrf-token", "content-type", "x-xsrf-token"],
    &[
        "authorization",
        "cache-control",
        "if-none-match",
        "accept-ranges",
        "last-modified",
    ],
    &[
        "content-length",
        "sec-fetch-dest",
        "sec-fetch-mode",
        "sec-fetch-site",
        "sec-fetch-user",
    ],
    &[
        "accept-encoding",
        "accept-language",
        "x-frame-options",
        "x-forwarded-for",
    ],
    &["content-encoding", "x-requested-with", "x-forwarded-host"],
    &[
        "x-forwarded-proto",
        "transfer-encoding",
        "if-modified-since",
    ],
    &[],
    &[],
    &[],
    &[],
    &["x-content-type-options"],
    &["content-security-policy"],
    &[],
    &["upgrade-insecure-requests", "strict-transport-security"],
    &[],
    &["access-control-allow-origin"],
];

/// The lower-cased form of header name `raw`: a `'static` borrow when it is
/// a well-known name (compared ASCII case-insensitively, so `Content-Type`
/// and `content-type` both hit), an owned lower-case copy otherwise.
pub fn header_name(raw: &str) -> Cow<'static, str> {
    // Lower-case the name once into a stack buffer, then compare the few
    // candidates of its length byte for byte: a per-candidate
    // case-insensitive compare lower-cases the name again for each one.
    let mut lower = [0u8; WELL_KNOWN.len()];
    let hit = WELL_KNOWN.get(raw.len()).and_then(|candidates| {
        let lower = lower.get_mut(..raw.len())?;
        for (l, b) in lower.iter_mut().zip(raw.bytes()) {
            *l = b.to_ascii_lowercase();
        }
        candidates.iter().find(|k| same(k.as_bytes(), lower))
    });
    match hit {
        Some(k) => Cow::Borrowed(*k),
        None => Cow::Owned(raw.to_ascii_lowercase()),
    }
}

/// Byte equality of two short names, exiting at the first difference:
/// nearly every candidate differs in its first byte or two, where a call
/// into the C library's `memcmp` costs more than the loop.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// When the first byte of the request head was seen.
    pub ts: Timestamp,
    /// Method, e.g. `POST`.
    pub method: Box<str>,
    /// Request target as sent (origin-form path with query, or absolute-form).
    pub target: Box<str>,
    /// Host: the `Host` header (HTTP/1) or `:authority` (HTTP/2).
    pub host: Option<Box<str>>,
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
    /// Handles one completed exchange.
    fn on_exchange(&mut self, exchange: Exchange);
}

impl<S: ExchangeSink + ?Sized> ExchangeSink for &mut S {
    fn on_exchange(&mut self, exchange: Exchange) {
        (**self).on_exchange(exchange)
    }
}

impl ExchangeSink for Vec<Exchange> {
    fn on_exchange(&mut self, exchange: Exchange) {
        self.push(exchange)
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
            for k in *names {
                assert_eq!(k.len(), len, "{k}");
                assert!(!k.bytes().any(|b| b.is_ascii_uppercase()), "{k}");
                assert!(
                    matches!(header_name(&k.to_ascii_uppercase()), Cow::Borrowed(b) if b == *k)
                );
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
