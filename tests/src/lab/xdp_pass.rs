//! A two-instruction XDP program (`return XDP_PASS`) for the switch ports that face the LB
//! nodes.
//!
//! Why: a frame that `vip_lb` sends back with `XDP_TX` lands in the peer veth's ring, but
//! the kernel (veth_xdp_flush) only schedules the peer's NAPI poll when the peer has an
//! XDP program of its own. With GRO alone on the peer the frame waits until some other
//! packet wakes the poll: seen here as SYNs arriving at the backend 0.2-1.2 s late.
//! Loaded with raw `bpf()` calls so the lab needs no eBPF build of its own.

use std::os::fd::{FromRawFd, OwnedFd};

use super::{LabError, netns};

const BPF_PROG_LOAD: i64 = 5;
const BPF_LINK_CREATE: i64 = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;

/// `r0 = XDP_PASS (2); exit`.
const PROGRAM: [u8; 16] = [
    0xb7, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // mov64 r0, 2
    0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
];

fn bpf(cmd: i64, attr: &mut [u8; 128]) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size passed; the kernel reads only
    // the fields of `cmd` and copies out nothing we keep pointers into.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new file descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// Attaches `return XDP_PASS` to `ifname` in namespace `ns` through a BPF link. The
/// program stays attached while the returned descriptor is open (or the device exists).
pub fn attach(ns: &str, ifname: &str) -> Result<OwnedFd, LabError> {
    let ifname = ifname.to_string();
    let what = format!("attaching an XDP_PASS program to {ifname} in {ns}");
    netns::within(ns, move || -> std::io::Result<OwnedFd> {
        let license = c"GPL";
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(PROGRAM.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[48..58].copy_from_slice(b"lab_wakeup");
        let prog = bpf(BPF_PROG_LOAD, &mut attr)?;
        let cname = std::ffi::CString::new(ifname).expect("no NUL in an interface name");
        // SAFETY: a valid C string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut attr = [0u8; 128];
        use std::os::fd::AsRawFd;
        attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&index.to_ne_bytes());
        attr[8..12].copy_from_slice(&BPF_XDP.to_ne_bytes());
        bpf(BPF_LINK_CREATE, &mut attr)
    })?
    .map_err(|source| LabError::Io { what, source })
}
