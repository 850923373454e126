//! Dropping the capabilities the running agent no longer needs.
//!
//! Starting needs much more than running: creating maps and loading
//! programs (`CAP_BPF`, before 5.11 also a `RLIMIT_MEMLOCK` raise with
//! `CAP_SYS_RESOURCE`), binding a low admin port (`CAP_NET_BIND_SERVICE`),
//! reading root-only key files (`CAP_DAC_OVERRIDE`). Once the programs are
//! loaded and attached, the agent still has to:
//!
//! * hook TLS libraries of processes started later (capture follows new
//!   processes, see `live.rs`): `perf_event_open` of a uprobe needs
//!   `CAP_PERFMON` — or `CAP_SYS_ADMIN` on kernels that went back to
//!   requiring it for uprobes (the 6.18 kernel this was written on does;
//!   [`uprobe_needs_sys_admin`] finds out by trying, and `CAP_SYS_ADMIN` is
//!   then kept) — and attaching the already loaded program to it goes
//!   through `bpf(2)` (`CAP_BPF`, kept so that
//!   `kernel.unprivileged_bpf_disabled` never blocks a map or link
//!   operation);
//! * read `/proc/PID/maps`, `/proc/PID/fd` and `/proc/PID/root/...` of
//!   processes of other users (nginx workers run as `www-data`): ptrace
//!   read access, `CAP_SYS_PTRACE`, and the library files behind them:
//!   `CAP_DAC_READ_SEARCH`.
//!
//! Everything else goes: from the effective, permitted and inheritable
//! sets, the ambient set and — with `CAP_SETPCAP`, which a container
//! started with `drop: [ALL]` lacks and whose bounding set the runtime
//! already reduced — the bounding set, and `no_new_privs` is set,
//! so neither the agent nor anything it could be tricked into executing
//! can regain them. Before Linux 5.8 there is no `CAP_BPF`/`CAP_PERFMON`
//! and `CAP_SYS_ADMIN` stands in for both.
//!
//! Capabilities are per thread in Linux (`capset(2)` changes only the
//! calling thread), and the agent's runtime threads exist before the drop.
//! Every thread of the process is therefore made to drop its own set: the
//! calling thread directly, the others from a real-time signal handler that
//! only makes raw, async-signal-safe system calls — the way glibc
//! broadcasts `setuid` to all threads. The result is verified thread by
//! thread in `/proc/self/task/*/status`.

use std::os::fd::FromRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SETPCAP: u32 = 8;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets as two 32-bit halves.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// How long every thread gets to apply the drop.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Capability names by number (`include/uapi/linux/capability.h`).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Name of capability `cap` (`CAP_<n>` for numbers newer than this table).
pub fn cap_name(cap: u32) -> String {
    NAMES
        .get(cap as usize)
        .map_or_else(|| format!("CAP_{cap}"), |n| (*n).to_owned())
}

/// Errors dropping capabilities.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// `capget`/`capset`/`prctl` failed on the calling thread.
    #[error("{call} failed: {source}")]
    Syscall {
        /// The call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A `/proc/self` file could not be read or parsed.
    #[error("cannot read {path}: {why}")]
    Proc {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// Some threads still held dropped capabilities after the timeout.
    #[error("{threads} thread(s) did not drop their capabilities within {CONVERGE_TIMEOUT:?}")]
    NotConverged {
        /// Threads still holding more than the kept set.
        threads: usize,
    },
}

/// What a drop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropReport {
    /// This kernel wants `CAP_SYS_ADMIN` to create uprobes, so it is kept.
    pub uprobes_need_sys_admin: bool,
    /// ... but the agent never had it: TLS libraries cannot be hooked
    /// (neither at start nor in processes started later).
    pub uprobes_blocked: bool,
    /// Capabilities kept (names).
    pub kept: Vec<String>,
    /// Capabilities removed from the permitted set (names).
    pub dropped: Vec<String>,
    /// Capabilities removed from the bounding set only (names).
    pub bounding_dropped: usize,
    /// Threads of the process that now run with the kept set.
    pub threads: usize,
}

/// The capabilities the running agent keeps, given the highest capability
/// this kernel knows (`/proc/sys/kernel/cap_last_cap`) and whether creating
/// a uprobe needs `CAP_SYS_ADMIN` here (see [`uprobe_needs_sys_admin`]).
pub fn needed(last_cap: u32, uprobe_needs_admin: bool) -> u64 {
    let mut keep = (1u64 << CAP_SYS_PTRACE) | (1u64 << CAP_DAC_READ_SEARCH);
    if last_cap >= CAP_BPF {
        keep |= (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON);
        if uprobe_needs_admin {
            keep |= 1u64 << CAP_SYS_ADMIN;
        }
    } else {
        keep |= 1u64 << CAP_SYS_ADMIN;
    }
    keep
}

