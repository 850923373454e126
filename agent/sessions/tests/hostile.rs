//! Property tests: hostile cookie, header and URL input never panics the
//! parsers or the analyzer, and the analyzer's memory stays bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use proptest::prelude::*;
use sessionwatch_http::{Exchange, Headers, Protocol, Request, Response};
use sessionwatch_sessions::cookie::{CookieLimits, parse_cookie_header, parse_set_cookie};
use sessionwatch_sessions::cookie_date::parse_cookie_date;
use sessionwatch_sessions::{AnalysisConfig, Analyzer, Finding, HashKey};
use sessionwatch_streams::{ConnectionId, ConnectionMeta, Source, Timestamp};

fn exchange(
    peer: SocketAddr,
    target: &str,
    req: &[(&str, Vec<u8>)],
    status: u16,
    resp: &[(&str, Vec<u8>)],
    secs: u64,
) -> Exchange {
    let mut rh = Headers::default();
    for (n, v) in req {
        rh.push(n, v);
    }
    let mut sh = Headers::default();
    for (n, v) in resp {
        sh.push(n, v);
    }
    let ts = Timestamp::from_secs_nanos(1_790_000_000 + secs, 0);
    Exchange {
        conn: Arc::new(ConnectionMeta {
            id: ConnectionId(1),
            client: Some(peer),
            server: None,
            tls: secs.is_multiple_of(2),
            source: Source::Pcap,
            process: None,
        }),
        protocol: Protocol::Http1,
        request: Request {
            ts,
            method: "POST".into(),
            target: target.into(),
            host: Some("shop.example".into()),
            headers: rh,
        },
        response: Some(Response {
            ts,
            status,
            headers: sh,
        }),
    }
}

/// Bytes biased towards cookie syntax.
fn cookieish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b';'),
            Just(b'='),
            Just(b' '),
            Just(b'"'),
            Just(b','),
            Just(b'-'),
            Just(b'.'),
            Just(b':'),
            Just(b'%'),
            Just(b'/'),
            b'0'..=b'9',
            b'a'..=b'z',
            b'A'..=b'Z',
            any::<u8>()
        ],
        0..400,
    )
}

