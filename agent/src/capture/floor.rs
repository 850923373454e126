//! Empty probes on the sites the agent uses: the measured floor of TLS
//! capture (`cargo xtask bench hooks` and `bench live`).
//!
//! A uprobe costs the traced process a trap per hit whatever the program
//! does; with `kernel.bpf_stats_enabled=1` the kernel also reports how long
//! each program ran. Attaching programs that return at once (`sw_floor`,
//! `sw_floor_ret` in `ebpf/programs`) on the same instructions as the
//! capture programs separates the two: the throughput the traced process
//! keeps with nothing but the traps, and the run time a program needs to do
//! nothing. Capture's own cost is what it adds above that floor.
//!
//! Never used by `sessionwatch run`.

use std::path::Path;

use aya::programs::UProbe;
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use aya::{Ebpf, EbpfLoader};

use super::error::CaptureError;
use super::sites::internal_sites;

/// Which instructions the empty probes go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorSites {
    /// Where `sessionwatch run` puts its TLS I/O probes on this library (the
    /// shared internal functions when found, else the exported symbols).
    Agent,
    /// The exported `SSL_read`, `SSL_write`, `SSL_read_ex`, `SSL_write_ex`.
    Exported,
}

/// Loaded and attached empty probes; detached when dropped.
pub struct EmptyProbes {
    _ebpf: Ebpf,
    /// Human-readable attach points (`program@site`), in attach order.
    pub points: Vec<String>,
}

impl std::fmt::Debug for EmptyProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmptyProbes")
            .field("points", &self.points)
            .finish_non_exhaustive()
    }
}

impl EmptyProbes {
    /// Loads the empty programs and attaches an entry probe and a return
    /// probe on every I/O site of `library`: in every process mapping it
    /// (as the agent does), or only in process `pid`.
    pub fn attach(
        library: &Path,
        sites: FloorSites,
        pid: Option<u32>,
    ) -> Result<EmptyProbes, CaptureError> {
        let scope = || match pid.and_then(std::num::NonZeroU32::new) {
            Some(p) => UProbeScope::OneProcess(p),
            None => UProbeScope::AllProcesses,
        };
        let object = super::live::object().ok_or(CaptureError::ObjectMissing)?;
        // Only the two empty programs are loaded, but every map of the
        // object is created: keep the big ones minimal.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", 4096)
            .map_max_entries("SCRATCH", 1)
            .map_max_entries("CONNS", 1)
            .load(object)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        /// A site: file offset, or exported symbol.
        enum Site {
            Offset(u64),
            Symbol(&'static str),
        }
        let locations: Vec<Site> = match (sites, internal_sites(library)) {
            (FloorSites::Agent, Some(s)) => vec![Site::Offset(s.read), Site::Offset(s.write)],
            _ => ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"]
                .into_iter()
                .map(Site::Symbol)
                .collect(),
        };
        let mut points = Vec::new();
        for prog in ["sw_floor", "sw_floor_ret"] {
            let up: &mut UProbe = ebpf
                .program_mut(prog)
                .ok_or_else(|| CaptureError::Load(format!("program {prog} missing")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| CaptureError::Load(e.to_string()))?;
            up.load()
                .map_err(|e| CaptureError::Load(format!("{prog}: {e}")))?;
            for site in &locations {
                let (location, label) = match *site {
                    Site::Offset(o) => (
                        UProbeAttachLocation::AbsoluteOffset(o),
                        format!("offset {o:#x}"),
                    ),
                    Site::Symbol(s) => (UProbeAttachLocation::Symbol(s), s.to_owned()),
                };
                let point = UProbeAttachPoint {
                    location,
                    cookie: None,
                };
                up.attach(point, library, scope())
                    .map_err(|e| CaptureError::Attach {
                        program: prog.to_owned(),
                        target: format!("{} {label}", library.display()),
                        error: e.to_string(),
                    })?;
                points.push(format!("{prog}@{label}"));
            }
        }
        Ok(EmptyProbes {
            _ebpf: ebpf,
            points,
        })
    }
}