/// `perf_event_attr` up to `config2` (`PERF_ATTR_SIZE_VER1`, 72 bytes):
/// enough for a uprobe event, the kernel zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// Bit field; bit 0 is `disabled`.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    /// `uprobe_path` for the uprobe PMU.
    config1: u64,
    /// `probe_offset` for the uprobe PMU.
    config2: u64,
}

/// Whether this kernel wants `CAP_SYS_ADMIN`, not only `CAP_PERFMON`, to
/// create a uprobe through `perf_event_open` (Linux 5.8 accepted
/// `CAP_PERFMON`; later kernels went back to `CAP_SYS_ADMIN` for uprobes,
/// which can patch any file's code in every process mapping it).
///
/// Tried, not guessed from the version: a short-lived thread removes
/// `CAP_SYS_ADMIN` from its own effective set (capabilities are per thread)
/// and opens a disabled uprobe event on a memfd nobody maps — nothing is
/// patched anywhere. `EACCES`/`EPERM` means `CAP_SYS_ADMIN` is needed; any
/// other outcome means the permission check passed. When in doubt, true:
/// keeping one capability too many is better than losing new processes.
pub fn uprobe_needs_sys_admin() -> bool {
    std::thread::scope(|s| s.spawn(probe_uprobe_permission).join().unwrap_or(true))
}

fn probe_uprobe_permission() -> bool {
    let Ok((permitted, effective)) = capget_self() else {
        return true;
    };
    if effective & (1u64 << CAP_PERFMON) == 0 {
        return true;
    }
    let Some(pmu) = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
    else {
        return true;
    };
    if capset_self(permitted, effective & !(1u64 << CAP_SYS_ADMIN)).is_err() {
        return true;
    }
    // SAFETY: memfd_create with a NUL-terminated name and valid flags.
    let fd =
        unsafe { libc::memfd_create(c"sessionwatch-uprobe-check".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return true;
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned here.
    let file = std::fs::File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    // Sixteen `nop`s: a valid instruction at offset 0, never executed.
    if std::io::Write::write_all(&mut &file, &[0x90; 16]).is_err() {
        return true;
    }
    let Ok(path) = std::ffi::CString::new(format!("/proc/self/fd/{fd}")) else {
        return true;
    };
    let attr = PerfEventAttr {
        kind: pmu,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        flags: 1, // disabled
        config1: path.as_ptr() as u64,
        config2: 0,
        ..PerfEventAttr::default()
    };
    // SAFETY: `attr` is a valid, initialised perf_event_attr prefix whose
    // `size` says how much of it there is; `path` outlives the call.
    // pid -1, cpu 0: a CPU-wide event, as the agent attaches them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::c_int,
            0 as libc::c_int,
            -1 as libc::c_int,
            libc::c_ulong::from(8u32), // PERF_FLAG_FD_CLOEXEC
        )
    };
    if rc >= 0 {
        // SAFETY: the kernel returned a new descriptor owned by nobody else.
        drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as i32) });
        return false;
    }
    let err = std::io::Error::last_os_error().raw_os_error();
    drop(file);
    matches!(err, Some(libc::EACCES) | Some(libc::EPERM))
}

fn capset_self(permitted: u64, effective: u64) -> Result<(), PrivilegeError> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: 0,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: version-3 header and two data elements, as capset(2)
    // expects; pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(PrivilegeError::Syscall {
            call: "capset",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn names(mask: u64) -> Vec<String> {
    (0..64u32)
        .filter(|c| mask & (1u64 << c) != 0)
        .map(cap_name)
        .collect()
}

fn last_cap() -> Result<u32, PrivilegeError> {
    let path = "/proc/sys/kernel/cap_last_cap";
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|s| s.trim().parse::<u32>().map_err(|e| e.to_string()))
        .map(|n| n.min(63))
        .map_err(|why| PrivilegeError::Proc {
            path: path.into(),
            why,
        })
}

/// Capability sets of one thread, from its `/proc/.../status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadCaps {
    /// `CapPrm`.
    pub permitted: u64,
    /// `CapEff`.
    pub effective: u64,
    /// `CapBnd`.
    pub bounding: u64,
    /// `CapAmb`.
    pub ambient: u64,
    /// `NoNewPrivs`.
    pub no_new_privs: bool,
}

