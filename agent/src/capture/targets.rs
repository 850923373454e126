//! Target discovery: which TLS libraries (and executables with OpenSSL
//! linked in) the running processes use.
//!
//! A target is a file, identified by (device, inode): uprobes are attached
//! once per file with `UProbeScope::AllProcesses`, so every process mapping
//! it — including ones started later — is covered. A container's copy of
//! libssl is another file and another target; it is opened through
//! `/proc/PID/root`, so the agent sees it as the container does.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use object::{Object as _, ObjectSymbol as _};

use super::config::CaptureConfig;
use super::container::ContainerRef;
use super::procfs::{Mapping, Proc};

/// OpenSSL-compatible API families (they differ in `struct bio_st`, which
/// the `SSL_set_bio` hook reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsFlavor {
    /// OpenSSL 1.1.x.
    OpenSsl11,
    /// OpenSSL 3.x.
    OpenSsl3,
    /// BoringSSL (same `SSL_read`/`SSL_write` ABI; no BIO layout assumed).
    BoringSsl,
}

impl TlsFlavor {
    /// Attach cookie of the `SSL_set_bio` program (see the eBPF source).
    pub(crate) fn bio_cookie(self) -> Option<u64> {
        match self {
            TlsFlavor::OpenSsl11 => Some(1),
            TlsFlavor::OpenSsl3 => Some(3),
            TlsFlavor::BoringSsl => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            TlsFlavor::OpenSsl11 => "openssl-1.1",
            TlsFlavor::OpenSsl3 => "openssl-3",
            TlsFlavor::BoringSsl => "boringssl",
        }
    }
}

/// How a process uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// A shared library matching `capture.libraries`.
    SharedLibrary,
    /// The executable itself defines `SSL_read` (statically linked).
    StaticExecutable,
}

/// Whether a target is (or would be) hooked, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetStatus {
    /// Hooked (or would be, for `sessionwatch targets`).
    Attach,
    /// The process is not in `capture.processes`.
    NotSelected,
    /// The file matches the library glob but does not define `SSL_read`.
    NoSslSymbols,
    /// The file or the process's maps could not be read.
    Unreadable(String),
    /// Attaching failed (live capture only).
    AttachFailed(String),
}

impl fmt::Display for TargetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetStatus::Attach => f.write_str("attach"),
            TargetStatus::NotSelected => f.write_str("skipped: process not in capture.processes"),
            TargetStatus::NoSslSymbols => {
                f.write_str("skipped: does not define SSL_read (not an OpenSSL-compatible library)")
            }
            TargetStatus::Unreadable(e) => write!(f, "skipped: cannot read: {e}"),
            TargetStatus::AttachFailed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// One (process, TLS file) pair found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    /// Process id.
    pub pid: u32,
    /// Process name (`comm`).
    pub comm: String,
    /// Library or executable.
    pub kind: TargetKind,
    /// Path as the process sees it.
    pub path: String,
    /// Path the agent opens (through `/proc/PID/root`, the host's root or
    /// `map_files`).
    pub host_path: PathBuf,
    /// Device of the mapped file as `/proc/PID/maps` reports it, 0 if
    /// unknown. Below overlayfs this is the layer's file, which is what
    /// the kernel attaches uprobes to: containers of one image share it.
    pub dev: u64,
    /// Inode of the mapped file, 0 if unknown.
    pub inode: u64,
    /// (`st_dev`, `st_ino`) of `host_path` when scanned; attaching checks
    /// the path still names that file.
    pub opened_id: (u64, u64),
    /// API family, when the file defines `SSL_read`.
    pub flavor: Option<TlsFlavor>,
    /// The process's container (from `/proc/PID/cgroup`), when it runs in
    /// one.
    pub container: Option<ContainerRef>,
    /// Hooked or why not.
    pub status: TargetStatus,
}

impl TargetReport {
    /// (device, inode) of the mapped file: the identity uprobes are
    /// attached to, so one file is hooked once however many processes and
    /// containers (overlayfs mounts of one image layer) map it.
    pub fn file_id(&self) -> (u64, u64) {
        (self.dev, self.inode)
    }

