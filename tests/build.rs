//! Finds the bench-only eBPF objects `vip-bench` and `vip-mpps` (built by `cargo xtask
//! build` / `bench` next to `vip-lb`). When one is missing, an empty placeholder is
//! embedded instead so that the rest of the test crate still builds; `vip-bench` then
//! says how to build it.

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
    for (file, var) in [
        ("vip-bench", "VIP_BENCH_OBJECT"),
        ("vip-mpps", "VIP_MPPS_OBJECT"),
    ] {
        let object = dir.join(file);
        println!("cargo:rerun-if-changed={}", object.display());
        let path = if object.is_file() {
            object
        } else {
            let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
            let placeholder = out.join(format!("{file}.missing"));
            fs::write(&placeholder, b"").expect("writing the placeholder object");
            placeholder
        };
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