impl ThreadCaps {
    /// Parses a `/proc/PID/status` (or `/proc/PID/task/TID/status`) text.
    pub fn parse(status: &str) -> Option<ThreadCaps> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let hex = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
        Some(ThreadCaps {
            permitted: hex("CapPrm:")?,
            effective: hex("CapEff:")?,
            bounding: hex("CapBnd:")?,
            ambient: hex("CapAmb:").unwrap_or(0),
            no_new_privs: field("NoNewPrivs:") == Some("1"),
        })
    }

    /// True when this thread holds nothing beyond `keep` in any set (the
    /// bounding set only when `with_bounding`).
    pub fn within(&self, keep: u64, with_bounding: bool) -> bool {
        let bounding = if with_bounding { self.bounding } else { 0 };
        (self.permitted | self.effective | bounding | self.ambient) & !keep == 0
            && self.no_new_privs
    }
}

/// `capget`/`capset` header.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `capget`/`capset` data, one per 32-bit half.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capget_self() -> Result<(u64, u64), PrivilegeError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` and the two-element `data` array are the layout
    // capget(2) expects for version 3; pid 0 is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(PrivilegeError::Syscall {
            call: "capget",
            source: std::io::Error::last_os_error(),
        });
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].permitted, data[1].permitted),
        join(data[0].effective, data[1].effective),
    ))
}

/// The set every thread reduces itself to (read by the signal handler).
static KEEP_MASK: AtomicU64 = AtomicU64::new(u64::MAX);
/// `cap_last_cap`, for the bounding-set loop of the signal handler.
static LAST_CAP: AtomicU32 = AtomicU32::new(0);
/// Whether the bounding set can be reduced (`CAP_SETPCAP` is effective).
static DROP_BOUNDING: AtomicBool = AtomicBool::new(false);

/// Reduces the calling thread to `keep`: bounding set when
/// `drop_bounding` (that needs `CAP_SETPCAP`, still effective at that
/// point), ambient set, then effective/permitted/inheritable, then
/// `no_new_privs`.
///
/// Only raw system calls, no allocation, no locks: it runs inside a signal
/// handler. Returns the first failing call's name, if any.
fn apply_here(keep: u64, last_cap: u32, drop_bounding: bool) -> Option<&'static str> {
    let mut failed = None;
    for cap in 0..=last_cap.min(63) {
        if !drop_bounding || keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl(PR_CAPBSET_DROP, cap) takes plain integers.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                libc::c_ulong::from(cap),
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 && failed.is_none() {
            failed = Some("prctl(PR_CAPBSET_DROP)");
        }
    }
    // SAFETY: prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL) takes plain
    // integers; it fails with EINVAL only on kernels without ambient caps.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
    let lo = keep as u32;
    let hi = (keep >> 32) as u32;
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: version-3 header and two data elements, as capset(2)
    // expects; pid 0 is the calling thread. `keep` is a subset of the
    // permitted set (the caller intersected it), so this only lowers.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc != 0 && failed.is_none() {
        failed = Some("capset");
    }
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1) takes plain integers.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 && failed.is_none() {
        failed = Some("prctl(PR_SET_NO_NEW_PRIVS)");
    }
    failed
}

extern "C" fn on_drop_signal(_sig: libc::c_int) {
    // SAFETY: __errno_location returns this thread's errno slot; it is
    // saved and restored so the interrupted code sees its own errno.
    let errno = unsafe { *libc::__errno_location() };
    let _ = apply_here(
        KEEP_MASK.load(Ordering::SeqCst),
        LAST_CAP.load(Ordering::SeqCst),
        DROP_BOUNDING.load(Ordering::SeqCst),
    );
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

fn thread_ids() -> Result<Vec<i32>, PrivilegeError> {
    let dir = std::fs::read_dir("/proc/self/task").map_err(|e| PrivilegeError::Proc {
        path: "/proc/self/task".into(),
        why: e.to_string(),
    })?;
    Ok(dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect())
}

fn thread_caps(tid: i32) -> Option<ThreadCaps> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .ok()
        .and_then(|s| ThreadCaps::parse(&s))
}

