//! The client's network identity: its IP address and whether it spoke TLS.
//!
//! Behind a reverse proxy every connection comes from the proxy. The proxy
//! reports the real client in `X-Forwarded-For`, `Forwarded` (RFC 7239) or
//! `X-Real-IP`, and the client's scheme in `X-Forwarded-Proto` / `Forwarded:
//! proto=`. Those headers are believed only when the connection's peer is a
//! configured trusted proxy — otherwise any client could claim any address —
//! and the client is the rightmost address that is not itself a trusted
//! proxy (each proxy appends the address it received the request from; only
//! what trusted proxies appended is reliable).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use sessionwatch_http::Headers;
use sessionwatch_streams::ConnectionMeta;

use crate::cookie::trim;

/// Errors parsing a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("not an IP address: {0:?}")]
    BadAddress(String),
    /// The prefix length is not a number or too long for the address family.
    #[error("bad prefix length {0:?}")]
    BadPrefix(String),
}

/// An IPv4 or IPv6 network. IPv4-mapped IPv6 networks (`::ffff:a.b.c.d/104`)
/// are stored as IPv4, matching how addresses are canonicalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Appends `ip` as `Display` renders it. IPv4 (nearly every client) is
/// written digit by digit; the formatter costs ten times as much and runs
/// once per finding. IPv6 takes the formatter (RFC 5952 compression).
pub fn write_ip(out: &mut String, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        let _ = std::fmt::Write::write_fmt(out, format_args!("{ip}"));
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// Maps IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, seen on dual-stack
/// sockets) to plain IPv4 so one client has one address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn mask_v4(a: Ipv4Addr, prefix: u8) -> u32 {
    let bits = u32::from(a);
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(a: Ipv6Addr, prefix: u8) -> u128 {
    let bits = u128::from(a);
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `10.0.0.0/8`, `2001:db8::/32`, `::ffff:10.0.0.0/104`, or a bare
    /// address (a host route). Host bits below the prefix are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr_s, prefix_s) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| CidrError::BadAddress(addr_s.to_owned()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_s {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(CidrError::BadPrefix(p.to_owned())),
            },
        };
        Ok(match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && prefix >= 96 => {
                let v4 = v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED);
                Cidr {
                    addr: IpAddr::V4(Ipv4Addr::from(mask_v4(v4, prefix - 96))),
                    prefix: prefix - 96,
                }
            }
            IpAddr::V4(v4) => Cidr {
                addr: IpAddr::V4(Ipv4Addr::from(mask_v4(v4, prefix))),
                prefix,
            },
            IpAddr::V6(v6) => Cidr {
                addr: IpAddr::V6(Ipv6Addr::from(mask_v6(v6, prefix))),
                prefix,
            },
        })
    }
}

impl Cidr {
    /// Whether `ip` (canonicalised) is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => mask_v4(a, self.prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(a)) => mask_v6(a, self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Headers that can name the original client, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// `Forwarded: for=client;proto=https, for=proxy1` (RFC 7239).
    Forwarded,
    /// `X-Real-IP: client` (nginx `proxy_set_header X-Real-IP $remote_addr`).
    XRealIp,
}

impl FromStr for ForwardedHeader {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            "x-real-ip" => Ok(ForwardedHeader::XRealIp),
            _ => Err(()),
        }
    }
}

/// Most hops examined in a forwarding chain (a longer chain is attacker
/// padding; the rightmost hops are the ones that matter).
const MAX_HOPS: usize = 32;

/// Trusted proxies and the headers to believe from them.
#[derive(Debug, Clone, Default)]
pub struct ProxyTrust {
    /// Networks of trusted proxies.
    pub trusted: Vec<Cidr>,
    /// Client-address headers, tried in order.
    pub headers: Vec<ForwardedHeader>,
}

/// Where the client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    /// The connection's peer.
    Connection,
    /// A forwarding header from a trusted proxy.
    Forwarded,
    /// Unknown (capture did not learn the peer).
    Unknown,
}

/// The client's network identity for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientNet {
    /// Client IP (canonical), when known.
    pub ip: Option<IpAddr>,
    /// Whether the client's own hop used TLS.
    pub tls: bool,
    /// How `ip` was decided.
    pub source: ClientSource,
    /// `tls` came from a trusted proxy's `X-Forwarded-Proto` /
    /// `Forwarded: proto=` / `X-Forwarded-Ssl` rather than the connection.
    pub tls_from_proxy: bool,
}

