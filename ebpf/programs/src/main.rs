//! sessionwatch kernel programs.
//!
//! * `SSL_read`/`SSL_write`/`SSL_read_ex`/`SSL_write_ex` uprobes record the
//!   call per thread; one shared uretprobe copies the plaintext when the call
//!   returns (only then is the transferred length known).
//! * Syscall tracepoints nested inside an SSL call (same thread) reveal the
//!   socket fd; `SSL_set_fd`/`SSL_set_bio` and the last fd seen per `SSL*`
//!   cover calls served from OpenSSL's own buffer.
//! * `accept`/`accept4`/`connect`/`close` tracepoints keep a (pid, fd) →
//!   connection table with the role (accepted = server side) and addresses
//!   (peer from the accept buffer, local from `sock/inet_sock_set_state`).
//! * Plaintext syscalls (`read`, `write`, `recvfrom`, `sendto`, `readv`,
//!   `writev`, `recvmsg`, `sendmsg`, `sendfile64`) are captured for accepted
//!   TCP connections on the configured plain ports.
//! * `sched_process_exec/fork/exit` keep the process filter current and tell
//!   user space when to rescan for new TLS libraries.
//!
//! Everything goes into one ring buffer (`EVENTS`), see `sessionwatch-common`.
//! Nothing here may panic: the verifier rejects programs with a reachable
//! panic path, so slices are never indexed and lengths are clamped before use.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd},
};

use aya_ebpf::{
    EbpfContext, Global,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{
            bpf_get_attach_cookie, bpf_get_smp_processor_id, bpf_jiffies64, bpf_probe_read_user,
        },
    },
    macros::{map, raw_tracepoint, tracepoint, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext},
};
use aya_log_ebpf::debug;
use sessionwatch_common::{
    AF_INET, AF_INET6, AF_UNIX, BODY_QUERY_MIN, BODY_SKIP_SLOTS, COMM_LEN, CONN_GEN_SLOTS,
    CloseTail, ConnInfo, ConnKey, DEFAULT_MAX_CONNECTIONS, DEFAULT_PAYLOAD_CAP, EventHeader,
    HEADER_LEN, MAX_IOV, MAX_PAYLOAD, MAX_PLAIN_PORTS, MAX_PROC_NAMES, NUM_COUNTERS, SCRATCH_LEN,
    SkipArm, SkipCount, SockAddr, conn_flags, conn_gen_slot, counter, event_flags, event_kind, op,
    role, skip_slot, source,
};

// ---------------------------------------------------------------------------
// Load-time settings (patched by the agent with `EbpfLoader::override_global`).

/// Bytes of payload copied per event (clamped to `MAX_PAYLOAD`).
#[unsafe(no_mangle)]
static PAYLOAD_CAP: Global<u32> = Global::new(DEFAULT_PAYLOAD_CAP);
/// The agent's own tgid: its sockets and SSL calls are never captured.
#[unsafe(no_mangle)]
static AGENT_TGID: Global<u32> = Global::new(0);
/// 1 when `capture.processes` is not empty: only tgids in `PIDS` are captured.
#[unsafe(no_mangle)]
static FILTER_PIDS: Global<u32> = Global::new(0);
/// 1 when `capture.plain_ports` is not empty.
#[unsafe(no_mangle)]
static PLAIN_ENABLED: Global<u32> = Global::new(0);
/// Backlog (bytes) in the ring buffer at which the agent is woken at once.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u32> = Global::new(512 * 1024);
/// 1 when `capture.skip_bodies_above` is not 0: data events consult
/// `SKIP_ARM`.
#[unsafe(no_mangle)]
static SKIP_ENABLED: Global<u32> = Global::new(0);

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// `WAKE_ACC` value that makes the next record wake the agent at once.
const WAKE_NOW: u64 = 1 << 62;
/// Least time between two wake-ups forced for large unarmed events on one
/// CPU: at most 1,000 extra wake-ups a second per CPU for bulk traffic that
/// is never skipped (HTTP/2, small chunks, bodies below the threshold).
const LARGE_WAKE_GAP_NS: u64 = 1_000_000;

/// `bpf_get_attach_cookie` values of the `SSL_set_bio` attachment: which
/// `struct bio_st` layout the library has.
const COOKIE_OPENSSL_1_1: u64 = 1;
const COOKIE_OPENSSL_3: u64 = 3;

const BIO_TYPE_FD: i32 = 4 | 0x0400 | 0x0100;
const BIO_TYPE_SOCKET: i32 = 5 | 0x0400 | 0x0100;

const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_RECV: i32 = 3;
const IPPROTO_TCP: u16 = 6;
const EINPROGRESS: i64 = 115;
const MSG_PEEK: u64 = 2;
/// Slots of `SSL_SLOTS` (power of two; 512 KiB).
const SLOTS: u32 = 65536;
const SLOT_MASK: u32 = SLOTS - 1;
/// Slots of `CALLS` (power of two; 88 bytes each, 1.4 MiB).
const CALL_SLOTS: u32 = 16384;
const CALL_MASK: u32 = CALL_SLOTS - 1;
/// Slot value: threads with calls in flight collided here; the syscalls
/// fall back to the `ACTIVE` lookup. Thread ids stay below 2^22 (`pid_max`
/// limit), so no thread owns it.
const SLOT_SHARED: u64 = u64::MAX;
/// Low half of a slot whose call has not named its fd yet.
const SLOT_NO_FD: u64 = 0xffff_ffff;
/// A nested SSL call starts right after its outer call's entry: within
/// 1000 ticks (1 s at `CONFIG_HZ=1000`, 10 s at 100) of it.
const NESTED_WINDOW_JIFFIES: u64 = 1000;

// ---------------------------------------------------------------------------
// Maps.

/// Events to user space (size overridden by `capture.ring_buffer_size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Loss/truncation/event counters, see `sessionwatch_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NUM_COUNTERS, 0);

/// One scratch record per CPU (indexed by CPU id; `max_entries` set to the
/// number of possible CPUs by the agent). Too large for a per-CPU array.
#[map]
static SCRATCH: Array<[u8; SCRATCH_LEN]> = Array::with_max_entries(256, 0);