    /// Full container id, when the process runs in a container.
    pub fn container_id(&self) -> Option<&str> {
        self.container.as_ref().map(|c| c.id.as_str())
    }
}

/// A whole scan: the targets and how many processes were looked at.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Targets found (attachable and skipped ones).
    pub targets: Vec<TargetReport>,
    /// Processes scanned.
    pub scanned: usize,
    /// Processes whose maps could not be read (kernel threads excluded).
    pub unreadable: usize,
    /// A full scan that listed `/proc`: a file missing from it is mapped by
    /// no process whose maps could be read (only such scans let the agent
    /// unhook a file).
    pub complete: bool,
    /// Pods of the containerised targets, by pid (`[kubernetes]`
    /// enrichment); `None` when enrichment is off, and the table has no
    /// POD column.
    pub pods: Option<std::collections::HashMap<u32, std::sync::Arc<super::kubernetes::PodInfo>>>,
}

impl ScanReport {
    /// Looks up the pod of every containerised target (by container id,
    /// else by the pod UID of its cgroup path).
    pub fn annotate_pods(&mut self, cache: &super::kubernetes::PodCache) {
        let pods = self
            .targets
            .iter()
            .filter_map(|t| Some((t.pid, cache.lookup_container(t.container.as_ref()?)?)))
            .collect();
        self.pods = Some(pods);
    }

    /// Targets that would be attached, one per file.
    pub fn attachable(&self) -> impl Iterator<Item = &TargetReport> {
        let mut seen = std::collections::HashSet::new();
        self.targets
            .iter()
            .filter(|t| t.status == TargetStatus::Attach)
            .filter(move |t| seen.insert(t.file_id()))
    }
}

impl fmt::Display for ScanReport {
    /// The `sessionwatch targets` table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>7}  {:<15}  {:<8}  {:<11}  {:>10}  {:<23}  ",
            "PID", "PROCESS", "KIND", "FLAVOR", "INODE", "CONTAINER"
        )?;
        if self.pods.is_some() {
            write!(f, "{:<40}  ", "POD (NAMESPACE/NAME)")?;
        }
        writeln!(f, "{:<40}  STATUS", "PATH")?;
        for t in &self.targets {
            let kind = match t.kind {
                TargetKind::SharedLibrary => "library",
                TargetKind::StaticExecutable => "static",
            };
            // `runtime:short-id`, as `docker ps` / `crictl ps` show ids.
            let container = match &t.container {
                Some(c) => format!("{}:{}", c.runtime, c.short_id()),
                None => "-".to_owned(),
            };
            // The path the process sees; when the agent opens it through
            // another mount namespace, that path too.
            let mut path = t.path.clone();
            if t.container.is_some() && t.kind == TargetKind::SharedLibrary {
                path = format!("{path} (via {})", t.host_path.display());
            }
            write!(
                f,
                "{:>7}  {:<15}  {:<8}  {:<11}  {:>10}  {:<23}  ",
                t.pid,
                t.comm,
                kind,
                t.flavor.map(TlsFlavor::label).unwrap_or("-"),
                t.inode,
                container,
            )?;
            if let Some(pods) = &self.pods {
                let pod = match pods.get(&t.pid) {
                    Some(p) => format!("{}/{}", p.namespace, p.name),
                    None => "-".to_owned(),
                };
                write!(f, "{pod:<40}  ")?;
            }
            writeln!(f, "{:<40}  {}", path, t.status)?;
        }
        let files = self.attachable().count();
        write!(
            f,
            "{} processes scanned, {} TLS files to hook",
            self.scanned, files
        )?;
        if self.unreadable > 0 {
            write!(
                f,
                ", {} processes unreadable (permission denied: the agent needs root or CAP_SYS_PTRACE)",
                self.unreadable
            )?;
        }
        writeln!(f)
    }
}