impl ProxyTrust {
    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// Decides the client IP and client-side TLS for a request that arrived
    /// on `conn` with `headers`.
    pub fn resolve(&self, conn: &ConnectionMeta, headers: &Headers) -> ClientNet {
        let peer = conn.client.map(|a| canonical(a.ip()));
        let Some(peer_ip) = peer.filter(|p| self.is_trusted(*p)) else {
            return ClientNet {
                ip: peer,
                tls: conn.tls,
                source: if peer.is_some() {
                    ClientSource::Connection
                } else {
                    ClientSource::Unknown
                },
                tls_from_proxy: false,
            };
        };
        let mut ip = None;
        let mut forwarded_proto = None;
        for h in &self.headers {
            match h {
                ForwardedHeader::XForwardedFor => {
                    ip = self.rightmost_untrusted(
                        headers
                            .get_all("x-forwarded-for")
                            .flat_map(split_list)
                            .map(parse_node),
                    );
                }
                ForwardedHeader::Forwarded => {
                    let (i, proto) = self.forwarded_client(headers);
                    ip = i;
                    forwarded_proto = proto;
                }
                ForwardedHeader::XRealIp => {
                    ip = headers.get("x-real-ip").and_then(|v| parse_node(trim(v)));
                }
            }
            if ip.is_some() {
                break;
            }
        }
        let proxy_proto = forwarded_proto.or_else(|| proto_header(headers));
        let tls = proxy_proto.unwrap_or(conn.tls);
        let tls_from_proxy = proxy_proto.is_some();
        match ip {
            Some(ip) => ClientNet {
                ip: Some(ip),
                tls,
                source: ClientSource::Forwarded,
                tls_from_proxy,
            },
            None => ClientNet {
                ip: Some(peer_ip),
                tls,
                source: ClientSource::Connection,
                tls_from_proxy,
            },
        }
    }

    /// The rightmost hop that is not a trusted proxy; the leftmost hop when
    /// every hop is trusted (a client on the proxy's own network); at an
    /// unparseable hop (`unknown`, obfuscated) the walk stops at the last
    /// trusted address, since nothing left of it can be believed.
    fn rightmost_untrusted(&self, hops: impl Iterator<Item = Option<IpAddr>>) -> Option<IpAddr> {
        let mut ring: [Option<IpAddr>; MAX_HOPS] = [None; MAX_HOPS];
        let mut n = 0usize;
        for h in hops {
            ring[n % MAX_HOPS] = h;
            n += 1;
        }
        let kept = n.min(MAX_HOPS);
        let mut last_trusted = None;
        for k in 0..kept {
            let hop = ring[(n - 1 - k) % MAX_HOPS];
            match hop {
                None => return last_trusted,
                Some(ip) if self.is_trusted(ip) => last_trusted = Some(ip),
                Some(ip) => return Some(ip),
            }
        }
        last_trusted
    }

    fn forwarded_client(&self, headers: &Headers) -> (Option<IpAddr>, Option<bool>) {
        // Elements in order; for each, its `for` node and `proto`.
        let mut ring: [(Option<IpAddr>, Option<bool>); MAX_HOPS] = [(None, None); MAX_HOPS];
        let mut n = 0usize;
        for v in headers.get_all("forwarded") {
            for element in split_forwarded_elements(v) {
                let mut node = None;
                let mut proto = None;
                for pair in split_quoted(element, b';') {
                    let pair = trim(pair);
                    let Some(eq) = pair.iter().position(|b| *b == b'=') else {
                        continue;
                    };
                    let (k, val) = (trim(&pair[..eq]), unquote_forwarded(trim(&pair[eq + 1..])));
                    if k.eq_ignore_ascii_case(b"for") {
                        node = parse_node(val);
                    } else if k.eq_ignore_ascii_case(b"proto") {
                        proto = proto_value(val);
                    }
                }
                ring[n % MAX_HOPS] = (node, proto);
                n += 1;
            }
        }
        if n == 0 {
            return (None, None);
        }
        let kept = n.min(MAX_HOPS);
        let mut last_trusted: (Option<IpAddr>, Option<bool>) = (None, None);
        for k in 0..kept {
            let (node, proto) = ring[(n - 1 - k) % MAX_HOPS];
            match node {
                None => return last_trusted,
                Some(ip) if self.is_trusted(ip) => {
                    last_trusted = (Some(ip), proto.or(last_trusted.1))
                }
                Some(ip) => return (Some(ip), proto.or(last_trusted.1)),
            }
        }
        last_trusted
    }
}

