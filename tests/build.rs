//! Finds the bench-only eBPF object `vip-bench` (built by `cargo xtask build` / `bench`
//! next to `vip-lb`). When it is missing, an empty placeholder is embedded instead so
//! that the rest of the test crate still builds; `vip-bench` then says how to build it.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=VIP_EBPF_DIR");
    let dir = match env::var_os("VIP_EBPF_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
            env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join("../target"))
                .join("bpfel-unknown-none/release")
        }
    };
    let object = dir.join("vip-bench");
    println!("cargo:rerun-if-changed={}", object.display());
    let path = if object.is_file() {
        object
    } else {
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
        let placeholder = out.join("vip-bench.missing");
        fs::write(&placeholder, b"").expect("writing the placeholder object");
        placeholder
    };
    println!("cargo:rustc-env=VIP_BENCH_OBJECT={}", path.display());
}
