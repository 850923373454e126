//! Loading, attaching and running the kernel programs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{
    Array as BpfArray, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf,
};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::{ProgramError, TracePoint, UProbe};
use aya::{Ebpf, EbpfError, EbpfLoader};
use sessionwatch_common::{COMM_LEN, ConnInfo, ConnKey, SkipArm, conn_flags, conn_gen_slot, role};
use sessionwatch_streams::StreamSink;
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

use super::config::CaptureConfig;
use super::error::CaptureError;
use super::procfs::{Proc, SocketInfo, SocketResolver};
use super::records;
use super::stats::{StatsHandle, UserCounters};
use super::targets::{ScanReport, Scanner, TargetReport, TargetStatus, TlsFlavor};
use super::tracker::{Action, Clock, Env, Tracker, kernel_addr};

/// The kernel object, embedded by `agent/build.rs` when it was built.
#[cfg(sessionwatch_ebpf_object)]
static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/sessionwatch.bpf.o"
)));
#[cfg(not(sessionwatch_ebpf_object))]
static OBJECT: Option<&[u8]> = None;

/// Whether this build embeds the kernel programs.
pub fn object_embedded() -> bool {
    OBJECT.is_some()
}

/// The embedded kernel object (for the benchmark's empty probes, `floor.rs`).
pub(super) fn object() -> Option<&'static [u8]> {
    OBJECT
}

/// Uprobe programs: (program, symbol, needs `_ex`, needs set_fd, needs set_bio).
const UPROBES: &[(&str, &str)] = &[
    ("sw_ssl_read", "SSL_read"),
    ("sw_ssl_ret", "SSL_read"),
    ("sw_ssl_write", "SSL_write"),
    ("sw_ssl_ret", "SSL_write"),
];
const UPROBES_EX: &[(&str, &str)] = &[
    ("sw_ssl_read_ex", "SSL_read_ex"),
    ("sw_ssl_ret", "SSL_read_ex"),
    ("sw_ssl_write_ex", "SSL_write_ex"),
    ("sw_ssl_ret", "SSL_write_ex"),
];

/// Tracepoints: (program, category, name). Always attached.
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("sw_enter_read", "syscalls", "sys_enter_read"),
    ("sw_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    ("sw_enter_write", "syscalls", "sys_enter_write"),
    ("sw_enter_write", "syscalls", "sys_enter_sendto"),
    ("sw_enter_readv", "syscalls", "sys_enter_readv"),
    ("sw_enter_writev", "syscalls", "sys_enter_writev"),
    ("sw_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("sw_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("sw_enter_accept", "syscalls", "sys_enter_accept"),
    ("sw_enter_accept", "syscalls", "sys_enter_accept4"),
    ("sw_exit_accept", "syscalls", "sys_exit_accept"),
    ("sw_exit_accept", "syscalls", "sys_exit_accept4"),
    ("sw_enter_connect", "syscalls", "sys_enter_connect"),
    ("sw_exit_connect", "syscalls", "sys_exit_connect"),
    ("sw_enter_close", "syscalls", "sys_enter_close"),
    ("sw_sock_state", "sock", "inet_sock_set_state"),
    ("sw_exec", "sched", "sched_process_exec"),
    ("sw_exit", "sched", "sched_process_exit"),
];
/// The `syscalls` tracepoints of [`TRACEPOINTS`] (those `sessionwatch run`
/// attaches without `capture.plain_ports`): the sites of the syscall floor
/// of `cargo xtask bench hooks` ([`super::FloorSites::AgentMinimalSyscalls`]).
pub(crate) fn default_syscall_tracepoints() -> impl Iterator<Item = (&'static str, &'static str)> {
    TRACEPOINTS
        .iter()
        .filter(|(_, category, _)| *category == "syscalls")
        .map(|&(_, category, name)| (category, name))
}
/// Attached only with `capture.plain_ports`.
const TRACEPOINTS_PLAIN: &[(&str, &str, &str)] = &[
    ("sw_enter_sendfile", "syscalls", "sys_enter_sendfile64"),
    ("sw_exit_io", "syscalls", "sys_exit_read"),
    ("sw_exit_io", "syscalls", "sys_exit_recvfrom"),
    ("sw_exit_io", "syscalls", "sys_exit_write"),
    ("sw_exit_io", "syscalls", "sys_exit_sendto"),
    ("sw_exit_io", "syscalls", "sys_exit_readv"),
    ("sw_exit_io", "syscalls", "sys_exit_writev"),
    ("sw_exit_io", "syscalls", "sys_exit_recvmsg"),
    ("sw_exit_io", "syscalls", "sys_exit_sendmsg"),
    ("sw_exit_io", "syscalls", "sys_exit_sendfile64"),
];
/// Attached only with `capture.processes`.
const TRACEPOINTS_FILTER: &[(&str, &str, &str)] = &[("sw_fork", "sched", "sched_process_fork")];

/// Records handled per ring-buffer wakeup before other work gets a turn.
const DRAIN_BUDGET: usize = 16384;
/// The kernel writes records without waking the agent (a wakeup per record
/// costs the traced process an irq_work) unless a backlog of 1/16 of the
/// ring builds up; the agent drains on this timer.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Delay between an `execve` and the rescan of that process (its shared
/// libraries are mapped by the dynamic loader right after exec).
const EXEC_RESCAN_DELAY: Duration = Duration::from_millis(300);
/// Pending per-process rescans at most; beyond, the periodic scan covers.
const MAX_PENDING_RESCANS: usize = 1024;
/// Containers cached per pid at most.
const MAX_CONTAINER_CACHE: usize = 8192;

/// A running capture: programs loaded and attached, ring buffer open.
///
/// Dropping it detaches every probe and unloads the programs.
pub struct LiveCapture {
    ring: AsyncFd<RingBuf<MapData>>,
    logger: Option<AsyncFd<aya_log::EbpfLogger<TracingLog>>>,
    tracker: Tracker,
    env: LiveEnv,
    attacher: Attacher,
    stats: StatsHandle,
}

impl std::fmt::Debug for LiveCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCapture")
            .field("attached_files", &self.attacher.attached.len())
            .field("connections", &self.tracker.len())
            .finish_non_exhaustive()
    }
}