fn attrs() -> impl Strategy<Value = Vec<u8>> {
    let attr = prop_oneof![
        Just("; Max-Age=".to_string()),
        Just("; Expires=".to_string()),
        Just("; Domain=".to_string()),
        Just("; Path=".to_string()),
        Just("; Secure".to_string()),
        Just("; HttpOnly".to_string()),
        Just("; SameSite=".to_string()),
        Just("; Partitioned".to_string()),
        "[ -~]{0,40}",
    ];
    prop::collection::vec(attr, 0..12).prop_map(|v| v.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cookie_parsers_never_panic(raw in cookieish(), tail in attrs()) {
        let limits = CookieLimits::default();
        let _ = parse_cookie_header(&raw).count();
        let mut sc = raw.clone();
        sc.extend_from_slice(&tail);
        if let Some(c) = parse_set_cookie(&sc, &limits) {
            let _ = c.deletion(1_790_000_000);
            let _ = c.lifetime(i64::MIN);
            let _ = c.lifetime(i64::MAX);
            prop_assert!(c.name.len() + c.value.len() <= limits.max_name_value_len);
        }
        let _ = parse_cookie_date(&raw);
        let _ = sessionwatch_sessions::entropy::estimate(&raw);
        let _ = sessionwatch_sessions::clientside::classify(&raw);
    }

    #[test]
    fn analyzer_never_panics_on_hostile_headers(
        cookie in cookieish(),
        set_cookie in cookieish(),
        tail in attrs(),
        xff in "[0-9a-f:.\\[\\], ]{0,80}",
        fwd in "[ -~]{0,80}",
        ua in prop::collection::vec(any::<u8>(), 0..200),
        target in "/[ -~]{0,120}",
        status in 100u16..600,
        location in "[ -~]{0,60}",
    ) {
        let mut an = Analyzer::new(AnalysisConfig::default(), HashKey::from_bytes([1; 32])).unwrap();
        let mut sc = b"sessionid=".to_vec();
        sc.extend_from_slice(&set_cookie);
        sc.extend_from_slice(&tail);
        let mut ck = b"sessionid=".to_vec();
        ck.extend_from_slice(&cookie);
        let req = [("cookie", ck), ("x-forwarded-for", xff.into_bytes()), ("forwarded", fwd.into_bytes()), ("user-agent", ua), ("x-forwarded-proto", b"https".to_vec())];
        let resp = [("set-cookie", sc), ("location", location.into_bytes()), ("date", b"garbage".to_vec())];
        let mut out: Vec<Finding> = Vec::new();
        for (i, peer) in ["127.0.0.1:1", "[::1]:2", "203.0.113.1:3"].iter().enumerate() {
            an.on_exchange(&exchange(peer.parse().unwrap(), &target, &req, status, &resp, i as u64), &mut out);
        }
        for f in &out {
            prop_assert!(f.request.path.len() <= 1024);
            prop_assert!(f.client.user_agent.as_ref().is_none_or(|u| u.len() <= 256));
            prop_assert!(f.session.as_ref().is_none_or(|s| s.len() == 16));
        }
    }

    #[test]
    fn session_table_stays_bounded(ids in prop::collection::vec("[a-zA-Z0-9]{20,40}", 1..300)) {
        let mut cfg = AnalysisConfig::default();
        cfg.sessions.max_sessions = 50;
        let mut an = Analyzer::new(cfg, HashKey::from_bytes([2; 32])).unwrap();
        let mut out: Vec<Finding> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let peer: SocketAddr = format!("198.51.100.{}:1", i % 250).parse().unwrap();
            let req = [("cookie", format!("sessionid={id}").into_bytes())];
            let resp = [("set-cookie", format!("PHPSESSID={id}x; Path=/").into_bytes())];
            an.on_exchange(&exchange(peer, "/account", &req, 200, &resp, i as u64), &mut out);
            prop_assert!(an.sessions() <= 50);
        }
        let s = an.stats();
        let tracked: u64 = s.sessions_tracked().map(|(_, n)| n).sum();
        prop_assert_eq!(tracked as usize, an.sessions());
    }
}

/// CR/LF (or any control character) inside a session cookie's value is no
/// ID a server accepted: HTTP/2 carries such a value in an HPACK literal,
/// an obsolete line fold carries it in a `Set-Cookie`. Counted, not
/// tracked.
#[test]
fn control_characters_in_session_cookie_values_are_counted_skips() {
    let mut an = Analyzer::new(AnalysisConfig::default(), HashKey::from_bytes([3; 32])).unwrap();
    let mut out: Vec<Finding> = Vec::new();
    let peer: SocketAddr = "198.51.100.7:1".parse().unwrap();
    for (i, value) in [
        &b"sessionid=abcdefghijklmnop\r\nX-Injected: 1"[..],
        b"sessionid=abcdefghijklmnop\0",
        b"sessionid=\"abc\x7fdefghijklmnop\"",
    ]
    .into_iter()
    .enumerate()
    {
        let req = [("cookie", value.to_vec())];
        let resp = [(
            "set-cookie",
            b"sessionid=qrstuvwxyz0123456\r\n Injected: 1; Path=/".to_vec(),
        )];
        an.on_exchange(
            &exchange(peer, "/account", &req, 200, &resp, i as u64),
            &mut out,
        );
    }
    assert_eq!(an.sessions(), 0, "no ID with control characters is tracked");
    assert_eq!(an.stats().input.ids_skipped, 3);
    assert_eq!(an.stats().input.set_cookies_invalid, 3);
    // The same ID without the smuggled bytes is an ordinary session.
    let req = [("cookie", b"sessionid=abcdefghijklmnop".to_vec())];
    an.on_exchange(&exchange(peer, "/account", &req, 200, &[], 9), &mut out);
    assert_eq!(an.sessions(), 1);
}
