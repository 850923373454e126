//! Types shared by the kernel programs (`sessionwatch-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]` with explicit padding, because the same
//! bytes are written by eBPF code (compiled for `bpfel-unknown-none`) and read
//! by the agent (compiled for the host). The layout is checked by the
//! `const` assertions at the bottom of this file on both sides.
//!
//! # Event stream
//!
//! The kernel programs write variable-length records into one ring buffer
//! (`EVENTS`). Every record starts with an [`EventHeader`]; what follows
//! depends on [`EventHeader::kind`]:
//!
//! | kind | after the header |
//! |---|---|
//! | [`event_kind::DATA`] | `cap_len` payload bytes |
//! | [`event_kind::OPEN`] | [`ConnInfo`] then `[u8; COMM_LEN]` (the owning process's `comm`) |
//! | [`event_kind::CLOSE`] | [`CloseTail`] |
//! | [`event_kind::EXEC`] | `[u8; COMM_LEN]` |
//! | [`event_kind::EXIT`] | nothing |
#![no_std]

/// Largest payload one data event can carry, whatever the configured cap.
/// Bounds the per-CPU scratch buffer the kernel copies user memory into.
pub const MAX_PAYLOAD: usize = 65536;

/// Default payload cap (`capture.payload_cap`): bytes copied per event.
pub const DEFAULT_PAYLOAD_CAP: u32 = 16384;

/// Length of a task `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// iovecs copied per `readv`/`writev`/`recvmsg`/`sendmsg`; bytes beyond are
/// reported as one uncaptured (gap) event of exact length.
pub const MAX_IOV: u32 = 8;

/// Capacity of the `PLAIN_PORTS` map.
pub const MAX_PLAIN_PORTS: u32 = 256;

/// Capacity of the `PROC_NAMES` map.
pub const MAX_PROC_NAMES: u32 = 256;

/// Default capacity of the `CONNS` map ((pid, fd) → connection).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 65536;

/// Number of slots in the `COUNTERS` per-CPU array.
pub const NUM_COUNTERS: u32 = 32;

/// Bit 63 marks connection ids minted by user space (connections that were
/// open before the agent started); kernel ids never set it.
pub const USER_CONN_ID_BIT: u64 = 1 << 63;

/// `sa_family` values the programs understand.
pub const AF_INET: u16 = 2;
/// IPv6 address family.
pub const AF_INET6: u16 = 10;
/// Unix domain sockets (never captured).
pub const AF_UNIX: u16 = 1;

/// Record kinds ([`EventHeader::kind`]).
pub mod event_kind {
    /// Bytes read or written on a connection.
    pub const DATA: u8 = 1;
    /// First sighting of a connection the kernel knows (accepted after start).
    pub const OPEN: u8 = 2;
    /// `close(2)` on an announced connection, or its fd being reused.
    pub const CLOSE: u8 = 3;
    /// A process called `execve` (triggers a target rescan).
    pub const EXEC: u8 = 4;
    /// A process with announced connections exited.
    pub const EXIT: u8 = 5;
}

/// Where bytes were captured ([`EventHeader::source`]).
pub mod source {
    /// Plaintext at the TLS library (`SSL_read`/`SSL_write` and `_ex`).
    pub const TLS: u8 = 1;
    /// Plaintext at socket syscalls of a connection on a configured plain port.
    pub const PLAIN: u8 = 2;
}

/// Operation of the owning process ([`EventHeader::op`]). For a server-side
/// connection a read carries requests, a write carries responses.
pub mod op {
    /// The process received these bytes.
    pub const READ: u8 = 0;
    /// The process sent these bytes.
    pub const WRITE: u8 = 1;
}