/// Per CPU: record bytes written since the ring's backlog was last checked
/// (see [`wakeup_flags`]).
#[map]
static WAKE_ACC: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU connection id sequence.
#[map]
static ID_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Body-skip arms, written by the agent only (see `SkipArm` for the
/// protocol); indexed by `skip_slot`.
#[map]
static SKIP_ARM: Array<SkipArm> = Array::with_max_entries(2 * BODY_SKIP_SLOTS, 0);
/// Per slot, the bytes counted for its arm; written by the kernel only.
#[map]
static SKIP_COUNT: Array<SkipCount> = Array::with_max_entries(2 * BODY_SKIP_SLOTS, 0);
/// Per CPU, `bpf_ktime_get_ns` of the last wake-up forced for a large
/// event no arm covered.
#[map]
static LARGE_WAKE: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// (pid, fd) → connection.
#[map]
static CONNS: HashMap<ConnKey, ConnInfo> = HashMap::with_max_entries(DEFAULT_MAX_CONNECTIONS, 0);

/// Generation of each `CONNS` slot group as changed by the kernel programs
/// (see `sessionwatch_common::conn_gen_slot`): bumped with an atomic add
/// after every insert, removal, or loss recorded on an entry.
#[map]
static CONN_KGEN: Array<u32> = Array::with_max_entries(CONN_GEN_SLOTS, 0);

/// Generation of each `CONNS` slot group as changed by user space (its
/// only writer, after every entry it writes or removes). A separate map:
/// a user-space update rewrites the whole value and would lose a
/// concurrent kernel bump.
#[map]
static CONN_UGEN: Array<u32> = Array::with_max_entries(CONN_GEN_SLOTS, 0);

/// Per-thread SSL call state, indexed by `tid & CALL_MASK`: the slot belongs to the thread whose `pid_tgid` is in
/// [`SslCall::owner`]. A thread claims a free slot (owner 0) with one
/// atomic compare-and-exchange at its first SSL call, keeps it for its
/// lifetime and frees it at exit/exec, so only the owner ever writes the
/// rest of the slot and entry and return find their state with an inlined
/// array access instead of a hash lookup. A thread whose slot is held by
/// another thread (tids equal modulo `CALL_SLOTS`) uses `ACTIVE` instead.
#[map]
static CALLS: Array<SslCall> = Array::with_max_entries(CALL_SLOTS, 0);

/// In-flight SSL call per thread (pid_tgid), for threads whose `CALLS` slot
/// is owned by another thread.
#[map]
static ACTIVE: LruHashMap<u64, SslCall> = LruHashMap::with_max_entries(16384, 0);

/// Per-thread SSL call hint, indexed by `tid & SLOT_MASK`: one word,
/// `tid << 32 | fd` (fd `u32::MAX` until a syscall of the call names it),
/// [`SLOT_SHARED`] once two threads in flight mapped to the slot, 0 when
/// idle. Lets the syscall tracepoints — which run for every `read`/`write`
/// on the machine — skip the `ACTIVE` hash lookup with an inlined array
/// access, and carries the fd to the return program. Every update is one
/// aligned 8-byte store, so a racing thread can only make another thread
/// miss its hint (its fd then comes from `SSL_FD`, as for a call served
/// from OpenSSL's buffer), never read a fd that is not its own: the owner
/// check compares the thread id stored in the same word.
#[map]
static SSL_SLOTS: Array<u64> = Array::with_max_entries(SLOTS, 0);

/// Last socket fd seen per (tgid, SSL*).
#[map]
static SSL_FD: LruHashMap<SslKey, i32> = LruHashMap::with_max_entries(65536, 0);

/// In-flight plaintext syscall per thread (pid_tgid).
#[map]
static PENDING_IO: LruHashMap<u64, PendingIo> = LruHashMap::with_max_entries(16384, 0);

/// In-flight accept per thread: where the kernel writes the peer address.
#[map]
static ACCEPT_ARGS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// In-flight connect per thread.
#[map]
static CONNECT_ARGS: LruHashMap<u64, ConnectArgs> = LruHashMap::with_max_entries(16384, 0);

/// Peer address of a passively opened TCP connection → its local address,
/// from `sock/inet_sock_set_state` (SYN_RECV → ESTABLISHED).
#[map]
static PEER_LOCAL: LruHashMap<SockAddr, SockAddr> = LruHashMap::with_max_entries(16384, 0);

/// Selected processes (tgid), used when `FILTER_PIDS` is 1.
#[map]
static PIDS: LruHashMap<u32, u8> = LruHashMap::with_max_entries(65536, 0);

/// `comm` values of `capture.processes` (NUL padded): exec'd processes whose
/// comm is listed are added to `PIDS` at once.
#[map]
static PROC_NAMES: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(MAX_PROC_NAMES, 0);

/// `capture.plain_ports` (host byte order).
#[map]
static PLAIN_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PLAIN_PORTS, 0);

/// Processes with announced connections: their exit is reported.
#[map]
static PROC_ANNOUNCED: LruHashMap<u32, u8> = LruHashMap::with_max_entries(65536, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct SslCall {
    /// `pid_tgid` of the thread owning a `CALLS` slot, 0 when free (unused
    /// in `ACTIVE` values). Written only by atomic compare-and-exchange
    /// (claim) and by its owner (release).
    owner: u64,
    ssl: u64,
    buf: u64,
    /// `size_t *readbytes` / `size_t *written` of the `_ex` variants.
    len_ptr: u64,
    /// Stack pointer at entry: a deeper call on the same SSL* while this one
    /// is in flight is nested (a wrapper calling another SSL I/O function).
    sp: u64,
    /// `bpf_jiffies64` at entry (tells a nested call from a stale entry
    /// whose return was never seen).
    ts: u64,
    /// Socket fd from a syscall made during the call, -1 until seen (only
    /// written when the thread's `SSL_SLOTS` slot is shared; otherwise the
    /// fd travels in the slot).
    fd: i32,
    op: u8,
    ex: u8,
    depth: u8,
    /// 1 while the call is in flight. Entries are reused per thread (no map
    /// allocation per call).
    active: u8,
    /// The (SSL*, fd) pair this thread last found in, or wrote to, `SSL_FD`:
    /// a return that sees the same pair skips the `SSL_FD` lookup. Kept
    /// across calls; only ever used to skip a write of the same value.
    last_ssl: u64,
    last_fd: i32,
    /// Connection cache, kept across calls: fd `conn_fd` of this process
    /// had the `CONNS` entry `conn_id` — a server-side (or unknown-role) TLS
    /// connection, announced, no loss pending — while its generation slot
    /// read `conn_gen` (`CONN_KGEN << 32 | CONN_UGEN`). A return on the same
    /// fd with the same generation skips the `CONNS` lookup. -1: empty.
    conn_fd: i32,
    conn_id: u64,
    conn_gen: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SslKey {
    tgid: u32,
    _pad: u32,
    ssl: u64,
}

const IO_BUF: u8 = 0;
const IO_IOV: u8 = 1;
const IO_NO_PAYLOAD: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
struct PendingIo {
    /// Buffer (IO_BUF) or iovec array (IO_IOV).
    ptr: u64,
    /// Number of iovecs (IO_IOV).
    cnt: u64,
    fd: i32,
    op: u8,
    kind: u8,
    /// 1 between enter and exit; entries are reused per thread.
    active: u8,
    _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ConnectArgs {
    addr: u64,
    fd: i32,
    _pad: u32,
}

// ---------------------------------------------------------------------------
// Helpers.

#[inline(always)]
fn count(idx: u32, v: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *p = (*p).wrapping_add(v) };
    }
}

/// Bumps the kernel generation of the `CONNS` entry (tgid, fd), after
/// changing it (see `CONN_KGEN`).
#[inline(always)]
fn gen_bump(tgid: u32, fd: i32) {
    if let Some(p) = CONN_KGEN.get_ptr_mut(conn_gen_slot(tgid, fd as u32)) {
        // SAFETY: array value pointer valid for this program run; an atomic
        // add on an aligned u32 (BPF `lock add`).
        unsafe {
            let _ = atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(p, 1);
        }
    }
}

/// Both generations of the `CONNS` entry (tgid, fd): `kernel << 32 | user`.
#[inline(always)]
fn gen_read(tgid: u32, fd: i32) -> u64 {
    let slot = conn_gen_slot(tgid, fd as u32);
    // SAFETY: array value pointers valid for this program run; aligned
    // 4-byte loads.
    let k = match CONN_KGEN.get_ptr(slot) {
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    };
    // SAFETY: as above.
    let u = match CONN_UGEN.get_ptr(slot) {
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    };
    ((k as u64) << 32) | u as u64
}

/// The `SSL_SLOTS` word of thread `tid`.
#[inline(always)]
fn slot(tid: u32) -> Option<*mut u64> {
    SSL_SLOTS.get_ptr_mut(tid & SLOT_MASK)
}

/// Marks thread `tid` in flight in its slot (fd unknown), or the slot as
/// shared when another thread holds it.
#[inline(always)]
fn slot_claim(tid: u32) {
    let Some(p) = slot(tid) else { return };
    // SAFETY: array value pointer valid for this program run; one aligned
    // 8-byte load and store (see `SSL_SLOTS`).
    unsafe {
        let cur = core::ptr::read_volatile(p);
        let mine = (tid as u64) << 32;
        let v = if cur == 0 || cur >> 32 == tid as u64 {
            mine | SLOT_NO_FD
        } else {
            SLOT_SHARED
        };
        if cur != v {
            core::ptr::write_volatile(p, v);
        }
    }
}

/// Ends thread `tid`'s call in its slot; returns the fd the call's syscalls
/// named, if the slot carried it.
#[inline(always)]
fn slot_release(tid: u32) -> Option<i32> {
    let p = slot(tid)?;
    // SAFETY: as in `slot_claim`.
    unsafe {
        let cur = core::ptr::read_volatile(p);
        if cur == SLOT_SHARED || cur >> 32 != tid as u64 {
            return None;
        }
        core::ptr::write_volatile(p, 0);
        let low = cur & SLOT_NO_FD;
        if low == SLOT_NO_FD {
            None
        } else {
            Some(low as u32 as i32)
        }
    }
}

/// Thread `id`'s own `CALLS` slot, if it owns it.
#[inline(always)]
fn own_call(id: u64) -> Option<*mut SslCall> {
    let p = CALLS.get_ptr_mut((id as u32) & CALL_MASK)?;
    // SAFETY: array value pointer valid for this program run; an aligned
    // 8-byte load (see `CALLS`).
    if unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).owner)) } == id {
        Some(p)
    } else {
        None
    }
}

/// This thread's in-flight call state: its `CALLS` slot, else its `ACTIVE`
/// entry.
#[inline(always)]
fn my_call(id: u64) -> Option<*mut SslCall> {
    match own_call(id) {
        Some(p) => Some(p),
        None => ACTIVE.get_ptr_mut(id),
    }
}

