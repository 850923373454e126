//! `[capture]`: what live capture attaches to and how much it copies.
//!
//! Every key is optional. The doc comment of each field is the reference
//! text for the config file (`sessionwatch check-config` prints the
//! effective values).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sessionwatch_common::{DEFAULT_MAX_CONNECTIONS, DEFAULT_PAYLOAD_CAP, MAX_PAYLOAD};
use sessionwatch_sessions::config::human_duration;

use super::CaptureError;

/// `[capture]` section of the agent config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// File-name globs (`*`, `?`) of TLS libraries to hook, matched against
    /// the base name of every file mapped by every process
    /// (`/proc/PID/maps`). Executables that define `SSL_read` themselves
    /// (OpenSSL linked in statically) are found as well. Empty: no TLS
    /// hooks at all, only `plain_ports` (the low-overhead mode: TLS-library
    /// uprobes cost the proxy several microseconds per request).
    pub libraries: Vec<String>,
    /// Process names (`comm`, at most 15 bytes, as `ps -o comm` shows) to
    /// capture. Empty: every process that uses a matching library, and
    /// every process with connections on `plain_ports`.
    pub processes: Vec<String>,
    /// Local TCP ports whose accepted connections carry plaintext HTTP
    /// (the proxy → upstream hop, plain HTTP services). Their bytes are
    /// taken from the socket syscalls of the accepting (server) process.
    pub plain_ports: Vec<u16>,
    /// Payload bytes copied per captured read/write; the rest of a larger
    /// transfer is reported as an exact-length gap and counted in
    /// `sessionwatch_capture_truncated_total`. At most 65536.
    pub payload_cap: u32,
    /// HTTP/1 message bodies with more than this many bytes still to come
    /// are not copied by the kernel: once a body's framing is known (a
    /// `Content-Length`, a chunk's size, or a response delimited by the
    /// close), the agent tells the kernel, per connection direction, how
    /// many of the following bytes are body; events wholly inside them
    /// arrive as exact-length gaps and are counted in
    /// `sessionwatch_capture_body_skipped_bytes_total` (not lost). Heads are
    /// all the analysis needs, so this saves copies and ring-buffer space
    /// for downloads and uploads. 0: copy every body byte (up to
    /// `payload_cap` per call).
    pub skip_bodies_above: u64,
    /// Full rescan of `/proc` for new TLS libraries and processes, in
    /// addition to the rescan triggered by every `execve`.
    #[serde(with = "human_duration")]
    pub rescan_interval: Duration,
    /// Size of the kernel → agent ring buffer in bytes (a power of two, at
    /// least one page). Larger absorbs longer bursts before loss.
    pub ring_buffer_size: u32,
    /// Connections tracked at once, in the kernel and in the agent.
    pub max_connections: u32,
    /// Start even when nothing matches yet (no TLS library in use, no
    /// plain ports); targets are attached as they appear. When false, the
    /// agent refuses to start with nothing to attach to.
    pub wait_for_targets: bool,
}

impl CaptureConfig {
    /// Design default: every process's `libssl.so*`.
    pub const DEFAULT_LIBRARY: &'static str = "libssl.so*";
    /// Default periodic rescan: 30 seconds.
    pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(30);
    /// Default ring buffer: 8 MiB.
    pub const DEFAULT_RING_BUFFER_SIZE: u32 = 8 << 20;
    /// Default body-skip threshold: 64 KiB.
    pub const DEFAULT_SKIP_BODIES_ABOVE: u64 = 64 << 10;

