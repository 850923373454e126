//! HTTP exchanges from ordered byte streams.
//!
//! Input: [`sessionwatch_streams::StreamEvent`]s. Output: [`Exchange`]s — a
//! request head paired with its response head — handed to an
//! [`ExchangeSink`]. Bodies are skipped, never stored. HTTP/1.x lives in
//! [`h1`], HTTP/2 in [`h2`] (entered from the HTTP/1 stage when a
//! connection turns out to speak HTTP/2); both produce the same types.
#![forbid(unsafe_code)]

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

/// One header field. Names are lower-cased ASCII; values are raw bytes
/// (header values are not guaranteed UTF-8, and cookies must round-trip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Lower-cased header name.
    pub name: Box<str>,
    /// Raw value, without surrounding whitespace.
    pub value: Box<[u8]>,
}

/// The header fields of a message head, in wire order.
///
/// Bounded by the parser (see [`h1::Limits`]): a head with more fields or
/// bigger values than the limits is counted as a parse error, not stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// First value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|h| &*h.name == name).map(|h| &*h.value)
    }

    /// First value of `name` as UTF-8 (lossy characters are rejected: `None`).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |h| &*h.name == name)
            .map(|h| &*h.value)
    }

    /// Appends a field.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.0.push(Header {
            name: name.to_ascii_lowercase().into_boxed_str(),
            value: value.into(),
        });
    }
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
