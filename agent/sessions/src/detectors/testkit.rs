//! Test helpers: realistic exchanges and an analyzer harness.

use std::net::SocketAddr;
use std::sync::Arc;

use sessionwatch_http::{Exchange, Headers, Protocol, Request, Response};
use sessionwatch_streams::{ConnectionId, ConnectionMeta, ProcessInfo, Source, Timestamp};

use crate::Analyzer;
use crate::config::AnalysisConfig;
use crate::finding::{Finding, Severity};
use crate::hash::HashKey;

/// Event time base of the tests (2026-09-21T…Z).
pub const BASE: u64 = 1_790_000_000;

pub const CHROME_120: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36";
pub const CHROME_120_PATCH: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.224 Safari/537.36";
pub const CHROME_121: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.6167.85 Safari/537.36";
pub const FIREFOX_121: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0";
pub const SAFARI_17: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15";
pub const CURL: &str = "curl/8.5.0";

/// Realistic session IDs per framework.
pub const DJANGO_ID: &str = "q8n3v5k2m9x1z7c4b6n8m2k4j6h8g0f2";
pub const DJANGO_ID2: &str = "w2e4r6t8y0u1i3o5p7a9s2d4f6g8h0j1";
pub const PHP_ID: &str = "k1v0f5hr3m2ecu9b8q7tl4p6s0";
pub const PHP_ID2: &str = "9aq3kc1lv7m0p2h5u8e4r6t1bd";
pub const JSESSION_ID: &str = "9A4F2C71D0B83E56A7C19D2E4F60B8A3";
pub const JSESSION_ID2: &str = "1C3E5A7B9D0F2468ACE13579BDF02468";
pub const EXPRESS_SID: &str =
    "s%3AxKq3_Pz9Lm2Wv8Rt5Yb1Nc7Hd4Gf6Js0.Zt9x%2Fw3R5kLmN8pQ2vB6yC1dE4fG7hJ0kL3mN6pQ9s";
pub const EXPRESS_SID2: &str =
    "s%3ApL8m_Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9L.Mn2b%2Fv4C6x8Z0a1S3d5F7g9H1j3K5l7Q9w1E3r5T7y";
pub const RAILS_ID: &str = "3f9c2a7e1b5d8046c9e2f1a7b3d5e8c0";
pub const RAILS_ID2: &str = "8b1e4d7a0c3f6925e8b1d4a7c0f3e692";

/// Builder of one exchange.
#[derive(Clone)]
pub struct Ex {
    method: String,
    target: String,
    host: Option<String>,
    req_headers: Vec<(String, String)>,
    status: Option<u16>,
    resp_headers: Vec<(String, String)>,
    at: u64,
    peer: SocketAddr,
    tls: bool,
    comm: Option<String>,
    protocol: Protocol,
}