/// Owns the loaded object and knows what is attached where.
struct Attacher {
    ebpf: Ebpf,
    cfg: CaptureConfig,
    scanner: Scanner,
    /// (dev, inode) → what is attached to that file.
    attached: HashMap<(u64, u64), AttachedFile>,
    /// Files that failed to attach (not retried every scan; forgotten once
    /// no scanned process maps them).
    failed: HashSet<(u64, u64)>,
    pids: Option<BpfHashMap<MapData, u32, u8>>,
    pending: VecDeque<(Instant, u32)>,
    counters: Arc<UserCounters>,
    last_report: ScanReport,
}

/// Full scans in a row that must miss an attached file before its probes
/// are detached: one scan can miss a process that exits or execs while
/// `/proc` is read, and a file a new process maps again in between is
/// found by the rescan after its `execve`.
const DETACH_AFTER_MISSED_SCANS: u8 = 2;

/// A hooked TLS file: the process it was found in and the probe links.
struct AttachedFile {
    report: TargetReport,
    /// (program, link) of every probe on the file, to detach them when no
    /// selected process maps it any more.
    links: Vec<(&'static str, UProbeLinkId)>,
    /// Consecutive full scans that found no selected process mapping it.
    missed_scans: u8,
}

/// The real [`Env`]: /proc and the kernel's connection table.
struct LiveEnv {
    proc: Proc,
    resolver: SocketResolver,
    conns: BpfHashMap<MapData, ConnKey, ConnInfo>,
    /// `CONN_UGEN`: user-space generations of `CONNS` entries. The TLS
    /// return program caches an entry per thread while its generations are
    /// unchanged, so every write or removal here bumps it (this is the map's
    /// only writer, so the read-modify-write cannot lose a bump).
    ugen: BpfArray<MapData, u32>,
    announced: BpfHashMap<MapData, u32, u8>,
    /// `SKIP_ARM`: body-skip arms (this is the map's only writer).
    skip_arms: BpfArray<MapData, SkipArm>,
    containers: HashMap<u32, Option<String>>,
}

impl LiveEnv {
    /// Invalidates the kernel's per-thread copies of the `CONNS` entry of
    /// `key`; called after changing it.
    fn ugen_bump(&mut self, key: ConnKey) {
        let slot = conn_gen_slot(key.tgid, key.fd);
        if let Ok(v) = self.ugen.get(&slot, 0) {
            let _ = self.ugen.set(slot, v.wrapping_add(1), 0);
        }
    }

    /// Drops kernel connection entries of processes that no longer exist
    /// (a process that exits without closing its sockets leaves them).
    fn gc_kernel(&mut self) -> usize {
        let mut alive: HashMap<u32, bool> = HashMap::new();
        let dead: Vec<ConnKey> = self
            .conns
            .keys()
            .filter_map(Result::ok)
            .filter(|k| {
                !*alive
                    .entry(k.tgid)
                    .or_insert_with(|| self.proc.alive(k.tgid))
            })
            .collect();
        for k in &dead {
            let _ = self.conns.remove(k);
            self.ugen_bump(*k);
        }
        let dead_pids: Vec<u32> = alive
            .iter()
            .filter(|(_, a)| !**a)
            .map(|(p, _)| *p)
            .collect();
        for p in dead_pids {
            let _ = self.announced.remove(&p);
            self.containers.remove(&p);
        }
        dead.len()
    }
}

impl Env for LiveEnv {
    fn resolve(&mut self, pid: u32, fd: i32) -> SocketInfo {
        self.resolver.resolve(pid, fd)
    }

    fn container_id(&mut self, pid: u32) -> Option<String> {
        if self.containers.len() >= MAX_CONTAINER_CACHE {
            self.containers.clear();
        }
        let proc = &self.proc;
        self.containers
            .entry(pid)
            .or_insert_with(|| proc.container_id(pid))
            .clone()
    }

    fn comm(&mut self, pid: u32) -> Option<String> {
        self.proc.comm(pid)
    }

