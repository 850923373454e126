//! The replay pipeline on an in-memory capture: pcap/pcapng reader → TCP
//! reassembly → HTTP stage → session analyzer with every detector.

use std::io::Cursor;

use sessionwatch_http::h1::{H1Stage, Limits};
use sessionwatch_http::{Exchange, ExchangeSink};
use sessionwatch_sessions::{AnalysisConfig, Analyzer, Finding, FindingSink, HashKey};
use sessionwatch_streams::pcap::PcapReader;
use sessionwatch_streams::reassembly::{Reassembler, ReassemblyConfig};

/// Counts findings and checks the one promise the JSON contract makes
/// about sessions: only the 16-hex-digit keyed hash, never a raw ID.
#[derive(Debug, Default)]
struct Findings(u64);

impl FindingSink for Findings {
    fn on_finding(&mut self, finding: &Finding) {
        self.0 += 1;
        if let Some(s) = &finding.session {
            assert!(
                s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()),
                "finding session is not a keyed hash"
            );
        }
    }
}

struct Analysis {
    analyzer: Analyzer,
    findings: Findings,
}

impl ExchangeSink for Analysis {
    fn on_exchange(&mut self, ex: &mut Exchange) {
        self.analyzer.on_exchange(ex, &mut self.findings);
    }
}

/// Small reassembly bounds, so that short inputs reach eviction and the
/// out-of-order limits.
fn small_reassembly() -> ReassemblyConfig {
    ReassemblyConfig {
        max_flows: 4,
        max_buffered_per_direction: 2048,
        max_segments_per_direction: 8,
        max_buffered_total: 4096,
        ..ReassemblyConfig::default()
    }
}

/// Replays `data` as a capture file through the whole pipeline. The low
/// bit of the last byte selects small bounds everywhere (the pcap formats
/// ignore trailing bytes only in the sense that they become a truncated
/// record, which is itself a path worth reaching).
pub fn run_capture(data: &[u8]) {
    let small = data.last().is_some_and(|b| b & 1 == 1);
    let (limits, reassembly) = if small {
        (crate::small_limits(), small_reassembly())
    } else {
        (Limits::default(), ReassemblyConfig::default())
    };
    let max_buffered = reassembly.max_buffered_total;
    let mut config = AnalysisConfig::default();
    if small {
        config.sessions.max_sessions = 4;
    }
    let analyzer = match Analyzer::new(config, HashKey::from_bytes([0x5a; 32])) {
        Ok(a) => a,
        Err(e) => panic!("default analysis config rejected: {e}"),
    };
    let mut http = H1Stage::new(
        Analysis {
            analyzer,
            findings: Findings::default(),
        },
        limits,
    );
    let mut reassembler = Reassembler::new(reassembly);
    let Ok(mut reader) = PcapReader::new("fuzz.pcap", Cursor::new(data)) else {
        return;
    };
    // `replay_into`'s loop, with the bound checked after each packet. A
    // read error ends the input, as it ends `sessionwatch replay`.
    while let Ok(Some(packet)) = reader.next_packet() {
        reassembler.process_packet(&packet, &mut http);
        assert!(reassembler.buffered_bytes() <= max_buffered);
    }
    reassembler.finish(&mut http);
    http.finish();
    assert_eq!(reassembler.buffered_bytes(), 0, "reassembly buffer leaked");
    assert_eq!(http.buffered_bytes(), 0, "HTTP head buffer leaked");
    assert_eq!(http.pending_bytes(), 0, "HTTP pending budget leaked");
    let analysis = http.sink_mut();
    analysis.analyzer.finish();
    if small {
        assert!(analysis.analyzer.sessions() <= 4);
    }
}
