//! Reading `/proc`: processes, their mapped files, their sockets and the
//! TCP tables of their network namespaces.
//!
//! Everything here tolerates processes disappearing mid-read (a missing
//! file is "gone", never an error worth failing the agent for) and bounds
//! what it reads.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::container::{ContainerRef, parse_cgroup};

/// Largest `/proc/PID/maps` read (bytes); larger maps are cut.
const MAX_MAPS_BYTES: u64 = 16 << 20;
/// Largest `/proc/PID/cgroup` read (bytes): one line per v1 hierarchy.
const MAX_CGROUP_BYTES: u64 = 64 << 10;
/// Largest `/proc/PID/net/tcp{,6}` read (bytes).
const MAX_TCP_TABLE_BYTES: u64 = 64 << 20;

/// Root of the proc filesystem (overridable in tests).
#[derive(Debug, Clone)]
pub(crate) struct Proc {
    root: PathBuf,
}

impl Default for Proc {
    fn default() -> Self {
        Proc {
            root: PathBuf::from("/proc"),
        }
    }
}

/// One file mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    /// Path as the process sees it (inside its mount namespace).
    pub path: String,
    /// Device of the file as `major:minor` hex pair, as in maps.
    pub dev: String,
    /// Inode number.
    pub inode: u64,
    /// `start-end` address range (names the `/proc/PID/map_files` entry).
    pub range: String,
    /// The mapping refers to a file deleted since (upgraded library).
    pub deleted: bool,
}

impl Mapping {
    /// The device as a `dev_t` (glibc's `makedev` encoding, as `st_dev`):
    /// the device of the file the kernel maps, below overlayfs.
    pub(crate) fn dev_number(&self) -> Option<u64> {
        let (major, minor) = self.dev.split_once(':')?;
        let major = u64::from_str_radix(major, 16).ok()?;
        let minor = u64::from_str_radix(minor, 16).ok()?;
        Some(
            ((major & 0x0000_0fff) << 8)
                | ((major & 0xffff_f000) << 32)
                | (minor & 0x0000_00ff)
                | ((minor & 0xffff_ff00) << 12),
        )
    }
}

impl Proc {
    /// A proc filesystem rooted elsewhere (tests).
    #[cfg(test)]
    pub(crate) fn at(root: impl Into<PathBuf>) -> Self {
        Proc { root: root.into() }
    }

    /// `/proc/PID/<rel>`.
    pub(crate) fn path(&self, pid: u32, rel: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(rel)
    }