    fn kernel_set(&mut self, key: ConnKey, info: &ConnInfo, only_new: bool) {
        // BPF_NOEXIST = 1, BPF_ANY = 0.
        let flags = if only_new { 1 } else { 0 };
        match self.conns.insert(key, *info, flags) {
            Ok(()) => {
                self.ugen_bump(key);
                if info.flags & conn_flags::ANNOUNCED != 0 {
                    let _ = self.announced.insert(key.tgid, 1, 0);
                }
            }
            Err(e) => {
                if !only_new {
                    debug!(pid = key.tgid, fd = key.fd, error = %e, "could not update kernel connection entry");
                }
            }
        }
    }

    fn kernel_update_flags(&mut self, key: ConnKey, id: u64, set: u8, clear: u8) {
        if let Ok(mut cur) = self.conns.get(&key, 0)
            && cur.id == id
        {
            cur.flags = (cur.flags & !clear) | set;
            // BPF_EXIST = 2: only if the entry is still there.
            let _ = self.conns.insert(key, cur, 2);
            self.ugen_bump(key);
        }
    }

    fn kernel_remove(&mut self, key: ConnKey, id: u64) {
        if let Ok(cur) = self.conns.get(&key, 0)
            && cur.id == id
        {
            let _ = self.conns.remove(&key);
            self.ugen_bump(key);
        }
    }

    fn alive(&mut self, pid: u32) -> bool {
        self.proc.alive(pid)
    }

    fn skip_arm(&mut self, slot: u32, value: &SkipArm) {
        if let Err(e) = self.skip_arms.set(slot, *value, 0) {
            // The kernel keeps the previous value: an arm that never took
            // effect, or one released late (it ends with the body anyway).
            debug!(slot, error = %e, "could not write a body-skip arm");
        }
    }
}

/// Forwards aya-log records (from `aya-log-ebpf` in the kernel programs)
/// to `tracing`, target `sessionwatch::capture::ebpf`.
struct TracingLog;

impl log::Log for TracingLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "sessionwatch::capture::ebpf", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "sessionwatch::capture::ebpf", "{msg}"),
            log::Level::Info => tracing::info!(target: "sessionwatch::capture::ebpf", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "sessionwatch::capture::ebpf", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "sessionwatch::capture::ebpf", "{msg}"),
        }
    }

    fn flush(&self) {}
}

// ---------------------------------------------------------------------------
// Preconditions.

fn capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn check_privileges() -> Result<(), CaptureError> {
    const CAP_DAC_READ_SEARCH: u32 = 2;
    const CAP_SYS_PTRACE: u32 = 19;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let caps = capabilities().unwrap_or(0);
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !(has(CAP_SYS_ADMIN) || has(CAP_BPF) && has(CAP_PERFMON)) {
        missing.push("CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN)");
    }
    if !has(CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    if !has(CAP_DAC_READ_SEARCH) {
        missing.push("CAP_DAC_READ_SEARCH");
    }
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mut what = missing.join(", ");
    if euid != 0 {
        what = format!("root (running as uid {euid}): {what}");
    }
    Err(CaptureError::MissingPrivileges { missing: what })
}

fn check_tracefs() -> Result<(), CaptureError> {
    let ok = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|p| Path::new(p).is_dir());
    if ok {
        Ok(())
    } else {
        Err(CaptureError::TracefsMissing)
    }
}

fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `lim` is a valid rlimit; failure only means an older kernel
    // may account BPF memory against a lower limit, reported at load.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc != 0 {
        debug!("could not raise RLIMIT_MEMLOCK (only matters before Linux 5.11)");
    }
}

fn load_error(e: EbpfError) -> CaptureError {
    match e {
        EbpfError::MapError(MapError::CreateError { name, io_error }) => {
            match io_error.raw_os_error() {
                Some(libc::EPERM) | Some(libc::ENOSYS) | Some(libc::EACCES) => {
                    CaptureError::BpfUnavailable {
                        what: format!("creating map {name}"),
                        source: io_error,
                    }
                }
                _ => CaptureError::Load(format!("creating map {name}: {io_error}")),
            }
        }
        other => CaptureError::Load(other.to_string()),
    }
}

fn program_error(program: &str, e: ProgramError) -> CaptureError {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => match io_error.raw_os_error() {
            Some(libc::ENOSYS) => CaptureError::BpfUnavailable {
                what: format!("loading program {program}"),
                source: io_error,
            },
            _ => CaptureError::VerifierRejected {
                program: program.to_string(),
                error: io_error.to_string(),
                log: verifier_log.to_string(),
            },
        },
        other => CaptureError::Load(format!("program {program}: {other}")),
    }
}

/// Registers a map-backed reader with the tokio reactor.
fn register<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>, CaptureError> {
    // SAFETY: `RingBuf<MapData>` and `EbpfLogger` own their map's fd (an
    // `OwnedFd` inside `MapData`) for their whole lifetime, never replace it,
    // and `as_raw_fd` always returns that same fd.
    unsafe { AsyncFd::register(inner) }.map_err(|e| CaptureError::Poll(e.into()))
}

