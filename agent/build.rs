//! Embeds the kernel programs (built by `cargo xtask build-ebpf`) into the
//! agent.
//!
//! The object is taken from `SESSIONWATCH_EBPF_OBJECT`, or from the default
//! output path of `ebpf/programs`. When it does not exist the agent still
//! builds (so the analysis crates and unit tests need no eBPF toolchain);
//! `LiveCapture::start` then fails with a message saying to build with
//! `cargo xtask build`.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sessionwatch_ebpf_object)");
    println!("cargo::rerun-if-env-changed=SESSIONWATCH_EBPF_OBJECT");
    println!("cargo::rerun-if-changed=build.rs");

    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let programs = manifest.join("../ebpf/programs");
    let default = programs.join("target/bpfel-unknown-none/release/sessionwatch");
    let object = env::var_os("SESSIONWATCH_EBPF_OBJECT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or(default);
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("sessionwatch.bpf.o");

    if object.is_file() {
        println!("cargo::rerun-if-changed={}", object.display());
        fs::copy(&object, &out).unwrap_or_else(|e| panic!("copying {}: {e}", object.display()));
        println!("cargo::rustc-cfg=sessionwatch_ebpf_object");
    } else {
        // Watch the programs' directory so that building the object later
        // (`cargo xtask build-ebpf`) re-runs this script.
        println!("cargo::rerun-if-changed={}", programs.display());
        println!(
            "cargo::warning=eBPF object {} not found: building the agent without live capture \
             (run `cargo xtask build` for a complete agent)",
            object.display()
        );
        let _ = fs::remove_file(&out);
    }
}
