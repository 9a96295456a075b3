//! Finds the eBPF objects that `vipd` embeds. `cargo xtask build` builds them first and
//! says where through `VIP_EBPF_DIR`; a plain `cargo build` looks in the default target
//! directory.

use std::{env, path::PathBuf};

const OBJECTS: [(&str, &str); 2] = [
    ("VIP_LB_OBJECT", "vip-lb"),
    ("VIP_DECAP_OBJECT", "vip-decap"),
];

fn main() {
    println!("cargo:rerun-if-env-changed=VIP_EBPF_DIR");
    let dir = match env::var_os("VIP_EBPF_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
            let target = env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| manifest.join("../target"));
            target.join("bpfel-unknown-none/release")
        }
    };
    for (var, name) in OBJECTS {
        let path = dir.join(name);
        assert!(
            path.is_file(),
            "the eBPF object {} is missing: build with `cargo xtask build` (it installs the \
             eBPF toolchain and builds the XDP programs before vipd), or point VIP_EBPF_DIR \
             at a directory holding vip-lb and vip-decap",
            path.display()
        );
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
