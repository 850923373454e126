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
use common::*;

use std::net::TcpStream;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs in the new mount namespace made by `unshare`: makes the root
/// filesystem the namespace's root with pivot_root(2) and detaches the old
/// root, as container runtimes do, then execs the container's program. With
/// a chroot the host would still see host paths in `/proc/PID/maps`; after
/// pivot_root it sees the container's paths, which only `/proc/PID/root`
/// resolves.
const PIVOT: &str = r#"
import ctypes, os, platform, sys
libc = ctypes.CDLL(None, use_errno=True)
def check(rc, what):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
root = sys.argv[1].encode()
MS_BIND, MS_REC, MNT_DETACH = 4096, 16384, 2
SYS_pivot_root = {"x86_64": 155, "aarch64": 41}[platform.machine()]
check(libc.mount(root, root, None, MS_BIND | MS_REC, None), "bind mount")
os.chdir(root)
os.makedirs(".oldroot", exist_ok=True)
check(libc.syscall(SYS_pivot_root, b".", b".oldroot"), "pivot_root")
os.chdir("/")
check(libc.umount2(b"/.oldroot", MNT_DETACH), "umount2")
os.rmdir("/.oldroot")
os.execv(sys.argv[2], sys.argv[2:])
"#;

/// The copied nginx binary's name: the processes' `comm`, so the agent can
/// be restricted to them while other tests run nginx on the same machine.
const COMM: &str = "swk8snginx";

/// A cgroup made for the test; on drop, every process still in it is
/// killed and the directories are removed (leaf first).
struct Cgroup {
    base: PathBuf,
    leaf: PathBuf,
}

