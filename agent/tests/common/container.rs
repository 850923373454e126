//! A hand-made container for the end-to-end tests: nginx in its own mount
//! and PID namespaces (`unshare`), pivoted into its own root filesystem with
//! its own copy of libssl, in a cgroup named like a containerd container of
//! a Kubernetes pod, sharing the host's network namespace (like a
//! hostNetwork pod) so loopback reaches it. Used by `container_e2e` and
//! `kubernetes_e2e`.

use std::net::TcpStream;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

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

/// Runs curl quietly (`-sk --http1.1`, body discarded); panics when it fails.
pub fn curl_ok(curl: &Path, args: &[&str]) {
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

/// Tools and the cgroup v2 hierarchy a namespaced nginx needs.
pub struct ContainerTools {
    pub nginx: PathBuf,
    pub openssl: PathBuf,
    pub curl: PathBuf,
    pub python: PathBuf,
    pub unshare: PathBuf,
    pub ldd: PathBuf,
    pub cgroup_root: PathBuf,
}

/// The tools, or `None` after the loud SKIP of `skip_if_missing` (which
/// fails instead under `CI` / `SESSIONWATCH_E2E_REQUIRED=1`).
pub fn container_tools(test: &str) -> Option<ContainerTools> {
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
    let cgroup_root = cgroup2_root();
    if cgroup_root.is_none() {
        missing.push("a cgroup v2 hierarchy".into());
    }
    if skip_if_missing(test, &missing) {
        return None;
    }
    let [nginx, openssl, curl, python, unshare, ldd] =
        [0, 1, 2, 3, 4, 5].map(|i| tools[i].clone().unwrap());
    Some(ContainerTools {
        nginx,
        openssl,
        curl,
        python,
        unshare,
        ldd,
        cgroup_root: cgroup_root.unwrap(),
    })
}

/// A running namespaced nginx (TLS on `tls_port`, proxying to the session
/// app on the host) and what the host sees of it. Dropping it stops the
/// container, kills what is left in its cgroup and removes the cgroup, then
/// stops the app.
pub struct NamespacedNginx {
    /// Work directory: `rootfs/`, the app, logs; the agent's files go here too.
    pub dir: PathBuf,
    /// The container's root filesystem.
    pub root: PathBuf,
    /// The 64-hex-digit container id in the cgroup path.
    pub id: String,
    /// The pod UID in the cgroup path.
    pub pod_uid: &'static str,
    /// nginx's TLS port (the host's loopback).
    pub tls_port: u16,
    /// nginx's pids as the host sees them.
    pub nginx_pids: Vec<u32>,
    /// libssl's path inside the container (the same as the host's).
    pub libssl_in: PathBuf,
    /// The inode of the container's own copy of libssl.
    pub libssl_ino: u64,
    /// The container's cgroup directory.
    pub leaf: PathBuf,
    // Drop order: the container, then its cgroup, then the app.
    container: Guard,
    cgroup: Cgroup,
    _app: Guard,
}

/// Builds the root filesystem, the cgroup (`kubepods-besteffort-pod<uid>`
/// / `cri-containerd-<id>.scope`) and starts nginx in it as `comm` (its
/// `comm`, so an agent can be restricted to it), serving `host`; `tag` names
/// the work directory and cgroup. Asserts what the host must see: own PID
/// and mount namespaces, the root filesystem as `/proc/PID/root`, its own
/// copy of libssl mapped at the container path.
pub fn start_namespaced_nginx(
    tools: &ContainerTools,
    comm: &str,
    host: &str,
    tag: &str,
) -> NamespacedNginx {
    let [nginx, openssl, python, unshare, ldd] = [
        &tools.nginx,
        &tools.openssl,
        &tools.python,
        &tools.unshare,
        &tools.ldd,
    ];
    let dir = std::env::temp_dir().join(format!("sessionwatch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("rootfs");

    // --- the container's root filesystem --------------------------------
    let exe_in = Path::new("/usr/sbin").join(comm);
    let host_exe = std::fs::canonicalize(nginx).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::copy(&host_exe, root.join(exe_in.strip_prefix("/").unwrap())).unwrap();
    let libs = shared_libraries(ldd, &host_exe);
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
    let host_copy = std::fs::metadata(&host_libssl).unwrap();
    assert_ne!(
        (copy.dev(), copy.ino()),
        (host_copy.dev(), host_copy.ino()),
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
        openssl,
        host,
        &root.join("etc/nginx/key.pem"),
        &root.join("etc/nginx/cert.pem"),
    );

    // The upstream app runs on the host; the container shares the host's
    // network namespace (like a hostNetwork pod), so loopback reaches it.
    let (app_port, tls_port) = (free_port(), free_port());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), APP).unwrap();
    let app = Guard(
        Command::new(python)
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
               server {{ listen 127.0.0.1:{tls_port} ssl; server_name {host};\n\
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
    let base = tools
        .cgroup_root
        .join(format!("sessionwatch-{tag}-{}.slice", std::process::id()));
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
    let container = Guard(
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
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .collect();
    assert!(
        !nginx_pids.is_empty(),
        "no {comm} process in the cgroup: {:?}",
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
    NamespacedNginx {
        dir,
        root,
        id,
        pod_uid,
        tls_port,
        nginx_pids,
        libssl_in,
        libssl_ino: copy.ino(),
        leaf,
        container,
        cgroup,
        _app: app,
    }
}

impl NamespacedNginx {
    /// A victim at 127.0.0.2 (Firefox) visits `/` through this nginx as
    /// `host`, then logs in on the same session (the app never rotates it);
    /// returns the agent's `no_rotation_after_login` finding from
    /// `findings` (JSON lines), waiting up to 20 s. Panics with the agent's
    /// log (`<dir>/agent.err`) when none comes.
    pub fn victim_login_without_rotation(
        &self,
        curl: &Path,
        host: &str,
        findings: &Path,
    ) -> serde_json::Value {
        let resolve = format!("{host}:{}:127.0.0.1", self.tls_port);
        let jar = self.dir.join("jar");
        let jar = jar.to_str().unwrap();
        for (extra, path) in [
            (&[][..], "/"),
            (&["-d", "username=alice&password=secret"][..], "/login"),
        ] {
            let url = format!("https://{host}:{}{path}", self.tls_port);
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
            args.push(&url);
            curl_ok(curl, &args);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(findings).unwrap_or_default();
            if let Some(f) = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .find(|f| f["detector"] == "no_rotation_after_login")
            {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "no finding after 20 s: {text}\nagent log:\n{}",
                std::fs::read_to_string(self.dir.join("agent.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the container and asserts its cgroup is gone.
    pub fn stop(mut self) {
        self.cgroup.kill_all();
        let _ = self.container.0.wait();
        let leaf = self.leaf.clone();
        let dir = self.dir.clone();
        drop(self);
        assert!(!leaf.exists(), "test cgroup removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
