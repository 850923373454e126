//! Kernel records → ordered [`StreamEvent`]s per connection.
//!
//! The kernel identifies connections it saw being accepted; connections
//! that predate the agent (or whose announcement was lost) arrive with id 0
//! or an unknown id and are resolved here through /proc, then written back
//! into the kernel's table so later records carry the id.
//!
//! Guarantees to the sink: `Open` first, `Data`/`Gap` in capture order per
//! direction, `Close` last and at most once. Truncated payloads are followed
//! by a `Gap` of exactly the missing length; bytes lost to a full ring
//! buffer are reported as a `Gap` before the next bytes of that direction.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::Arc;

use sessionwatch_common::{
    ConnInfo, ConnKey, EventHeader, SkipArm, USER_CONN_ID_BIT, conn_flags, event_flags, op, role,
    source,
};
use sessionwatch_streams::{
    CloseReason, ConnectionId, ConnectionMeta, Direction, ProcessInfo, Source, StreamEvent,
    StreamSink, Timestamp,
};

use super::body_skip::BodySkipper;
use super::procfs::{SocketInfo, unmap};
use super::records::{Record, comm_str};
use super::stats::UserCounters;

/// What the tracker needs from the outside world (the real one reads /proc
/// and the kernel's `CONNS` map; tests fake it).
pub(crate) trait Env {
    /// What (pid, fd) is now.
    fn resolve(&mut self, pid: u32, fd: i32) -> SocketInfo;
    /// Process details (container id) for a new connection's metadata.
    fn container_id(&mut self, pid: u32) -> Option<String>;
    /// `comm` of a process, when the kernel did not send it.
    fn comm(&mut self, pid: u32) -> Option<String>;
    /// Writes a `CONNS` entry (`only_new`: do not replace an existing one).
    fn kernel_set(&mut self, key: ConnKey, info: &ConnInfo, only_new: bool);
    /// Sets and clears flag bits of the `CONNS` entry of (pid, fd) if it
    /// still carries connection `id` (read-modify-write of the current
    /// entry, so what the kernel changed meanwhile is kept).
    fn kernel_update_flags(&mut self, key: ConnKey, id: u64, set: u8, clear: u8);
    /// Deletes a `CONNS` entry if it still carries connection `id`.
    fn kernel_remove(&mut self, key: ConnKey, id: u64);
    /// Whether the process still exists.
    fn alive(&mut self, pid: u32) -> bool;
    /// Writes slot `slot` of the kernel's `SKIP_ARM` array.
    fn skip_arm(&mut self, slot: u32, value: &SkipArm);
}

/// Kernel monotonic time → Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Clock {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, nanoseconds.
    pub offset_ns: i128,
}

impl Clock {
    /// Measures the offset now.
    pub(crate) fn now() -> Self {
        let read = |id: libc::clockid_t| -> i128 {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec; both clock ids exist
            // on every Linux kernel.
            let rc = unsafe { libc::clock_gettime(id, &mut ts) };
            if rc != 0 {
                return 0;
            }
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        };
        let mono = read(libc::CLOCK_MONOTONIC);
        let real = read(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    /// Converts a `bpf_ktime_get_ns` value.
    pub(crate) fn epoch(&self, mono_ns: u64) -> Timestamp {
        let t = i128::from(mono_ns) + self.offset_ns;
        Timestamp(u64::try_from(t.max(0)).unwrap_or(u64::MAX))
    }
}

/// What the caller should do after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing.
    None,
    /// A process exec'd: rescan it for TLS libraries.
    Rescan(u32),
}

#[derive(Debug)]
struct Conn {
    meta: ConnectionMeta,
    pid: u32,
    fd: i32,
    /// Announced to the sink (Open sent).
    open: bool,
    /// Plain-socket bytes belong to this connection's stream.
    plain_ok: bool,
    /// Last event time (monotonic ns), for eviction.
    last: u64,
}

/// Connection table turning records into stream events.
pub(crate) struct Tracker {
    conns: HashMap<u64, Conn>,
    by_fd: HashMap<(u32, i32), u64>,
    max: usize,
    plain_ports: HashSet<u16>,
    next_user_id: u64,
    pub(crate) clock: Clock,
    counters: Arc<UserCounters>,
    /// `capture.skip_bodies_above` > 0: large bodies are left in the kernel.
    skip: Option<BodySkipper>,
}

fn sockaddr(a: &sessionwatch_common::SockAddr) -> SocketAddr {
    SocketAddr::new(unmap(Ipv6Addr::from(a.addr)), a.port)
}

/// Kernel `SockAddr` from a std address (IPv4 stored v4-mapped).
pub(crate) fn kernel_addr(a: SocketAddr) -> sessionwatch_common::SockAddr {
    let (addr, family) = match a {
        SocketAddr::V4(v4) => (
            v4.ip().to_ipv6_mapped().octets(),
            sessionwatch_common::AF_INET,
        ),
        SocketAddr::V6(v6) => (v6.ip().octets(), sessionwatch_common::AF_INET6),
    };
    sessionwatch_common::SockAddr {
        addr,
        port: a.port(),
        family,
        _pad: 0,
    }
}

impl Tracker {
    /// `skip_bodies_above`: see [`BodySkipper`] (0: never skip).
    pub(crate) fn new(
        max: usize,
        plain_ports: &[u16],
        skip_bodies_above: u64,
        clock: Clock,
        counters: Arc<UserCounters>,
    ) -> Self {
        Tracker {
            conns: HashMap::new(),
            by_fd: HashMap::new(),
            max: max.max(1),
            plain_ports: plain_ports.iter().copied().collect(),
            next_user_id: 1,
            clock,
            counters,
            skip: (skip_bodies_above > 0).then(|| BodySkipper::new(skip_bodies_above)),
        }
    }