/// Forgets thread `id`'s SSL state (exit, exec).
#[inline(always)]
fn forget_thread(id: u64) {
    if let Some(p) = own_call(id) {
        // SAFETY: the owner's slot; only the owner (this thread) writes it
        // until the owner word is cleared, which frees it for others.
        unsafe {
            (*p).active = 0;
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*p).owner), 0);
        }
    }
    let _ = ACTIVE.remove(id);
    let _ = slot_release(id as u32);
}

#[inline(always)]
fn is_agent(tgid: u32) -> bool {
    tgid == AGENT_TGID.load()
}

/// Whether a process is selected for capture (`capture.processes`).
#[inline(always)]
fn selected(tgid: u32) -> bool {
    if is_agent(tgid) {
        return false;
    }
    if FILTER_PIDS.load() == 0 {
        return true;
    }
    // SAFETY: the value is a plain u8 and only tested for presence.
    unsafe { PIDS.get(tgid).is_some() }
}

#[inline(always)]
fn scratch() -> Option<*mut u8> {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    SCRATCH.get_ptr_mut(cpu).map(|p| p.cast::<u8>())
}

/// Ring-buffer notification policy for a record of `len` bytes.
///
/// Waking the agent for every record costs the traced process an irq_work
/// per event, so records are written without a wakeup and the agent drains
/// on a short timer (10 ms); only when the backlog reaches `WAKEUP_BYTES` is
/// it woken at once. Asking the ring for its backlog
/// (`bpf_ringbuf_query(BPF_RB_AVAIL_DATA)`) costs ~25 ns per record on the
/// measured VM, so each CPU asks only after it has written
/// `WAKEUP_BYTES / 64` bytes since its last check (a per-CPU counter,
/// inlined array access). The backlog at which a wakeup is forced is thus
/// at most `WAKEUP_BYTES × (1 + nr_cpus / 64)` plus one record per CPU —
/// below the ring size (16 × `WAKEUP_BYTES`) for up to 960 CPUs — and the
/// timer bounds the delivery latency whatever the rate.
#[inline(always)]
fn wakeup_flags(len: usize) -> u64 {
    let threshold = (WAKEUP_BYTES.load() >> 6) as u64;
    if let Some(acc) = WAKE_ACC.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program
        // runs (programs do not nest on a CPU).
        let written = unsafe {
            *acc = (*acc).wrapping_add(len as u64);
            *acc
        };
        if written < threshold {
            return BPF_RB_NO_WAKEUP;
        }
        // SAFETY: as above.
        unsafe { *acc = 0 };
        if written >= WAKE_NOW {
            return BPF_RB_FORCE_WAKEUP;
        }
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES.load() as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Writes `len` bytes of the scratch record at `p` to the ring buffer.
#[inline(always)]
fn output(p: *const u8, len: usize) -> bool {
    // SAFETY: `p` points to a scratch map value of SCRATCH_LEN bytes and
    // every caller bounds `len` by SCRATCH_LEN.
    let rec = unsafe { core::slice::from_raw_parts(p, len) };
    EVENTS.output::<[u8]>(rec, wakeup_flags(len)).is_ok()
}

#[inline(always)]
fn next_conn_id() -> u64 {
    // SAFETY: helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let seq = match ID_SEQ.get_ptr_mut(0) {
        Some(p) => {
            // SAFETY: per-CPU slot.
            unsafe {
                *p = (*p).wrapping_add(1);
                *p
            }
        }
        None => 0,
    };
    ((cpu + 1) << 40) | (seq & ((1u64 << 40) - 1))
}

/// Reads tracepoint field `off` (8-byte aligned) of the context.
#[inline(always)]
fn tp_u64(ctx: &TracePointContext, off: usize) -> u64 {
    // SAFETY: constant, aligned offsets inside the tracepoint record; the
    // verifier checks every context access.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(off).cast::<u64>()) }
}

#[inline(always)]
fn tp_u32(ctx: &TracePointContext, off: usize) -> u32 {
    // SAFETY: as `tp_u64`, 4-byte aligned.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(off).cast::<u32>()) }
}

#[inline(always)]
fn tp_u8(ctx: &TracePointContext, off: usize) -> u8 {
    // SAFETY: as `tp_u64`, one byte.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(off)) }
}

#[inline(always)]
fn tp_u16(ctx: &TracePointContext, off: usize) -> u16 {
    // SAFETY: as `tp_u64`, 2-byte aligned.
    unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(off).cast::<u16>()) }
}

/// Syscall tracepoint argument `n` (`sys_enter_*`), or the return value (`n = 0`
/// of `sys_exit_*`).
#[inline(always)]
fn sys_arg(ctx: &TracePointContext, n: usize) -> u64 {
    match n {
        0 => tp_u64(ctx, 16),
        1 => tp_u64(ctx, 24),
        2 => tp_u64(ctx, 32),
        _ => tp_u64(ctx, 40),
    }
}

#[inline(always)]
fn read_user<T: Copy>(addr: u64) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes at most size_of::<T>() bytes into `v` and
    // fails cleanly on a bad user address.
    let rc = unsafe {
        bpf_probe_read_user(
            v.as_mut_ptr().cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    if rc == 0 {
        // SAFETY: fully written by the helper.
        Some(unsafe { v.assume_init() })
    } else {
        None
    }
}

fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Parses a user `struct sockaddr_in{,6}` (28 bytes read) into a SockAddr.
#[inline(always)]
fn parse_sockaddr(raw: &[u8; 28]) -> (u16, SockAddr) {
    let family = u16::from_le_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    let mut out = SockAddr {
        port,
        family,
        ..SockAddr::default()
    };
    if family == AF_INET {
        out.addr = v4_mapped([raw[4], raw[5], raw[6], raw[7]]);
    } else if family == AF_INET6 {
        out.addr = [
            raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15], raw[16], raw[17],
            raw[18], raw[19], raw[20], raw[21], raw[22], raw[23],
        ];
    }
    (family, out)
}

// ---------------------------------------------------------------------------
// Event emission.

/// Sends the OPEN record of a connection. Uses the scratch buffer.
#[inline(always)]
fn send_open(c: &ConnInfo, tgid: u32, tid: u32, fd: i32, src: u8) -> bool {
    let Some(s) = scratch() else { return false };
    let hdr = EventHeader {
        kind: event_kind::OPEN,
        source: src,
        fd,
        pid: tgid,
        tid,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: c.id,
        ..EventHeader::default()
    };
    let comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    // SAFETY: the scratch value holds SCRATCH_LEN bytes, far more than the
    // 152 written here; offsets keep 8-byte alignment of the value.
    unsafe {
        core::ptr::write(s.cast::<EventHeader>(), hdr);
        core::ptr::write(s.add(HEADER_LEN).cast::<ConnInfo>(), *c);
        core::ptr::write(
            s.add(HEADER_LEN + core::mem::size_of::<ConnInfo>())
                .cast::<[u8; COMM_LEN]>(),
            comm,
        );
    }
    let len = HEADER_LEN + core::mem::size_of::<ConnInfo>() + COMM_LEN;
    if output(s, len) {
        let _ = PROC_ANNOUNCED.insert(tgid, 1u8, 0);
        true
    } else {
        count(counter::RINGBUF_FULL_CONTROL, 1);
        false
    }
}

#[inline(always)]
fn send_close(c: &ConnInfo, tgid: u32, tid: u32, fd: i32) {
    #[repr(C)]
    struct Rec {
        hdr: EventHeader,
        tail: CloseTail,
    }
    let rec = Rec {
        hdr: EventHeader {
            kind: event_kind::CLOSE,
            fd,
            pid: tgid,
            tid,
            // SAFETY: helper without arguments.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            conn_id: c.id,
            ..EventHeader::default()
        },
        tail: CloseTail { lost: c.lost },
    };
    if EVENTS
        .output::<Rec>(&rec, wakeup_flags(core::mem::size_of::<Rec>()))
        .is_ok()
    {
        count(counter::CLOSED, 1);
    } else {
        count(counter::RINGBUF_FULL_CONTROL, 1);
    }
}

/// Where a data event comes from and goes to: the operation and, if the
/// kernel has one, its connection entry.
#[derive(Clone, Copy)]
struct Target {
    tgid: u32,
    tid: u32,
    src: u8,
    op: u8,
    fd: i32,
    ssl: u64,
    conn: *mut ConnInfo,
    conn_id: u64,
    lost_before: u32,
    /// `conn_id` comes from the thread's connection cache (`conn` is null):
    /// a loss is recorded with a lookup of the entry.
    cached: bool,
}

