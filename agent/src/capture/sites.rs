//! Where the TLS I/O probes go inside a library: the exported `SSL_read` /
//! `SSL_write` (and `_ex`) entry points, or the internal functions they
//! all call.
//!
//! # Why not always the exported symbols
//!
//! A uprobe replaces the first byte of the probed instruction with `int3`.
//! After the BPF program ran, the kernel must execute the displaced
//! instruction. x86 emulates a few instructions in the trap handler (`push
//! reg`, `nop`, `jmp`/`call`/`jcc` with relative targets); every other one is
//! copied to an out-of-line slot and **single-stepped**, which costs a second
//! trap (`#DB`) and, in a virtual machine, is by far the dominant cost. On the
//! machines this was measured on (see BENCHMARKS.md, "kernel cost per hook"),
//! a probe on a function starting with `sub $0x18,%rsp` cost ~10–14 µs per
//! hit, one starting with `push %rbp` ~1 µs.
//!
//! OpenSSL 1.1.1 and 3.x are built so that `SSL_read` and `SSL_read_ex` are
//! thin wrappers (`sub $N,%rsp` first: stack protector and a local
//! `readbytes`) around one internal function, `ssl_read_internal(SSL *s,
//! void *buf, size_t num, size_t *readbytes)`, which returns 1 on success and
//! starts by pushing callee-saved registers; likewise `SSL_write`,
//! `SSL_write_ex` → `ssl_write_internal`. The internal functions have the
//! calling convention of the `_ex` variants, so the `_ex` entry programs and
//! the shared return program apply unchanged, two probes cover four entry
//! points, and each hit is an emulated `push`.
//!
//! The internal functions are not exported (no symbol in a stripped
//! distribution library). They are found from the wrappers' code: the
//! direct `call rel32` targets in the first bytes of `SSL_read` and of
//! `SSL_read_ex` are intersected — both wrappers call the same internal
//! function — and the target must lie in executable code and start with a
//! `push` (optionally after `endbr64`). Anything else (BoringSSL, LibreSSL,
//! an unusual build, no `_ex` variants) keeps the exported symbols.
#![forbid(unsafe_code)]

use std::path::Path;

use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _, SectionKind};

/// Bytes of a wrapper scanned for its call to the internal function. The
/// wrappers are a handful of instructions before that call (stack protector
/// setup, argument checks).
const WRAPPER_SCAN: u64 = 64;

/// Probe sites of the read and write paths of one library, as file offsets
/// (what a uprobe attaches to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InternalSites {
    /// File offset of the probe on the shared read function.
    pub read: u64,
    /// File offset of the probe on the shared write function.
    pub write: u64,
}

/// Finds the internal read/write functions shared by `SSL_read`/`SSL_read_ex`
/// and `SSL_write`/`SSL_write_ex`. `None` when the file does not have that
/// shape; the caller then probes the exported symbols.
pub(crate) fn internal_sites(path: &Path) -> Option<InternalSites> {
    let data = std::fs::read(path).ok()?;
    internal_sites_in(&data)
}

/// [`internal_sites`] on the bytes of an ELF file.
pub(crate) fn internal_sites_in(data: &[u8]) -> Option<InternalSites> {
    let obj = object::File::parse(data).ok()?;
    if obj.architecture() != object::Architecture::X86_64 {
        // The instruction patterns below are x86-64 only.
        return None;
    }
    let read = shared_callee(&obj, "SSL_read", "SSL_read_ex")?;
    let write = shared_callee(&obj, "SSL_write", "SSL_write_ex")?;
    if read == write {
        return None;
    }
    Some(InternalSites {
        read: file_offset(&obj, read)?,
        write: file_offset(&obj, write)?,
    })
}

/// Address of a defined function symbol (dynamic table first: stripped
/// libraries only have that one).
fn symbol_address(obj: &object::File<'_>, name: &str) -> Option<u64> {
    obj.dynamic_symbols()
        .chain(obj.symbols())
        .find(|s| !s.is_undefined() && s.address() != 0 && s.name() == Ok(name))
        .map(|s| s.address())
}