/// Bits of [`EventHeader::flags`].
pub mod event_flags {
    /// `cap_len < orig_len` because of the payload cap.
    pub const TRUNCATED: u8 = 1;
    /// The bytes exist but could not be copied at all (sendfile, a user page
    /// that faulted, iovecs past [`MAX_IOV`](crate::MAX_IOV)); `cap_len` is 0.
    pub const NO_PAYLOAD: u8 = 2;
    /// The agent asked for these bytes not to be copied: they lie wholly
    /// inside a message body it is skipping (`capture.skip_bodies_above`,
    /// see [`SkipArm`](crate::SkipArm)). `cap_len` is 0; the bytes are
    /// missing by design, not lost.
    pub const BODY_SKIPPED: u8 = 4;
    /// The first event of this connection direction the kernel counted for
    /// the body-skip arm in [`EventHeader::skip_arm`](crate::EventHeader):
    /// its count starts right after this event's bytes.
    pub const SKIP_START: u8 = 8;
}

/// Connection role ([`ConnInfo::role`]).
pub mod role {
    /// Not known (connection opened before the agent started).
    pub const UNKNOWN: u8 = 0;
    /// The process accepted this socket: it is the server of the connection.
    pub const SERVER: u8 = 1;
    /// The process connected this socket: it is the client.
    pub const CLIENT: u8 = 2;
}

/// Bits of [`ConnInfo::flags`].
pub mod conn_flags {
    /// An `OPEN` was sent (by the kernel) or emitted (by user space).
    pub const ANNOUNCED: u8 = 1;
    /// Capture plaintext syscalls: the local port is a configured plain port.
    pub const PLAIN: u8 = 2;
    /// Local port not known yet: capture plaintext provisionally, user space
    /// decides after resolving the address through /proc.
    pub const PLAIN_PENDING: u8 = 4;
    /// TLS library events were seen: never capture syscalls (ciphertext).
    pub const TLS: u8 = 8;
    /// Never capture (client side, not TCP, or rejected by user space).
    pub const IGNORE: u8 = 16;
    /// [`ConnInfo::local`] is valid.
    pub const LOCAL_KNOWN: u8 = 32;
    /// [`ConnInfo::peer`] is valid.
    pub const PEER_KNOWN: u8 = 64;
}

/// Slots of the `COUNTERS` per-CPU array (summed over CPUs by user space).
pub mod counter {
    /// Data events written for TLS-library captures.
    pub const EVENTS_TLS: u32 = 0;
    /// Data events written for plain-socket captures.
    pub const EVENTS_PLAIN: u32 = 1;
    /// TLS data events lost because the ring buffer was full.
    pub const RINGBUF_FULL_TLS: u32 = 2;
    /// Plain data events lost because the ring buffer was full.
    pub const RINGBUF_FULL_PLAIN: u32 = 3;
    /// TLS data events cut by the payload cap.
    pub const TRUNCATED_TLS: u32 = 4;
    /// Plain data events cut by the payload cap.
    pub const TRUNCATED_PLAIN: u32 = 5;
    /// Control events (open/close/exec/exit) lost: ring buffer full.
    pub const RINGBUF_FULL_CONTROL: u32 = 6;
    /// An SSL call could not be tracked: per-thread table full.
    pub const SSL_TABLE_FULL: u32 = 7;
    /// A connection could not be recorded: `CONNS` full.
    pub const CONN_TABLE_FULL: u32 = 8;
    /// TLS payload could not be copied (user page fault).
    pub const READ_FAULT_TLS: u32 = 9;
    /// Plain payload could not be copied (user page fault).
    pub const READ_FAULT_PLAIN: u32 = 10;
    /// TLS events dropped in the kernel because the socket is client side.
    pub const FILTERED_CLIENT: u32 = 11;
    /// TLS events whose socket fd could not be determined.
    pub const TLS_NO_FD: u32 = 12;
    /// Connections accepted (server side) and recorded.
    pub const ACCEPTED: u32 = 13;
    /// Accepted connections whose local address came from `inet_sock_set_state`.
    pub const ACCEPT_LOCAL_KNOWN: u32 = 14;
    /// Connections the kernel closed (announced ones).
    pub const CLOSED: u32 = 15;
    /// Bytes lost to a full ring buffer (TLS), also reported as gaps.
    pub const LOST_BYTES_TLS: u32 = 16;
    /// Bytes lost to a full ring buffer (plain), also reported as gaps.
    pub const LOST_BYTES_PLAIN: u32 = 17;
    /// Plain events with bytes that exist but carry no payload (sendfile, iovec overflow).
    pub const NO_PAYLOAD_PLAIN: u32 = 18;
    /// Nested SSL calls seen (inner call ignored, outer call captured).
    pub const SSL_NESTED: u32 = 19;
    /// Data events sent without payload because their bytes lie inside a
    /// message body the agent asked to skip.
    pub const BODY_SKIPPED_EVENTS: u32 = 20;
    /// Bytes of those events (not copied, not lost).
    pub const BODY_SKIPPED_BYTES: u32 = 21;
}

