//! The admin endpoint behind an exporter-toolkit web config: TLS, basic
//! auth, client certificates and certificate rotation, checked with real
//! clients — `curl --cacert` and a real Debian `prometheus` scraping with
//! `scheme: https`, `tls_config` and `basic_auth`.
//!
//! The endpoint runs in this process (no eBPF, no root needed); the
//! certificates are made here with `openssl` (a CA, a server certificate for
//! 127.0.0.1, a client certificate, and a client certificate of another CA).
//!
//! Needs openssl, curl and prometheus; without them it prints a loud SKIP
//! line (or fails when `CI` or `SESSIONWATCH_E2E_REQUIRED=1` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessionwatch::export::admin::{self, AdminState};
use sessionwatch::export::metrics::Metrics;
use sessionwatch::export::webconfig::WebConfig;

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

struct Tools {
    openssl: PathBuf,
    curl: PathBuf,
    prometheus: PathBuf,
}

fn preconditions(test: &str) -> Option<Tools> {
    let names = ["openssl", "curl", "prometheus"];
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| find_tool(n)).collect();
    let missing: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| *n)
        .collect();
    if skip_if_missing(&format!("admin_tls::{test}"), &missing) {
        return None;
    }
    let [openssl, curl, prometheus] = [0, 1, 2].map(|i| found[i].clone().unwrap());
    Some(Tools {
        openssl,
        curl,
        prometheus,
    })
}