    /// Checks values serde cannot: ranges and powers of two.
    pub fn validate(&self) -> Result<(), CaptureError> {
        let bad = |key: &'static str, why: String| Err(CaptureError::InvalidConfig { key, why });
        if self.libraries.is_empty() && self.plain_ports.is_empty() {
            return bad(
                "capture.libraries",
                "is empty and so is capture.plain_ports: nothing would be captured".into(),
            );
        }
        if let Some(l) = self
            .libraries
            .iter()
            .find(|l| l.is_empty() || l.contains('/'))
        {
            return bad(
                "capture.libraries",
                format!("{l:?} is not a file-name glob (no '/', not empty)"),
            );
        }
        if self.payload_cap == 0 || self.payload_cap as usize > MAX_PAYLOAD {
            return bad(
                "capture.payload_cap",
                format!("{} is outside 1..={MAX_PAYLOAD}", self.payload_cap),
            );
        }
        if self.plain_ports.contains(&0) {
            return bad("capture.plain_ports", "port 0 is not a port".into());
        }
        if self.plain_ports.len() > sessionwatch_common::MAX_PLAIN_PORTS as usize {
            return bad(
                "capture.plain_ports",
                format!("at most {} ports", sessionwatch_common::MAX_PLAIN_PORTS),
            );
        }
        if self.processes.len() > sessionwatch_common::MAX_PROC_NAMES as usize {
            return bad(
                "capture.processes",
                format!("at most {} names", sessionwatch_common::MAX_PROC_NAMES),
            );
        }
        if let Some(p) = self.processes.iter().find(|p| p.is_empty() || p.len() > 15) {
            return bad(
                "capture.processes",
                format!("{p:?}: process names (comm) are 1 to 15 bytes"),
            );
        }
        if !self.ring_buffer_size.is_power_of_two() || self.ring_buffer_size < 4096 {
            return bad(
                "capture.ring_buffer_size",
                format!(
                    "{} is not a power of two of at least 4096",
                    self.ring_buffer_size
                ),
            );
        }
        if self.max_connections < 64 {
            return bad(
                "capture.max_connections",
                format!("{} is below the minimum of 64", self.max_connections),
            );
        }
        if self.rescan_interval < Duration::from_secs(1) {
            return bad("capture.rescan_interval", "must be at least 1s".into());
        }
        Ok(())
    }

    /// Whether `name` (a file base name) matches one of [`Self::libraries`].
    pub fn library_matches(&self, name: &str) -> bool {
        self.libraries.iter().any(|g| glob_match(g, name))
    }

    /// Whether a process with this `comm` is selected.
    pub fn process_selected(&self, comm: &str) -> bool {
        self.processes.is_empty() || self.processes.iter().any(|p| p == comm)
    }
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            libraries: vec![Self::DEFAULT_LIBRARY.into()],
            processes: Vec::new(),
            plain_ports: Vec::new(),
            payload_cap: DEFAULT_PAYLOAD_CAP,
            skip_bodies_above: Self::DEFAULT_SKIP_BODIES_ABOVE,
            rescan_interval: Self::DEFAULT_RESCAN_INTERVAL,
            ring_buffer_size: Self::DEFAULT_RING_BUFFER_SIZE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            wait_for_targets: false,
        }
    }
}

/// Shell-style glob: `*` any run, `?` one character, everything else literal.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_design() {
        let c = CaptureConfig::default();
        assert_eq!(c.libraries, vec!["libssl.so*".to_string()]);
        assert!(c.processes.is_empty());
        assert!(c.plain_ports.is_empty());
        assert_eq!(c.payload_cap, 16384);
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c: CaptureConfig = toml::from_str(
            "libraries = [\"libssl.so*\", \"libboringssl.so\"]\nplain_ports = [8080]\n\
             payload_cap = 4096\nrescan_interval = \"5s\"\n",
        )
        .expect("valid config");
        assert_eq!(c.plain_ports, vec![8080]);
        assert_eq!(c.payload_cap, 4096);
        assert_eq!(c.rescan_interval, Duration::from_secs(5));
        let err = toml::from_str::<CaptureConfig>("libary = []").expect_err("typo rejected");
        assert!(err.to_string().contains("libary"), "{err}");
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let mut c = CaptureConfig {
            payload_cap: 70000,
            ..CaptureConfig::default()
        };
        assert!(c.validate().is_err());
        c.payload_cap = 100;
        c.ring_buffer_size = 5000;
        assert!(c.validate().is_err());
        c.ring_buffer_size = 1 << 20;
        c.processes = vec!["a-very-long-process-name".into()];
        assert!(c.validate().is_err());
        c.processes = vec!["nginx".into()];
        c.plain_ports = vec![0];
        assert!(c.validate().is_err());
        c.plain_ports = vec![8080];
        c.libraries = vec!["/usr/lib/libssl.so.3".into()];
        assert!(c.validate().is_err());
        // No TLS hooks is fine with plain ports (low-overhead mode) ...
        c.libraries = vec![];
        c.validate().expect("plain-only capture is valid");
        // ... but not with nothing at all.
        c.plain_ports = vec![];
        assert!(c.validate().is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("libssl.so*", "libssl.so.3"));
        assert!(glob_match("libssl.so*", "libssl.so"));
        assert!(glob_match("libssl.so*", "libssl.so.1.1"));
        assert!(!glob_match("libssl.so*", "libssl3.so"));
        assert!(glob_match("lib*ssl*.so*", "libboringssl.so"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("", "x"));
        assert!(glob_match("*.so.*", "libcrypto.so.3"));
    }
}