    /// A fresh id for a connection the agent (not the kernel) discovered.
    pub(crate) fn mint_id(&mut self) -> u64 {
        let id = USER_CONN_ID_BIT | self.next_user_id;
        self.next_user_id += 1;
        id
    }

    /// Number of tracked connections.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    fn publish_len(&self) {
        self.counters.open_connections.store(
            self.conns.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Handles one parsed record.
    pub(crate) fn handle(
        &mut self,
        rec: Record<'_>,
        env: &mut dyn Env,
        sink: &mut dyn StreamSink,
    ) -> Action {
        let action = match rec {
            Record::Data { hdr, payload } => {
                self.on_data(&hdr, payload, env, sink);
                Action::None
            }
            Record::Open { hdr, conn, comm } => {
                self.on_open(&hdr, &conn, Some(comm_str(&comm)), env, sink);
                Action::None
            }
            Record::Close { hdr, tail } => {
                self.close_id(hdr.conn_id, hdr.ts_ns, tail.lost, CloseReason::Closed, sink);
                Action::None
            }
            Record::Exec { hdr, .. } => Action::Rescan(hdr.pid),
            Record::Exit { hdr } => {
                self.close_pid(hdr.pid, hdr.ts_ns, env, sink);
                Action::None
            }
        };
        if let Some(skip) = &mut self.skip {
            skip.flush(env);
        }
        self.publish_len();
        action
    }

    fn insert(&mut self, id: u64, conn: Conn, env: &mut dyn Env, sink: &mut dyn StreamSink) {
        if self.conns.len() >= self.max && !self.conns.contains_key(&id) {
            self.evict_one(env, sink);
        }
        if let Some(old_id) = self.by_fd.insert((conn.pid, conn.fd), id)
            && old_id != id
        {
            // The fd was reused without us seeing its close.
            self.close_id(old_id, conn.last, [0, 0], CloseReason::Closed, sink);
        }
        self.conns.insert(id, conn);
    }

    /// Drops the least recently active connection. Its kernel entry goes
    /// too, so later bytes start a new connection (new id) instead of
    /// reviving a closed one.
    fn evict_one(&mut self, env: &mut dyn Env, sink: &mut dyn StreamSink) {
        let Some((&victim, c)) = self.conns.iter().min_by_key(|(_, c)| c.last) else {
            return;
        };
        let (ts, pid, fd) = (c.last, c.pid, c.fd);
        UserCounters::add(&self.counters.evicted, 1);
        env.kernel_remove(
            ConnKey {
                tgid: pid,
                fd: fd as u32,
            },
            victim,
        );
        self.close_id(victim, ts, [0, 0], CloseReason::Evicted, sink);
    }

    fn on_open(
        &mut self,
        hdr: &EventHeader,
        info: &ConnInfo,
        comm: Option<String>,
        env: &mut dyn Env,
        sink: &mut dyn StreamSink,
    ) {
        if info.id == 0 || self.conns.contains_key(&info.id) {
            return;
        }
        let mut client = (info.flags & conn_flags::PEER_KNOWN != 0).then(|| sockaddr(&info.peer));
        let mut server = (info.flags & conn_flags::LOCAL_KNOWN != 0).then(|| sockaddr(&info.local));
        if (client.is_none() || server.is_none())
            && let SocketInfo::Tcp { local, remote, .. } = env.resolve(hdr.pid, hdr.fd)
        {
            client = client.or(Some(remote));
            server = server.or(Some(local));
        }
        let mut plain_ok = info.flags & conn_flags::PLAIN != 0;
        if info.flags & conn_flags::PLAIN_PENDING != 0 {
            plain_ok = server.is_some_and(|s| self.plain_ports.contains(&s.port()));
            if server.is_none() {
                UserCounters::add(&self.counters.unresolved_plain, 1);
            }
            // Tell the kernel the decision so it stops (or keeps) copying;
            // the rest of its entry (announced, TLS seen, loss) is kept.
            env.kernel_update_flags(
                ConnKey {
                    tgid: hdr.pid,
                    fd: hdr.fd as u32,
                },
                info.id,
                if plain_ok { conn_flags::PLAIN } else { 0 },
                conn_flags::PLAIN_PENDING,
            );
        }
        let comm = comm.or_else(|| env.comm(hdr.pid)).unwrap_or_default();
        let meta = ConnectionMeta {
            id: ConnectionId(info.id),
            client,
            server,
            tls: hdr.source == source::TLS,
            source: source_of(hdr.source),
            process: Some(ProcessInfo {
                pid: hdr.pid,
                comm,
                container_id: env.container_id(hdr.pid),
                // Filled in by the pipeline from the pod cache
                // (`[kubernetes]`), off the capture thread.
                pod: None,
            }),
        };
        self.insert(
            info.id,
            Conn {
                meta,
                pid: hdr.pid,
                fd: hdr.fd,
                open: false,
                plain_ok,
                last: hdr.ts_ns,
            },
            env,
            sink,
        );
    }

    /// Builds a connection for (pid, fd) from /proc. `None`: drop the bytes.
    fn discover(
        &mut self,
        hdr: &EventHeader,
        env: &mut dyn Env,
        sink: &mut dyn StreamSink,
    ) -> Option<u64> {
        let key = ConnKey {
            tgid: hdr.pid,
            fd: hdr.fd as u32,
        };
        let (local, remote) = match env.resolve(hdr.pid, hdr.fd) {
            SocketInfo::Gone => {
                let c = if hdr.source == source::TLS {
                    &self.counters.unresolved_tls
                } else {
                    &self.counters.unresolved_plain
                };
                UserCounters::add(c, 1);
                return None;
            }
            SocketInfo::NotTcp => {
                let ignore = ConnInfo {
                    flags: conn_flags::IGNORE,
                    ..ConnInfo::default()
                };
                env.kernel_set(key, &ignore, true);
                return None;
            }
            SocketInfo::Tcp { server: false, .. } => {
                // A local client (curl, a sidecar) linking the same libssl:
                // sessions are analysed from the server side only.
                let client = ConnInfo {
                    role: role::CLIENT,
                    flags: conn_flags::IGNORE,
                    ..ConnInfo::default()
                };
                env.kernel_set(key, &client, true);
                UserCounters::add(&self.counters.client_filtered, 1);
                return None;
            }
            SocketInfo::Tcp {
                local,
                remote,
                server: true,
            } => (local, remote),
        };
        let id = if hdr.conn_id != 0 {
            hdr.conn_id
        } else {
            self.mint_id()
        };
        let plain_ok = self.plain_ports.contains(&local.port());
        let mut flags = conn_flags::ANNOUNCED | conn_flags::LOCAL_KNOWN | conn_flags::PEER_KNOWN;
        if hdr.source == source::TLS {
            flags |= conn_flags::TLS;
        } else if plain_ok {
            flags |= conn_flags::PLAIN;
        }
        if hdr.conn_id == 0 {
            let info = ConnInfo {
                id,
                start_ns: hdr.ts_ns,
                local: kernel_addr(local),
                peer: kernel_addr(remote),
                role: role::SERVER,
                flags,
                ..ConnInfo::default()
            };
            env.kernel_set(key, &info, true);
        }
        let meta = ConnectionMeta {
            id: ConnectionId(id),
            client: Some(remote),
            server: Some(local),
            tls: hdr.source == source::TLS,
            source: source_of(hdr.source),
            process: Some(ProcessInfo {
                pid: hdr.pid,
                comm: env.comm(hdr.pid).unwrap_or_default(),
                container_id: env.container_id(hdr.pid),
                // Filled in by the pipeline from the pod cache
                // (`[kubernetes]`), off the capture thread.
                pod: None,
            }),
        };
        self.insert(
            id,
            Conn {
                meta,
                pid: hdr.pid,
                fd: hdr.fd,
                open: false,
                plain_ok,
                last: hdr.ts_ns,
            },
            env,
            sink,
        );
        Some(id)
    }

    fn on_data(
        &mut self,
        hdr: &EventHeader,
        payload: &[u8],
        env: &mut dyn Env,
        sink: &mut dyn StreamSink,
    ) {
        let id = if hdr.conn_id != 0 && self.conns.contains_key(&hdr.conn_id) {
            hdr.conn_id
        } else if hdr.fd < 0 {
            UserCounters::add(&self.counters.no_fd_tls, 1);
            return;
        } else if let Some(&id) = self
            .by_fd
            .get(&(hdr.pid, hdr.fd))
            .filter(|_| hdr.conn_id == 0)
        {
            id
        } else {
            match self.discover(hdr, env, sink) {
                Some(id) => id,
                None => return,
            }
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let src = source_of(hdr.source);
        if src == Source::PlainSocket && !conn.plain_ok {
            return;
        }
        conn.last = hdr.ts_ns;
        if !conn.open {
            conn.meta.tls = src == Source::TlsLibrary;
            conn.meta.source = src;
            conn.open = true;
            sink.on_event(StreamEvent::Open(&conn.meta));
        } else if conn.meta.source != src {
            // Plain syscalls on a connection that turned out to be TLS (a
            // plain port carrying TLS): keep the TLS plaintext only.
            if src == Source::PlainSocket {
                return;
            }
        }
        let conn_id = conn.meta.id;
        let dir = if hdr.op == op::READ {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        let ts = self.clock.epoch(hdr.ts_ns);
        if hdr.lost_before > 0 {
            sink.on_event(StreamEvent::Gap {
                conn: conn_id,
                dir,
                ts,
                len: u64::from(hdr.lost_before),
            });
        }
        if !payload.is_empty() {
            sink.on_event(StreamEvent::Data {
                conn: conn_id,
                dir,
                ts,
                bytes: payload,
            });
        }
        let missing = u64::from(hdr.orig_len).saturating_sub(payload.len() as u64);
        if missing > 0 {
            debug_assert!(
                hdr.flags
                    & (event_flags::TRUNCATED
                        | event_flags::NO_PAYLOAD
                        | event_flags::BODY_SKIPPED)
                    != 0
            );
            sink.on_event(StreamEvent::Gap {
                conn: conn_id,
                dir,
                ts,
                len: missing,
            });
        }
        if let Some(skip) = &mut self.skip
            && hdr.conn_id == id
        {
            skip.after_data(hdr, conn_id, dir, sink);
        }
    }

    fn close_id(
        &mut self,
        id: u64,
        ts_ns: u64,
        lost: [u32; 2],
        reason: CloseReason,
        sink: &mut dyn StreamSink,
    ) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        if let Some(skip) = &mut self.skip {
            skip.closed(id);
        }
        if self.by_fd.get(&(conn.pid, conn.fd)) == Some(&id) {
            self.by_fd.remove(&(conn.pid, conn.fd));
        }
        if !conn.open {
            return;
        }
        let ts = self.clock.epoch(ts_ns);
        for (i, dir) in [(0usize, Direction::ToServer), (1, Direction::ToClient)] {
            let n = lost.get(i).copied().unwrap_or(0);
            if n > 0 {
                sink.on_event(StreamEvent::Gap {
                    conn: conn.meta.id,
                    dir,
                    ts,
                    len: u64::from(n),
                });
            }
        }
        sink.on_event(StreamEvent::Close {
            conn: conn.meta.id,
            ts,
            reason,
        });
    }

    /// Closes every connection of a process that exited.
    fn close_pid(&mut self, pid: u32, ts_ns: u64, env: &mut dyn Env, sink: &mut dyn StreamSink) {
        let ids: Vec<(u64, i32)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.pid == pid)
            .map(|(&id, c)| (id, c.fd))
            .collect();
        for (id, fd) in ids {
            env.kernel_remove(
                ConnKey {
                    tgid: pid,
                    fd: fd as u32,
                },
                id,
            );
            self.close_id(id, ts_ns, [0, 0], CloseReason::Closed, sink);
        }
    }

    /// Closes connections of processes that no longer exist (their exit
    /// record may have been lost). Called at each rescan.
    pub(crate) fn gc(&mut self, now_ns: u64, env: &mut dyn Env, sink: &mut dyn StreamSink) {
        let mut pids: Vec<u32> = self.conns.values().map(|c| c.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            if !env.alive(pid) {
                self.close_pid(pid, now_ns, env, sink);
            }
        }
        if let Some(skip) = &mut self.skip {
            skip.flush(env);
        }
        self.publish_len();
    }

    /// Ends every stream (agent shutdown).
    pub(crate) fn finish(&mut self, now_ns: u64, sink: &mut dyn StreamSink) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_id(id, now_ns, [0, 0], CloseReason::EndOfInput, sink);
        }
        self.by_fd.clear();
        self.publish_len();
    }
}