/// Looks up (and announces) the connection of a data event. `None` means
/// "drop": client side, ignored, or plain bytes on a TLS connection.
#[inline(always)]
fn target(tgid: u32, tid: u32, fd: i32, src: u8, opv: u8, ssl: u64) -> Option<Target> {
    let mut t = Target {
        tgid,
        tid,
        src,
        op: opv,
        fd,
        ssl,
        conn: core::ptr::null_mut(),
        conn_id: 0,
        lost_before: 0,
        cached: false,
    };
    if fd < 0 {
        return Some(t);
    }
    let key = ConnKey {
        tgid,
        fd: fd as u32,
    };
    let Some(p) = CONNS.get_ptr_mut(key) else {
        return Some(t);
    };
    // SAFETY: map value pointer valid for this program run.
    let c = unsafe { &mut *p };
    if c.role == role::CLIENT {
        if src == source::TLS {
            count(counter::FILTERED_CLIENT, 1);
        }
        return None;
    }
    if c.flags & conn_flags::IGNORE != 0 {
        return None;
    }
    if src == source::TLS {
        c.flags |= conn_flags::TLS;
    } else if c.flags & conn_flags::TLS != 0 {
        return None;
    }
    if c.flags & conn_flags::ANNOUNCED == 0 && send_open(c, tgid, tid, fd, src) {
        c.flags |= conn_flags::ANNOUNCED;
    }
    t.lost_before = if opv == op::READ {
        c.lost[0]
    } else {
        c.lost[1]
    };
    t.conn = p;
    t.conn_id = c.id;
    Some(t)
}

/// Body-skip marks of one data event ([`skip_mark`]): extra
/// [`event_flags`] (`SKIP_START` or `BODY_SKIPPED`) and the arm a start
/// names.
#[derive(Clone, Copy)]
struct Mark {
    flags: u8,
    arm: u32,
}

impl Mark {
    const NONE: Mark = Mark { flags: 0, arm: 0 };
}

/// Consults the body-skip arm of the event's connection direction for `n`
/// bytes and advances its count. `after_start`: bytes of this operation
/// that follow its start event (0 when the event carries them itself; all
/// of them for the zero-length start sent ahead of a vectored operation).
/// Counts and wakes the agent as the mark requires.
#[inline(always)]
fn skip_mark(t: &Target, n: u64, after_start: u64) -> Mark {
    if t.conn_id == 0 || SKIP_ENABLED.load() == 0 {
        return Mark::NONE;
    }
    match body_skip(t.conn_id, t.op, n, after_start) {
        Skip::No => {
            if n >= BODY_QUERY_MIN as u64 {
                wake_for_large();
            }
            Mark::NONE
        }
        Skip::Start(arm) => {
            // The start is the agent's cue to send the body length: wake it
            // with this record (once per large body) instead of at its next
            // poll, so fewer body bytes are copied before skipping begins.
            if let Some(acc) = WAKE_ACC.get_ptr_mut(0) {
                // SAFETY: per-CPU slot, as in `wakeup_flags`.
                unsafe { *acc = WAKE_NOW };
            }
            Mark {
                flags: event_flags::SKIP_START,
                arm,
            }
        }
        Skip::Body => {
            count(counter::BODY_SKIPPED_EVENTS, 1);
            count(counter::BODY_SKIPPED_BYTES, n);
            Mark {
                flags: event_flags::BODY_SKIPPED,
                arm: 0,
            }
        }
    }
}

/// A large event no arm covers may start a large body: have it wake the
/// agent at once (rate-limited per CPU) so that the agent can arm the skip
/// after this event rather than at its next poll, 10 ms of body later.
#[inline(always)]
fn wake_for_large() {
    let Some(last) = LARGE_WAKE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per-CPU slot; programs do not nest on a CPU.
    unsafe {
        if now.wrapping_sub(*last) < LARGE_WAKE_GAP_NS {
            return;
        }
        *last = now;
    }
    if let Some(acc) = WAKE_ACC.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, as in `wakeup_flags`.
        unsafe { *acc = WAKE_NOW };
    }
}

/// Sends the `n` bytes at `buf` as one data event, leaving them out when
/// they lie inside a body the agent skips.
#[inline(always)]
fn send_captured(t: &Target, buf: u64, n: u64) {
    let mark = skip_mark(t, n, 0);
    let buf = if mark.flags & event_flags::BODY_SKIPPED != 0 {
        0
    } else {
        buf
    };
    send_data(t, buf, n, mark);
}

/// What [`body_skip`] decided for one data event.
enum Skip {
    /// Copy as usual.
    No,
    /// Copy as usual; the count of this arm (low 32 bits) starts after it.
    Start(u32),
    /// Every byte lies inside a body the agent skips: send the length only.
    Body,
}

/// Consults the body-skip arm of (`conn_id`, `opv`) for an operation of `n`
/// bytes and advances its count. The agent may rewrite the arm at any
/// moment; each field is read once, and the protocol (`SkipArm`) makes
/// any mix of old and new fields skip less, never more.
#[inline(always)]
fn body_skip(conn_id: u64, opv: u8, n: u64, after_start: u64) -> Skip {
    let slot = skip_slot(conn_id, opv);
    let Some(a) = SKIP_ARM.get_ptr(slot) else {
        return Skip::No;
    };
    // SAFETY: array value pointer valid for this program run; volatile
    // reads because user space writes the value concurrently. The common
    // case (no arm for this connection) reads one field.
    let armed_for = unsafe { core::ptr::read_volatile(&raw const (*a).conn_id) };
    if armed_for != conn_id {
        return Skip::No;
    }
    // SAFETY: as above.
    let (arm, until) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*a).arm),
            core::ptr::read_volatile(&raw const (*a).until),
        )
    };
    if arm == 0 {
        return Skip::No;
    }
    let Some(c) = SKIP_COUNT.get_ptr_mut(slot) else {
        return Skip::No;
    };
    // SAFETY: array value pointer valid for this program run; only kernel
    // programs write it.
    let c = unsafe { &mut *c };
    if c.conn_id != conn_id || c.arm != arm {
        c.conn_id = conn_id;
        c.arm = arm;
        c.counted = after_start;
        return Skip::Start(arm as u32);
    }
    let end = c.counted.saturating_add(n);
    c.counted = end;
    if until != 0 && end <= until {
        Skip::Body
    } else {
        Skip::No
    }
}

