//! The synthetic adversarial captures (`agent/streams/tests/data/adversarial`)
//! replayed through reassembly and the HTTP/1 stage.

use std::path::PathBuf;

use sessionwatch_http::h1::{H1Stage, Limits};
use sessionwatch_http::{Exchange, HttpStats};
use sessionwatch_streams::reassembly::ReassemblyConfig;
use sessionwatch_streams::replay::replay;

type Summary = Vec<(String, Option<u16>)>;

fn run(name: &str) -> (Summary, Vec<Exchange>, HttpStats) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../streams/tests/data/adversarial")
        .join(name);
    let mut stage = H1Stage::new(Vec::new(), Limits::default());
    replay(&path, &ReassemblyConfig::default(), &mut stage).unwrap_or_else(|e| panic!("{e}"));
    let stats = stage.stats().clone();
    let ex = stage.into_sink();
    let summary = ex
        .iter()
        .map(|e| {
            (
                format!("{} {}", e.request.method, e.request.target),
                e.response.as_ref().map(|r| r.status),
            )
        })
        .collect();
    (summary, ex, stats)
}

fn both() -> Summary {
    vec![
        ("POST /login".to_string(), Some(302)),
        ("GET /account".to_string(), Some(200)),
    ]
}

#[test]
fn distorted_captures_still_give_both_exchanges() {
    for name in [
        "reordered.pcap",
        "retransmits.pcap",
        "lost-segment.pcap",
        "truncated.pcap",
        "mixed.pcapng",
    ] {
        let (summary, ex, stats) = run(name);
        assert_eq!(summary, both(), "{name}");
        assert!(
            stats.parse_errors.is_empty(),
            "{name}: {:?}",
            stats.parse_errors
        );
        let login = ex[0]
            .response
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: login response"));
        assert_eq!(
            login.headers.get_str("location"),
            Some("/account"),
            "{name}"
        );
        assert_eq!(
            ex[1].request.headers.get_str("cookie"),
            Some("sessionid=synthetic-fixture-id"),
            "{name}"
        );
    }
}

#[test]
fn capture_without_handshake_pairs_only_what_it_saw() {
    let (summary, _, stats) = run("no-syn.pcap");
    // The login request was not captured: its response must not be paired
    // with the next request.
    assert_eq!(summary, vec![("GET /account".to_string(), Some(200))]);
    assert_eq!(stats.orphan_responses, 1);
}