fn source_of(s: u8) -> Source {
    if s == source::PLAIN {
        Source::PlainSocket
    } else {
        Source::TlsLibrary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::records::{build, parse};
    use sessionwatch_common::{SockAddr, event_kind};

    #[derive(Default)]
    struct FakeEnv {
        sockets: HashMap<(u32, i32), SocketInfo>,
        kernel: HashMap<(u32, u32), ConnInfo>,
        dead: HashSet<u32>,
        /// The kernel's `SKIP_ARM` array.
        arms: HashMap<u32, SkipArm>,
    }

    impl Env for FakeEnv {
        fn resolve(&mut self, pid: u32, fd: i32) -> SocketInfo {
            self.sockets
                .get(&(pid, fd))
                .copied()
                .unwrap_or(SocketInfo::Gone)
        }
        fn container_id(&mut self, _pid: u32) -> Option<String> {
            None
        }
        fn comm(&mut self, _pid: u32) -> Option<String> {
            Some("proc".into())
        }
        fn kernel_set(&mut self, key: ConnKey, info: &ConnInfo, only_new: bool) {
            if only_new && self.kernel.contains_key(&(key.tgid, key.fd)) {
                return;
            }
            self.kernel.insert((key.tgid, key.fd), *info);
        }
        fn kernel_remove(&mut self, key: ConnKey, _id: u64) {
            self.kernel.remove(&(key.tgid, key.fd));
        }
        fn kernel_update_flags(&mut self, key: ConnKey, id: u64, set: u8, clear: u8) {
            if let Some(e) = self.kernel.get_mut(&(key.tgid, key.fd))
                && e.id == id
            {
                e.flags = (e.flags & !clear) | set;
            }
        }
        fn alive(&mut self, pid: u32) -> bool {
            !self.dead.contains(&pid)
        }
        fn skip_arm(&mut self, slot: u32, value: &SkipArm) {
            self.arms.insert(slot, *value);
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Ev {
        Open {
            id: u64,
            client: Option<SocketAddr>,
            tls: bool,
            source: Source,
        },
        Data(u64, Direction, Vec<u8>),
        Gap(u64, Direction, u64),
        Close(u64, CloseReason),
    }

    #[derive(Default)]
    struct Rec(Vec<Ev>);

    impl StreamSink for Rec {
        fn on_event(&mut self, e: StreamEvent<'_>) {
            self.0.push(match e {
                StreamEvent::Open(m) => Ev::Open {
                    id: m.id.0,
                    client: m.client,
                    tls: m.tls,
                    source: m.source,
                },
                StreamEvent::Data {
                    conn, dir, bytes, ..
                } => Ev::Data(conn.0, dir, bytes.to_vec()),
                StreamEvent::Gap { conn, dir, len, .. } => Ev::Gap(conn.0, dir, len),
                StreamEvent::Close { conn, reason, .. } => Ev::Close(conn.0, reason),
            });
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn tracker(ports: &[u16]) -> Tracker {
        Tracker::new(
            16,
            ports,
            0,
            Clock::default(),
            Arc::new(UserCounters::default()),
        )
    }

    fn hdr(pid: u32, fd: i32, conn_id: u64, src: u8, opv: u8, orig: u32) -> EventHeader {
        EventHeader {
            kind: event_kind::DATA,
            source: src,
            op: opv,
            fd,
            pid,
            tid: pid,
            ts_ns: 1_000,
            conn_id,
            orig_len: orig,
            ..EventHeader::default()
        }
    }

    fn feed(t: &mut Tracker, env: &mut FakeEnv, sink: &mut Rec, rec: &[u8]) -> Action {
        t.handle(parse(rec).expect("valid record"), env, sink)
    }

    fn server_conn(id: u64, peer: &str, local: &str, flags: u8) -> ConnInfo {
        let mut p = kernel_addr(addr(peer));
        p.family = 0;
        ConnInfo {
            id,
            peer: p,
            local: kernel_addr(addr(local)),
            role: role::SERVER,
            flags: flags | conn_flags::PEER_KNOWN | conn_flags::LOCAL_KNOWN,
            ..ConnInfo::default()
        }
    }

    #[test]
    fn kernel_connection_with_truncation_and_close() {
        let mut t = tracker(&[]);
        let mut env = FakeEnv::default();
        let mut sink = Rec::default();
        let info = server_conn(7, "127.0.0.2:40000", "127.0.0.1:443", 0);
        let open = build::open(hdr(10, 5, 7, source::TLS, 0, 0), &info, "nginx");
        feed(&mut t, &mut env, &mut sink, &open);
        assert!(sink.0.is_empty(), "Open is sent with the first bytes");
        let mut h = hdr(10, 5, 7, source::TLS, op::READ, 100);
        h.flags = event_flags::TRUNCATED;
        feed(
            &mut t,
            &mut env,
            &mut sink,
            &build::data(h, b"POST /x HTTP/1.1\r\n"),
        );
        let h = hdr(10, 5, 7, source::TLS, op::WRITE, 4);
        feed(&mut t, &mut env, &mut sink, &build::data(h, b"HTTP"));
        let close = build::close(
            EventHeader {
                conn_id: 7,
                pid: 10,
                fd: 5,
                ..EventHeader::default()
            },
            [0, 9],
        );
        feed(&mut t, &mut env, &mut sink, &close);
        assert_eq!(
            sink.0,
            vec![
                Ev::Open {
                    id: 7,
                    client: Some(addr("127.0.0.2:40000")),
                    tls: true,
                    source: Source::TlsLibrary
                },
                Ev::Data(7, Direction::ToServer, b"POST /x HTTP/1.1\r\n".to_vec()),
                Ev::Gap(7, Direction::ToServer, 100 - 18),
                Ev::Data(7, Direction::ToClient, b"HTTP".to_vec()),
                Ev::Gap(7, Direction::ToClient, 9),
                Ev::Close(7, CloseReason::Closed),
            ]
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn lost_bytes_become_gap_before_data() {
        let mut t = tracker(&[]);
        let mut env = FakeEnv::default();
        let mut sink = Rec::default();
        let info = server_conn(8, "127.0.0.3:40001", "127.0.0.1:443", 0);
        feed(
            &mut t,
            &mut env,
            &mut sink,
            &build::open(hdr(10, 6, 8, 1, 0, 0), &info, "n"),
        );
        let mut h = hdr(10, 6, 8, source::TLS, op::READ, 3);
        h.lost_before = 500;
        feed(&mut t, &mut env, &mut sink, &build::data(h, b"abc"));
        assert_eq!(sink.0[1], Ev::Gap(8, Direction::ToServer, 500));
        assert_eq!(sink.0[2], Ev::Data(8, Direction::ToServer, b"abc".to_vec()));
    }

    #[test]
    fn unknown_server_socket_is_resolved_and_written_back() {
        let mut t = tracker(&[]);
        let mut env = FakeEnv::default();
        env.sockets.insert(
            (20, 9),
            SocketInfo::Tcp {
                local: addr("127.0.0.1:443"),
                remote: addr("127.0.0.2:50000"),
                server: true,
            },
        );
        let mut sink = Rec::default();
        let h = hdr(20, 9, 0, source::TLS, op::READ, 3);
        feed(&mut t, &mut env, &mut sink, &build::data(h, b"GET"));
        feed(&mut t, &mut env, &mut sink, &build::data(h, b" / "));
        let Ev::Open { id, client, .. } = sink.0[0].clone() else {
            panic!("open first: {:?}", sink.0)
        };
        assert!(id & USER_CONN_ID_BIT != 0);
        assert_eq!(client, Some(addr("127.0.0.2:50000")));
        assert_eq!(sink.0.len(), 3, "one connection, two chunks: {:?}", sink.0);
        let k = env.kernel.get(&(20, 9)).expect("written back");
        assert_eq!(k.id, id);
        assert!(k.flags & conn_flags::ANNOUNCED != 0);
        // The kernel closes it with the minted id.
        let close = build::close(
            EventHeader {
                conn_id: id,
                pid: 20,
                fd: 9,
                ..EventHeader::default()
            },
            [0, 0],
        );
        feed(&mut t, &mut env, &mut sink, &close);
        assert_eq!(sink.0.last(), Some(&Ev::Close(id, CloseReason::Closed)));
    }

    #[test]
    fn client_side_sockets_are_dropped_and_marked() {
        let mut t = tracker(&[]);
        let mut env = FakeEnv::default();
        env.sockets.insert(
            (30, 3),
            SocketInfo::Tcp {
                local: addr("127.0.0.2:50001"),
                remote: addr("127.0.0.1:443"),
                server: false,
            },
        );
        let mut sink = Rec::default();
        let h = hdr(30, 3, 0, source::TLS, op::WRITE, 3);
        feed(&mut t, &mut env, &mut sink, &build::data(h, b"GET"));
        assert!(sink.0.is_empty());
        let k = env.kernel.get(&(30, 3)).expect("marked in kernel");
        assert_eq!(k.role, role::CLIENT);
        assert!(k.flags & conn_flags::IGNORE != 0);
    }

    #[test]
    fn pending_plain_connection_is_decided_by_port() {
        let mut env = FakeEnv::default();
        let mut sink = Rec::default();
        let mut t = tracker(&[8080]);
        // Local address unknown at accept: user space resolves it.
        for (fd, port, keep) in [(4, 8080u16, true), (5, 9090, false)] {
            env.sockets.insert(
                (40, fd),
                SocketInfo::Tcp {
                    local: SocketAddr::new("127.0.0.1".parse().expect("ip"), port),
                    remote: addr("127.0.0.1:40000"),
                    server: true,
                },
            );
            let info = ConnInfo {
                id: 100 + fd as u64,
                peer: SockAddr::default(),
                role: role::SERVER,
                flags: conn_flags::PLAIN_PENDING,
                ..ConnInfo::default()
            };
            // The kernel's entry, announced when the OPEN record was sent.
            let mut announced = info;
            announced.flags |= conn_flags::ANNOUNCED;
            env.kernel.insert((40, fd as u32), announced);
            let h = hdr(40, fd, info.id, source::PLAIN, 0, 0);
            feed(&mut t, &mut env, &mut sink, &build::open(h, &info, "up"));
            let h = hdr(40, fd, info.id, source::PLAIN, op::READ, 3);
            feed(&mut t, &mut env, &mut sink, &build::data(h, b"GET"));
            let k = env.kernel.get(&(40, fd as u32)).expect("decision written");
            assert_eq!(k.flags & conn_flags::PLAIN_PENDING, 0);
            assert_eq!(k.flags & conn_flags::PLAIN != 0, keep);
            assert!(k.flags & conn_flags::ANNOUNCED != 0, "announcement kept");
        }
        assert_eq!(sink.0.len(), 2, "only the 8080 connection: {:?}", sink.0);
        assert!(matches!(
            sink.0[0],
            Ev::Open {
                id: 104,
                tls: false,
                source: Source::PlainSocket,
                ..
            }
        ));
    }

    #[test]
    fn exit_closes_and_capacity_evicts() {
        let mut env = FakeEnv::default();
        let mut sink = Rec::default();
        let mut t = Tracker::new(
            2,
            &[],
            0,
            Clock::default(),
            Arc::new(UserCounters::default()),
        );
        for (i, id) in [1u64, 2, 3].into_iter().enumerate() {
            let info = server_conn(id, "127.0.0.2:1000", "127.0.0.1:443", 0);
            let mut h = hdr(50, i as i32, id, source::TLS, 0, 0);
            h.ts_ns = id;
            feed(&mut t, &mut env, &mut sink, &build::open(h, &info, "n"));
            let mut h = hdr(50, i as i32, id, source::TLS, op::READ, 1);
            h.ts_ns = id;
            feed(&mut t, &mut env, &mut sink, &build::data(h, b"x"));
        }
        assert!(
            sink.0.contains(&Ev::Close(1, CloseReason::Evicted)),
            "{:?}",
            sink.0
        );
        assert_eq!(t.len(), 2);
        feed(
            &mut t,
            &mut env,
            &mut sink,
            &build::exit(EventHeader {
                pid: 50,
                ..EventHeader::default()
            }),
        );
        assert_eq!(t.len(), 0);
        assert!(sink.0.contains(&Ev::Close(2, CloseReason::Closed)));
        assert!(sink.0.contains(&Ev::Close(3, CloseReason::Closed)));
    }

    #[test]
    fn no_fd_and_gone_sockets_are_counted() {
        let counters = Arc::new(UserCounters::default());
        let mut t = Tracker::new(4, &[], 0, Clock::default(), counters.clone());
        let mut env = FakeEnv::default();
        let mut sink = Rec::default();
        feed(
            &mut t,
            &mut env,
            &mut sink,
            &build::data(hdr(1, -1, 0, source::TLS, 0, 1), b"x"),
        );
        feed(
            &mut t,
            &mut env,
            &mut sink,
            &build::data(hdr(1, 3, 0, source::TLS, 0, 1), b"x"),
        );
        assert!(sink.0.is_empty());
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(counters.no_fd_tls.load(Relaxed), 1);
        assert_eq!(counters.unresolved_tls.load(Relaxed), 1);
    }

    #[test]
    fn clock_maps_monotonic_to_epoch() {
        let c = Clock::now();
        let ts = c.epoch(0);
        // The machine booted after 2000-01-01 and before 2200.
        assert!(
            ts.secs() > 946_684_800 && ts.secs() < 7_258_118_400,
            "{ts:?}"
        );
    }

    /// The kernel half of the body-skip protocol, as `body_skip` in the
    /// eBPF programs implements it, for driving the tracker in tests.
    #[derive(Default)]
    struct KernelSkip {
        counts: HashMap<u32, sessionwatch_common::SkipCount>,
        skipped: u64,
    }

    impl KernelSkip {
        /// The data record the kernel would send for `bytes` written or
        /// read (`opv`) on connection `conn_id`, given the arms now.
        fn record(
            &mut self,
            arms: &HashMap<u32, SkipArm>,
            conn_id: u64,
            opv: u8,
            bytes: &[u8],
        ) -> Vec<u8> {
            let n = bytes.len() as u64;
            let mut h = hdr(10, 5, conn_id, source::TLS, opv, bytes.len() as u32);
            let slot = sessionwatch_common::skip_slot(conn_id, opv);
            let arm = arms.get(&slot).copied().unwrap_or_default();
            if arm.conn_id == conn_id && arm.arm != 0 {
                let c = self.counts.entry(slot).or_default();
                if c.conn_id != conn_id || c.arm != arm.arm {
                    *c = sessionwatch_common::SkipCount {
                        conn_id,
                        arm: arm.arm,
                        counted: 0,
                    };
                    h.flags |= event_flags::SKIP_START;
                    h.skip_arm = arm.arm as u32;
                } else {
                    c.counted += n;
                    if arm.until != 0 && c.counted <= arm.until {
                        h.flags |= event_flags::BODY_SKIPPED;
                        self.skipped += n;
                        return build::data(h, b"");
                    }
                }
            }
            build::data(h, bytes)
        }
    }

    /// A download and an upload far above the threshold on one keep-alive
    /// connection, with 0 to 12 records in flight between the kernel and
    /// the agent (the kernel reads the arms when it emits): the kernel
    /// leaves out most body bytes, and the HTTP stage still parses every
    /// head that follows each body.
    #[test]
    fn skipped_bodies_keep_framing_whatever_is_in_flight() {
        use sessionwatch_http::h1::{H1Stage, Limits};
        use sessionwatch_http::{Exchange, ExchangeSink};
        struct Sink(Vec<Exchange>);
        impl ExchangeSink for Sink {
            fn on_exchange(&mut self, e: &mut Exchange) {
                self.0.push(e.clone());
            }
        }
        let download = 1 << 20;
        let upload = 300_000;
        // (op, bytes) as the server process reads and writes them.
        let mut calls: Vec<(u8, Vec<u8>)> =
            vec![(op::READ, b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n".to_vec())];
        let mut resp =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {download}\r\n\r\n").into_bytes();
        resp.resize(resp.len() + download, b'x');
        calls.extend(resp.chunks(16384).map(|c| (op::WRITE, c.to_vec())));
        let mut up = format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {upload}\r\n\r\n")
            .into_bytes();
        up.resize(up.len() + upload, b'y');
        calls.extend(up.chunks(16384).map(|c| (op::READ, c.to_vec())));
        calls.push((
            op::WRITE,
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ));
        // Request and response straight after the bodies, in one call each.
        calls.push((
            op::READ,
            b"GET /after HTTP/1.1\r\nHost: a\r\nCookie: sid=abc\r\n\r\n".to_vec(),
        ));
        calls.push((
            op::WRITE,
            b"HTTP/1.1 204 No Content\r\nSet-Cookie: sid=def\r\n\r\n".to_vec(),
        ));

        for lag in [0usize, 1, 2, 5, 12] {
            let mut t = Tracker::new(
                16,
                &[],
                65536,
                Clock::default(),
                Arc::new(UserCounters::default()),
            );
            let mut env = FakeEnv::default();
            let mut stage = H1Stage::new(Sink(Vec::new()), Limits::default());
            let mut kernel = KernelSkip::default();
            let info = server_conn(7, "127.0.0.2:40000", "127.0.0.1:443", 0);
            let open = build::open(hdr(10, 5, 7, source::TLS, 0, 0), &info, "nginx");
            t.handle(parse(&open).expect("open"), &mut env, &mut stage);
            let mut ring: std::collections::VecDeque<Vec<u8>> = Default::default();
            for (opv, bytes) in &calls {
                ring.push_back(kernel.record(&env.arms, 7, *opv, bytes));
                while ring.len() > lag {
                    let rec = ring.pop_front().expect("queued");
                    t.handle(parse(&rec).expect("data"), &mut env, &mut stage);
                }
            }
            while let Some(rec) = ring.pop_front() {
                t.handle(parse(&rec).expect("data"), &mut env, &mut stage);
            }
            let close = build::close(
                EventHeader {
                    conn_id: 7,
                    pid: 10,
                    fd: 5,
                    ..EventHeader::default()
                },
                [0, 0],
            );
            t.handle(parse(&close).expect("close"), &mut env, &mut stage);

            let got: Vec<(String, Option<u16>)> = stage
                .sink()
                .0
                .iter()
                .map(|e| {
                    (
                        e.request.target.to_string(),
                        e.response.as_ref().map(|r| r.status),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    ("/big".to_owned(), Some(200)),
                    ("/up".to_owned(), Some(201)),
                    ("/after".to_owned(), Some(204)),
                ],
                "lag {lag}"
            );
            let after = &stage.sink().0[2];
            assert_eq!(after.request.headers.get_str("cookie"), Some("sid=abc"));
            assert!(
                stage.stats().parse_errors.is_empty(),
                "lag {lag}: {:?}",
                stage.stats().parse_errors
            );
            // All but a few events of each body: the head, the one that
            // arms, and those in flight during the three hand-offs (arm →
            // kernel start → agent's `until` → kernel skips).
            let slack = (3 + 3 * lag as u64) * 16384;
            assert!(
                kernel.skipped >= (download + upload) as u64 - 2 * slack,
                "lag {lag}: skipped {}",
                kernel.skipped
            );
            // Every slot is zeroed again.
            assert!(t.skip.as_ref().is_some_and(|s| s.armed() == 0));
            assert!(
                env.arms.values().all(|a| *a == SkipArm::default()),
                "lag {lag}"
            );
        }
    }

    /// Bodies below the threshold, and every body with skipping off, are
    /// copied whole and never arm a slot.
    #[test]
    fn small_bodies_are_never_skipped() {
        let mut t = tracker(&[]);
        let mut env = FakeEnv::default();
        let mut sink = Rec::default();
        let info = server_conn(7, "127.0.0.2:40000", "127.0.0.1:443", 0);
        let open = build::open(hdr(10, 5, 7, source::TLS, 0, 0), &info, "nginx");
        feed(&mut t, &mut env, &mut sink, &open);
        let body = vec![b'x'; 8192];
        let h = hdr(10, 5, 7, source::TLS, op::WRITE, body.len() as u32);
        feed(&mut t, &mut env, &mut sink, &build::data(h, &body));
        assert!(env.arms.is_empty());
        assert!(t.skip.is_none());
    }
}