/// What an ELF file offers, cached per (dev, inode, size, mtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    /// `SSL_read` is defined here, with this API family.
    pub flavor: Option<TlsFlavor>,
    /// `SSL_read_ex` / `SSL_write_ex` are defined (OpenSSL 1.1.1+).
    pub has_ex: bool,
    /// `SSL_set_fd` is defined.
    pub has_set_fd: bool,
    /// `SSL_set_bio` is defined.
    pub has_set_bio: bool,
}

/// Reads the symbol tables of an ELF file (only the parts needed).
pub(crate) fn inspect_elf(path: &Path) -> Result<ElfInfo, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let cache = object::ReadCache::new(file);
    let obj = object::File::parse(&cache).map_err(|e| format!("not an ELF file: {e}"))?;
    let defined = |name: &str| -> bool {
        obj.dynamic_symbols()
            .chain(obj.symbols())
            .any(|s| !s.is_undefined() && s.address() != 0 && s.name() == Ok(name))
    };
    let ssl_read = defined("SSL_read");
    let flavor = if !ssl_read {
        None
    } else if defined("SSL_CTX_set_strict_cipher_list") {
        Some(TlsFlavor::BoringSsl)
    } else if defined("SSL_CTX_new_ex") {
        Some(TlsFlavor::OpenSsl3)
    } else {
        Some(TlsFlavor::OpenSsl11)
    };
    Ok(ElfInfo {
        flavor,
        has_ex: ssl_read && defined("SSL_read_ex") && defined("SSL_write_ex"),
        has_set_fd: ssl_read && defined("SSL_set_fd"),
        has_set_bio: ssl_read && defined("SSL_set_bio"),
    })
}

/// Most ELF files remembered between scans.
const MAX_ELF_CACHE: usize = 8192;

/// Scans /proc, remembering what it learnt about files between scans.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    proc: Proc,
    elf: HashMap<(u64, u64, u64, i64), Result<ElfInfo, String>>,
}

impl Scanner {
    pub(crate) fn new(proc: Proc) -> Self {
        Scanner {
            proc,
            elf: HashMap::new(),
        }
    }

    /// ELF facts of a file (cached by identity and modification).
    pub(crate) fn elf_info(&mut self, path: &Path) -> Result<(u64, u64, ElfInfo), String> {
        let md = fs::metadata(path).map_err(|e| e.to_string())?;
        let key = (md.dev(), md.ino(), md.size(), md.mtime());
        if self.elf.len() >= MAX_ELF_CACHE && !self.elf.contains_key(&key) {
            self.elf.clear();
        }
        let info = self
            .elf
            .entry(key)
            .or_insert_with(|| inspect_elf(path))
            .clone()?;
        Ok((md.dev(), md.ino(), info))
    }

    /// Scans every process.
    pub(crate) fn scan_all(&mut self, cfg: &CaptureConfig) -> ScanReport {
        let mut report = ScanReport::default();
        let listed = self.proc.pids();
        let listed_ok = listed.is_ok();
        for pid in listed.unwrap_or_default() {
            self.scan_pid_into(cfg, pid, &mut report);
        }
        report.complete = listed_ok;
        report
    }

    /// Scans one process (after it exec'd).
    pub(crate) fn scan_pid(&mut self, cfg: &CaptureConfig, pid: u32) -> ScanReport {
        let mut report = ScanReport::default();
        self.scan_pid_into(cfg, pid, &mut report);
        report
    }