impl Ex {
    pub fn new(method: &str, target: &str) -> Ex {
        Ex {
            method: method.into(),
            target: target.into(),
            host: Some("shop.example".into()),
            req_headers: vec![("user-agent".into(), CHROME_120.into())],
            status: Some(200),
            resp_headers: Vec::new(),
            at: 0,
            peer: "203.0.113.7:40000".parse().unwrap(),
            tls: true,
            comm: None,
            protocol: Protocol::Http1,
        }
    }
    pub fn get(target: &str) -> Ex {
        Ex::new("GET", target)
    }
    pub fn post(target: &str) -> Ex {
        Ex::new("POST", target)
    }
    pub fn at(mut self, secs: u64) -> Ex {
        self.at = secs;
        self
    }
    pub fn cookie(self, c: &str) -> Ex {
        self.header("cookie", c)
    }
    pub fn header(mut self, n: &str, v: &str) -> Ex {
        self.req_headers.push((n.into(), v.into()));
        self
    }
    pub fn ua(mut self, ua: &str) -> Ex {
        self.req_headers.retain(|(n, _)| n != "user-agent");
        self.req_headers.push(("user-agent".into(), ua.into()));
        self
    }
    pub fn no_ua(mut self) -> Ex {
        self.req_headers.retain(|(n, _)| n != "user-agent");
        self
    }
    pub fn from(mut self, ip: &str) -> Ex {
        self.peer = SocketAddr::new(ip.parse().unwrap(), 40000);
        self
    }
    pub fn tls(mut self, tls: bool) -> Ex {
        self.tls = tls;
        self
    }
    pub fn host(mut self, h: &str) -> Ex {
        self.host = Some(h.into());
        self
    }
    pub fn comm(mut self, c: &str) -> Ex {
        self.comm = Some(c.into());
        self
    }
    pub fn status(mut self, s: u16) -> Ex {
        self.status = Some(s);
        self
    }
    pub fn no_response(mut self) -> Ex {
        self.status = None;
        self
    }
    pub fn set_cookie(self, v: &str) -> Ex {
        self.resp_header("set-cookie", v)
    }
    pub fn location(self, l: &str) -> Ex {
        self.resp_header("location", l)
    }
    pub fn resp_header(mut self, n: &str, v: &str) -> Ex {
        self.resp_headers.push((n.into(), v.into()));
        self
    }
    pub fn h2(mut self) -> Ex {
        self.protocol = Protocol::Http2;
        self
    }
    pub fn build(&self) -> Exchange {
        let ts = Timestamp::from_secs_nanos(BASE + self.at, 250_000_000);
        let mut rh = Headers::default();
        for (n, v) in &self.req_headers {
            rh.push(n, v.as_bytes());
        }
        let response = self.status.map(|status| {
            let mut h = Headers::default();
            for (n, v) in &self.resp_headers {
                h.push(n, v.as_bytes());
            }
            Response {
                ts: Timestamp(ts.0 + 20_000_000),
                status,
                headers: h,
            }
        });
        Exchange {
            conn: Arc::new(ConnectionMeta {
                id: ConnectionId(1),
                client: Some(self.peer),
                server: Some("10.0.0.10:443".parse().unwrap()),
                tls: self.tls,
                source: if self.tls {
                    Source::TlsLibrary
                } else {
                    Source::Pcap
                },
                process: self.comm.as_ref().map(|c| ProcessInfo {
                    pid: 100,
                    comm: c.clone(),
                    container_id: None,
                    pod: None,
                }),
            }),
            protocol: self.protocol,
            request: Request {
                ts,
                method: self.method.as_str().into(),
                target: self.target.as_str().into(),
                host: self.host.as_deref().map(Into::into),
                headers: rh,
            },
            response,
        }
    }
}

/// An analyzer with a fixed key and the findings it produced.
pub struct Harness {
    pub an: Analyzer,
    pub findings: Vec<Finding>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(|_| {})
    }
    pub fn with(f: impl FnOnce(&mut AnalysisConfig)) -> Harness {
        let mut c = AnalysisConfig {
            node: "node-1".into(),
            ..AnalysisConfig::default()
        };
        f(&mut c);
        Harness {
            an: Analyzer::new(c, HashKey::from_bytes([42; 32])).expect("config"),
            findings: Vec::new(),
        }
    }
    /// Runs one exchange; returns the findings it produced.
    pub fn run(&mut self, ex: Ex) -> Vec<Finding> {
        let mut out = Vec::new();
        self.an.on_exchange(&ex.build(), &mut out);
        self.findings.extend(out.iter().cloned());
        out
    }
    /// Findings of `detector` among everything so far.
    pub fn of(&self, detector: &str) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.detector == detector)
            .collect()
    }
    pub fn count(&self, detector: &str) -> usize {
        self.of(detector).len()
    }
    /// Highest severity emitted so far.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
    pub fn hash(&self, raw: &str) -> String {
        self.an.hash_of(raw.as_bytes()).to_hex()
    }
}

/// A well-configured session cookie (all flags).
pub fn good(name: &str, id: &str) -> String {
    format!("{name}={id}; Path=/; Secure; HttpOnly; SameSite=Lax")
}
