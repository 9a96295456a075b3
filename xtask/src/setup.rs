//! `cargo xtask setup`: installs what building and testing vip needs, following
//! docs/architecture.md ("Building the eBPF side"). Idempotent: every step checks first
//! and does nothing when its result is already there, so running it on every
//! `build`/`test` costs well under a second on a prepared machine.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Debian packages: the compiler/library-source pair that can build `core` for BPF, its
/// clippy (`cargo xtask lint` lints the eBPF crate with it: rustup's clippy belongs to
/// other compilers and cannot build `core` from this source), LLVM 22 for bpf-linker,
/// the tools the namespace labs drive, and qemu for `cargo xtask kernels` (it boots other
/// kernels with software emulation).
const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "rust-web-clippy",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "iproute2",
    "ethtool",
    "nftables",
    "iputils-ping",
    // BIRD 2: the BGP labs run it on the router and the LB nodes (examples/bird).
    "bird2",
    // Election engines of the HA failover labs: VRRPv3 and CARP.
    "keepalived",
    "ucarp",
    // qemu (software emulation) boots Debian's kernels for `cargo xtask kernels`.
    "qemu-system-x86",
];

/// The rustup toolchain name under which Debian's compiler is linked.
pub const BPF_TOOLCHAIN: &str = "vip-bpf";

/// bpf-linker release built against LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

const MANUAL_STEPS: &str = "\
Manual steps (as root, on Debian 12 or similar):
  apt-get update
  apt-get install -y rustc-web cargo-web rust-web-src rust-web-clippy llvm-22-dev \\
      libpolly-22-dev zlib1g-dev libzstd-dev iproute2 ethtool nftables iputils-ping \\
      qemu-system-x86
  PATH=/usr/lib/llvm-22/bin:$PATH LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \\
      cargo install bpf-linker --version 0.13.0 --no-default-features --features llvm-22
  rustup toolchain link vip-bpf /usr
  mount -t bpf bpf /sys/fs/bpf    # if not mounted
Or, with a nightly toolchain that has rust-src: only `cargo install bpf-linker`.";

/// Runs every setup step.
pub fn run() -> Result<()> {
    let root = is_root();
    let missing = missing_packages();
    if !missing.is_empty() {
        if !root || !Path::new("/usr/bin/apt-get").exists() {
            bail!(
                "missing Debian packages {}; run as root on a Debian-like system or \
                 install them yourself.\n{MANUAL_STEPS}",
                missing.join(" ")
            );
        }
        eprintln!("setup: installing {}", missing.join(" "));
        sh(Command::new("apt-get").args(["update", "-q"]))?;
        sh(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !has_bpf_linker() {
        eprintln!(
            "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
        );
        let path = format!(
            "{LLVM_PREFIX}/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        sh(Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--version"])
            .arg(BPF_LINKER_VERSION)
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", path)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX))
        .context(MANUAL_STEPS)?;
    }
    if !has_linked_toolchain() {
        eprintln!("setup: linking Debian's rustc as the rustup toolchain `{BPF_TOOLCHAIN}`");
        sh(Command::new("rustup").args(["toolchain", "link", BPF_TOOLCHAIN, "/usr"]))
            .context(MANUAL_STEPS)?;
    }
    if root {
        mount_bpffs()?;
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn missing_packages() -> Vec<&'static str> {
    let Ok(out) = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Status}\\n"])
        .args(PACKAGES)
        .output()
    else {
        return PACKAGES.to_vec();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    PACKAGES
        .iter()
        .copied()
        .filter(|p| !text.lines().any(|l| l == format!("{p} installed")))
        .collect()
}

/// Where `cargo install` puts binaries.
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        })
        .join("bin")
}

fn has_bpf_linker() -> bool {
    Command::new(cargo_bin_dir().join("bpf-linker"))
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn has_linked_toolchain() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.split_whitespace().next() == Some(BPF_TOOLCHAIN))
        })
}

fn mount_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    eprintln!("setup: mounting bpffs at /sys/fs/bpf");
    sh(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

/// Runs a command, failing with its name when it does not succeed.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