    fn scan_pid_into(&mut self, cfg: &CaptureConfig, pid: u32, report: &mut ScanReport) {
        if pid == std::process::id() {
            return;
        }
        let Some(comm) = self.proc.comm(pid) else {
            return;
        };
        let maps = match self.proc.mappings(pid) {
            Ok(m) => m,
            Err(e) => {
                // Kernel threads have empty maps; unreadable ones are counted.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    report.unreadable += 1;
                }
                return;
            }
        };
        if maps.is_empty() {
            return; // kernel thread
        }
        report.scanned += 1;
        let selected = cfg.process_selected(&comm);
        let mut container: Option<Option<ContainerRef>> = None;
        let mut found_library = false;
        let libs: Vec<&Mapping> = maps
            .iter()
            .filter(|m| {
                let base = m.path.rsplit('/').next().unwrap_or(&m.path);
                cfg.library_matches(base)
            })
            .collect();
        for m in libs {
            found_library = true;
            let host = self.proc.host_path(pid, m);
            let container = container
                .get_or_insert_with(|| self.proc.container(pid))
                .clone();
            let (opened_id, flavor, status) = match self.elf_info(&host) {
                Ok((dev, ino, info)) => {
                    let status = if info.flavor.is_none() {
                        TargetStatus::NoSslSymbols
                    } else if !selected {
                        TargetStatus::NotSelected
                    } else {
                        TargetStatus::Attach
                    };
                    ((dev, ino), info.flavor, status)
                }
                Err(e) => ((0, 0), None, TargetStatus::Unreadable(e)),
            };
            let dev = m.dev_number().unwrap_or(opened_id.0);
            report.targets.push(TargetReport {
                pid,
                comm: comm.clone(),
                kind: TargetKind::SharedLibrary,
                path: m.path.clone(),
                host_path: host,
                dev,
                inode: m.inode,
                opened_id,
                flavor,
                container,
                status,
            });
        }
        if found_library || cfg.libraries.is_empty() {
            return;
        }
        // OpenSSL linked into the executable itself.
        let exe = self.proc.path(pid, "exe");
        if let Ok((sdev, inode, info)) = self.elf_info(&exe)
            && let Some(flavor) = info.flavor
        {
            // The executable's mapping names the file below overlayfs.
            let dev = maps
                .iter()
                .find(|m| m.inode == inode)
                .and_then(Mapping::dev_number)
                .unwrap_or(sdev);
            let path = fs::read_link(&exe)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| exe.to_string_lossy().into_owned());
            report.targets.push(TargetReport {
                pid,
                comm: comm.clone(),
                kind: TargetKind::StaticExecutable,
                path,
                host_path: exe,
                dev,
                inode,
                opened_id: (sdev, inode),
                flavor: Some(flavor),
                container: self.proc.container(pid),
                status: if selected {
                    TargetStatus::Attach
                } else {
                    TargetStatus::NotSelected
                },
            });
        }
    }
}