fn openssl(tools: &Tools, dir: &Path, args: &[&str]) {
    let out = Command::new(&tools.openssl)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<ca>.pem`/`<ca>.key`) and a leaf `<name>.pem`/`<name>.key` it
/// signed, with `ext` as the leaf's extensions.
fn make_ca(tools: &Tools, dir: &Path, ca: &str) {
    openssl(
        tools,
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=sessionwatch test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    );
}

fn make_leaf(tools: &Tools, dir: &Path, ca: &str, name: &str, ext: &str) {
    openssl(
        tools,
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        tools,
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

const SERVER_EXT: &str = "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
                          extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n";
const CLIENT_EXT: &str = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n";

/// The in-process admin endpoint with `web_yaml` (written next to the
/// certificates). The runtime must outlive the test's requests.
struct Endpoint {
    port: u16,
    _rt: tokio::runtime::Runtime,
}

fn serve(dir: &Path, name: &str, web_yaml: &str) -> Endpoint {
    let path = dir.join(name);
    std::fs::write(&path, web_yaml).unwrap();
    let web = WebConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = AdminState {
        metrics: Arc::new(Mutex::new(Metrics::new().unwrap())),
        ready: Arc::new(AtomicBool::new(true)),
        refresh: None,
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (bound, _task) = rt
        .block_on(admin::serve_with(addr, state, Some(web)))
        .unwrap();
    Endpoint {
        port: bound.port(),
        _rt: rt,
    }
}

/// curl: (exit success, HTTP code, response headers + body).
fn curl(tools: &Tools, args: &[&str]) -> (bool, u16, String) {
    let out = Command::new(&tools.curl)
        .args([
            "-s",
            "-S",
            "--max-time",
            "10",
            "-D",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .rsplit('\n')
        .next()
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0);
    (out.status.success(), code, text)
}

fn hash(password: &str) -> String {
    // Cost 4 keeps the test fast; production hashes use 10 or more (the
    // endpoint caches verified credentials either way).
    bcrypt::hash(password, 4).unwrap()
}

#[test]
fn tls_and_basic_auth_with_curl() {
    let Some(tools) = preconditions("tls_and_basic_auth_with_curl") else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("sessionwatch-admin-tls-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    make_ca(&tools, dir, "ca");
    make_leaf(&tools, dir, "ca", "server", SERVER_EXT);
    let ep = serve(
        dir,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS12\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  {USER}: '{}'\n",
            hash(PASSWORD)
        ),
    );
    let url = |p: &str| format!("https://127.0.0.1:{}{p}", ep.port);
    let ca = dir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let creds = format!("{USER}:{PASSWORD}");

    // Good credentials, certificate verified against the CA.
    let (ok, code, text) = curl(&tools, &["--cacert", ca, "-u", &creds, &url("/metrics")]);
    assert!(ok && code == 200, "{text}");
    assert!(text.contains("sessionwatch_build_info"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{text}"
    );

    // Missing, wrong password, unknown user, empty password: 401 with a
    // Basic challenge and no metrics.
    for args in [
        vec![],
        vec!["-u", "prometheus:wrong"],
        vec!["-u", "nobody:correct horse battery staple"],
        vec!["-u", "prometheus:"],
    ] {
        let mut a = vec!["--cacert", ca];
        a.extend(args.iter().copied());
        let u = url("/metrics");
        a.push(&u);
        let (_, code, text) = curl(&tools, &a);
        assert_eq!(code, 401, "{args:?}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{text}"
        );
        assert!(!text.contains("sessionwatch_"), "{args:?}: {text}");
    }

    // Probes answer without credentials (documented choice).
    let (ok, code, text) = curl(&tools, &["--cacert", ca, &url("/healthz")]);
    assert!(ok && code == 200, "{text}");
    let (ok, code, text) = curl(&tools, &["--cacert", ca, &url("/readyz")]);
    assert!(ok && code == 200, "{text}");
    // Other paths are not probes: credentials required.
    let (_, code, _) = curl(&tools, &["--cacert", ca, &url("/nope")]);
    assert_eq!(code, 401);

    // Plain HTTP to the TLS port gets no response, and the certificate is
    // not trusted without the CA.
    let (_, code, _) = curl(
        &tools,
        &[
            "-u",
            &creds,
            &format!("http://127.0.0.1:{}/metrics", ep.port),
        ],
    );
    assert_ne!(code, 200);
    let (ok, _, _) = curl(&tools, &["-u", &creds, &url("/metrics")]);
    assert!(!ok, "an untrusted certificate must fail verification");
    // TLS 1.1 and older are refused.
    let (ok, _, _) = curl(
        &tools,
        &[
            "--cacert",
            ca,
            "--tls-max",
            "1.1",
            "-u",
            &creds,
            &url("/metrics"),
        ],
    );
    assert!(!ok, "TLS 1.1 must be refused");
}

#[test]
fn client_certificates_are_required_and_verified() {
    let Some(tools) = preconditions("client_certificates_are_required_and_verified") else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("sessionwatch-admin-mtls-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    make_ca(&tools, dir, "ca");
    make_ca(&tools, dir, "rogue-ca");
    make_leaf(&tools, dir, "ca", "server", SERVER_EXT);
    make_leaf(&tools, dir, "ca", "client", CLIENT_EXT);
    make_leaf(&tools, dir, "rogue-ca", "rogue", CLIENT_EXT);
    let ep = serve(
        dir,
        "web.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
    );
    let url = format!("https://127.0.0.1:{}/metrics", ep.port);
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (ca, cert, key) = (p("ca.pem"), p("client.pem"), p("client.key"));
    let (rcert, rkey) = (p("rogue.pem"), p("rogue.key"));

    let (ok, code, text) = curl(
        &tools,
        &["--cacert", &ca, "--cert", &cert, "--key", &key, &url],
    );
    assert!(ok && code == 200, "{text}");
    assert!(text.contains("sessionwatch_build_info"), "{text}");
    // No client certificate, or one from another CA: no HTTP at all.
    let (_, code, text) = curl(&tools, &["--cacert", &ca, &url]);
    assert_ne!(code, 200, "{text}");
    assert!(!text.contains("sessionwatch_"), "{text}");
    let (_, code, text) = curl(
        &tools,
        &["--cacert", &ca, "--cert", &rcert, "--key", &rkey, &url],
    );
    assert_ne!(code, 200, "{text}");
    assert!(!text.contains("sessionwatch_"), "{text}");

    // VerifyClientCertIfGiven: no certificate is fine, a rogue one is not.
    let ep2 = serve(
        dir,
        "web-optional.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
         client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n",
    );
    let url2 = format!("https://127.0.0.1:{}/metrics", ep2.port);
    let (ok, code, text) = curl(&tools, &["--cacert", &ca, &url2]);
    assert!(ok && code == 200, "{text}");
    let (_, code, _) = curl(
        &tools,
        &["--cacert", &ca, "--cert", &rcert, "--key", &rkey, &url2],
    );
    assert_ne!(code, 200);
}

#[test]
fn rotated_certificate_is_served_without_restart() {
    let Some(tools) = preconditions("rotated_certificate_is_served_without_restart") else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("sessionwatch-admin-rotate-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    make_ca(&tools, dir, "old-ca");
    make_ca(&tools, dir, "new-ca");
    make_leaf(&tools, dir, "old-ca", "old", SERVER_EXT);
    make_leaf(&tools, dir, "new-ca", "new", SERVER_EXT);
    std::fs::copy(dir.join("old.pem"), dir.join("tls.crt")).unwrap();
    std::fs::copy(dir.join("old.key"), dir.join("tls.key")).unwrap();
    let ep = serve(
        dir,
        "web.yml",
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n",
    );
    let url = format!("https://127.0.0.1:{}/healthz", ep.port);
    let ca = |c: &str| dir.join(format!("{c}.pem")).to_str().unwrap().to_owned();
    let (ok, _, text) = curl(&tools, &["--cacert", &ca("old-ca"), &url]);
    assert!(ok, "{text}");

    // A half-done rotation (new certificate, old key) keeps the old pair.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::copy(dir.join("new.pem"), dir.join("tls.crt")).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let (ok, _, text) = curl(&tools, &["--cacert", &ca("old-ca"), &url]);
    assert!(
        ok,
        "mismatched pair must not replace the served one: {text}"
    );

    // Completed rotation: served within the recheck interval.
    std::fs::copy(dir.join("new.key"), dir.join("tls.key")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, _, _) = curl(&tools, &["--cacert", &ca("new-ca"), &url]);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotated certificate not served after 15 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, _, _) = curl(&tools, &["--cacert", &ca("old-ca"), &url]);
    assert!(!ok, "the old certificate is no longer served");
}

/// Minimal HTTP GET against Prometheus' own (plain) API.
fn prom_get(port: u16, path: &str) -> serde_json::Value {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return serde_json::Value::Null;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn prometheus_scrapes_over_https_with_basic_auth() {
    let Some(tools) = preconditions("prometheus_scrapes_over_https_with_basic_auth") else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("sessionwatch-admin-prom-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    make_ca(&tools, dir, "ca");
    make_leaf(&tools, dir, "ca", "server", SERVER_EXT);
    // Production-like cost: Prometheus scrapes every second, and the cache
    // keeps that from costing a bcrypt computation each time.
    let h = bcrypt::hash(PASSWORD, 10).unwrap();
    let ep = serve(
        dir,
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n\
             basic_auth_users:\n  {USER}: '{h}'\n"
        ),
    );
    let prom_port = free_port();
    let target = format!("127.0.0.1:{}", ep.port);
    let ca = dir.join("ca.pem").display().to_string();
    let pw = dir.join("password").display().to_string();
    std::fs::write(dir.join("password"), PASSWORD).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        [
            "global:".to_owned(),
            "  scrape_interval: 1s".into(),
            "  scrape_timeout: 1s".into(),
            "scrape_configs:".into(),
            "  - job_name: good".into(),
            "    scheme: https".into(),
            format!("    tls_config: {{ ca_file: '{ca}' }}"),
            format!("    basic_auth: {{ username: {USER}, password_file: '{pw}' }}"),
            format!("    static_configs: [ {{ targets: ['{target}'] }} ]"),
            "  - job_name: wrong_password".into(),
            "    scheme: https".into(),
            format!("    tls_config: {{ ca_file: '{ca}' }}"),
            format!("    basic_auth: {{ username: {USER}, password: nope }}"),
            format!("    static_configs: [ {{ targets: ['{target}'] }} ]"),
            "  - job_name: untrusted".into(),
            "    scheme: https".into(),
            format!("    basic_auth: {{ username: {USER}, password_file: '{pw}' }}"),
            format!("    static_configs: [ {{ targets: ['{target}'] }} ]"),
            String::new(),
        ]
        .join("\n"),
    )
    .unwrap();
    let _prom = Guard(
        Command::new(&tools.prometheus)
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus"),
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let v = prom_get(prom_port, "/api/v1/targets?state=active");
        let health = |job: &str| {
            v["data"]["activeTargets"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["labels"]["job"] == job)
                .map(|t| {
                    (
                        t["health"].as_str().unwrap_or("").to_owned(),
                        t["lastError"].to_string(),
                    )
                })
        };
        if let (Some(good), Some(bad), Some(untrusted)) = (
            health("good"),
            health("wrong_password"),
            health("untrusted"),
        ) && good.0 == "up"
            && bad.0 == "down"
            && untrusted.0 == "down"
        {
            assert!(bad.1.contains("401"), "wrong password: {}", bad.1);
            assert!(
                untrusted.1.to_ascii_lowercase().contains("certificate"),
                "untrusted: {}",
                untrusted.1
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus target health not as expected: {v}\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The scraped series are in the TSDB.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = prom_get(
            prom_port,
            "/api/v1/query?query=sessionwatch_build_info%7Bjob%3D%22good%22%7D",
        );
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "no scraped series: {v}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Scrapes stay cheap: with the cache, a scrape is well under the
    // 1 s timeout even at bcrypt cost 10 (several consecutive `up == 1`).
    let v = prom_get(
        prom_port,
        "/api/v1/query?query=min_over_time(up%7Bjob%3D%22good%22%7D%5B5s%5D)",
    );
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{v}");
}