/// `len` bytes of executable code at virtual address `addr`.
fn code_at<'d>(obj: &object::File<'d>, addr: u64, len: u64) -> Option<&'d [u8]> {
    obj.sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .find(|s| addr >= s.address() && addr < s.address().saturating_add(s.size()))
        .and_then(|s| {
            let avail = s.address() + s.size() - addr;
            s.data_range(addr, len.min(avail)).ok().flatten()
        })
}

/// Targets of every `e8 rel32` byte pattern in the first bytes of a
/// function. Without a disassembler some of these may be operand bytes; the
/// caller only trusts a target that two different wrappers agree on and
/// that starts like a function.
fn call_targets(obj: &object::File<'_>, addr: u64) -> Vec<u64> {
    let Some(code) = code_at(obj, addr, WRAPPER_SCAN) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, w) in code.windows(5).enumerate() {
        if w[0] != 0xe8 {
            continue;
        }
        let rel = i32::from_le_bytes([w[1], w[2], w[3], w[4]]);
        let next = addr + i as u64 + 5;
        out.push(next.wrapping_add_signed(i64::from(rel)));
    }
    out
}

/// The one function both wrappers call directly, if it starts with an
/// instruction the kernel emulates; returns the probe address (after an
/// `endbr64`, which leaves the stack untouched so a return probe still
/// finds the return address at `rsp`).
fn shared_callee(obj: &object::File<'_>, a: &str, b: &str) -> Option<u64> {
    let a_addr = symbol_address(obj, a)?;
    let b_addr = symbol_address(obj, b)?;
    let a_calls = call_targets(obj, a_addr);
    let b_calls = call_targets(obj, b_addr);
    let mut shared: Vec<u64> = a_calls
        .iter()
        .copied()
        .filter(|t| b_calls.contains(t))
        .collect();
    shared.sort_unstable();
    shared.dedup();
    let [target] = shared[..] else {
        return None;
    };
    let head = code_at(obj, target, 6)?;
    let site = match head {
        [0xf3, 0x0f, 0x1e, 0xfa, rest @ ..] if starts_with_push(rest) => target + 4,
        _ if starts_with_push(head) => target,
        _ => return None,
    };
    Some(site)
}

/// `push r64` (`50+r`, or `41 50+r` for r8–r15): emulated by the uprobe
/// trap handler, no single step.
fn starts_with_push(code: &[u8]) -> bool {
    matches!(code, [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..])
}

/// File offset of a virtual address (through the loadable segment holding it).
fn file_offset(obj: &object::File<'_>, addr: u64) -> Option<u64> {
    obj.segments().find_map(|seg| {
        let (off, size) = seg.file_range();
        let start = seg.address();
        (addr >= start && addr < start.saturating_add(size)).then(|| addr - start + off)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_patterns() {
        assert!(starts_with_push(&[0x55, 0x48]));
        assert!(starts_with_push(&[0x41, 0x55]));
        assert!(starts_with_push(&[0x53]));
        assert!(!starts_with_push(&[0x48, 0x83, 0xec, 0x18]));
        assert!(!starts_with_push(&[0x41, 0x89]));
        assert!(!starts_with_push(&[]));
    }

    #[test]
    fn not_an_elf_file() {
        assert_eq!(internal_sites_in(b"definitely not ELF"), None);
    }

    /// On the system OpenSSL (Debian's libssl3 is 3.0.x), both wrapper pairs
    /// resolve to two distinct functions that start with a push.
    #[test]
    fn system_libssl_has_internal_sites() {
        let path = Path::new("/lib/x86_64-linux-gnu/libssl.so.3");
        if !path.exists() || std::env::consts::ARCH != "x86_64" {
            eprintln!("SKIP: {} not present", path.display());
            return;
        }
        let data = std::fs::read(path).expect("read libssl");
        let sites = internal_sites_in(&data).expect("internal sites of libssl.so.3");
        assert_ne!(sites.read, sites.write);
        for off in [sites.read, sites.write] {
            let b = data
                .get(off as usize..off as usize + 2)
                .expect("offset in file");
            assert!(starts_with_push(b), "{off:#x}: {b:02x?}");
        }
    }
}
