//! Raw frames onto the lab's shared segment (AF_PACKET), for the bad-traffic scenario:
//! malformed and non-VIP packets sent straight at an LB node's interface.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::{LabError, netns};

/// Sends every frame in `frames` out of interface `ifname` of namespace `ns`.
/// Returns how many were sent.
pub fn send_frames(ns: &str, ifname: &str, frames: Vec<Vec<u8>>) -> Result<usize, LabError> {
    let ifname = ifname.to_string();
    netns::within(ns, move || -> Result<usize, LabError> {
        let io = |what: &str| LabError::Io {
            what: what.to_string(),
            source: std::io::Error::last_os_error(),
        };
        // SAFETY: plain socket calls with correctly sized, initialised arguments.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                return Err(io("opening an AF_PACKET socket"));
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let cname = CString::new(ifname.clone()).expect("no NUL in an interface name");
            let index = libc::if_nametoindex(cname.as_ptr());
            if index == 0 {
                return Err(io(&format!("finding interface {ifname}")));
            }
            let mut sent = 0;
            for f in &frames {
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_ifindex = index as i32;
                addr.sll_halen = 6;
                addr.sll_addr[..6].copy_from_slice(&f[..6]);
                let rc = libc::sendto(
                    fd.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                if rc >= 0 {
                    sent += 1;
                }
            }
            Ok(sent)
        }
    })?
}

/// The MAC address of `ifname` in namespace `ns`, as bytes.
pub fn mac_of(ns: &str, ifname: &str) -> Result<[u8; 6], LabError> {
    let text = super::cmd::run_in(ns, "cat", &[&format!("/sys/class/net/{ifname}/address")])?;
    let mut mac = [0u8; 6];
    for (i, part) in text.trim().split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    Ok(mac)
}