/// Copies `n` bytes at user address `buf` (up to the cap) into one data event.
/// `buf == 0` sends a payload-less event of exact length.
#[inline(always)]
fn send_data(t: &Target, buf: u64, n: u64, mark: Mark) {
    let (tgid, tid, src, opv, fd, ssl) = (t.tgid, t.tid, t.src, t.op, t.fd, t.ssl);
    let Some(s) = scratch() else { return };
    let orig = if n > u32::MAX as u64 {
        u32::MAX
    } else {
        n as u32
    };
    let mut flags = mark.flags;
    let skip_arm = mark.arm;
    let mut cap = PAYLOAD_CAP.load() as u64;
    if cap > MAX_PAYLOAD as u64 {
        cap = MAX_PAYLOAD as u64;
    }
    let mut take = if n < cap { n } else { cap };
    if buf == 0 {
        take = 0;
        if n > 0 && flags & event_flags::BODY_SKIPPED == 0 {
            flags |= event_flags::NO_PAYLOAD;
        }
    }
    let mut take = take as u32;
    if take > MAX_PAYLOAD as u32 {
        take = MAX_PAYLOAD as u32;
    }
    if take > 0 {
        // SAFETY: destination is the payload area of the scratch value
        // (MAX_PAYLOAD bytes after the header) and `take <= MAX_PAYLOAD`.
        let rc = unsafe {
            bpf_probe_read_user(
                s.add(HEADER_LEN).cast::<c_void>(),
                take,
                buf as *const c_void,
            )
        };
        if rc != 0 {
            take = 0;
            flags |= event_flags::NO_PAYLOAD;
            count(
                if src == source::TLS {
                    counter::READ_FAULT_TLS
                } else {
                    counter::READ_FAULT_PLAIN
                },
                1,
            );
        }
    }
    if take < orig && flags & (event_flags::NO_PAYLOAD | event_flags::BODY_SKIPPED) == 0 {
        flags |= event_flags::TRUNCATED;
        count(
            if src == source::TLS {
                counter::TRUNCATED_TLS
            } else {
                counter::TRUNCATED_PLAIN
            },
            1,
        );
    }
    if flags & event_flags::NO_PAYLOAD != 0 && src == source::PLAIN {
        count(counter::NO_PAYLOAD_PLAIN, 1);
    }
    let hdr = EventHeader {
        kind: event_kind::DATA,
        source: src,
        op: opv,
        flags,
        fd,
        pid: tgid,
        tid,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        conn_id: t.conn_id,
        ssl,
        orig_len: orig,
        cap_len: take,
        lost_before: t.lost_before,
        skip_arm,
    };
    // SAFETY: the header fits at the start of the scratch value.
    unsafe { core::ptr::write(s.cast::<EventHeader>(), hdr) };
    let ok = output(s, HEADER_LEN + take as usize);
    let lost_now = if ok {
        count(
            if src == source::TLS {
                counter::EVENTS_TLS
            } else {
                counter::EVENTS_PLAIN
            },
            1,
        );
        0
    } else {
        count(
            if src == source::TLS {
                counter::RINGBUF_FULL_TLS
            } else {
                counter::RINGBUF_FULL_PLAIN
            },
            1,
        );
        count(
            if src == source::TLS {
                counter::LOST_BYTES_TLS
            } else {
                counter::LOST_BYTES_PLAIN
            },
            orig as u64,
        );
        t.lost_before.saturating_add(orig)
    };
    if !t.conn.is_null() {
        // SAFETY: map value pointer from this program run.
        let c = unsafe { &mut *t.conn };
        if opv == op::READ {
            c.lost[0] = lost_now;
        } else {
            c.lost[1] = lost_now;
        }
        if !ok {
            // Threads caching this entry must see the pending loss.
            gen_bump(tgid, fd);
        }
    } else if t.cached && !ok {
        let key = ConnKey {
            tgid,
            fd: fd as u32,
        };
        if let Some(p) = CONNS.get_ptr_mut(key) {
            // SAFETY: map value pointer valid for this program run.
            let c = unsafe { &mut *p };
            if c.id == t.conn_id {
                let i = if opv == op::READ { 0 } else { 1 };
                if let Some(l) = c.lost.get_mut(i) {
                    *l = l.saturating_add(orig);
                }
            }
        }
        gen_bump(tgid, fd);
    }
}

/// Records a new (pid, fd) connection; closes the previous one on that fd.
#[inline(always)]
fn replace_conn(tgid: u32, tid: u32, fd: i32, info: &ConnInfo) {
    let key = ConnKey {
        tgid,
        fd: fd as u32,
    };
    // SAFETY: read-only copy of the old value.
    if let Some(old) = unsafe { CONNS.get(key) }
        && old.flags & conn_flags::ANNOUNCED != 0
    {
        let old = *old;
        send_close(&old, tgid, tid, fd);
    }
    if CONNS.insert(key, *info, 0).is_err() {
        count(counter::CONN_TABLE_FULL, 1);
    }
    gen_bump(tgid, fd);
}

// ---------------------------------------------------------------------------
// TLS library probes.

#[inline(always)]
fn ssl_enter(ctx: &ProbeContext, opv: u8, ex: bool) {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let tid = id as u32;
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let len_ptr: u64 = if ex { ctx.arg(3).unwrap_or(0) } else { 0 };
    // SAFETY: `regs` is the probe's pt_regs.
    let sp = unsafe { (*ctx.regs).rsp };
    // Only tells a nested call from a stale entry: jiffies are a memory
    // read, where `bpf_ktime_get_ns` reads the clocksource (~50 ns per call
    // in a VM; `bpf_ktime_get_coarse_ns` is refused to tracing programs).
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_jiffies64() };
    // An `ACTIVE` entry exists only for threads of selected processes: it is
    // created after `selected()` said yes and removed when the thread exits
    // or execs — the only events that change a process's selection (user
    // space only ever adds to `PIDS`). So a thread with an entry skips the
    // `PIDS` lookup.
    if let Some(p) = my_call(id) {
        // SAFETY: the thread's own slot or map value, valid for this run.
        let a = unsafe { &mut *p };
        if a.active != 0
            && a.ssl == ssl
            && a.sp > sp
            && now.wrapping_sub(a.ts) < NESTED_WINDOW_JIFFIES
            && a.depth < 8
        {
            // Called from inside an SSL call on the same object still in
            // flight: the outer call owns the bytes.
            a.depth += 1;
            count(counter::SSL_NESTED, 1);
            return;
        }
        // Idle, or stale (its return was never seen): reuse in place,
        // keeping the thread's `last_ssl`/`last_fd`.
        a.ssl = ssl;
        a.buf = buf;
        a.len_ptr = len_ptr;
        a.sp = sp;
        a.ts = now;
        a.fd = -1;
        a.op = opv;
        a.ex = ex as u8;
        a.depth = 0;
        a.active = 1;
        slot_claim(tid);
        return;
    }
    if !selected(tgid) {
        return;
    }
    let mut call = SslCall {
        owner: 0,
        ssl,
        buf,
        len_ptr,
        sp,
        ts: now,
        fd: -1,
        op: opv,
        ex: ex as u8,
        depth: 0,
        active: 1,
        last_ssl: 0,
        last_fd: -1,
        conn_fd: -1,
        conn_id: 0,
        conn_gen: 0,
    };
    // First call of this thread: claim its `CALLS` slot if free.
    if let Some(p) = CALLS.get_ptr_mut(tid & CALL_MASK) {
        // SAFETY: array value pointer valid for this program run; the owner
        // word is 8-byte aligned and only changed atomically or by its
        // owner, so a successful exchange makes this thread the only writer
        // of the slot.
        // (`bpfel-unknown-none` offers no `AtomicU64::compare_exchange`;
        // the intrinsic lowers to the BPF `cmpxchg` instruction.)
        let won = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                core::ptr::addr_of_mut!((*p).owner),
                0,
                id,
            )
            .1
        };
        if won {
            call.owner = id;
            // SAFETY: this thread owns the slot now.
            unsafe { *p = call };
            slot_claim(tid);
            return;
        }
    }
    if ACTIVE.insert(id, call, 0).is_err() {
        count(counter::SSL_TABLE_FULL, 1);
        return;
    }
    slot_claim(tid);
}

/// `int SSL_read(SSL *ssl, void *buf, int num)`
#[uprobe]
pub fn sw_ssl_read(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, op::READ, false);
    0
}

/// `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`
#[uprobe]
pub fn sw_ssl_read_ex(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, op::READ, true);
    0
}

/// `int SSL_write(SSL *ssl, const void *buf, int num)`
#[uprobe]
pub fn sw_ssl_write(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, op::WRITE, false);
    0
}

/// `int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)`
#[uprobe]
pub fn sw_ssl_write_ex(ctx: ProbeContext) -> u32 {
    ssl_enter(&ctx, op::WRITE, true);
    0
}