/// Drops every capability outside [`needed`] from every thread of the
/// process, clears the ambient and bounding sets and sets `no_new_privs`.
/// Call once, after the programs are loaded and attached and every
/// privileged resource (listen socket, key files) is open.
pub fn drop_capabilities() -> Result<DropReport, PrivilegeError> {
    let last = last_cap()?;
    let (permitted, effective) = capget_self()?;
    // A container started with `drop: [ALL]` has no CAP_SETPCAP; its
    // bounding set is already what the runtime granted, and stays so.
    let drop_bounding = effective & (1u64 << CAP_SETPCAP) != 0;
    let admin_for_uprobes = uprobe_needs_sys_admin();
    let keep = needed(last, admin_for_uprobes) & permitted;
    let bounding_before = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| ThreadCaps::parse(&s))
        .map_or(0, |c| c.bounding);
    KEEP_MASK.store(keep, Ordering::SeqCst);
    LAST_CAP.store(last, Ordering::SeqCst);
    DROP_BOUNDING.store(drop_bounding, Ordering::SeqCst);

    // This thread first: if it cannot drop, nothing else is attempted.
    if let Some(call) = apply_here(keep, last, drop_bounding) {
        return Err(PrivilegeError::Syscall {
            call,
            source: std::io::Error::last_os_error(),
        });
    }

    // The other threads, from a real-time signal handler.
    let signal = libc::SIGRTMIN() + 3;
    // SAFETY: an all-zero sigaction is a valid "no flags, empty mask" value.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_drop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: all-zero is a valid sigaction to receive the old handler.
    let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: installs a handler that only makes async-signal-safe raw
    // system calls; `previous` receives the old disposition.
    if unsafe { libc::sigaction(signal, &action, &mut previous) } != 0 {
        return Err(PrivilegeError::Syscall {
            call: "sigaction",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid) as i32) };
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let result = loop {
        let tids = thread_ids()?;
        let pending: Vec<i32> = tids
            .iter()
            .copied()
            .filter(|&t| thread_caps(t).is_some_and(|c| !c.within(keep, drop_bounding)))
            .collect();
        if pending.is_empty() {
            break Ok(tids.len());
        }
        if Instant::now() >= deadline {
            break Err(PrivilegeError::NotConverged {
                threads: pending.len(),
            });
        }
        for t in pending {
            if t == me {
                let _ = apply_here(keep, last, drop_bounding);
                continue;
            }
            // SAFETY: tgkill to a thread of this very process with a
            // signal whose handler is installed above; a thread that
            // exited meanwhile yields ESRCH, which is harmless.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, t, signal) };
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // A thread signalled twice may still have one queued (real-time
    // signals queue) whose default action would end the process: when
    // nobody handled this signal before, ignore it from now on (which also
    // discards queued ones) instead of restoring the default.
    if previous.sa_sigaction == libc::SIG_DFL {
        previous.sa_sigaction = libc::SIG_IGN;
    }
    // SAFETY: installs the saved disposition (or SIG_IGN in its place).
    unsafe { libc::sigaction(signal, &previous, std::ptr::null_mut()) };
    let threads = result?;
    Ok(DropReport {
        uprobes_need_sys_admin: admin_for_uprobes,
        uprobes_blocked: admin_for_uprobes && permitted & (1u64 << CAP_SYS_ADMIN) == 0,
        kept: names(keep),
        dropped: names(permitted & !keep),
        bounding_dropped: if drop_bounding {
            (bounding_before & !keep).count_ones() as usize
        } else {
            0
        },
        threads,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kept_set_follows_the_kernel() {
        let modern = needed(40, false);
        assert_eq!(
            names(modern),
            [
                "CAP_DAC_READ_SEARCH",
                "CAP_SYS_PTRACE",
                "CAP_PERFMON",
                "CAP_BPF"
            ]
        );
        // Before 5.8: CAP_SYS_ADMIN instead of CAP_BPF + CAP_PERFMON.
        let old = needed(37, false);
        assert_eq!(needed(37, true), old);
        assert_eq!(
            names(needed(40, true)),
            [
                "CAP_DAC_READ_SEARCH",
                "CAP_SYS_PTRACE",
                "CAP_SYS_ADMIN",
                "CAP_PERFMON",
                "CAP_BPF"
            ]
        );
        assert_eq!(
            names(old),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]
        );
        assert_eq!(cap_name(99), "CAP_99");
    }

    #[test]
    fn status_parsing() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000000c000080004\n\
                 CapEff:\t000000c000080004\nCapBnd:\t000000c000080004\nCapAmb:\t0000000000000000\n\
                 NoNewPrivs:\t1\n";
        let c = ThreadCaps::parse(s).unwrap();
        assert_eq!(c.permitted, needed(40, false));
        assert!(c.within(needed(40, false), true));
        assert!(!c.within(needed(40, false) & !(1 << CAP_BPF), true));
        // A wider bounding set only counts when it can be dropped.
        let wide = s.replace("CapBnd:\t000000c000080004", "CapBnd:\t000001ffffffffff");
        let w = ThreadCaps::parse(&wide).unwrap();
        assert!(!w.within(needed(40, false), true));
        assert!(w.within(needed(40, false), false));
        let no_nnp = s.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0");
        assert!(
            !ThreadCaps::parse(&no_nnp)
                .unwrap()
                .within(needed(40, false), true)
        );
        assert_eq!(ThreadCaps::parse("Name: x\n"), None);
    }
}
