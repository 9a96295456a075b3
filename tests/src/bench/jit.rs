//! The JIT image of a loaded program, for profiling the datapath where `perf` cannot
//! annotate BPF (no libopcodes) and the machine has no hardware counters.
//!
//! `cargo xtask bench packet --jit bench_lb` writes `target/bench/bench_lb.jit.bin`. Then:
//!
//! ```sh
//! echo 1 > /proc/sys/net/core/bpf_jit_kallsyms
//! perf record -e cpu-clock -F 25000 -o /tmp/p.data -- cargo xtask bench packet
//! perf script -i /tmp/p.data -F ip,sym,symoff | grep '_bench_lb+'   # offsets into the image
//! objdump -D -b binary -mi386:x86-64 target/bench/bench_lb.jit.bin  # the instructions
//! ```
//!
//! Counting samples per offset and reading them against the disassembly shows where the
//! time goes (map addresses differ between loads; offsets do not).

use std::{
    os::fd::{AsFd, AsRawFd},
    path::Path,
};

use anyhow::{Context, Result, ensure};
use aya::{Ebpf, programs::Xdp};

/// `BPF_OBJ_GET_INFO_BY_FD`.
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Offsets in `struct bpf_prog_info` (include/uapi/linux/bpf.h): `tag[8]`,
/// `jited_prog_len`, `jited_prog_insns`.
const TAG_OFF: usize = 8;
const JITED_LEN_OFF: usize = 16;
const JITED_INSNS_OFF: usize = 24;
/// Bytes of `bpf_prog_info` passed in (the kernel fills what it knows of them).
const INFO_LEN: usize = 256;

/// `bpf_attr.info`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn prog_info(fd: i32, info: &mut [u8; INFO_LEN]) -> Result<()> {
    let attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: INFO_LEN as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` and the buffer it points at live across the call, and the kernel
    // writes at most `info_len` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            size_of::<InfoAttr>(),
        )
    };
    ensure!(
        rc == 0,
        "BPF_OBJ_GET_INFO_BY_FD: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Writes the JIT image of the loaded XDP program `prog` to `path`; returns its length
/// and the program tag (the hex in its `bpf_prog_<tag>_<name>` symbol).
pub fn dump(ebpf: &mut Ebpf, prog: &str, path: &Path) -> Result<(usize, String)> {
    let xdp: &mut Xdp = ebpf
        .program_mut(prog)
        .with_context(|| format!("no program {prog}"))?
        .try_into()?;
    let fd = xdp.fd()?.as_fd().as_raw_fd();
    let mut info = [0u8; INFO_LEN];
    prog_info(fd, &mut info)?;
    let len = u32::from_ne_bytes(info[JITED_LEN_OFF..JITED_LEN_OFF + 4].try_into()?) as usize;
    ensure!(len > 0, "{prog} has no JIT image (is the BPF JIT off?)");
    let tag: String = info[TAG_OFF..TAG_OFF + 8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut image = vec![0u8; len];
    let mut ask = [0u8; INFO_LEN];
    ask[JITED_LEN_OFF..JITED_LEN_OFF + 4].copy_from_slice(&(len as u32).to_ne_bytes());
    ask[JITED_INSNS_OFF..JITED_INSNS_OFF + 8]
        .copy_from_slice(&(image.as_mut_ptr() as u64).to_ne_bytes());
    prog_info(fd, &mut ask)?;
    std::fs::write(path, &image).with_context(|| format!("writing {}", path.display()))?;
    Ok((len, tag))
}