/// Return of any of the four: copy what was transferred.
#[uretprobe]
pub fn sw_ssl_ret(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = my_call(id) else {
        return 0;
    };
    // SAFETY: the thread's own slot or map value, valid for this run.
    let a = unsafe { &mut *p };
    if a.active == 0 {
        return 0;
    }
    if a.depth > 0 {
        a.depth -= 1;
        return 0;
    }
    let call = *a;
    a.active = 0;
    let tgid = (id >> 32) as u32;
    let tid = id as u32;
    // The fd named by a syscall of this call: in the thread's slot, or in
    // the entry when the slot was shared.
    let slot_fd = slot_release(tid);
    let seen_fd = if call.fd >= 0 {
        call.fd
    } else {
        slot_fd.unwrap_or(-1)
    };
    let ret: i64 = ctx.ret::<i64>() as i32 as i64;
    let n: u64 = if call.ex != 0 {
        if ret == 1 {
            read_user::<u64>(call.len_ptr).unwrap_or(0)
        } else {
            0
        }
    } else if ret > 0 {
        ret as u64
    } else {
        0
    };
    if n == 0 && seen_fd < 0 {
        // Nothing transferred and nothing learnt about the fd.
        return 0;
    }
    let key = SslKey {
        tgid,
        _pad: 0,
        ssl: call.ssl,
    };
    let fd = if seen_fd >= 0 {
        // Keep `SSL_FD` current for calls served from OpenSSL's buffer;
        // nothing to do when this thread already found or wrote this pair.
        if a.last_ssl != call.ssl || a.last_fd != seen_fd {
            match SSL_FD.get_ptr_mut(key) {
                // SAFETY: map value pointer valid for this program run.
                Some(p) => unsafe {
                    if *p != seen_fd {
                        *p = seen_fd;
                    }
                },
                None => {
                    let _ = SSL_FD.insert(key, seen_fd, 0);
                }
            }
            a.last_ssl = call.ssl;
            a.last_fd = seen_fd;
        }
        seen_fd
    } else {
        // SAFETY: plain i32 value.
        match unsafe { SSL_FD.get(key) } {
            Some(fd) => {
                let fd = *fd;
                a.last_ssl = call.ssl;
                a.last_fd = fd;
                fd
            }
            None => -1,
        }
    };
    if n == 0 {
        return 0;
    }
    if fd < 0 {
        count(counter::TLS_NO_FD, 1);
        if let Some(t) = target(tgid, tid, fd, source::TLS, call.op, call.ssl) {
            send_captured(&t, call.buf, n);
        }
        return 0;
    }
    // The connection cache: the same fd as this thread's last capture and
    // no change of its `CONNS` entry since (generation) — keep-alive
    // traffic skips the lookup.
    let generation = gen_read(tgid, fd);
    if a.conn_fd == fd && a.conn_gen == generation {
        let t = Target {
            tgid,
            tid,
            src: source::TLS,
            op: call.op,
            fd,
            ssl: call.ssl,
            conn: core::ptr::null_mut(),
            conn_id: a.conn_id,
            // Cached only with no loss pending; a loss since bumped the
            // generation.
            lost_before: 0,
            cached: true,
        };
        send_captured(&t, call.buf, n);
        return 0;
    }
    a.conn_fd = -1;
    let Some(t) = target(tgid, tid, fd, source::TLS, call.op, call.ssl) else {
        return 0;
    };
    if !t.conn.is_null() {
        // SAFETY: map value pointer from this program run.
        let c = unsafe { &*t.conn };
        let steady = conn_flags::TLS | conn_flags::ANNOUNCED;
        if c.flags & steady == steady && c.lost[0] == 0 && c.lost[1] == 0 {
            // `target` let it through: not client side, not ignored.
            a.conn_fd = fd;
            a.conn_id = c.id;
            a.conn_gen = generation;
        }
    }
    send_captured(&t, call.buf, n);
    0
}

/// `int SSL_set_fd(SSL *s, int fd)`: the fd of an SSL* before any I/O.
#[uprobe]
pub fn sw_ssl_set_fd(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !selected(tgid) {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let fd: u64 = ctx.arg(1).unwrap_or(u64::MAX);
    let fd = fd as i32;
    if ssl != 0 && fd >= 0 {
        let _ = SSL_FD.insert(SslKey { tgid, _pad: 0, ssl }, fd, 0);
    }
    0
}

/// `void SSL_set_bio(SSL *s, BIO *rbio, BIO *wbio)`: for socket/fd BIOs the
/// fd is `bio->num`. The attach cookie says which `struct bio_st` layout
/// the library has (OpenSSL 1.1: method at 0, num at 48; 3.x: libctx first,
/// method at 8, num at 56).
#[uprobe]
pub fn sw_ssl_set_bio(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !selected(tgid) {
        return 0;
    }
    // SAFETY: the context pointer is the program's own.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let (method_off, num_off) = match cookie {
        COOKIE_OPENSSL_1_1 => (0u64, 48u64),
        COOKIE_OPENSSL_3 => (8u64, 56u64),
        _ => return 0,
    };
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let rbio: u64 = ctx.arg(1).unwrap_or(0);
    if ssl == 0 || rbio == 0 {
        return 0;
    }
    let Some(method) = read_user::<u64>(rbio + method_off) else {
        return 0;
    };
    if method == 0 {
        return 0;
    }
    let Some(bio_type) = read_user::<i32>(method) else {
        return 0;
    };
    if bio_type != BIO_TYPE_SOCKET && bio_type != BIO_TYPE_FD {
        return 0;
    }
    let Some(fd) = read_user::<i32>(rbio + num_off) else {
        return 0;
    };
    if fd >= 0 {
        let _ = SSL_FD.insert(SslKey { tgid, _pad: 0, ssl }, fd, 0);
    }
    0
}

// ---------------------------------------------------------------------------
// Socket syscalls.

/// Common `sys_enter_*` handling for I/O syscalls. Records the fd for an
/// in-flight SSL call of this thread; otherwise, for plain-port connections,
/// remembers the buffer for the matching `sys_exit_*`.
#[inline(always)]
fn io_enter(ctx: &TracePointContext, opv: u8, kind: u8, is_msg: bool, peek: bool) {
    let id = bpf_get_current_pid_tgid();
    let tid = id as u32;
    let fd = sys_arg(ctx, 0) as i32;
    // Inside an SSL call of this thread? The slot answers without a hash
    // lookup for nearly every syscall on the machine.
    let mut shared = false;
    if let Some(sp) = slot(tid) {
        // SAFETY: array value pointer valid for this program run; one
        // aligned 8-byte load and store (see `SSL_SLOTS`).
        let cur = unsafe { core::ptr::read_volatile(sp) };
        if cur == SLOT_SHARED {
            shared = true;
        } else if cur >> 32 == tid as u64 && cur != 0 {
            if cur & SLOT_NO_FD == SLOT_NO_FD && fd >= 0 {
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(sp, ((tid as u64) << 32) | fd as u32 as u64) };
            }
            return;
        }
    }
    if shared && let Some(p) = my_call(id) {
        // SAFETY: the thread's own slot or map value, valid for this run.
        let a = unsafe { &mut *p };
        if a.active != 0 {
            if a.fd < 0 {
                a.fd = fd;
            }
            return;
        }
    }
    // MSG_PEEK leaves the bytes in the socket: they are captured when read.
    if PLAIN_ENABLED.load() == 0 || fd < 0 || peek {
        return;
    }
    let tgid = (id >> 32) as u32;
    if !selected(tgid) {
        return;
    }
    // SAFETY: read-only copy of a plain value.
    let Some(c) = (unsafe {
        CONNS.get(ConnKey {
            tgid,
            fd: fd as u32,
        })
    }) else {
        return;
    };
    let f = c.flags;
    if f & (conn_flags::PLAIN | conn_flags::PLAIN_PENDING) == 0
        || f & (conn_flags::TLS | conn_flags::IGNORE) != 0
        || c.role == role::CLIENT
    {
        return;
    }
    let mut io = PendingIo {
        ptr: sys_arg(ctx, 1),
        cnt: 0,
        fd,
        op: opv,
        kind,
        active: 1,
        _pad: 0,
    };
    if kind == IO_IOV {
        if is_msg {
            // struct user_msghdr: msg_iov at 16, msg_iovlen at 24.
            let Some(iov) = read_user::<[u64; 2]>(io.ptr + 16) else {
                return;
            };
            io.ptr = iov[0];
            io.cnt = iov[1];
        } else {
            io.cnt = sys_arg(ctx, 2);
        }
    } else if kind == IO_NO_PAYLOAD {
        io.ptr = 0;
    }
    match PENDING_IO.get_ptr_mut(id) {
        // SAFETY: map value pointer valid for this program run.
        Some(p) => unsafe { *p = io },
        None => {
            let _ = PENDING_IO.insert(id, io, 0);
        }
    }
}

/// `read(fd, buf, count)`
#[tracepoint]
pub fn sw_enter_read(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, op::READ, IO_BUF, false, false);
    0
}

/// `recvfrom(fd, buf, len, flags, addr, addrlen)`
#[tracepoint]
pub fn sw_enter_recvfrom(ctx: TracePointContext) -> u32 {
    let peek = sys_arg(&ctx, 3) & MSG_PEEK != 0;
    io_enter(&ctx, op::READ, IO_BUF, false, peek);
    0
}

/// `write(fd, buf, count)` / `sendto(fd, buf, len, ...)`
#[tracepoint]
pub fn sw_enter_write(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, op::WRITE, IO_BUF, false, false);
    0
}

/// `readv(fd, iov, iovcnt)`
#[tracepoint]
pub fn sw_enter_readv(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, op::READ, IO_IOV, false, false);
    0
}

/// `writev(fd, iov, iovcnt)`
#[tracepoint]
pub fn sw_enter_writev(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, op::WRITE, IO_IOV, false, false);
    0
}

/// `recvmsg(fd, msg, flags)`
#[tracepoint]
pub fn sw_enter_recvmsg(ctx: TracePointContext) -> u32 {
    let peek = sys_arg(&ctx, 2) & MSG_PEEK != 0;
    io_enter(&ctx, op::READ, IO_IOV, true, peek);
    0
}

