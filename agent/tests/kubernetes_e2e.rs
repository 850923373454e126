//! End-to-end `[kubernetes]` enrichment (feature `kubernetes`): the
//! hand-made container of `container_e2e.rs` — nginx in its own mount and
//! PID namespaces, pivoted into its own root filesystem with its own copy
//! of libssl, in a cgroup named like a containerd container of a pod — and
//! a fake API server (real HTTPS, `k8s_api`) whose pod list for the node
//! holds that container's pod:
//!
//! - `sessionwatch targets` shows the pod (`namespace/name`);
//! - `sessionwatch run` reports the login without rotation with
//!   `"container": {"id", "pod", "namespace"}` and the pod's
//!   `app.kubernetes.io/name` label as `service`, having asked the API
//!   server for this node's pods with the service-account token;
//! - `/metrics` has `sessionwatch_kubernetes_up 1` and the pod count.
//!
//! Needs root, the embedded eBPF object, nginx, openssl, curl, python3,
//! unshare, ldd and a writable cgroup v2 hierarchy; without them it
//! prints a loud SKIP (or fails when `CI` or `SESSIONWATCH_E2E_REQUIRED=1`).
#![cfg(feature = "kubernetes")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod k8s_api;
use common::container::{container_tools, start_namespaced_nginx};
use common::*;

use std::process::Command;
use std::time::Duration;

/// The copied nginx binary's name: the processes' `comm`, so the agent can
/// be restricted to them while other tests run nginx on the same machine.
const COMM: &str = "swk8snginx";

#[test]
fn findings_of_a_pod_container_name_pod_namespace_and_app() {
    let Some(tools) = container_tools("kubernetes_e2e") else {
        return;
    };
    let ctr = start_namespaced_nginx(&tools, COMM, "k8s.test", "kubernetes-e2e");
    let (dir, id, pod_uid) = (ctr.dir.clone(), ctr.id.clone(), ctr.pod_uid);
    let (libssl_in, libssl_ino) = (ctr.libssl_in.clone(), ctr.libssl_ino);
    let admin_port = free_port();

    // --- the API server, with this node's pods: the container's pod ------
    let api_dir = dir.join("api");
    std::fs::create_dir_all(&api_dir).unwrap();
    k8s_api::make_certs(&api_dir);
    std::fs::write(api_dir.join("token"), "sw-e2e-token").unwrap();
    let api = k8s_api::FakeApi::start(&api_dir);
    *api.pods.lock().unwrap() = vec![
        k8s_api::pod(
            "shop-7d4b9c-x2x8k",
            "prod",
            pod_uid,
            Some("shop"),
            &[("main", &format!("containerd://{id}"))],
        ),
        k8s_api::pod("other-0", "prod", "uid-other", Some("other"), &[]),
    ];

    let findings = dir.join("findings.jsonl");
    std::fs::write(
        dir.join("sw.toml"),
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [capture]\nprocesses = [\"{COMM}\"]\n\
             [kubernetes]\nenabled = true\napi_server = \"https://127.0.0.1:{port}\"\n\
             token_file = {token:?}\nca_file = {ca:?}\nnode_name = \"{node}\"\n",
            port = api.port,
            token = api_dir.join("token"),
            ca = api_dir.join("ca.pem"),
            node = k8s_api::NODE,
        ),
    )
    .unwrap();

    // --- `sessionwatch targets` --------------------------------------------
    let out = Command::new(env!("CARGO_BIN_EXE_sessionwatch"))
        .args(["targets", "--config"])
        .arg(dir.join("sw.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "targets failed");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let short = format!("containerd:{}", &id[..12]);
    for p in &ctr.nginx_pids {
        let via = format!(
            "{} (via /proc/{p}/root{})",
            libssl_in.display(),
            libssl_in.display()
        );
        let row = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&p.to_string()) && l.contains(&via))
            .unwrap_or_else(|| panic!("no row for pid {p} opening {via}:\n{table}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], COMM, "{row}");
        assert_eq!(cols[4], libssl_ino.to_string(), "the copy's inode: {row}");
        assert_eq!(cols[5], short, "runtime and container id: {row}");
        assert_eq!(cols[6], "prod/shop-7d4b9c-x2x8k", "the pod: {row}");
        assert!(row.ends_with("attach"), "{row}");
    }

    // --- `sessionwatch run` --------------------------------------------------
    let mut agent = spawn_ready_agent(&dir, admin_port, Duration::from_secs(60), |c| {
        c.arg("--alerts").arg(&findings);
    });

    let finding = ctr.victim_login_without_rotation(&tools.curl, "k8s.test", &findings);
    assert_eq!(
        finding["container"]["id"], id,
        "the finding names the container: {finding}"
    );
    assert_eq!(
        finding["container"]["pod"], "shop-7d4b9c-x2x8k",
        "{finding}"
    );
    assert_eq!(finding["container"]["namespace"], "prod", "{finding}");
    assert_eq!(
        finding["service"], "shop",
        "the app label, not the process name: {finding}"
    );
    // The agent asked for this node's pods with the token.
    {
        let rec = api.recorded.lock().unwrap();
        assert!(!rec.requests.is_empty());
        for (target, auth) in &rec.requests {
            assert_eq!(auth, "Bearer sw-e2e-token", "{target}");
            assert!(
                target.contains("fieldSelector=spec.nodeName%3Dnode-sw-test"),
                "{target}"
            );
        }
    }
    assert_eq!(finding["client"]["ip"], "127.0.0.2");
    assert_eq!(finding["request"]["path"], "/login");

    // The live agent hooked the container's copy (its inode) and nothing
    // else: no process outside the container is selected, so the host's
    // libssl is not hooked.
    let log = std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default();
    let hooked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("hooked TLS library"))
        .collect();
    assert!(
        !hooked.is_empty() && hooked.iter().all(|l| l.contains(&libssl_ino.to_string())),
        "hooked files: {hooked:#?}"
    );

    let (status, metrics) = http_get(admin_port, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sessionwatch_capture_events_total{source=\"tls\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sessionwatch_kubernetes_up 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sessionwatch_kubernetes_pods 2"),
        "{metrics}"
    );

    // Stop everything: agent (clean exit), then the container.
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) }, 0);
    let status = agent.stop_within(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent exit status {status:?}"
    );
    ctr.stop();
}
