//! End-to-end: a "container" made by hand — nginx in its own mount and PID
//! namespaces (`unshare`), pivoted (pivot_root) into its own root filesystem that holds
//! its own COPY of libssl (another inode than the host's), in its own
//! cgroup named like a containerd container of a Kubernetes pod — is found
//! and captured by the live agent:
//!
//! - `sessionwatch targets` lists the namespaced nginx with the container
//!   id and runtime read from its cgroup, opens the copy of libssl through
//!   `/proc/PID/root` (the path it shows), and reports the copy's inode;
//! - `sessionwatch run`, restricted to that nginx (`capture.processes`), can
//!   only see its traffic through uprobes on the copy, captures a login
//!   without rotation and reports it with `"container": {"id": ...}`.
//!
//! The cgroup is created in the machine's cgroup v2 hierarchy
//! (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid v1/v2 host),
//! so the agent parses a real `/proc/PID/cgroup`.
//!
//! Needs root, the embedded eBPF object, nginx, openssl, curl, python3,
//! unshare, ldd and a writable cgroup v2 hierarchy; without them it
//! prints a loud SKIP (or fails when `CI` or `SESSIONWATCH_E2E_REQUIRED=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::container::{container_tools, start_namespaced_nginx};
use common::*;

use std::process::Command;
use std::time::Duration;

/// The copied nginx binary's name: the processes' `comm`, so the agent can
/// be restricted to them while other tests run nginx on the same machine.
const COMM: &str = "swctrnginx";

#[test]
fn agent_captures_a_namespaced_nginx_with_its_own_libssl() {
    let Some(tools) = container_tools("container_e2e") else {
        return;
    };
    let ctr = start_namespaced_nginx(&tools, COMM, "ctr.test", "container-e2e");
    let (dir, id) = (ctr.dir.clone(), ctr.id.clone());
    let (libssl_in, libssl_ino) = (ctr.libssl_in.clone(), ctr.libssl_ino);
    let admin_port = free_port();

    let findings = dir.join("findings.jsonl");
    std::fs::write(
        dir.join("sw.toml"),
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [capture]\nprocesses = [\"{COMM}\"]\n"
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
        assert!(row.ends_with("attach"), "{row}");
    }

    // --- `sessionwatch run` --------------------------------------------------
    let mut agent = spawn_ready_agent(&dir, admin_port, Duration::from_secs(60), |c| {
        c.arg("--alerts").arg(&findings);
    });

    let finding = ctr.victim_login_without_rotation(&tools.curl, "ctr.test", &findings);
    assert_eq!(
        finding["container"]["id"], id,
        "the finding names the container: {finding}"
    );
    assert_eq!(finding["service"], COMM);
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