    /// Every numeric entry of /proc.
    pub(crate) fn pids(&self) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root)? {
            let Ok(e) = e else { continue };
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                out.push(pid);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// `comm` of a process, without the trailing newline.
    pub(crate) fn comm(&self, pid: u32) -> Option<String> {
        let s = fs::read_to_string(self.path(pid, "comm")).ok()?;
        Some(s.trim_end_matches('\n').to_string())
    }

    /// Whether the process still exists.
    pub(crate) fn alive(&self, pid: u32) -> bool {
        self.root.join(pid.to_string()).exists()
    }

    /// The process's file mappings (one entry per distinct inode).
    pub(crate) fn mappings(&self, pid: u32) -> io::Result<Vec<Mapping>> {
        let text = read_bounded(&self.path(pid, "maps"), MAX_MAPS_BYTES)?;
        Ok(parse_maps(&text))
    }

    /// Path through which the agent can open a file the process maps.
    ///
    /// The path in `/proc/PID/maps` is printed relative to the *reader's*
    /// root when the file is reachable from it (a chroot that shares the
    /// agent's mount namespace: a host path), else relative to the root of
    /// the process's own mount namespace (a container: a container path).
    /// So the candidates are tried in order — the process's root
    /// (`/proc/PID/root`), the host's root (`/proc/1/root`, which is the
    /// node's root for an agent in the host PID namespace), the agent's own
    /// root — and the first whose inode is the mapped one wins (overlayfs
    /// reports the same inode number as the layer file below it; its
    /// device differs, so only inodes are compared); when none matches, the
    /// process's root is used (and the scan reports what it finds there).
    /// A deleted file is
    /// opened through `map_files` (which needs `CAP_SYS_ADMIN`).
    pub(crate) fn host_path(&self, pid: u32, m: &Mapping) -> PathBuf {
        if m.deleted {
            return self.path(pid, "map_files").join(&m.range);
        }
        let rel = m.path.trim_start_matches('/');
        let candidates = [
            self.path(pid, "root").join(rel),
            self.path(1, "root").join(rel),
            PathBuf::from(&m.path),
        ];
        let [own, ..] = &candidates;
        candidates
            .iter()
            .find(|c| fs::metadata(c).is_ok_and(|md| md.ino() == m.inode))
            .unwrap_or(own)
            .clone()
    }

    /// Container of a process from its cgroup path, when it runs in one
    /// (see [`super::container`] for the formats).
    pub(crate) fn container(&self, pid: u32) -> Option<ContainerRef> {
        let text = read_bounded(&self.path(pid, "cgroup"), MAX_CGROUP_BYTES).ok()?;
        parse_cgroup(&text)
    }

    /// Container id of a process, when it runs in one.
    pub(crate) fn container_id(&self, pid: u32) -> Option<String> {
        self.container(pid).map(|c| c.id)
    }

    /// Socket inode behind an fd, `None` if the fd is not a socket (or gone).
    pub(crate) fn socket_inode(&self, pid: u32, fd: i32) -> Option<u64> {
        let link = fs::read_link(self.path(pid, "fd").join(fd.to_string())).ok()?;
        parse_socket_link(link.to_str()?)
    }

    /// Every socket fd of a process: (fd, inode).
    pub(crate) fn socket_fds(&self, pid: u32) -> Vec<(i32, u64)> {
        let Ok(dir) = fs::read_dir(self.path(pid, "fd")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in dir.flatten() {
            let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(link) = fs::read_link(e.path())
                && let Some(ino) = link.to_str().and_then(parse_socket_link)
            {
                out.push((fd, ino));
            }
        }
        out
    }

    /// Network namespace id of a process.
    pub(crate) fn netns(&self, pid: u32) -> Option<u64> {
        let link = fs::read_link(self.path(pid, "ns/net")).ok()?;
        let s = link.to_str()?;
        s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
    }

    /// TCP sockets (IPv4 and IPv6) of the process's network namespace.
    pub(crate) fn tcp_table(&self, pid: u32) -> Vec<TcpEntry> {
        let mut out = Vec::new();
        for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
            if let Ok(text) = read_bounded(&self.path(pid, file), MAX_TCP_TABLE_BYTES) {
                out.extend(text.lines().skip(1).filter_map(|l| parse_tcp_line(l, v6)));
            }
        }
        out
    }
}

fn read_bounded(path: &Path, max: u64) -> io::Result<String> {
    let f = fs::File::open(path)?;
    let mut s = String::new();
    f.take(max).read_to_string(&mut s)?;
    Ok(s)
}

/// Parses `/proc/PID/maps`, keeping file-backed mappings, one per inode.
pub(crate) fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(_perms), Some(_off), Some(dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        let path = it.next().map(str::trim_start).unwrap_or("");
        if inode == 0 || !path.starts_with('/') {
            continue;
        }
        let (path, deleted) = match path.strip_suffix(" (deleted)") {
            Some(p) => (p, true),
            None => (path, false),
        };
        if out.iter().any(|m| m.inode == inode && m.dev == dev) {
            continue;
        }
        out.push(Mapping {
            path: path.to_string(),
            dev: dev.to_string(),
            inode,
            range: range.to_string(),
            deleted,
        });
    }
    out
}

/// `socket:[12345]` → 12345.
pub(crate) fn parse_socket_link(s: &str) -> Option<u64> {
    s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// One row of `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpEntry {
    /// Local address.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// Kernel TCP state (`0x0A` = LISTEN, `0x01` = ESTABLISHED).
    pub state: u8,
    /// Socket inode.
    pub inode: u64,
}

/// TCP state LISTEN.
pub(crate) const TCP_LISTEN: u8 = 0x0a;

fn parse_tcp_line(line: &str, v6: bool) -> Option<TcpEntry> {
    let mut f = line.split_whitespace();
    let _sl = f.next()?;
    let local = parse_hex_addr(f.next()?, v6)?;
    let remote = parse_hex_addr(f.next()?, v6)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    // tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    let inode = f.nth(5)?.parse().ok()?;
    Some(TcpEntry {
        local,
        remote,
        state,
        inode,
    })
}

/// `0100007F:1F90` (IPv4, u32 in host order) or 32 hex digits (IPv6, four
/// u32 words in host order) plus a hex port.
fn parse_hex_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (w, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            let word = u32::from_str_radix(addr.get(w * 8..w * 8 + 8)?, 16).ok()?;
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        unmap(Ipv6Addr::from(bytes))
    } else {
        let word = u32::from_str_radix(addr, 16).ok()?;
        IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes()))
    };
    Some(SocketAddr::new(ip, port))
}