/// Scans the running processes for TLS targets without attaching anything:
/// what `sessionwatch targets` prints (through the [`ScanReport`] `Display`).
pub fn discover(cfg: &CaptureConfig) -> ScanReport {
    Scanner::new(Proc::default()).scan_all(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_libssl() -> Option<PathBuf> {
        [
            "/usr/lib/x86_64-linux-gnu/libssl.so.3",
            "/lib/x86_64-linux-gnu/libssl.so.3",
            "/usr/lib/aarch64-linux-gnu/libssl.so.3",
            "/usr/lib64/libssl.so.3",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    }

    #[test]
    fn libssl3_is_openssl3_with_all_hooks() {
        let Some(lib) = system_libssl() else {
            eprintln!("SKIP libssl3_is_openssl3_with_all_hooks: no system libssl.so.3 found");
            return;
        };
        let info = inspect_elf(&lib).expect("libssl parses");
        assert_eq!(info.flavor, Some(TlsFlavor::OpenSsl3));
        assert!(info.has_ex && info.has_set_fd && info.has_set_bio);
    }

    #[test]
    fn executables_without_ssl_are_not_targets() {
        // The test binary itself links no OpenSSL.
        let me = std::env::current_exe().expect("current exe");
        let info = inspect_elf(&me).expect("own binary parses");
        assert_eq!(info.flavor, None);
        assert!(inspect_elf(Path::new("/proc/self/status")).is_err());
    }

    #[test]
    fn display_lists_status_and_summary() {
        let r = ScanReport {
            targets: vec![
                TargetReport {
                    pid: 10,
                    comm: "nginx".into(),
                    kind: TargetKind::SharedLibrary,
                    path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                    host_path: "/proc/10/root/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                    dev: 1,
                    inode: 55,
                    opened_id: (1, 55),
                    flavor: Some(TlsFlavor::OpenSsl3),
                    container: None,
                    status: TargetStatus::Attach,
                },
                TargetReport {
                    pid: 11,
                    comm: "nginx".into(),
                    kind: TargetKind::SharedLibrary,
                    path: "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                    host_path: "/proc/11/root/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                    dev: 1,
                    inode: 55,
                    opened_id: (1, 55),
                    flavor: Some(TlsFlavor::OpenSsl3),
                    container: None,
                    status: TargetStatus::Attach,
                },
                TargetReport {
                    pid: 12,
                    comm: "sshd".into(),
                    kind: TargetKind::SharedLibrary,
                    path: "/usr/lib/libssl.so.3".into(),
                    host_path: "/proc/12/root/usr/lib/libssl.so.3".into(),
                    dev: 1,
                    inode: 56,
                    opened_id: (1, 56),
                    flavor: Some(TlsFlavor::OpenSsl3),
                    container: None,
                    status: TargetStatus::NotSelected,
                },
                TargetReport {
                    pid: 13,
                    comm: "nginx".into(),
                    kind: TargetKind::SharedLibrary,
                    path: "/usr/lib/libssl.so.3".into(),
                    host_path: "/proc/13/root/usr/lib/libssl.so.3".into(),
                    dev: 2,
                    inode: 55,
                    opened_id: (1, 55),
                    flavor: Some(TlsFlavor::OpenSsl3),
                    container: crate::capture::container::parse_cgroup(
                        "0::/kubepods/besteffort/pod8e3c1f0a-5b2d-4c6e-9f70-1a2b3c4d5e6f/\
                         3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708\n",
                    ),
                    status: TargetStatus::Attach,
                },
            ],
            scanned: 40,
            unreadable: 0,
            complete: true,
            pods: None,
        };
        assert_eq!(
            r.attachable().count(),
            2,
            "one file for two processes; the same inode on another device is another file"
        );
        assert_eq!(
            r.targets[3].container_id(),
            Some("3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708")
        );
        let text = r.to_string();
        assert!(text.contains("nginx"), "{text}");
        assert!(
            text.contains("skipped: process not in capture.processes"),
            "{text}"
        );
        assert!(text.contains("unknown:3f1c2b4a5d6e"), "{text}");
        assert!(
            text.contains("/usr/lib/libssl.so.3 (via /proc/13/root/usr/lib/libssl.so.3)"),
            "{text}"
        );
        assert!(
            text.contains("40 processes scanned, 2 TLS files to hook"),
            "{text}"
        );
        assert!(
            !text.contains("POD"),
            "no pod column without enrichment: {text}"
        );
        // With enrichment: the containerised target's pod by its cgroup's
        // pod UID (the kubelet has not reported the container id yet).
        let mut r = r;
        let cache = crate::capture::kubernetes::PodCache::new(8);
        cache.replace([crate::capture::kubernetes::PodRecord::new(
            "8e3c1f0a-5b2d-4c6e-9f70-1a2b3c4d5e6f".into(),
            "shop-7d4b9c-x2x8k".into(),
            "prod".into(),
            Some("shop".into()),
            [],
        )]);
        r.annotate_pods(&cache);
        let text = r.to_string();
        assert!(text.contains("POD (NAMESPACE/NAME)"), "{text}");
        let line = text
            .lines()
            .find(|l| l.contains("unknown:3f1c2b4a5d6e"))
            .expect("row");
        assert!(line.contains("prod/shop-7d4b9c-x2x8k"), "{line}");
        let host = text
            .lines()
            .find(|l| l.trim_start().starts_with("10 "))
            .expect("row");
        assert!(!host.contains("prod/"), "{host}");
    }

    #[test]
    fn scan_finds_nothing_for_unknown_glob() {
        let cfg = CaptureConfig {
            libraries: vec!["libdoesnotexist-sessionwatch.so*".into()],
            ..CaptureConfig::default()
        };
        let r = discover(&cfg);
        assert!(r.scanned >= 1, "at least the test's parent is visible");
        assert!(
            r.targets
                .iter()
                .all(|t| t.kind == TargetKind::StaticExecutable),
            "no library can match: {r}"
        );
    }
}