/// `X-Forwarded-Proto` (rightmost value: the one the adjacent trusted proxy
/// wrote) or `X-Forwarded-Ssl: on`.
fn proto_header(headers: &Headers) -> Option<bool> {
    if let Some(v) = headers.get("x-forwarded-proto")
        && let Some(last) = split_list(v).last()
        && let Some(t) = proto_value(last)
    {
        return Some(t);
    }
    headers
        .get("x-forwarded-ssl")
        .map(|v| trim(v).eq_ignore_ascii_case(b"on"))
}

fn proto_value(v: &[u8]) -> Option<bool> {
    let v = trim(v);
    if v.eq_ignore_ascii_case(b"https") || v.eq_ignore_ascii_case(b"wss") {
        Some(true)
    } else if v.eq_ignore_ascii_case(b"http") || v.eq_ignore_ascii_case(b"ws") {
        Some(false)
    } else {
        None
    }
}

/// Splits a comma-separated header list, trimming items (no quoting: used
/// for `X-Forwarded-*`).
fn split_list(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',').map(trim).filter(|s| !s.is_empty())
}

/// Splits on `sep` outside double quotes (RFC 7239 values may be quoted and
/// contain `,` or `;`).
fn split_quoted(v: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut i = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while i < v.len() {
            let b = v[i];
            i += 1;
            if escaped {
                escaped = false;
            } else if in_quotes && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = !in_quotes;
            } else if b == sep && !in_quotes {
                let item = &v[start..i - 1];
                start = i;
                return Some(item);
            }
        }
        done = true;
        Some(&v[start..])
    })
}

fn split_forwarded_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    split_quoted(v, b',').map(trim).filter(|s| !s.is_empty())
}

fn unquote_forwarded(v: &[u8]) -> &[u8] {
    crate::cookie::unquote(v)
}

/// Parses a forwarding node: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]`,
/// `[2001:db8::1]:443`, `2001:db8::1`. `unknown` and obfuscated identifiers
/// (`_hidden`) are `None`.
pub fn parse_node(v: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(trim(v)).ok()?;
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        return rest[..end]
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| canonical(IpAddr::V6(a)));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // IPv4 with a port.
    let (host, port) = s.rsplit_once(':')?;
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return host.parse::<Ipv4Addr>().ok().map(IpAddr::V4);
    }
    None
}

