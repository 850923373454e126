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
//! A third set, the *minimal capture* (`sw_floor_min`, `sw_floor_min_ret`),
//! does the least any ring-buffer capture at these sites must do — keep the
//! buffer per thread at entry; at return read the length, copy the bytes and
//! write one record — without the agent's connection table, fd tracking,
//! process filter or counters. Its run time is the floor of the design, shown
//! beside the agent's.
//!
//! A fourth set adds to the minimal capture an empty program
//! (`sw_floor_sys_tp`) on every `syscalls:sys_enter_*`/`sys_exit_*`
//! tracepoint the agent attaches by default: the cost of attributing TLS
//! data to its socket at the syscall layer, which this kernel offers only
//! through tracepoints (no kprobes; fentry programs are refused with EPERM).
//! An enabled syscall tracepoint sends every syscall of every process
//! through the kernel's traced slow path and fills a perf trace record
//! before the program runs, so most of that cost is not BPF run time.
//!
//! Never used by `sessionwatch run`.

use std::path::Path;

use aya::maps::{MapData, RingBuf};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope};
use aya::programs::{RawTracePoint, TracePoint, UProbe};
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
    /// The agent's internal sites with the minimal-capture programs instead
    /// of the empty ones (fails when the library has no internal sites: the
    /// programs assume their `_ex` calling convention). The records must be
    /// drained ([`EmptyProbes::drain`]) or the ring fills and the programs
    /// stop doing the work they measure.
    AgentMinimal,
    /// [`FloorSites::AgentMinimal`] plus an empty program on each syscall
    /// tracepoint `sessionwatch run` attaches by default (same syscalls,
    /// every process): the floor of uprobe capture with fd attribution.
    AgentMinimalSyscalls,
    /// [`FloorSites::AgentMinimal`] plus an empty raw-tracepoint program on
    /// `sys_enter` and `sys_exit` (every syscall of every task, no perf
    /// trace record): what the syscall layer would cost reached that way.
    AgentMinimalRawSyscalls,
}

impl FloorSites {
    /// The minimal-capture programs rather than the empty ones.
    fn minimal(self) -> bool {
        matches!(
            self,
            FloorSites::AgentMinimal
                | FloorSites::AgentMinimalSyscalls
                | FloorSites::AgentMinimalRawSyscalls
        )
    }
}

/// Loaded and attached empty probes; detached when dropped.
pub struct EmptyProbes {
    _ebpf: Ebpf,
    /// The ring of the minimal-capture programs.
    ring: Option<RingBuf<MapData>>,
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
        let ring_size = if sites.minimal() { 8 << 20 } else { 4096 };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("EVENTS", ring_size)
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
            (s, Some(at)) if s != FloorSites::Exported => {
                vec![Site::Offset(at.read), Site::Offset(at.write)]
            }
            (s, None) if s.minimal() => {
                return Err(CaptureError::Load(format!(
                    "{}: no internal read/write sites for the minimal-capture floor",
                    library.display()
                )));
            }
            _ => ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"]
                .into_iter()
                .map(Site::Symbol)
                .collect(),
        };
        let programs = if sites.minimal() {
            ["sw_floor_min", "sw_floor_min_ret"]
        } else {
            ["sw_floor", "sw_floor_ret"]
        };
        let mut points = Vec::new();
        for prog in programs {
            let up: &mut UProbe = program(&mut ebpf, prog)?;
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
        if sites == FloorSites::AgentMinimalSyscalls {
            let prog = "sw_floor_sys_tp";
            let tp: &mut TracePoint = program(&mut ebpf, prog)?;
            tp.load()
                .map_err(|e| CaptureError::Load(format!("{prog}: {e}")))?;
            for (category, name) in super::live::default_syscall_tracepoints() {
                tp.attach(category, name)
                    .map_err(|e| CaptureError::Attach {
                        program: prog.to_owned(),
                        target: format!("{category}:{name}"),
                        error: e.to_string(),
                    })?;
                points.push(format!("{prog}@{category}:{name}"));
            }
        }
        if sites == FloorSites::AgentMinimalRawSyscalls {
            let prog = "sw_floor_raw_sys";
            let rtp: &mut RawTracePoint = program(&mut ebpf, prog)?;
            rtp.load()
                .map_err(|e| CaptureError::Load(format!("{prog}: {e}")))?;
            for name in ["sys_enter", "sys_exit"] {
                rtp.attach(name).map_err(|e| CaptureError::Attach {
                    program: prog.to_owned(),
                    target: format!("raw tracepoint {name}"),
                    error: e.to_string(),
                })?;
                points.push(format!("{prog}@raw:{name}"));
            }
        }
        let ring = if sites.minimal() {
            let map = ebpf
                .take_map("EVENTS")
                .ok_or_else(|| CaptureError::Load("map EVENTS missing".into()))?;
            Some(RingBuf::try_from(map).map_err(|e| CaptureError::Load(e.to_string()))?)
        } else {
            None
        };
        Ok(EmptyProbes {
            _ebpf: ebpf,
            ring,
            points,
        })
    }

    /// Consumes every record the minimal-capture programs wrote (call it on a
    /// short timer, as the agent drains its ring); returns how many. A no-op
    /// for the empty programs.
    pub fn drain(&mut self) -> usize {
        let Some(ring) = self.ring.as_mut() else {
            return 0;
        };
        let mut n = 0;
        while ring.next().is_some() {
            n += 1;
        }
        n
    }
}

/// Program `name` of the object as its concrete type.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, CaptureError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| CaptureError::Load(format!("program {name} missing")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| CaptureError::Load(e.to_string()))
}