/// Smallest data event after which the agent asks its HTTP stage whether a
/// large body is under way (the events of a large body are large; asking
/// after every small one would cost a lookup per request). The kernel wakes
/// the agent early for such an event when no arm covers it (at most once a
/// millisecond per CPU), so the arm comes before much of the body is copied.
pub const BODY_QUERY_MIN: u32 = 4096;

/// Slots per direction of the `SKIP_ARM` / `SKIP_COUNT` arrays (a power of
/// two): message bodies being skipped at once, per direction.
pub const BODY_SKIP_SLOTS: u32 = 4096;

/// Slot of connection `conn_id`'s direction `opv` ([`op`]) in the
/// `SKIP_ARM` and `SKIP_COUNT` arrays: reads in the first half, writes in
/// the second. Different connections may share a slot; the agent then
/// skips for one of them only.
#[inline(always)]
pub const fn skip_slot(conn_id: u64, opv: u8) -> u32 {
    let h = (conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u32 & (BODY_SKIP_SLOTS - 1);
    if opv == op::WRITE {
        h + BODY_SKIP_SLOTS
    } else {
        h
    }
}

/// Value of the `SKIP_ARM` array, written only by the agent: "skip the body
/// of connection `conn_id` in this slot's direction".
///
/// The protocol tolerates the kernel reading a value while the agent's
/// update is half written (array updates are plain copies):
///
/// 1. The agent arms a free slot (all zero) with `{conn_id, arm, until: 0}`.
/// 2. The first event of that direction the kernel sees with an `arm` it has
///    not counted for yet resets its [`SkipCount`] and is sent whole, flagged
///    [`event_flags::SKIP_START`] with the arm's low 32 bits.
/// 3. On that event the agent knows how many body bytes follow it and sets
///    `until` to that number (only `until` changes).
/// 4. The kernel leaves out the payload of every later event that ends at
///    most `until` bytes after the start; an event crossing the end of the
///    body is copied whole.
/// 5. The agent zeroes the slot when the body is done or the connection
///    closes, before arming it for anything else.
///
/// A torn read mixes the bytes of the old and new value field by field;
/// `until` only ever moves between 0 and one value, so a torn `until` is
/// never larger than the real one (skipping less is always safe), and a
/// torn `conn_id`/`arm` pair only ever starts a new count (a whole event).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipArm {
    /// Connection id the slot is armed for (0: free).
    pub conn_id: u64,
    /// Arm number, unique per agent run (never 0).
    pub arm: u64,
    /// Bytes after the start event that are body (0: not known yet).
    pub until: u64,
}

/// Value of the `SKIP_COUNT` array, written only by the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkipCount {
    /// Connection id of the arm being counted.
    pub conn_id: u64,
    /// Arm being counted.
    pub arm: u64,
    /// Bytes of the direction seen since the start event (sent, skipped
    /// or lost to a full ring buffer alike).
    pub counted: u64,
}

/// Slots of the `CONN_KGEN` / `CONN_UGEN` generation arrays (power of two).
pub const CONN_GEN_SLOTS: u32 = 65536;

/// Generation slot of the `CONNS` entry (tgid, fd). Every change of that
/// entry bumps the slot's generation — in `CONN_KGEN` when the kernel
/// programs change it, in `CONN_UGEN` when user space does — so the TLS
/// return program may keep a per-thread copy of what it needs from the entry
/// and trust it while both generations are unchanged. Different entries may
/// share a slot: that only costs a lookup.
#[inline(always)]
pub const fn conn_gen_slot(tgid: u32, fd: u32) -> u32 {
    (tgid.wrapping_mul(0x9E37_79B1) ^ fd) & (CONN_GEN_SLOTS - 1)
}

