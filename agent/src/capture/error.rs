//! Why live capture could not start, each with what happened, why, and what
//! to do. The agent maps every variant to exit code 2.

use std::path::PathBuf;

/// Live capture failed to start (or a rescan failed fatally).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The agent lacks privileges: loading eBPF and reading other processes'
    /// memory maps needs root or the listed capabilities.
    #[error(
        "live capture needs more privileges: missing {missing}.\n  \
         Why: loading eBPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), and finding \
         TLS libraries in other processes needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.\n  \
         Fix: run as root (`sudo sessionwatch run`), or grant the capabilities \
         (`setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search,cap_sys_resource+ep sessionwatch`; \
         in Kubernetes: securityContext.privileged or these capabilities)"
    )]
    MissingPrivileges {
        /// Human list of what is missing ("root (euid 1000)", capability names).
        missing: String,
    },

    /// The kernel refuses BPF altogether (no `bpf(2)`, locked down, or a
    /// seccomp profile blocks it).
    #[error(
        "eBPF is not available: {what}.\n  \
         Why: the kernel or the container runtime rejected the bpf() system call ({source}).\n  \
         Fix: use a kernel built with CONFIG_BPF_SYSCALL and CONFIG_BPF_EVENTS (Linux 5.15 or \
         newer), do not run under a seccomp profile that blocks bpf(), and check \
         `sysctl kernel.unprivileged_bpf_disabled` / lockdown mode"
    )]
    BpfUnavailable {
        /// What was being done (creating a map, loading a program).
        what: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },

    /// The verifier rejected a program. The log says which instruction.
    #[error(
        "the kernel's eBPF verifier rejected program `{program}`: {error}.\n  \
         Why: this kernel's verifier is stricter than the ones sessionwatch was tested on \
         (Linux 6.x), or the object was built with another toolchain.\n  \
         Fix: report it with this log and `uname -r`; rebuild with `cargo xtask build`.\n  \
         Verifier log:\n{log}"
    )]
    VerifierRejected {
        /// Program name.
        program: String,
        /// The load error.
        error: String,
        /// The verifier's log (may be long).
        log: String,
    },

    /// tracefs is not mounted, so tracepoints cannot be resolved.
    #[error(
        "tracefs is not mounted (neither /sys/kernel/tracing nor /sys/kernel/debug/tracing has \
         `events/`).\n  \
         Why: syscall and socket tracepoints are looked up through tracefs.\n  \
         Fix: `mount -t tracefs nodev /sys/kernel/tracing` (in a container: mount the host's \
         /sys/kernel/tracing)"
    )]
    TracefsMissing,

    /// A tracepoint the capture needs does not exist in this kernel.
    #[error(
        "the kernel has no tracepoint {category}/{name}.\n  \
         Why: capture needs syscall tracepoints (CONFIG_FTRACE_SYSCALLS) and \
         sock/inet_sock_set_state (Linux 4.16+).\n  \
         Fix: use a kernel with CONFIG_FTRACE_SYSCALLS=y"
    )]
    TracepointMissing {
        /// Tracepoint category (`syscalls`, `sock`, `sched`).
        category: String,
        /// Tracepoint name.
        name: String,
    },

    /// Nothing uses a matching TLS library and no plain port is configured.
    #[error(
        "nothing to attach to: no running process maps a library matching {libraries} or \
         has SSL_read linked in ({scanned} processes scanned{skipped}), and capture.plain_ports \
         is empty.\n  \
         Why: sessionwatch hooks the TLS library of the process that terminates TLS.\n  \
         Fix: start the proxy (nginx, HAProxy, ...) first, set capture.libraries to the file \
         name of its TLS library (see `sessionwatch targets`), list plaintext upstream ports in \
         capture.plain_ports, or set capture.wait_for_targets = true"
    )]
    NothingToAttach {
        /// The configured globs, for the message.
        libraries: String,
        /// Processes looked at.
        scanned: usize,
        /// ", N skipped: ..." summary, or empty.
        skipped: String,
    },

    /// The agent binary was built without the kernel programs.
    #[error(
        "this sessionwatch binary was built without its eBPF programs.\n  \
         Why: the kernel object (ebpf/programs) was not built when the agent was compiled.\n  \
         Fix: build with `cargo xtask build` (or `cargo xtask run`), which builds the eBPF \
         programs with the nightly toolchain and embeds them"
    )]
    ObjectMissing,

    /// A configuration value is out of range.
    #[error("invalid {key}: {why}")]
    InvalidConfig {
        /// Config key (`capture.payload_cap`).
        key: &'static str,
        /// What is wrong with it.
        why: String,
    },

    /// Attaching a probe failed for a reason other than the above.
    #[error("could not attach {program} to {target}: {error}")]
    Attach {
        /// Program name.
        program: String,
        /// Library path or tracepoint.
        target: String,
        /// The underlying error.
        error: String,
    },

    /// Loading the object failed for a reason other than the above.
    #[error("could not load the eBPF object: {0}")]
    Load(String),

    /// A map the programs need is missing or has the wrong type (the
    /// embedded object does not match this agent).
    #[error(
        "eBPF map {name} is missing or has the wrong type: {why}. Rebuild with `cargo xtask build`"
    )]
    Map {
        /// Map name.
        name: &'static str,
        /// Details.
        why: String,
    },

    /// An I/O error on a file the capture needs.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },

    /// The tokio reactor could not watch the ring buffer.
    #[error("cannot poll the capture ring buffer: {0} (is this called inside a tokio runtime?)")]
    Poll(#[source] std::io::Error),
}
