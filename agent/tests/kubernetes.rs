//! `[kubernetes]` enrichment against a fake API server: a real HTTPS server
//! (certificate from a test CA) that serves this node's pod list and a
//! watch, records what the agent sends, and can be switched to failing.
//!
//! Checks: the bearer token from `token_file` and the node field selector
//! on every request, the CA from `ca_file` (a server the CA did not sign is
//! refused), pods indexed by every kind of container status, watch events
//! applied, API failures counted with the cache kept, recovery, and a
//! finding of a pipeline fed a containerised connection carrying pod,
//! namespace and the app label as service.
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod k8s_api;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_api::{FakeApi, NODE, make_certs, pod};
use sessionwatch::capture::kubernetes::{PodCache, PodSync};
use sessionwatch::config::KubernetesConfig;

const A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const C: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const D: &str = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";
const TOKEN: &str = "sw-test-token-7f3a";

/// The fake API server with this test's pods: two in the list, one added
/// and one deleted by every watch.
fn start_api(dir: &Path) -> FakeApi {
    let api = FakeApi::start(dir);
    *api.pods.lock().unwrap() = vec![
        pod(
            "shop-7d4b9c-x2x8k",
            "prod",
            "uid-shop",
            Some("shop"),
            &[
                ("main", &format!("containerd://{A}")),
                ("init", &format!("containerd://{B}")),
            ],
        ),
        pod(
            "web-0",
            "web",
            "uid-web",
            None,
            &[("main", &format!("docker://{C}"))],
        ),
    ];
    *api.watch_events.lock().unwrap() = vec![
        serde_json::json!({"type": "ADDED", "object": pod("late-0", "prod", "uid-late",
            Some("late"), &[("main", &format!("cri-o://{D}"))])}),
        serde_json::json!({"type": "DELETED", "object": pod("web-0", "web", "uid-web", None,
            &[("main", &format!("docker://{C}"))])}),
    ];
    api
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn config(dir: &Path, port: u16, ca: &str) -> KubernetesConfig {
    KubernetesConfig {
        enabled: true,
        api_server: Some(format!("https://127.0.0.1:{port}")),
        token_file: dir.join("token"),
        ca_file: dir.join(ca),
        node_name: Some(NODE.into()),
        resync_interval: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        max_pods: 16,
    }
}

/// The agent's log in the test output (why a list failed).
fn log() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("sessionwatch=debug")
        .try_init();
}

fn name_of(cache: &PodCache, id: &str) -> Option<(String, String, Option<String>)> {
    cache
        .lookup(id)
        .map(|p| (p.name.clone(), p.namespace.clone(), p.app.clone()))
}

#[test]
fn lists_watches_counts_errors_and_recovers() {
    if common::find_tool("openssl").is_none() {
        common::skip_if_missing("kubernetes", &["openssl"]);
        return;
    }
    log();
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let api = start_api(dir.path());
    let sync = PodSync::start(&config(dir.path(), api.port, "ca.pem"), NODE).expect("start");
    let cache = sync.cache();
    assert!(sync.wait_synced(Duration::from_secs(15)), "first list");

    // Every kind of status is indexed; other runtimes' prefixes too.
    let shop = Some((
        "shop-7d4b9c-x2x8k".to_owned(),
        "prod".to_owned(),
        Some("shop".to_owned()),
    ));
    assert_eq!(name_of(&cache, A), shop);
    assert_eq!(name_of(&cache, B), shop, "init container");
    assert!(cache.stats().up);

    // The watch from the list's resourceVersion adds one pod, deletes one.
    wait_for("the watch's ADDED", Duration::from_secs(10), || {
        cache.lookup(D).is_some()
    });
    assert_eq!(
        name_of(&cache, D),
        Some(("late-0".into(), "prod".into(), Some("late".into())))
    );
    wait_for("the watch's DELETED", Duration::from_secs(5), || {
        cache.lookup(C).is_none()
    });

    {
        let rec = api.recorded.lock().unwrap();
        assert!(rec.requests.len() >= 2, "{:?}", rec.requests);
        for (target, auth) in &rec.requests {
            assert_eq!(auth, &format!("Bearer {TOKEN}"), "{target}");
            assert!(
                target.starts_with("/api/v1/pods?"),
                "all namespaces: {target}"
            );
            assert!(
                target.contains("fieldSelector=spec.nodeName%3Dnode-sw-test"),
                "node field selector: {target}"
            );
        }
        let watch = rec
            .requests
            .iter()
            .find(|(t, _)| t.contains("watch=true"))
            .expect("a watch request");
        assert!(watch.0.contains("resourceVersion=100"), "{}", watch.0);
    }

    // API down: counted, up goes to 0, the cache is kept.
    let errors_before = cache.stats().sync_errors;
    api.failing.store(true, Ordering::SeqCst);
    wait_for(
        "errors counted while the API is down",
        Duration::from_secs(15),
        || {
            let s = cache.stats();
            s.sync_errors > errors_before && !s.up
        },
    );
    assert_eq!(name_of(&cache, A), shop, "known pods stay known while down");

    // Back: the next list succeeds.
    let lists = cache.stats().lists;
    api.failing.store(false, Ordering::SeqCst);
    wait_for("recovery", Duration::from_secs(40), || {
        let s = cache.stats();
        s.up && s.lists > lists
    });
    assert_eq!(name_of(&cache, A), shop, "relisted");
    sync.shutdown();
}

