//! `cargo xtask build`: the eBPF objects first (they are embedded in `vipd`), then the
//! user-space crates.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{setup, target_dir, workspace_root};

/// Environment that a parent cargo/rustup sets and that must not leak into the nested
/// eBPF build (it would pick the host compiler or host flags).
const LEAKY_ENV: &[&str] = &[
    "RUSTC",
    "RUSTDOC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTUP_TOOLCHAIN",
    "CARGO_BUILD_TARGET",
];

/// Directory holding the built `vip-lb` and `vip-decap` objects.
pub fn ebpf_dir() -> PathBuf {
    target_dir().join("bpfel-unknown-none/release")
}

/// Builds the eBPF crate for `bpfel-unknown-none`, release, with BTF.
pub fn ebpf() -> Result<()> {
    setup::sh(&mut cargo_ebpf("build"))
}

/// `cargo SUBCOMMAND` on the eBPF crate for `bpfel-unknown-none`, release, with the
/// toolchain, environment and flags of the real build (`cargo xtask lint` runs `clippy`
/// with exactly these, so it shares the build's `core`).
pub fn cargo_ebpf(subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    for var in LEAKY_ENV {
        cmd.env_remove(var);
    }
    if nightly_has_rust_src() {
        cmd.arg("+nightly");
    } else {
        // Debian's stable-channel compiler takes -Z flags with RUSTC_BOOTSTRAP.
        cmd.arg(format!("+{}", setup::BPF_TOOLCHAIN))
            .env("RUSTC_BOOTSTRAP", "1");
    }
    cmd.current_dir(workspace_root())
        .args([subcommand, "--locked", "--release", "-p", "vip-ebpf"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(target_dir())
        // target-cpu=v3: 32-bit ALU and jumps (kernel 5.1+). Without them every 32-bit
        // value costs a shift pair to clear its upper half before each compare; on the
        // established path that is 589 -> 568 instructions.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "-C",
                "debuginfo=2",
                "-C",
                "link-arg=--btf",
                "-C",
                "target-cpu=v3",
            ]
            .join("\x1f"),
        )
        .env("PATH", path_with_cargo_bin());
    cmd
}

/// Builds everything: eBPF objects, then the user-space workspace.
pub fn all(release: bool) -> Result<()> {
    ebpf()?;
    let mut cmd = cargo_user();
    cmd.args(["build", "--locked", "--workspace", "--exclude", "vip-ebpf"]);
    if release {
        cmd.arg("--release");
    }
    setup::sh(&mut cmd)
}

/// Runs one of the workspace's binaries (after the eBPF build).
pub fn run_bin(package: &str, bin: &str, release: bool, args: &[String]) -> Result<()> {
    let mut cmd = cargo_user();
    cmd.args(["run", "--locked", "-p", package, "--bin", bin]);
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--").args(args);
    setup::sh(&mut cmd)
}

/// Builds the binaries the namespace labs start (`vipd`, `vipctl`, `vip-lab-server`):
/// `cargo test` and `cargo run --bin vip-demo` alone do not build other packages' binaries.
pub fn lab_bins(release: bool) -> Result<()> {
    let mut cmd = cargo_user();
    cmd.args([
        "build",
        "--locked",
        "-p",
        "vip-user",
        "-p",
        "vip-tests",
        "--bins",
    ]);
    if release {
        cmd.arg("--release");
    }
    setup::sh(&mut cmd)
}

/// A host `cargo` that knows where the eBPF objects are.
pub fn cargo_user() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .env("VIP_EBPF_DIR", ebpf_dir())
        .env("PATH", path_with_cargo_bin());
    cmd
}

fn path_with_cargo_bin() -> String {
    format!(
        "{}:{}",
        setup::cargo_bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn nightly_has_rust_src() -> bool {
    Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|sysroot| sysroot.join("lib/rustlib/src/rust/library/core").is_dir())
}