/// `sendmsg(fd, msg, flags)`
#[tracepoint]
pub fn sw_enter_sendmsg(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, op::WRITE, IO_IOV, true, false);
    0
}

/// `sendfile64(out_fd, in_fd, offset, count)`: bytes never in user memory.
#[tracepoint]
pub fn sw_enter_sendfile(ctx: TracePointContext) -> u32 {
    io_enter(&ctx, op::WRITE, IO_NO_PAYLOAD, false, false);
    0
}

/// `sys_exit_*` of every plaintext I/O syscall.
#[tracepoint]
pub fn sw_exit_io(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = PENDING_IO.get_ptr_mut(id) else {
        return 0;
    };
    // SAFETY: map value pointer valid for this program run.
    let io = unsafe { *p };
    if io.active == 0 {
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*p).active = 0 };
    let ret = sys_arg(&ctx, 0) as i64;
    if ret <= 0 {
        return 0;
    }
    let tgid = (id >> 32) as u32;
    let tid = id as u32;
    let Some(t) = target(tgid, tid, io.fd, source::PLAIN, io.op, 0) else {
        return 0;
    };
    let total = ret as u64;
    if io.kind != IO_IOV {
        send_captured(&t, io.ptr, total);
        return 0;
    }
    // Vectored: the body-skip decision is taken once for the whole
    // operation (outside the iovec loop, which the verifier unrolls): all
    // of it skipped, or copied with a zero-length start ahead of it.
    let mark = skip_mark(&t, total, total);
    if mark.flags & event_flags::BODY_SKIPPED != 0 {
        send_data(&t, 0, total, mark);
        return 0;
    }
    if mark.flags & event_flags::SKIP_START != 0 {
        send_data(&t, 0, 0, mark);
    }
    // One event per iovec, in order; whatever is left after MAX_IOV
    // iovecs becomes one payload-less event of exact length.
    let mut remaining = total;
    let mut i: u32 = 0;
    while i < MAX_IOV {
        if remaining == 0 || (i as u64) >= io.cnt {
            break;
        }
        let Some(v) = read_user::<[u64; 2]>(io.ptr + (i as u64) * 16) else {
            break;
        };
        let take = if v[1] < remaining { v[1] } else { remaining };
        if take > 0 {
            send_data(&with_pending_loss(&t), v[0], take, Mark::NONE);
        }
        remaining -= take;
        i += 1;
    }
    if remaining > 0 {
        send_data(&with_pending_loss(&t), 0, remaining, Mark::NONE);
    }
    0
}

/// The target with the loss currently pending on its entry: after one event
/// of a vectored call, `send_data` has reset (or grown) it.
#[inline(always)]
fn with_pending_loss(t: &Target) -> Target {
    let lost_before = if t.conn.is_null() {
        0
    } else {
        // SAFETY: map value pointer from this program run.
        let c = unsafe { &*t.conn };
        if t.op == op::READ {
            c.lost[0]
        } else {
            c.lost[1]
        }
    };
    Target { lost_before, ..*t }
}

/// `accept(fd, addr, addrlen)` / `accept4(fd, addr, addrlen, flags)`.
#[tracepoint]
pub fn sw_enter_accept(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !selected((id >> 32) as u32) {
        return 0;
    }
    let _ = ACCEPT_ARGS.insert(id, sys_arg(&ctx, 1), 0);
    0
}

#[tracepoint]
pub fn sw_exit_accept(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain u64 value.
    let Some(addr) = (unsafe { ACCEPT_ARGS.get(id) }).copied() else {
        return 0;
    };
    let _ = ACCEPT_ARGS.remove(id);
    let fd = sys_arg(&ctx, 0) as i64;
    if fd < 0 || fd > i32::MAX as i64 {
        return 0;
    }
    let tgid = (id >> 32) as u32;
    let tid = id as u32;
    let mut info = ConnInfo {
        id: next_conn_id(),
        // SAFETY: helper without arguments.
        start_ns: unsafe { bpf_ktime_get_ns() },
        role: role::SERVER,
        ..ConnInfo::default()
    };
    if addr != 0
        && let Some(raw) = read_user::<[u8; 28]>(addr)
    {
        let (family, peer) = parse_sockaddr(&raw);
        if family == AF_INET || family == AF_INET6 {
            info.peer = peer;
            info.flags |= conn_flags::PEER_KNOWN;
            let key = SockAddr {
                addr: peer.addr,
                port: peer.port,
                family: 0,
                _pad: 0,
            };
            // SAFETY: plain value copy.
            if let Some(local) = unsafe { PEER_LOCAL.get(key) } {
                info.local = *local;
                info.flags |= conn_flags::LOCAL_KNOWN;
                count(counter::ACCEPT_LOCAL_KNOWN, 1);
            }
        } else if family == AF_UNIX {
            info.flags |= conn_flags::IGNORE;
        }
    }
    if PLAIN_ENABLED.load() != 0 && info.flags & conn_flags::IGNORE == 0 {
        if info.flags & conn_flags::LOCAL_KNOWN != 0 {
            // SAFETY: plain u8 value, presence only.
            if unsafe { PLAIN_PORTS.get(info.local.port) }.is_some() {
                info.flags |= conn_flags::PLAIN;
            }
        } else {
            info.flags |= conn_flags::PLAIN_PENDING;
        }
    }
    count(counter::ACCEPTED, 1);
    replace_conn(tgid, tid, fd as i32, &info);
    0
}

#[tracepoint]
pub fn sw_enter_connect(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if !selected((id >> 32) as u32) {
        return 0;
    }
    let args = ConnectArgs {
        addr: sys_arg(&ctx, 1),
        fd: sys_arg(&ctx, 0) as i32,
        _pad: 0,
    };
    let _ = CONNECT_ARGS.insert(id, args, 0);
    0
}

#[tracepoint]
pub fn sw_exit_connect(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: plain value copy.
    let Some(args) = (unsafe { CONNECT_ARGS.get(id) }).copied() else {
        return 0;
    };
    let _ = CONNECT_ARGS.remove(id);
    let ret = sys_arg(&ctx, 0) as i64;
    if (ret != 0 && ret != -EINPROGRESS) || args.fd < 0 || args.addr == 0 {
        return 0;
    }
    let Some(family) = read_user::<u16>(args.addr) else {
        return 0;
    };
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let info = ConnInfo {
        role: role::CLIENT,
        flags: conn_flags::IGNORE,
        ..ConnInfo::default()
    };
    let tgid = (id >> 32) as u32;
    replace_conn(tgid, id as u32, args.fd, &info);
    0
}

#[tracepoint]
pub fn sw_enter_close(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let fd = sys_arg(&ctx, 0) as i32;
    if fd < 0 {
        return 0;
    }
    let tgid = (id >> 32) as u32;
    let key = ConnKey {
        tgid,
        fd: fd as u32,
    };
    // SAFETY: plain value copy.
    let Some(c) = (unsafe { CONNS.get(key) }).copied() else {
        return 0;
    };
    if c.flags & conn_flags::ANNOUNCED != 0 {
        send_close(&c, tgid, id as u32, fd);
    }
    let _ = CONNS.remove(key);
    gen_bump(tgid, fd);
    0
}

/// `sock/inet_sock_set_state`: remember the local address of passively
/// opened connections, keyed by the peer, for `accept` to pick up.
#[tracepoint]
pub fn sw_sock_state(ctx: TracePointContext) -> u32 {
    if tp_u16(&ctx, 30) != IPPROTO_TCP {
        return 0;
    }
    let oldstate = tp_u32(&ctx, 16) as i32;
    let newstate = tp_u32(&ctx, 20) as i32;
    if oldstate != TCP_SYN_RECV || newstate != TCP_ESTABLISHED {
        return 0;
    }
    let sport = tp_u16(&ctx, 24);
    let dport = tp_u16(&ctx, 26);
    let family = tp_u16(&ctx, 28);
    let (laddr, raddr) = if family == AF_INET {
        let s = tp_u32(&ctx, 32).to_le_bytes();
        let d = tp_u32(&ctx, 36).to_le_bytes();
        (v4_mapped(s), v4_mapped(d))
    } else if family == AF_INET6 {
        let s0 = tp_u64(&ctx, 40).to_le_bytes();
        let s1 = tp_u64(&ctx, 48).to_le_bytes();
        let d0 = tp_u64(&ctx, 56).to_le_bytes();
        let d1 = tp_u64(&ctx, 64).to_le_bytes();
        (join16(s0, s1), join16(d0, d1))
    } else {
        return 0;
    };
    let key = SockAddr {
        addr: raddr,
        port: dport,
        family: 0,
        _pad: 0,
    };
    let local = SockAddr {
        addr: laddr,
        port: sport,
        family,
        _pad: 0,
    };
    let _ = PEER_LOCAL.insert(key, local, 0);
    0
}