#[test]
fn refuses_a_server_the_ca_did_not_sign() {
    if common::find_tool("openssl").is_none() {
        common::skip_if_missing("kubernetes", &["openssl"]);
        return;
    }
    log();
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    make_certs(&other);
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let api = start_api(dir.path());
    let sync = PodSync::start(&config(dir.path(), api.port, "other/ca.pem"), NODE).expect("start");
    let cache = sync.cache();
    wait_for("a counted TLS failure", Duration::from_secs(15), || {
        cache.stats().sync_errors >= 1
    });
    assert!(!cache.stats().up);
    assert!(!cache.synced());
    assert!(
        api.recorded.lock().unwrap().requests.is_empty(),
        "no request may reach an unverified server"
    );
    sync.shutdown();
}

/// One request/response on a fresh TLS connection of a process in
/// container `container`; the response sets a session cookie without
/// `Secure` (a `cookie_missing_secure` finding).
fn exchange(
    p: &mut sessionwatch::pipeline::Pipeline,
    conn: u64,
    container: &str,
    before_data: impl FnOnce(),
) {
    use sessionwatch_streams::{
        CloseReason, ConnectionId, ConnectionMeta, Direction, ProcessInfo, Source, StreamEvent,
        StreamSink as _, Timestamp,
    };
    let id = ConnectionId(conn);
    let meta = ConnectionMeta {
        id,
        client: Some(format!("203.0.113.{conn}:40000").parse().unwrap()),
        server: Some("10.1.0.5:443".parse().unwrap()),
        tls: true,
        source: Source::TlsLibrary,
        process: Some(ProcessInfo {
            pid: 4000 + conn as u32,
            comm: "nginx".into(),
            container_id: Some(container.into()),
            pod: None,
        }),
    };
    let ts = Timestamp(1_700_000_000_000_000_000 + conn * 1_000_000_000);
    p.on_event(StreamEvent::Open(&meta));
    before_data();
    let req =
        format!("GET /k8s-{conn} HTTP/1.1\r\nHost: k8s-{conn}.example\r\nUser-Agent: t\r\n\r\n");
    // A different high-entropy ID per connection.
    let sid = format!("Zq8x{conn}T4mRk2Lp9Vw3Hs7Ny6Bd1Fg5Jc0XaQe8Ur2Oi4Kt");
    let resp = format!(
        "HTTP/1.1 200 OK\r\nSet-Cookie: sessionid={sid}; Path=/; HttpOnly; SameSite=Lax\r\nContent-Length: 2\r\n\r\nok"
    );
    for (dir, bytes) in [(Direction::ToServer, req), (Direction::ToClient, resp)] {
        p.on_event(StreamEvent::Data {
            conn: id,
            dir,
            ts,
            bytes: bytes.as_bytes(),
        });
    }
    p.on_event(StreamEvent::Close {
        conn: id,
        ts,
        reason: CloseReason::Closed,
    });
}

#[test]
fn findings_carry_pod_namespace_and_app_label_as_service() {
    use sessionwatch::capture::kubernetes::PodRecord;
    use sessionwatch::config::Config;
    use sessionwatch::export::alerts::{FindingFanout, JsonLinesSink};
    use sessionwatch::export::metrics::Metrics;
    use sessionwatch::export::summary::Summary;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("findings.jsonl");
    let metrics = Arc::new(Mutex::new(Metrics::new().unwrap()));
    let fanout = FindingFanout {
        json: JsonLinesSink::open(out.to_str().unwrap()).unwrap(),
        alertmanager: None,
        metrics: metrics.clone(),
        summary: Summary::default(),
    };
    let mut p = sessionwatch::pipeline::Pipeline::new(&Config::default(), fanout).unwrap();
    let cache = PodCache::new(8);
    let shop = || {
        PodRecord::new(
            "uid-shop".into(),
            "shop-7d4b9c-x2x8k".into(),
            "prod".into(),
            Some("shop".into()),
            [format!("containerd://{A}").as_str()],
        )
    };
    cache.replace([shop()]);
    p.set_pods(cache.clone());
    // Known at open.
    exchange(&mut p, 1, A, || {});
    // Unknown at open, known by the time of the exchange: caught up.
    exchange(&mut p, 2, B, || {
        cache.replace([
            shop(),
            PodRecord::new(
                "uid-billing".into(),
                "billing-0".into(),
                "payments".into(),
                Some("billing".into()),
                [format!("cri-o://{B}").as_str()],
            ),
        ])
    });
    // Never known (a plain Docker container on the node).
    exchange(&mut p, 3, C, || {});
    p.finish();
    let findings: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |id: &str| {
        findings
            .iter()
            .find(|f| f["container"]["id"] == id && f["detector"] == "cookie_missing_secure")
            .unwrap_or_else(|| panic!("no finding for {id}: {findings:#?}"))
    };
    let f = of(A);
    assert_eq!(f["container"]["pod"], "shop-7d4b9c-x2x8k");
    assert_eq!(f["container"]["namespace"], "prod");
    assert_eq!(f["service"], "shop", "app label, no [[services]] entry");
    let f = of(B);
    assert_eq!(f["container"]["pod"], "billing-0");
    assert_eq!(f["container"]["namespace"], "payments");
    assert_eq!(f["service"], "billing");
    let f = of(C);
    let keys: Vec<&String> = f["container"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id"], "unknown pod: no pod keys at all");
    assert_eq!(f["service"], "nginx", "process name");
    let mut m = metrics.lock().unwrap();
    p.sync_metrics(&mut m);
    let text = m.render();
    assert!(text.contains("sessionwatch_kubernetes_pods 2"), "{text}");
    assert!(
        text.contains("sessionwatch_kubernetes_sync_errors_total 0"),
        "{text}"
    );
}