impl Cgroup {
    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.leaf.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn kill_all(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in pids {
                // SAFETY: kill(2) with a pid read from our own cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        let mut dirs: Vec<PathBuf> = self.leaf.ancestors().map(Path::to_path_buf).collect();
        dirs.retain(|d| d.starts_with(&self.base));
        for d in dirs {
            for _ in 0..40 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The cgroup v2 mount: `/sys/fs/cgroup` (unified) or
/// `/sys/fs/cgroup/unified` (hybrid).
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").is_file() && p.join("cgroup.controllers").is_file())
}

/// Files a dynamically linked executable needs (`ldd`).
fn shared_libraries(ldd: &Path, exe: &Path) -> Vec<PathBuf> {
    let out = Command::new(ldd).arg(exe).output().unwrap();
    assert!(out.status.success(), "ldd {}", exe.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn curl(curl: &Path, args: &[&str]) {
    let out = Command::new(curl)
        .args(["-sk", "--http1.1", "-o", "/dev/null"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn findings_of_a_pod_container_name_pod_namespace_and_app() {
    let tool_names = ["nginx", "openssl", "curl", "python3", "unshare", "ldd"];
    let tools: Vec<Option<PathBuf>> = tool_names.iter().map(|t| find_tool(t)).collect();
    let mut missing: Vec<String> = tool_names
        .iter()
        .zip(&tools)
        .filter(|(_, p)| p.is_none())
        .map(|(t, _)| (*t).to_owned())
        .collect();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (namespaces, cgroups and eBPF need it)".into());
    }
    if !sessionwatch::capture::object_embedded() {
        missing.push("the eBPF object (run through `cargo xtask test`)".into());
    }
    let cg_root = cgroup2_root();
    if cg_root.is_none() {
        missing.push("a cgroup v2 hierarchy".into());
    }
    if skip_if_missing("kubernetes_e2e", &missing) {
        return;
    }
    let [nginx, openssl, curl_bin, python, unshare, ldd] =
        [0, 1, 2, 3, 4, 5].map(|i| tools[i].clone().unwrap());
    let cg_root = cg_root.unwrap();

    let dir = std::env::temp_dir().join(format!(
        "sessionwatch-kubernetes-e2e-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("rootfs");

    // --- the container's root filesystem --------------------------------
    let exe_in = Path::new("/usr/sbin").join(COMM);
    let host_exe = std::fs::canonicalize(&nginx).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::copy(&host_exe, root.join(exe_in.strip_prefix("/").unwrap())).unwrap();
    let libs = shared_libraries(&ldd, &host_exe);
    let host_libssl = libs
        .iter()
        .find(|l| {
            l.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("libssl.so"))
        })
        .cloned()
        .expect("nginx links libssl dynamically");
    for lib in &libs {
        // A copy, not a link: the container's libssl is another file.
        let dst = root.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(lib, &dst).unwrap();
    }
    let libssl_in = host_libssl.clone(); // same path inside the container
    let copy = std::fs::metadata(root.join(libssl_in.strip_prefix("/").unwrap())).unwrap();
    let host = std::fs::metadata(&host_libssl).unwrap();
    assert_ne!(
        (copy.dev(), copy.ino()),
        (host.dev(), host.ino()),
        "the container's libssl is its own file"
    );
    for d in [
        "etc/nginx",
        "var/log/nginx",
        "var/lib/nginx",
        "run",
        "tmp",
        "proc",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(
        root.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files\n",
    )
    .unwrap();
    self_signed_cert(
        &openssl,
        "k8s.test",
        &root.join("etc/nginx/key.pem"),
        &root.join("etc/nginx/cert.pem"),
    );

    // The upstream app runs on the host; the container shares the host's
    // network namespace (like a hostNetwork pod), so loopback reaches it.
    let (app_port, tls_port, admin_port) = (free_port(), free_port(), free_port());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), APP).unwrap();
    let _app = Guard(
        Command::new(&python)
            .arg(dir.join("app.py"))
            .arg(app_port.to_string())
            .spawn()
            .unwrap(),
    );
    std::fs::write(
        root.join("etc/nginx/nginx.conf"),
        format!(
            "user nobody nogroup; worker_processes 1; pid /run/nginx.pid; daemon off;\n\
             error_log /var/log/nginx/error.log;\n\
             events {{}}\n\
             http {{ access_log off;\n\
               server {{ listen 127.0.0.1:{tls_port} ssl; server_name k8s.test;\n\
                 ssl_certificate /etc/nginx/cert.pem; ssl_certificate_key /etc/nginx/key.pem;\n\
                 location / {{ proxy_pass http://127.0.0.1:{app_port}; proxy_http_version 1.1; proxy_set_header Host $host; }} }} }}\n"
        ),
    )
    .unwrap();

    // --- its cgroup, named as containerd names a pod's container ---------
    let id: String = {
        let seed = format!("{}-{:?}", std::process::id(), Instant::now());
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut out = String::new();
        while out.len() < 64 {
            for b in seed.bytes().chain(out.len().to_le_bytes()) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            out.push_str(&format!("{h:016x}"));
        }
        out
    };
    let pod_uid = "5f0c9a1e-2b3d-4e5f-8a7b-6c5d4e3f2a1b";
    let base = cg_root.join(format!("sessionwatch-k8s-e2e-{}.slice", std::process::id()));
    let leaf = base
        .join(format!(
            "kubepods-besteffort-pod{}.slice",
            pod_uid.replace('-', "_")
        ))
        .join(format!("cri-containerd-{id}.scope"));
    std::fs::create_dir_all(&leaf).unwrap();
    let cgroup = Cgroup {
        base: base.clone(),
        leaf: leaf.clone(),
    };

    // --- start it: cgroup, mount + PID namespaces, pivot_root ------------
    std::fs::write(dir.join("pivot.py"), PIVOT).unwrap();
    let script = format!(
        "echo $$ > '{procs}' && exec '{unshare}' --mount --pid --fork --kill-child \
         --propagation private --mount-proc='{root}/proc' '{python}' '{pivot}' '{root}' \
         {exe} -p / -c /etc/nginx/nginx.conf -e /var/log/nginx/error.log",
        procs = leaf.join("cgroup.procs").display(),
        unshare = unshare.display(),
        python = python.display(),
        pivot = dir.join("pivot.py").display(),
        root = root.display(),
        exe = exe_in.display(),
    );
    let mut container = Guard(
        Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdout(std::fs::File::create(dir.join("nginx.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("nginx.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "namespaced nginx did not start: {}{}",
            std::fs::read_to_string(dir.join("nginx.err")).unwrap_or_default(),
            std::fs::read_to_string(root.join("var/log/nginx/error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_port(app_port);

    // The nginx processes, as the host sees them: in our cgroup, in
    // another PID and mount namespace, with a root other than ours.
    let nginx_pids: Vec<u32> = cgroup
        .pids()
        .into_iter()
        .map(|p| p as u32)
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == COMM)
        })
        .collect();
    assert!(
        !nginx_pids.is_empty(),
        "no {COMM} process in the cgroup: {:?}",
        cgroup.pids()
    );
    for p in &nginx_pids {
        let ns = |n: &str| std::fs::read_link(format!("/proc/{p}/ns/{n}")).unwrap();
        let mine = |n: &str| std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        assert_ne!(ns("pid"), mine("pid"), "own PID namespace");
        assert_ne!(ns("mnt"), mine("mnt"), "own mount namespace");
        let their_root = std::fs::metadata(format!("/proc/{p}/root")).unwrap();
        let rootfs = std::fs::metadata(&root).unwrap();
        assert_eq!(
            (their_root.dev(), their_root.ino()),
            (rootfs.dev(), rootfs.ino()),
            "pid {p}'s root is the root filesystem"
        );
        // The host sees the container's paths: libssl at its path inside
        // the container, which is the host's libssl path, yet the copy.
        let maps = std::fs::read_to_string(format!("/proc/{p}/maps")).unwrap();
        assert!(
            maps.lines()
                .any(|l| l.contains(&format!(" {} ", copy.ino()))
                    && l.split_whitespace().last() == libssl_in.to_str()),
            "pid {p} maps its own copy of libssl at the container path:\n{maps}"
        );
    }

    // --- the API server, with this node's pods: the container's pod ------
    let api_dir = dir.join("api");
    std::fs::create_dir_all(&api_dir).unwrap();
    k8s_api::make_certs(&openssl, &api_dir);
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
            ca = api_dir.join("ca.crt"),
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
    for p in &nginx_pids {
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
        assert_eq!(cols[4], copy.ino().to_string(), "the copy's inode: {row}");
        assert_eq!(cols[5], short, "runtime and container id: {row}");
        assert_eq!(cols[6], "prod/shop-7d4b9c-x2x8k", "the pod: {row}");
        assert!(row.ends_with("attach"), "{row}");
    }

    // --- `sessionwatch run` --------------------------------------------------
    let mut agent = spawn_ready_agent(&dir, admin_port, Duration::from_secs(60), |c| {
        c.arg("--alerts").arg(&findings);
    });

    let url = |p: &str| format!("https://k8s.test:{tls_port}{p}");
    let resolve = format!("k8s.test:{tls_port}:127.0.0.1");
    let jar = dir.join("jar");
    let jar = jar.to_str().unwrap();
    let victim = |extra: &[&str], path: &str| {
        let mut args = vec![
            "--interface",
            "127.0.0.2",
            "-A",
            FIREFOX,
            "-c",
            jar,
            "-b",
            jar,
            "--resolve",
            &resolve,
        ];
        args.extend_from_slice(extra);
        let u = url(path);
        args.push(&u);
        curl(&curl_bin, &args);
    };
    victim(&[], "/");
    victim(&["-d", "username=alice&password=secret"], "/login");

    let deadline = Instant::now() + Duration::from_secs(20);
    let finding = loop {
        let text = std::fs::read_to_string(&findings).unwrap_or_default();
        if let Some(f) = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|f| f["detector"] == "no_rotation_after_login")
        {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "no finding after 20 s: {text}\nagent log:\n{}",
            std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
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
        !hooked.is_empty() && hooked.iter().all(|l| l.contains(&copy.ino().to_string())),
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
    cgroup.kill_all();
    let _ = container.0.wait();
    drop(cgroup);
    assert!(!leaf.exists(), "test cgroup removed");
    let _ = std::fs::remove_dir_all(&dir);
}