/// IPv4-mapped IPv6 addresses are shown as IPv4 (a dual-stack listener's
/// IPv4 clients must look like IPv4 clients).
pub(crate) fn unmap(a: Ipv6Addr) -> IpAddr {
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

/// What a (pid, fd) turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketInfo {
    /// The fd is gone or is not a socket.
    Gone,
    /// A socket, but not TCP (unix, UDP, ...).
    NotTcp,
    /// A TCP socket. `server` is true when its local port is a listening
    /// port of the same namespace (the process accepted it).
    Tcp {
        local: SocketAddr,
        remote: SocketAddr,
        server: bool,
    },
}

/// Resolves sockets through /proc with a per-namespace TCP table cache.
#[derive(Debug, Default)]
pub(crate) struct SocketResolver {
    proc: Proc,
    cache: HashMap<u64, (Instant, Vec<TcpEntry>)>,
}

/// How long a namespace's TCP table is reused before a miss re-reads it.
const TABLE_TTL: Duration = Duration::from_millis(200);
/// Namespaces cached at most.
const MAX_CACHED_NS: usize = 256;

impl SocketResolver {
    pub(crate) fn new(proc: Proc) -> Self {
        SocketResolver {
            proc,
            cache: HashMap::new(),
        }
    }

    /// Resolves one fd of one process.
    pub(crate) fn resolve(&mut self, pid: u32, fd: i32) -> SocketInfo {
        let Some(inode) = self.proc.socket_inode(pid, fd) else {
            return SocketInfo::Gone;
        };
        self.resolve_inode(pid, inode)
    }

    /// Resolves a socket inode seen in a process's fd table.
    pub(crate) fn resolve_inode(&mut self, pid: u32, inode: u64) -> SocketInfo {
        let ns = self.proc.netns(pid).unwrap_or(0);
        let mut just_read = self.refresh(pid, ns, false);
        loop {
            let table = self
                .cache
                .get(&ns)
                .map(|(_, t)| t.as_slice())
                .unwrap_or(&[]);
            if let Some(e) = table.iter().find(|e| e.inode == inode) {
                let server = e.state != TCP_LISTEN
                    && table.iter().any(|l| {
                        l.state == TCP_LISTEN
                            && l.local.port() == e.local.port()
                            && (l.local.ip().is_unspecified() || l.local.ip() == e.local.ip())
                    });
                return SocketInfo::Tcp {
                    local: e.local,
                    remote: e.remote,
                    server,
                };
            }
            if just_read {
                return SocketInfo::NotTcp;
            }
            just_read = self.refresh(pid, ns, true);
        }
    }