fn comm_key(name: &str) -> [u8; COMM_LEN] {
    let mut k = [0u8; COMM_LEN];
    for (d, s) in k.iter_mut().zip(name.bytes().take(COMM_LEN - 1)) {
        *d = s;
    }
    k
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<BpfHashMap<MapData, K, V>, CaptureError> {
    let map = ebpf.take_map(name).ok_or(CaptureError::Map {
        name,
        why: "not in the object".into(),
    })?;
    BpfHashMap::try_from(map).map_err(|e| CaptureError::Map {
        name,
        why: e.to_string(),
    })
}

fn take_array<V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<BpfArray<MapData, V>, CaptureError> {
    let map = ebpf.take_map(name).ok_or(CaptureError::Map {
        name,
        why: "not in the object".into(),
    })?;
    BpfArray::try_from(map).map_err(|e| CaptureError::Map {
        name,
        why: e.to_string(),
    })
}

// ---------------------------------------------------------------------------

impl LiveCapture {
    /// Loads the kernel programs, attaches them to every target found now,
    /// and prepares the ring buffer. Must be called inside a tokio runtime.
    ///
    /// Errors (all meant for exit code 2): missing privileges, BPF or
    /// tracefs unavailable, verifier rejection (with its log), nothing to
    /// attach to, agent built without the kernel object.
    pub fn start(cfg: &CaptureConfig) -> Result<LiveCapture, CaptureError> {
        cfg.validate()?;
        let object = OBJECT.ok_or(CaptureError::ObjectMissing)?;
        check_privileges()?;
        check_tracefs()?;
        raise_memlock();

        let nr_cpus = aya::util::nr_cpus().map_err(|(what, e)| CaptureError::Io {
            what: "reading the CPU count from",
            path: PathBuf::from(what),
            source: e,
        })?;
        let agent = std::process::id();
        let filter: u32 = (!cfg.processes.is_empty()).into();
        let plain: u32 = (!cfg.plain_ports.is_empty()).into();
        let wakeup: u32 = (cfg.ring_buffer_size / 16).max(4096);
        let skip: u32 = (cfg.skip_bodies_above > 0).into();
        let mut ebpf = EbpfLoader::new()
            .override_global("PAYLOAD_CAP", &cfg.payload_cap, true)
            .override_global("AGENT_TGID", &agent, true)
            .override_global("FILTER_PIDS", &filter, true)
            .override_global("PLAIN_ENABLED", &plain, true)
            .override_global("WAKEUP_BYTES", &wakeup, true)
            .override_global("SKIP_ENABLED", &skip, true)
            .map_max_entries("EVENTS", cfg.ring_buffer_size)
            .map_max_entries("SCRATCH", u32::try_from(nr_cpus).unwrap_or(u32::MAX))
            .map_max_entries("CONNS", cfg.max_connections)
            .load(object)
            .map_err(load_error)?;

        // The log map must stay open while programs load and run.
        let logger = match aya_log::EbpfLogger::init_with_logger(&mut ebpf, TracingLog) {
            Ok(l) => Some(register(l)?),
            Err(e) => {
                warn!(error = %e, "kernel-side logging unavailable");
                None
            }
        };

        // Load every program (the verifier runs here) while every map handle
        // is still owned by `ebpf`: programs refer to maps by fd until loaded.
        let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for name in &names {
            let Some(prog) = ebpf.program_mut(name) else {
                continue;
            };
            let res = match prog {
                aya::programs::Program::UProbe(p) => p.load(),
                aya::programs::Program::TracePoint(p) => p.load(),
                _ => Ok(()),
            };
            res.map_err(|e| program_error(name, e))?;
        }

        // Configuration maps.
        {
            let mut ports: BpfHashMap<_, u16, u8> = take_hash(&mut ebpf, "PLAIN_PORTS")?;
            for p in &cfg.plain_ports {
                ports.insert(p, 1, 0).map_err(|e| CaptureError::Map {
                    name: "PLAIN_PORTS",
                    why: e.to_string(),
                })?;
            }
            let mut names: BpfHashMap<_, [u8; COMM_LEN], u8> = take_hash(&mut ebpf, "PROC_NAMES")?;
            for n in &cfg.processes {
                names
                    .insert(comm_key(n), 1, 0)
                    .map_err(|e| CaptureError::Map {
                        name: "PROC_NAMES",
                        why: e.to_string(),
                    })?;
            }
            // Both maps stay referenced by the loaded programs; the user-space
            // handles can go.
        }
        let pids: Option<BpfHashMap<MapData, u32, u8>> = if filter == 1 {
            Some(take_hash(&mut ebpf, "PIDS")?)
        } else {
            None
        };
        let conns: BpfHashMap<MapData, ConnKey, ConnInfo> = take_hash(&mut ebpf, "CONNS")?;
        let ugen: BpfArray<MapData, u32> = take_array(&mut ebpf, "CONN_UGEN")?;
        let announced: BpfHashMap<MapData, u32, u8> = take_hash(&mut ebpf, "PROC_ANNOUNCED")?;
        let skip_arms: BpfArray<MapData, SkipArm> = take_array(&mut ebpf, "SKIP_ARM")?;
        let counters_map = ebpf.take_map("COUNTERS").ok_or(CaptureError::Map {
            name: "COUNTERS",
            why: "not in the object".into(),
        })?;
        let counters_map: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(counters_map).map_err(|e| CaptureError::Map {
                name: "COUNTERS",
                why: e.to_string(),
            })?;
        let ring_map = ebpf.take_map("EVENTS").ok_or(CaptureError::Map {
            name: "EVENTS",
            why: "not in the object".into(),
        })?;
        let ring = RingBuf::try_from(ring_map).map_err(|e| CaptureError::Map {
            name: "EVENTS",
            why: e.to_string(),
        })?;
        let ring = register(ring)?;

        let user = Arc::new(UserCounters::default());
        let stats = StatsHandle {
            kernel: Some(Arc::new(counters_map)),
            user: user.clone(),
            ready: Arc::new(AtomicBool::new(false)),
        };

        let mut attacher = Attacher {
            ebpf,
            cfg: cfg.clone(),
            scanner: Scanner::new(Proc::default()),
            attached: HashMap::new(),
            failed: HashSet::new(),
            pids,
            pending: VecDeque::new(),
            counters: user.clone(),
            last_report: ScanReport::default(),
        };

        // Socket lifecycle first, so connections accepted from now on are
        // known to the kernel; then pre-existing ones; then the uprobes.
        let mut tps: Vec<&(&str, &str, &str)> = TRACEPOINTS.iter().collect();
        if plain == 1 {
            tps.extend(TRACEPOINTS_PLAIN);
        }
        if filter == 1 {
            tps.extend(TRACEPOINTS_FILTER);
        }
        for &&(prog, category, name) in &tps {
            attacher.attach_tracepoint(prog, category, name)?;
        }

        let clock = Clock::now();
        let mut tracker = Tracker::new(
            cfg.max_connections as usize,
            &cfg.plain_ports,
            cfg.skip_bodies_above,
            clock,
            user.clone(),
        );
        let proc = Proc::default();
        let mut env = LiveEnv {
            proc: proc.clone(),
            resolver: SocketResolver::new(proc),
            conns,
            ugen,
            announced,
            skip_arms,
            containers: HashMap::new(),
        };

        let report = attacher.scan_and_attach(None);
        let existing = prepopulate(&report, cfg, &mut tracker, &mut env);
        debug!(connections = existing, "pre-existing connections recorded");
        let hooked = attacher.attached.len();
        if hooked == 0 && cfg.plain_ports.is_empty() && !cfg.wait_for_targets {
            let skipped: Vec<String> = report
                .targets
                .iter()
                .filter(|t| t.status != TargetStatus::Attach)
                .map(|t| format!("{} ({}): {}", t.comm, t.pid, t.status))
                .take(5)
                .collect();
            return Err(CaptureError::NothingToAttach {
                libraries: format!("{:?}", cfg.libraries),
                scanned: report.scanned,
                skipped: if skipped.is_empty() {
                    String::new()
                } else {
                    format!("; skipped: {}", skipped.join("; "))
                },
            });
        }
        info!(
            tls_files = hooked,
            plain_ports = ?cfg.plain_ports,
            processes = report.scanned,
            "live capture attached"
        );
        stats.ready.store(true, Ordering::Relaxed);
        Ok(LiveCapture {
            ring,
            logger,
            tracker,
            env,
            attacher,
            stats,
        })
    }

    /// Counters and readiness, shareable with the metrics exporter.
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Counters now.
    pub fn stats(&self) -> super::CaptureStats {
        self.stats.snapshot()
    }

    /// True once attached and reading.
    pub fn is_ready(&self) -> bool {
        self.stats.is_ready()
    }

    /// The targets of the last scan (attached and skipped, with reasons).
    pub fn targets(&self) -> &ScanReport {
        &self.attacher.last_report
    }

    /// Reads the ring buffer and feeds `sink` until `shutdown` resolves,
    /// rescanning for new TLS libraries on `execve` and every
    /// `capture.rescan_interval`. On return every open stream has been
    /// closed with [`CloseReason::EndOfInput`](sessionwatch_streams::CloseReason).
    pub async fn run(
        &mut self,
        sink: &mut dyn StreamSink,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), CaptureError> {
        let Self {
            ring,
            logger,
            tracker,
            env,
            attacher,
            stats,
        } = self;
        tokio::pin!(shutdown);
        let period = attacher.cfg.rescan_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            let next_exec = attacher
                .pending
                .front()
                .map(|(at, _)| tokio::time::Instant::from_std(*at));
            tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                guard = ring.readable_mut() => {
                    let mut guard = match guard {
                        Ok(g) => g,
                        Err(e) => break Err(CaptureError::Poll(e)),
                    };
                    let drained = drain(guard.get_inner_mut(), tracker, env, attacher, sink, &stats.user);
                    if drained {
                        guard.clear_ready();
                    }
                }
                guard = async {
                    match logger.as_mut() {
                        Some(l) => l.readable_mut().await.map(Some),
                        None => std::future::pending().await,
                    }
                } => {
                    if let Ok(Some(mut guard)) = guard {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                }
                _ = poll.tick() => {
                    let _ = drain(ring.get_mut(), tracker, env, attacher, sink, &stats.user);
                }
                _ = tick.tick() => {
                    tracker.clock = Clock::now();
                    attacher.scan_and_attach(None);
                    let now = monotonic_ns();
                    tracker.gc(now, env, sink);
                    let purged = env.gc_kernel();
                    if purged > 0 {
                        debug!(entries = purged, "purged kernel entries of exited processes");
                    }
                }
                () = sleep_until_opt(next_exec) => {
                    let now = Instant::now();
                    let mut due = Vec::new();
                    while let Some(&(at, pid)) = attacher.pending.front() {
                        if at > now {
                            break;
                        }
                        attacher.pending.pop_front();
                        due.push(pid);
                    }
                    due.sort_unstable();
                    due.dedup();
                    for pid in due {
                        attacher.scan_and_attach(Some(pid));
                    }
                }
            }
        };
        // Whatever is still in the ring buffer belongs to the run.
        let _ = drain(ring.get_mut(), tracker, env, attacher, sink, &stats.user);
        tracker.finish(monotonic_ns(), sink);
        result
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Handles up to [`DRAIN_BUDGET`] records; true when the ring is empty.
fn drain(
    ring: &mut RingBuf<MapData>,
    tracker: &mut Tracker,
    env: &mut LiveEnv,
    attacher: &mut Attacher,
    sink: &mut dyn StreamSink,
    counters: &UserCounters,
) -> bool {
    for _ in 0..DRAIN_BUDGET {
        let Some(item) = ring.next() else {
            return true;
        };
        match records::parse(&item) {
            Ok(rec) => {
                if let Action::Rescan(pid) = tracker.handle(rec, env, sink) {
                    attacher.schedule(pid);
                }
            }
            Err(e) => {
                UserCounters::add(&counters.malformed, 1);
                debug!(error = ?e, len = item.len(), "malformed capture record skipped");
            }
        }
    }
    false
}

/// Records the sockets that were open before the agent started, so the
/// kernel can attribute their bytes (role, addresses) from the first byte.
fn prepopulate(
    report: &ScanReport,
    cfg: &CaptureConfig,
    tracker: &mut Tracker,
    env: &mut LiveEnv,
) -> usize {
    let plain: HashSet<u16> = cfg.plain_ports.iter().copied().collect();
    let mut pids: Vec<u32> = report
        .targets
        .iter()
        .filter(|t| t.status == TargetStatus::Attach)
        .map(|t| t.pid)
        .collect();
    let tls_pids: HashSet<u32> = pids.iter().copied().collect();
    if !plain.is_empty() {
        pids.extend(
            env.proc
                .pids()
                .unwrap_or_default()
                .into_iter()
                .filter(|&p| {
                    p != std::process::id()
                        && env.proc.comm(p).is_some_and(|c| cfg.process_selected(&c))
                }),
        );
    }
    pids.sort_unstable();
    pids.dedup();
    let mut n = 0;
    for pid in pids {
        for (fd, inode) in env.proc.socket_fds(pid) {
            let SocketInfo::Tcp {
                local,
                remote,
                server,
            } = env.resolver.resolve_inode(pid, inode)
            else {
                continue;
            };
            if remote.port() == 0 {
                continue; // listening socket
            }
            let key = ConnKey {
                tgid: pid,
                fd: fd as u32,
            };
            let is_plain = server && plain.contains(&local.port());
            let info = if server && (is_plain || tls_pids.contains(&pid)) {
                let mut flags = conn_flags::LOCAL_KNOWN | conn_flags::PEER_KNOWN;
                if is_plain {
                    flags |= conn_flags::PLAIN;
                }
                ConnInfo {
                    id: tracker.mint_id(),
                    local: kernel_addr(local),
                    peer: kernel_addr(remote),
                    role: role::SERVER,
                    flags,
                    ..ConnInfo::default()
                }
            } else if !server && tls_pids.contains(&pid) {
                ConnInfo {
                    role: role::CLIENT,
                    flags: conn_flags::IGNORE,
                    ..ConnInfo::default()
                }
            } else {
                continue;
            };
            env.kernel_set(key, &info, true);
            n += 1;
        }
    }
    n
}

impl Attacher {
    fn attach_tracepoint(
        &mut self,
        prog: &str,
        category: &str,
        name: &str,
    ) -> Result<(), CaptureError> {
        let tp: &mut TracePoint = self
            .ebpf
            .program_mut(prog)
            .ok_or_else(|| CaptureError::Load(format!("program {prog} missing from the object")))?
            .try_into()
            .map_err(|e: ProgramError| CaptureError::Load(format!("program {prog}: {e}")))?;
        tp.attach(category, name).map_err(|e| {
            let events = [
                "/sys/kernel/tracing/events",
                "/sys/kernel/debug/tracing/events",
            ];
            let exists = events
                .iter()
                .any(|d| Path::new(d).join(category).join(name).is_dir());
            if exists {
                CaptureError::Attach {
                    program: prog.to_string(),
                    target: format!("tracepoint {category}/{name}"),
                    error: e.to_string(),
                }
            } else {
                CaptureError::TracepointMissing {
                    category: category.to_string(),
                    name: name.to_string(),
                }
            }
        })?;
        Ok(())
    }

    /// Queues a rescan of a process that just exec'd.
    fn schedule(&mut self, pid: u32) {
        if self.pending.len() >= MAX_PENDING_RESCANS {
            return; // the periodic scan will find it
        }
        self.pending
            .push_back((Instant::now() + EXEC_RESCAN_DELAY, pid));
    }

    /// Scans all processes (or one) and attaches to new TLS files. Keeps
    /// the process filter map current. Never fails: a file that cannot be
    /// hooked is reported in the scan and skipped.
    fn scan_and_attach(&mut self, pid: Option<u32>) -> ScanReport {
        let mut report = match pid {
            Some(p) => self.scanner.scan_pid(&self.cfg, p),
            None => self.scanner.scan_all(&self.cfg),
        };
        UserCounters::add(&self.counters.rescans, 1);
        let mut mapped: HashSet<(u64, u64)> = HashSet::new();
        for t in report.targets.iter_mut() {
            if t.status != TargetStatus::Attach {
                continue;
            }
            if let Some(pids) = self.pids.as_mut() {
                let _ = pids.insert(t.pid, 1, 0);
            }
            let id = t.file_id();
            mapped.insert(id);
            if self.attached.contains_key(&id) {
                continue;
            }
            if self.failed.contains(&id) {
                t.status = TargetStatus::AttachFailed("failed before".into());
                continue;
            }
            match self.attach_file(t) {
                Ok(links) => {
                    info!(
                        pid = t.pid,
                        process = %t.comm,
                        path = %t.path,
                        inode = t.inode,
                        probes = links.len(),
                        "hooked TLS library"
                    );
                    let file = AttachedFile {
                        report: t.clone(),
                        links,
                        missed_scans: 0,
                    };
                    self.attached.insert(id, file);
                }
                Err(e) => {
                    warn!(pid = t.pid, path = %t.path, error = %e, "could not hook TLS library");
                    self.failed.insert(id);
                    t.status = TargetStatus::AttachFailed(e);
                }
            }
        }
        // Processes selected by name that use no TLS library still get
        // their plaintext (plain ports) captured.
        if let (Some(pids), None) = (self.pids.as_mut(), pid) {
            let proc = Proc::default();
            for p in proc.pids().unwrap_or_default() {
                if proc
                    .comm(p)
                    .is_some_and(|c| self.cfg.processes.contains(&c))
                {
                    let _ = pids.insert(p, 1, 0);
                }
            }
        }
        if report.complete {
            self.detach_unmapped(&mapped);
        }
        self.counters.attached_targets.store(
            self.attached.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if pid.is_none() {
            self.last_report = report.clone();
        }
        report
    }

    /// Detaches the probes of files that no selected process has mapped for
    /// [`DETACH_AFTER_MISSED_SCANS`] full scans: after a library upgrade the
    /// restarted processes map the new file (hooked by their rescan), and
    /// the uprobes on the old inode would otherwise keep the kernel's uprobe
    /// registrations — and the deleted file itself, which they pin — until
    /// the agent stops. `mapped`: the files a complete full scan just found
    /// (one that could not list `/proc` counts no miss). Processes whose
    /// maps cannot be read (reported as unreadable) keep no file hooked:
    /// the agent never saw what they map.
    fn detach_unmapped(&mut self, mapped: &HashSet<(u64, u64)>) {
        self.failed.retain(|id| mapped.contains(id));
        let gone = missed_long_enough(
            self.attached
                .iter_mut()
                .map(|(id, a)| (*id, &mut a.missed_scans)),
            mapped,
        );
        for id in gone {
            let Some(a) = self.attached.remove(&id) else {
                continue;
            };
            let (detached, errors) = self.detach_links(a.links);
            if errors > 0 {
                warn!(
                    path = %a.report.path,
                    inode = a.report.inode,
                    detached,
                    errors,
                    "could not detach every probe of an unmapped TLS library"
                );
            }
            info!(
                path = %a.report.path,
                inode = a.report.inode,
                probes = detached,
                "unhooked TLS library: no selected process maps it any more"
            );
        }
    }

    /// Detaches `links`; returns (detached, failed).
    fn detach_links(&mut self, links: Vec<(&'static str, UProbeLinkId)>) -> (usize, usize) {
        let (mut ok, mut failed) = (0, 0);
        for (prog, link) in links {
            let up: Option<&mut UProbe> =
                self.ebpf.program_mut(prog).and_then(|p| p.try_into().ok());
            match up.map(|up| up.detach(link)) {
                Some(Ok(())) => ok += 1,
                Some(Err(e)) => {
                    debug!(program = prog, error = %e, "detach failed");
                    failed += 1;
                }
                None => failed += 1,
            }
        }
        (ok, failed)
    }

    /// Attaches every TLS probe to one file. Returns the links. On an
    /// error the probes already attached to the file are detached again, so
    /// a file is hooked completely or not at all.
    fn attach_file(
        &mut self,
        t: &TargetReport,
    ) -> Result<Vec<(&'static str, UProbeLinkId)>, String> {
        let mut links = Vec::new();
        match self.attach_points(t, &mut links) {
            Ok(()) => Ok(links),
            Err(e) => {
                self.detach_links(links);
                Err(e)
            }
        }
    }

    /// Attaches the probes of [`Attacher::attach_file`], pushing each link.
    fn attach_points(
        &mut self,
        t: &TargetReport,
        links: &mut Vec<(&'static str, UProbeLinkId)>,
    ) -> Result<(), String> {
        let path = t.host_path.clone();
        // The file must still be the one scanned (a process may have exited
        // and the path now resolve elsewhere).
        let md = std::fs::metadata(&path).map_err(|e| e.to_string())?;
        if (md.dev(), md.ino()) != t.opened_id {
            return Err("file changed since the scan".into());
        }
        let (_, _, info) = self.scanner.elf_info(&path)?;
        let sym = UProbeAttachLocation::Symbol;
        let mut points: Vec<(&'static str, UProbeAttachLocation<'_>, Option<u64>)> = Vec::new();
        // OpenSSL 1.1.1/3.x: probe the internal functions all four I/O entry
        // points share; their first instruction is emulated by the uprobe
        // trap, the exported wrappers' is single-stepped (see sites.rs).
        let internal = match info.flavor {
            Some(TlsFlavor::OpenSsl3 | TlsFlavor::OpenSsl11) if info.has_ex => {
                super::sites::internal_sites(&path)
            }
            _ => None,
        };
        if let Some(sites) = internal {
            let at = UProbeAttachLocation::AbsoluteOffset;
            points.push(("sw_ssl_read_ex", at(sites.read), None));
            points.push(("sw_ssl_ret", at(sites.read), None));
            points.push(("sw_ssl_write_ex", at(sites.write), None));
            points.push(("sw_ssl_ret", at(sites.write), None));
        } else {
            points.extend(UPROBES.iter().map(|&(p, s)| (p, sym(s), None)));
            if info.has_ex {
                points.extend(UPROBES_EX.iter().map(|&(p, s)| (p, sym(s), None)));
            }
        }
        if info.has_set_fd {
            points.push(("sw_ssl_set_fd", sym("SSL_set_fd"), None));
        }
        if let (true, Some(cookie)) = (info.has_set_bio, info.flavor.and_then(|f| f.bio_cookie())) {
            points.push(("sw_ssl_set_bio", sym("SSL_set_bio"), Some(cookie)));
        }
        for (prog, location, cookie) in points {
            let up: &mut UProbe = self
                .ebpf
                .program_mut(prog)
                .ok_or_else(|| format!("program {prog} missing"))?
                .try_into()
                .map_err(|e: ProgramError| e.to_string())?;
            let at = match location {
                UProbeAttachLocation::Symbol(s) => s.to_owned(),
                UProbeAttachLocation::SymbolOffset(s, o) => format!("{s}+{o:#x}"),
                UProbeAttachLocation::AbsoluteOffset(o) => format!("offset {o:#x}"),
            };
            let point = UProbeAttachPoint { location, cookie };
            let link = up
                .attach(point, &path, UProbeScope::AllProcesses)
                .map_err(|e| format!("{prog} at {at}: {e}"))?;
            links.push((prog, link));
        }
        Ok(())
    }
}

/// Counts a miss for every file of `files` (id, consecutive misses) that
/// `mapped` lacks and resets the others; returns the files missed in
/// [`DETACH_AFTER_MISSED_SCANS`] complete scans in a row.
fn missed_long_enough<'a>(
    files: impl Iterator<Item = ((u64, u64), &'a mut u8)>,
    mapped: &HashSet<(u64, u64)>,
) -> Vec<(u64, u64)> {
    let mut gone = Vec::new();
    for (id, missed) in files {
        if mapped.contains(&id) {
            *missed = 0;
            continue;
        }
        *missed = missed.saturating_add(1);
        if *missed >= DETACH_AFTER_MISSED_SCANS {
            gone.push(id);
        }
    }
    gone
}

/// Resolves when the process gets SIGINT or SIGTERM (for
/// [`LiveCapture::run`]'s `shutdown`).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    /// The agent runs the capture on a tokio task and reads stats from the
    /// metrics server's tasks.
    #[test]
    fn live_capture_is_send_and_stats_are_shared() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<super::LiveCapture>();
        send::<super::StatsHandle>();
        sync::<super::StatsHandle>();
    }

    /// A file is unhooked only after two complete scans in a row without
    /// it; one scan that finds it again starts the count over.
    #[test]
    fn files_are_unhooked_after_two_missed_scans() {
        use std::collections::{HashMap, HashSet};
        let (a, b) = ((1, 10), (1, 11));
        let mut files: HashMap<(u64, u64), u8> = HashMap::from([(a, 0), (b, 0)]);
        let mut scan = |mapped: &[(u64, u64)]| {
            let mapped: HashSet<(u64, u64)> = mapped.iter().copied().collect();
            let mut gone =
                super::missed_long_enough(files.iter_mut().map(|(id, m)| (*id, m)), &mapped);
            gone.sort_unstable();
            for id in &gone {
                files.remove(id);
            }
            gone
        };
        assert!(scan(&[a, b]).is_empty());
        assert!(scan(&[a]).is_empty(), "one miss is not enough");
        assert!(
            scan(&[a, b]).is_empty(),
            "found again: the count starts over"
        );
        assert!(scan(&[a]).is_empty());
        assert_eq!(scan(&[a]), vec![b], "two misses in a row");
        assert!(scan(&[]).is_empty());
        assert_eq!(scan(&[]), vec![a]);
    }

    #[test]
    fn start_without_object_or_privileges_fails_clearly() {
        // Whatever this machine lacks, start must fail with a message, not
        // panic; with everything present it succeeds (wait_for_targets).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cfg = super::CaptureConfig {
            libraries: vec!["libsessionwatch-none.so*".into()],
            plain_ports: vec![1],
            ..super::CaptureConfig::default()
        };
        rt.block_on(async {
            match super::LiveCapture::start(&cfg) {
                Ok(c) => assert!(c.is_ready()),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains("Fix:") || msg.contains("invalid"), "{msg}");
                }
            }
        });
    }
}