/// Key of the `CONNS` map: a socket fd of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Thread-group id (user-space "pid").
    pub tgid: u32,
    /// File descriptor.
    pub fd: u32,
}

/// A socket address as both sides store it: IPv4 is kept v4-mapped
/// (`::ffff:a.b.c.d`), so one key type serves both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockAddr {
    /// IPv6 address, or IPv4-mapped IPv6 address.
    pub addr: [u8; 16],
    /// Port, host byte order.
    pub port: u16,
    /// Original address family ([`AF_INET`] or [`AF_INET6`]), 0 if unknown.
    pub family: u16,
    /// Explicit padding (always 0).
    pub _pad: u32,
}

/// Value of the `CONNS` map and body of an `OPEN` event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// Connection id (0 for client/ignored entries that never emit).
    pub id: u64,
    /// `bpf_ktime_get_ns` when the connection was recorded.
    pub start_ns: u64,
    /// Local (server-side) address, valid with [`conn_flags::LOCAL_KNOWN`].
    pub local: SockAddr,
    /// Peer (client) address, valid with [`conn_flags::PEER_KNOWN`].
    pub peer: SockAddr,
    /// Bytes lost (ring buffer full) per [`op`] since the last written event;
    /// sent as [`EventHeader::lost_before`] with the next event of that op.
    pub lost: [u32; 2],
    /// [`role`] value.
    pub role: u8,
    /// [`conn_flags`] bits.
    pub flags: u8,
    /// Explicit padding (always 0).
    pub _pad: [u8; 6],
}

/// Header of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// [`event_kind`] value.
    pub kind: u8,
    /// [`source`] value (data and open events).
    pub source: u8,
    /// [`op`] value (data events).
    pub op: u8,
    /// [`event_flags`] bits.
    pub flags: u8,
    /// Socket fd, -1 when unknown.
    pub fd: i32,
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at capture.
    pub ts_ns: u64,
    /// Connection id; 0 when the kernel has no entry for (pid, fd) (the
    /// connection predates the agent: user space resolves it).
    pub conn_id: u64,
    /// The `SSL*` of TLS events (identifies the connection when fd is -1).
    pub ssl: u64,
    /// Bytes the operation really transferred.
    pub orig_len: u32,
    /// Bytes of payload following the header (`<= orig_len`).
    pub cap_len: u32,
    /// Bytes of this op lost (ring buffer full) right before this event.
    pub lost_before: u32,
    /// Low 32 bits of the [`SkipArm::arm`] whose count this event starts
    /// (with [`event_flags::SKIP_START`]), else 0.
    pub skip_arm: u32,
}

/// Body of a `CLOSE` event: bytes lost at the very end of the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseTail {
    /// Lost bytes per [`op`] not yet reported by a later event.
    pub lost: [u32; 2],
}

/// Size of [`EventHeader`] on the wire.
pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();

/// Size of a scratch record: header plus the largest payload.
pub const SCRATCH_LEN: usize = HEADER_LEN + MAX_PAYLOAD;

const _: () = assert!(core::mem::size_of::<ConnKey>() == 8);
const _: () = assert!(core::mem::size_of::<SockAddr>() == 24);
const _: () = assert!(core::mem::size_of::<ConnInfo>() == 80);
const _: () = assert!(core::mem::size_of::<EventHeader>() == 56);
const _: () = assert!(core::mem::size_of::<CloseTail>() == 8);
const _: () = assert!(core::mem::size_of::<SkipArm>() == 24);
const _: () = assert!(core::mem::size_of::<SkipCount>() == 24);
const _: () = assert!(BODY_SKIP_SLOTS.is_power_of_two());
const _: () = assert!(MAX_PAYLOAD.is_power_of_two());
const _: () = assert!(CONN_GEN_SLOTS.is_power_of_two());

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, contain only integers
    // and byte arrays, and have no implicit padding (sizes asserted above),
    // so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::SockAddr {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::ConnInfo {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CloseTail {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::SkipArm {}
}
