//! Attaches the empty benchmark probes (`sw_floor`, `sw_floor_ret`) to a TLS
//! library and keeps them attached until killed: the floor rows of
//! `cargo xtask bench live` and `bench hooks`.
//!
//! Usage: `probe_floor LIBRARY agent|exported|minimal|minimal-syscalls|minimal-raw-syscalls [PID]` — without a PID the
//! probes fire in every process mapping the library, as the agent's do.
//!
//! Prints `attached <points>` on stdout once the probes are live.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use sessionwatch::capture::{EmptyProbes, FloorSites};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(lib), Some(sites)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: probe_floor LIBRARY agent|exported|minimal|minimal-syscalls|minimal-raw-syscalls [PID]"
        );
        return ExitCode::from(2);
    };
    let sites = match sites.as_str() {
        "agent" => FloorSites::Agent,
        "exported" => FloorSites::Exported,
        "minimal" => FloorSites::AgentMinimal,
        "minimal-syscalls" => FloorSites::AgentMinimalSyscalls,
        "minimal-raw-syscalls" => FloorSites::AgentMinimalRawSyscalls,
        other => {
            eprintln!(
                "probe_floor: unknown sites {other:?} (agent|exported|minimal|minimal-syscalls|minimal-raw-syscalls)"
            );
            return ExitCode::from(2);
        }
    };
    let pid = match args.next().map(|p| p.parse::<u32>()) {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            eprintln!("probe_floor: bad pid: {e}");
            return ExitCode::from(2);
        }
    };
    let mut probes = match EmptyProbes::attach(&PathBuf::from(&lib), sites, pid) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("probe_floor: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("attached {}", probes.points.join(" "));
    let _ = std::io::stdout().flush();
    // Stay attached until the benchmark kills this process (the kernel
    // detaches the probes when their file descriptors close). The
    // minimal-capture programs' records are drained on the agent's timer
    // (10 ms); for the empty programs `drain` does nothing.
    loop {
        probes.drain();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
