//! A fake Kubernetes API server for the `[kubernetes]` tests: real HTTPS
//! (certificate from a test CA, for 127.0.0.1), HTTP/1.1, one request per
//! connection. Serves `/api/v1/pods` (the pod list it holds, or the watch
//! events it holds as one short watch), records every request's target
//! and `Authorization` header, and answers 500 while `failing` is set.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const NODE: &str = "node-sw-test";

/// The test CA (`ca.pem`) and the server certificate for 127.0.0.1
/// (`server.pem`, `server.key`) in `dir`: [`crate::common::test_ca`].
pub fn make_certs(dir: &Path) {
    crate::common::test_ca(dir);
}

fn status(name: &str, id: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "image": "i", "imageID": "", "ready": true,
                       "restartCount": 0, "containerID": id})
}

pub fn pod(
    name: &str,
    ns: &str,
    uid: &str,
    app: Option<&str>,
    ids: &[(&str, &str)],
) -> serde_json::Value {
    let labels = match app {
        Some(a) => serde_json::json!({"app.kubernetes.io/name": a}),
        None => serde_json::json!({}),
    };
    let (init, main): (Vec<_>, Vec<_>) = ids.iter().partition(|(kind, _)| *kind == "init");
    serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": labels,
                     "resourceVersion": "90"},
        "spec": {"nodeName": NODE, "containers": []},
        "status": {
            "containerStatuses": main.iter().map(|(_, id)| status("c", id)).collect::<Vec<_>>(),
            "initContainerStatuses": init.iter().map(|(_, id)| status("i", id)).collect::<Vec<_>>(),
        }
    })
}

#[derive(Default)]
pub struct Recorded {
    /// (request target, authorization header) of every request.
    pub requests: Vec<(String, String)>,
}

/// The fake API server: HTTP/1.1 over TLS, one request per connection.
pub struct FakeApi {
    pub port: u16,
    pub recorded: Arc<Mutex<Recorded>>,
    /// Answer every request with 500 while set.
    pub failing: Arc<AtomicBool>,
    /// `items` of the pod list (resourceVersion "100").
    pub pods: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Events of every watch (`{"type": …, "object": …}`), after which
    /// the watch ends.
    pub watch_events: Arc<Mutex<Vec<serde_json::Value>>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeApi {
    pub fn start(dir: &Path) -> FakeApi {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("server.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let failing = Arc::new(AtomicBool::new(false));
        let pods = Arc::new(Mutex::new(Vec::new()));
        let watch_events = Arc::new(Mutex::new(Vec::new()));
        let (rec, fail, pods_s, watch_s) = (
            recorded.clone(),
            failing.clone(),
            pods.clone(),
            watch_events.clone(),
        );
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, rec, fail, pods, watch) = (
                    acceptor.clone(),
                    rec.clone(),
                    fail.clone(),
                    pods_s.clone(),
                    watch_s.clone(),
                );
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let auth = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("authorization").then(|| v.trim().to_owned())
                        })
                        .unwrap_or_default();
                    rec.lock().unwrap().requests.push((target.clone(), auth));
                    let (code, body) = if fail.load(Ordering::SeqCst) {
                        (500, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcd down","code":500}"#.to_owned())
                    } else if target.contains("watch=true") {
                        let events = watch.lock().unwrap();
                        (200, events.iter().map(|e| format!("{e}\n")).collect::<String>())
                    } else {
                        let list = serde_json::json!({
                            "kind": "PodList", "apiVersion": "v1",
                            "metadata": {"resourceVersion": "100"},
                            "items": *pods.lock().unwrap(),
                        });
                        (200, list.to_string())
                    };
                    let reason = if code == 200 { "OK" } else { "Internal Server Error" };
                    let resp = format!(
                        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        FakeApi {
            port,
            recorded,
            failing,
            pods,
            watch_events,
            _rt: rt,
        }
    }
}
