//! Replays captures of real traffic (curl ↔ a Python HTTP/1.1 server on
//! loopback, recorded by `tests/data/record-h1-fixture.sh`) through the
//! pcap reader, TCP reassembly and the HTTP/1 stage.

use std::path::PathBuf;

use sessionwatch_http::h1::{H1Stage, Limits};
use sessionwatch_http::{Exchange, HttpStats};
use sessionwatch_streams::Source;
use sessionwatch_streams::reassembly::ReassemblyConfig;
use sessionwatch_streams::replay::{ReplayStats, replay};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn run(name: &str) -> (Vec<Exchange>, HttpStats, ReplayStats) {
    let mut stage = H1Stage::new(Vec::new(), Limits::default());
    let stats = replay(&fixture(name), &ReassemblyConfig::default(), &mut stage)
        .unwrap_or_else(|e| panic!("{e}"));
    let http = stage.stats().clone();
    (stage.into_sink(), http, stats)
}

fn check(name: &str) {
    let (ex, http, stats) = run(name);
    let got: Vec<(String, String, Option<u16>)> = ex
        .iter()
        .map(|e| {
            (
                e.request.method.to_string(),
                e.request.target.to_string(),
                e.response.as_ref().map(|r| r.status),
            )
        })
        .collect();
    let want = [
        ("GET", "/account?tab=1", 200),
        ("GET", "/chunked", 200),
        ("GET", "/empty", 204),
        ("GET", "/missing", 404),
        ("HEAD", "/account", 200),
        ("POST", "/login", 302),
        ("POST", "/upload", 200),
        ("POST", "/upload-chunked", 200),
        ("GET", "/old", 200),
    ];
    let want: Vec<(String, String, Option<u16>)> = want
        .iter()
        .map(|(m, t, s)| (m.to_string(), t.to_string(), Some(*s)))
        .collect();
    assert_eq!(got, want, "{name}");

    assert!(
        http.parse_errors.is_empty(),
        "{name}: {:?}",
        http.parse_errors
    );
    assert_eq!(http.unanswered, 0);
    assert_eq!(http.orphan_responses, 0);
    assert_eq!(http.exchanges, [9, 0]);
    assert_eq!(stats.reassembly.bytes_missing, 0, "{name}");
    assert_eq!(stats.reassembly.flows_opened, 6, "{name}");
    assert_eq!(stats.skipped().total(), 0, "{name}: {:?}", stats.skipped());
    assert!(stats.read.truncated_tail.is_none());

    // The first four exchanges share one keep-alive connection.
    let first = &ex[0].conn;
    assert!(ex[1..4].iter().all(|e| e.conn.id == first.id));
    assert!(ex[4..].iter().all(|e| e.conn.id != first.id));
    for e in &ex {
        let server = e.conn.server.unwrap_or_else(|| panic!("server address"));
        let client = e.conn.client.unwrap_or_else(|| panic!("client address"));
        assert!(server.ip().is_loopback() && client.ip().is_loopback());
        assert_ne!(server.port(), client.port());
        assert_eq!(e.conn.source, Source::Pcap);
        assert!(!e.conn.tls);
        assert_eq!(
            e.request.host.as_deref(),
            Some(format!("127.0.0.1:{}", server.port()).as_str())
        );
        assert!(
            e.request
                .headers
                .get_str("user-agent")
                .is_some_and(|ua| ua.starts_with("curl/"))
        );
        let resp = e.response.as_ref().unwrap_or_else(|| panic!("response"));
        assert!(resp.ts >= e.request.ts);
    }
    let login = &ex[5];
    assert_eq!(
        login.request.headers.get_str("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let resp = login
        .response
        .as_ref()
        .unwrap_or_else(|| panic!("login response"));
    assert_eq!(
        resp.headers.get_str("set-cookie"),
        Some("sessionid=fixture-not-a-secret; Path=/; HttpOnly")
    );
    assert_eq!(resp.headers.get_str("location"), Some("/account"));
    assert_eq!(
        ex[6].request.headers.get_str("expect"),
        Some("100-continue")
    );
    assert_eq!(
        ex[7].request.headers.get_str("transfer-encoding"),
        Some("chunked")
    );
}

#[test]
fn real_pcap_from_tcpdump_on_lo() {
    check("h1-python.pcap");
}

#[test]
fn real_pcapng_from_dumpcap_on_any() {
    check("h1-python.pcapng");
}