    /// Re-reads a namespace's table when forced, missing or older than the
    /// TTL. Returns whether it read.
    fn refresh(&mut self, pid: u32, ns: u64, force: bool) -> bool {
        let stale = match self.cache.get(&ns) {
            Some((at, _)) => force || at.elapsed() > TABLE_TTL,
            None => true,
        };
        if stale {
            if self.cache.len() >= MAX_CACHED_NS && !self.cache.contains_key(&ns) {
                self.cache.clear();
            }
            let t = self.proc.tcp_table(pid);
            self.cache.insert(ns, (Instant::now(), t));
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_files_once() {
        let text = "\
7f0000000000-7f0000001000 r--p 00000000 08:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000001000-7f0000002000 r-xp 00001000 08:01 1234 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000003000-7f0000004000 rw-p 00000000 00:00 0 
7f0000005000-7f0000006000 r-xp 00000000 08:01 99 /opt/app/lib/libssl.so.1.1 (deleted)
7ffd00000000-7ffd00001000 rw-p 00000000 00:00 0                          [stack]
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(m[0].inode, 1234);
        assert!(!m[0].deleted);
        assert_eq!(m[1].path, "/opt/app/lib/libssl.so.1.1");
        assert!(m[1].deleted);
        assert_eq!(m[1].range, "7f0000005000-7f0000006000");
        let p = Proc::at("/proc");
        assert_eq!(
            p.host_path(42, &m[0]),
            PathBuf::from("/proc/42/root/usr/lib/x86_64-linux-gnu/libssl.so.3")
        );
        assert_eq!(
            p.host_path(42, &m[1]),
            PathBuf::from("/proc/42/map_files/7f0000005000-7f0000006000")
        );
    }

    #[test]
    fn tcp_lines() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
        let e = parse_tcp_line(v4, false).expect("v4 line");
        assert_eq!(e.local, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(e.state, TCP_LISTEN);
        assert_eq!(e.inode, 4242);
        let v6 = "   1: 0000000000000000FFFF00000300007F:C350 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 30 10 -1";
        let e = parse_tcp_line(v6, true).expect("v6 line");
        assert_eq!(e.local, "127.0.0.3:50000".parse().expect("addr"));
        assert_eq!(e.remote, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(e.state, 1);
        let v6b = "   2: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1 0000000000000000 100 0 0 10 0";
        let e = parse_tcp_line(v6b, true).expect("v6 loopback");
        assert_eq!(e.local, "[::1]:80".parse().expect("addr"));
        assert!(parse_tcp_line("garbage", false).is_none());
        assert!(parse_tcp_line("0: zz:1 00:0 0A", false).is_none());
    }

    #[test]
    fn maps_devices_encode_like_st_dev() {
        use std::os::unix::fs::MetadataExt as _;
        let me = std::env::current_exe().expect("exe");
        let md = fs::metadata(&me).expect("stat");
        let maps = fs::read_to_string("/proc/self/maps").expect("maps");
        let m = parse_maps(&maps)
            .into_iter()
            .find(|m| m.inode == md.ino())
            .expect("the test binary is mapped");
        assert_eq!(m.dev_number(), Some(md.dev()));
        let big = Mapping {
            path: "/x".into(),
            dev: "103:10001".into(),
            inode: 1,
            range: "0-1".into(),
            deleted: false,
        };
        // major 0x103, minor 0x10001: the high minor bits move above the major.
        assert_eq!(
            big.dev_number(),
            Some((0x103 << 8) | 0x01 | (0x1_0000 << 12))
        );
    }

    #[test]
    fn host_path_prefers_the_file_with_the_mapped_inode() {
        use std::os::unix::fs::MetadataExt as _;
        // A fake /proc: process 42's root holds a different file at the
        // mapped path than the host root (process 1) does.
        let dir = std::env::temp_dir().join(format!("sw-procfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for root in ["42/root/lib", "1/root/lib"] {
            fs::create_dir_all(dir.join(root)).expect("mkdir");
        }
        fs::write(dir.join("42/root/lib/libssl.so.3"), b"container").expect("write");
        fs::write(dir.join("1/root/lib/libssl.so.3"), b"host").expect("write");
        let ino = |p: &str| fs::metadata(dir.join(p)).expect("stat").ino();
        let p = Proc::at(&dir);
        let mapping = |inode| Mapping {
            path: "/lib/libssl.so.3".into(),
            dev: "08:01".into(),
            inode,
            range: "1000-2000".into(),
            deleted: false,
        };
        assert_eq!(
            p.host_path(42, &mapping(ino("42/root/lib/libssl.so.3"))),
            dir.join("42/root/lib/libssl.so.3")
        );
        // A chroot sharing the reader's mount namespace: the mapped file is
        // the one under the host's root.
        assert_eq!(
            p.host_path(42, &mapping(ino("1/root/lib/libssl.so.3"))),
            dir.join("1/root/lib/libssl.so.3")
        );
        // No inode matches: the process's root.
        assert_eq!(
            p.host_path(42, &mapping(1)),
            dir.join("42/root/lib/libssl.so.3")
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn socket_links() {
        assert_eq!(parse_socket_link("socket:[123]"), Some(123));
        assert_eq!(parse_socket_link("pipe:[123]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
    }

    #[test]
    fn resolves_own_listening_and_accepted_sockets() {
        use std::os::fd::AsRawFd as _;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let c = std::net::TcpStream::connect(addr).expect("connect");
        let (s, peer) = l.accept().expect("accept");
        let mut r = SocketResolver::new(Proc::default());
        let me = std::process::id();
        match r.resolve(me, s.as_raw_fd()) {
            SocketInfo::Tcp {
                local,
                remote,
                server,
            } => {
                assert_eq!(local, addr);
                assert_eq!(remote, peer);
                assert!(server, "accepted socket is server side");
            }
            other => panic!("unexpected {other:?}"),
        }
        match r.resolve(me, c.as_raw_fd()) {
            SocketInfo::Tcp { server, .. } => assert!(!server, "connected socket is client side"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(r.resolve(me, 0x7fff_fff0), SocketInfo::Gone);
    }
}