impl ProxyTrust {
    /// Splits a `Forwarded` header into elements (exposed for tests of
    /// hostile input).
    pub fn forwarded_elements(v: &[u8]) -> usize {
        split_forwarded_elements(v).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionwatch_streams::{ConnectionId, Source};
    use std::net::SocketAddr;

    #[test]
    fn ips_are_written_as_display_writes_them() {
        let mut out = String::new();
        let mut check = |ip: IpAddr| {
            out.clear();
            write_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        };
        for a in 0..=255u8 {
            check(IpAddr::V4(Ipv4Addr::new(
                a,
                255 - a,
                a / 3,
                a.wrapping_mul(7),
            )));
        }
        for ip in [
            "0.0.0.0",
            "::",
            "::1",
            "2001:db8::8:800:200c:417a",
            "::ffff:1.2.3.4",
        ] {
            check(ip.parse().unwrap());
        }
    }

    fn trust() -> ProxyTrust {
        ProxyTrust {
            trusted: vec![
                "127.0.0.0/8".parse().unwrap(),
                "::1/128".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            headers: vec![
                ForwardedHeader::XForwardedFor,
                ForwardedHeader::Forwarded,
                ForwardedHeader::XRealIp,
            ],
        }
    }

    fn conn(peer: &str, tls: bool) -> ConnectionMeta {
        ConnectionMeta {
            id: ConnectionId(1),
            client: Some(peer.parse::<SocketAddr>().unwrap()),
            server: None,
            tls,
            source: Source::Pcap,
            process: None,
        }
    }

    fn hdrs(list: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (n, v) in list {
            h.push(n, v.as_bytes());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.255.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.9.9.9".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        let mapped: Cidr = "::ffff:192.168.0.0/112".parse().unwrap();
        assert!(mapped.contains("192.168.7.7".parse().unwrap()));
        let host: Cidr = "192.0.2.1".parse().unwrap();
        assert!(host.contains("192.0.2.1".parse().unwrap()));
        assert!(!host.contains("192.0.2.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::BadPrefix(_))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::BadAddress(_))
        ));
        assert!(matches!(
            "::1/129".parse::<Cidr>(),
            Err(CidrError::BadPrefix(_))
        ));
    }

    #[test]
    fn untrusted_peer_headers_ignored() {
        let c = conn("203.0.113.9:5000", false);
        let h = hdrs(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let r = trust().resolve(&c, &h);
        assert_eq!(r.ip, ip("203.0.113.9"));
        assert!(!r.tls, "spoofed X-Forwarded-Proto from an untrusted peer");
        assert_eq!(r.source, ClientSource::Connection);
    }

    #[test]
    fn xff_rightmost_untrusted() {
        let c = conn("127.0.0.1:5000", false);
        // Client-supplied spoof on the left, real client appended by the edge
        // proxy, then an internal proxy.
        let h = hdrs(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.5"),
            ("x-forwarded-proto", "https"),
        ]);
        let r = trust().resolve(&c, &h);
        assert_eq!(r.ip, ip("198.51.100.7"));
        assert!(r.tls);
        assert_eq!(r.source, ClientSource::Forwarded);
    }

    #[test]
    fn xff_all_trusted_gives_leftmost_and_ports_are_stripped() {
        let c = conn("127.0.0.1:5000", false);
        let r = trust().resolve(
            &c,
            &hdrs(&[("x-forwarded-for", "127.0.0.5:4444, 10.1.1.1")]),
        );
        assert_eq!(r.ip, ip("127.0.0.5"));
        let r = trust().resolve(&c, &hdrs(&[("x-forwarded-for", "[2001:db8::7]:443")]));
        assert_eq!(r.ip, ip("2001:db8::7"));
        let r = trust().resolve(&c, &hdrs(&[("x-forwarded-for", "::ffff:198.51.100.1")]));
        assert_eq!(r.ip, ip("198.51.100.1"));
    }

    #[test]
    fn xff_unknown_hop_stops_the_walk() {
        let c = conn("127.0.0.1:5000", false);
        let r = trust().resolve(
            &c,
            &hdrs(&[("x-forwarded-for", "198.51.100.7, unknown, 10.0.0.2")]),
        );
        assert_eq!(r.ip, ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_rfc7239() {
        let c = conn("[::1]:5000", true);
        let h = hdrs(&[(
            "forwarded",
            "for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\";proto=https",
        )]);
        let t = ProxyTrust {
            headers: vec![ForwardedHeader::Forwarded],
            ..trust()
        };
        let r = t.resolve(&c, &h);
        assert_eq!(r.ip, ip("2001:db8:cafe::17"));
        assert!(r.tls);
        // proto=http from the trusted proxy overrides the TLS hop to us.
        let h = hdrs(&[("Forwarded", "For=\"198.51.100.17\";Proto=http")]);
        let r = t.resolve(&c, &h);
        assert_eq!(r.ip, ip("198.51.100.17"));
        assert!(!r.tls);
        // Obfuscated node: fall back to the peer.
        let r = t.resolve(&c, &hdrs(&[("forwarded", "for=_hidden")]));
        assert_eq!(r.ip, ip("::1"));
        assert_eq!(r.source, ClientSource::Connection);
        assert_eq!(
            ProxyTrust::forwarded_elements(b"for=a, for=\"b,c\", for=d"),
            3
        );
    }

    #[test]
    fn x_real_ip_and_header_order() {
        let c = conn("127.0.0.1:1", false);
        let r = trust().resolve(&c, &hdrs(&[("x-real-ip", "198.51.100.3")]));
        assert_eq!(r.ip, ip("198.51.100.3"));
        // X-Forwarded-For is tried first.
        let r = trust().resolve(
            &c,
            &hdrs(&[
                ("x-real-ip", "198.51.100.3"),
                ("x-forwarded-for", "198.51.100.4"),
            ]),
        );
        assert_eq!(r.ip, ip("198.51.100.4"));
    }

    #[test]
    fn tls_from_connection_without_headers() {
        let r = trust().resolve(&conn("127.0.0.1:1", true), &Headers::default());
        assert!(r.tls);
        assert_eq!(r.ip, ip("127.0.0.1"));
        let r = trust().resolve(
            &conn("127.0.0.1:1", false),
            &hdrs(&[("x-forwarded-ssl", "on")]),
        );
        assert!(r.tls);
        let r = trust().resolve(
            &conn("127.0.0.1:1", true),
            &hdrs(&[("x-forwarded-proto", "https, http")]),
        );
        assert!(!r.tls, "rightmost value is the adjacent proxy's");
    }

    #[test]
    fn long_chains_are_bounded() {
        let c = conn("127.0.0.1:1", false);
        let mut chain: Vec<String> = (0..1000)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        chain.insert(0, "198.51.100.1".into());
        let r = trust().resolve(&c, &hdrs(&[("x-forwarded-for", &chain.join(", "))]));
        // Only the rightmost 32 hops are examined; all trusted → leftmost kept.
        assert!(r.ip.is_some_and(|i| trust().is_trusted(i)));
    }
}