fn join16(a: [u8; 8], b: [u8; 8]) -> [u8; 16] {
    [
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
        b[7],
    ]
}

// ---------------------------------------------------------------------------
// Process lifecycle.

/// `sched/sched_process_exec`: tell user space (rescan for new TLS
/// libraries) and select the process if its comm is configured.
#[tracepoint]
pub fn sw_exec(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    // The selection of this process may change: its per-thread SSL state
    // (which also caches "selected", see `ssl_enter`) goes.
    forget_thread(id);
    let comm = bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]);
    if FILTER_PIDS.load() != 0 {
        // SAFETY: plain u8 value, presence only.
        if unsafe { PROC_NAMES.get(comm) }.is_some() {
            let _ = PIDS.insert(tgid, 1u8, 0);
            debug!(&ctx, "pid {} selected at exec by capture.processes", tgid);
        } else {
            let _ = PIDS.remove(tgid);
        }
    }
    #[repr(C)]
    struct Rec {
        hdr: EventHeader,
        comm: [u8; COMM_LEN],
    }
    let rec = Rec {
        hdr: EventHeader {
            kind: event_kind::EXEC,
            pid: tgid,
            tid: id as u32,
            fd: -1,
            // SAFETY: helper without arguments.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            ..EventHeader::default()
        },
        comm,
    };
    if EVENTS
        .output::<Rec>(&rec, wakeup_flags(core::mem::size_of::<Rec>()))
        .is_err()
    {
        count(counter::RINGBUF_FULL_CONTROL, 1);
    }
    0
}

/// `sched/sched_process_fork`: children of selected processes are selected
/// (nginx and HAProxy workers are forked, not exec'd).
#[tracepoint]
pub fn sw_fork(ctx: TracePointContext) -> u32 {
    if FILTER_PIDS.load() == 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: plain u8 value, presence only.
    if unsafe { PIDS.get(parent) }.is_some() {
        let child = tp_u32(&ctx, 20);
        let _ = PIDS.insert(child, 1u8, 0);
    }
    0
}

/// `sched/sched_process_exit`: forget the process; report it if it had
/// announced connections so user space closes them.
#[tracepoint]
pub fn sw_exit(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let tid = id as u32;
    // Per-thread SSL state: its tid may be reused by another process.
    forget_thread(id);
    if tid != tgid {
        // A thread: drop a PIDS entry a fork of it may have added.
        let _ = PIDS.remove(tid);
    }
    // `bool group_dead` at offset 32.
    let group_dead = tp_u8(&ctx, 32) != 0;
    if !group_dead {
        return 0;
    }
    let _ = PIDS.remove(tgid);
    // SAFETY: plain u8 value, presence only.
    if unsafe { PROC_ANNOUNCED.get(tgid) }.is_none() {
        return 0;
    }
    let _ = PROC_ANNOUNCED.remove(tgid);
    let hdr = EventHeader {
        kind: event_kind::EXIT,
        pid: tgid,
        tid,
        fd: -1,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ..EventHeader::default()
    };
    if EVENTS
        .output::<EventHeader>(&hdr, wakeup_flags(HEADER_LEN))
        .is_err()
    {
        count(counter::RINGBUF_FULL_CONTROL, 1);
    }
    0
}

// ---------------------------------------------------------------------------
// Benchmark floor.

/// Empty entry program: attached by `cargo xtask bench` (never by the agent)
/// on the same instructions as the TLS probes, it measures what a probe
/// costs before any work — the trap and the program dispatch.
#[uprobe]
pub fn sw_floor(_ctx: ProbeContext) -> u32 {
    0
}

/// Empty return program, the counterpart of `sw_ssl_ret` (see `sw_floor`).
#[uretprobe]
pub fn sw_floor_ret(_ctx: RetProbeContext) -> u32 {
    0
}

/// Empty syscall tracepoint program: attached by `cargo xtask bench hooks`
/// on the agent's `syscalls:*` tracepoints, it measures what attributing
/// TLS data to a socket at the syscall layer costs before any work (the
/// traced syscall path and the trace record), see `sw_floor`.
#[tracepoint]
pub fn sw_floor_sys_tp(_ctx: TracePointContext) -> u32 {
    0
}

/// Empty program for the raw syscall tracepoints (`sys_enter`, `sys_exit`):
/// what the syscall layer would cost reached without perf trace records —
/// a raw tracepoint runs the program straight from the tracepoint with the
/// raw arguments, for every syscall of every task, so a real one would
/// dispatch on the syscall number (read here, as such a program would).
/// Benchmark only (see `sw_floor`).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sw_floor_raw_sys(ctx: RawTracePointContext) -> i32 {
    let id: u64 = ctx.arg(1);
    if id == u64::MAX { 1 } else { 0 }
}

/// In-flight call per thread of the minimal capture floor (`sw_floor_min`).
#[map]
static FLOOR_CALLS: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(1024, 0);

/// Minimal capture, entry: what any uprobe + uretprobe capture of these
/// sites must do at entry — keep `(buf, *processed)` per thread for the
/// return. No process filter, no nesting, no fd. Benchmark only (see
/// `sw_floor`); attached on the internal `_ex`-convention sites.
#[uprobe]
pub fn sw_floor_min(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let v = [
        ctx.arg::<u64>(1).unwrap_or(0),
        ctx.arg::<u64>(3).unwrap_or(0),
    ];
    match FLOOR_CALLS.get_ptr_mut(id) {
        // SAFETY: map value pointer valid for this program run.
        Some(p) => unsafe { *p = v },
        None => {
            let _ = FLOOR_CALLS.insert(id, v, 0);
        }
    }
    0
}

/// Minimal capture, return: the least a ring-buffer capture does per call —
/// one per-thread lookup, the transferred length through `*processed`, a
/// copy of the bytes into the per-CPU scratch record with a timestamped
/// header, one `bpf_ringbuf_output` without wakeup. No connection table, no
/// fd, no counters: its run time is the floor of any such design, shown
/// beside the agent's (`cargo xtask bench hooks`).
#[uretprobe]
pub fn sw_floor_min_ret(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let Some(p) = FLOOR_CALLS.get_ptr_mut(id) else {
        return 0;
    };
    // SAFETY: map value pointer valid for this program run.
    let [buf, len_ptr] = unsafe { *p };
    let ret: i64 = ctx.ret::<i64>() as i32 as i64;
    if ret != 1 {
        return 0;
    }
    let Some(n) = read_user::<u64>(len_ptr) else {
        return 0;
    };
    let Some(s) = scratch() else { return 0 };
    let mut cap = PAYLOAD_CAP.load() as u64;
    if cap > MAX_PAYLOAD as u64 {
        cap = MAX_PAYLOAD as u64;
    }
    let mut take = (if n < cap { n } else { cap }) as u32;
    if take > MAX_PAYLOAD as u32 {
        take = MAX_PAYLOAD as u32;
    }
    if take == 0 {
        return 0;
    }
    // SAFETY: destination is the payload area of the scratch value and
    // `take <= MAX_PAYLOAD`.
    let rc = unsafe {
        bpf_probe_read_user(
            s.add(HEADER_LEN).cast::<c_void>(),
            take,
            buf as *const c_void,
        )
    };
    if rc != 0 {
        return 0;
    }
    let hdr = EventHeader {
        kind: event_kind::DATA,
        pid: (id >> 32) as u32,
        tid: id as u32,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        orig_len: n as u32,
        cap_len: take,
        ..EventHeader::default()
    };
    // SAFETY: the header fits at the start of the scratch value; `take` is
    // bounded by MAX_PAYLOAD, so the record stays inside it.
    let rec = unsafe {
        core::ptr::write(s.cast::<EventHeader>(), hdr);
        core::slice::from_raw_parts(s, HEADER_LEN + take as usize)
    };
    let _ = EVENTS.output::<[u8]>(rec, BPF_RB_NO_WAKEUP);
    0
}

const _: () = assert!(core::mem::size_of::<SslCall>() == 88);
const _: () = assert!(CALL_SLOTS.is_power_of_two() && SLOTS.is_power_of_two());

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible license: `bpf_probe_read_user` is a GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
