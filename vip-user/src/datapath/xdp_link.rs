//! Attaching XDP programs through pinned bpf_links, so an attachment outlives vipd: a
//! restarted vipd adopts the pinned link and atomically swaps its own program in
//! (`bpf_link_update`), and `vipd down` removes the pin, which detaches.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramError, Xdp,
    links::{FdLink, LinkError, PinnedLink},
    xdp::{XdpLink, XdpMode},
};

use crate::config::XdpMode as ModeSetting;

/// Why attaching or detaching failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkSetupError {
    /// The interface does not exist.
    #[error("interface {iface} does not exist: check [datapath] interfaces (`ip link` lists them)")]
    NoInterface {
        /// The interface.
        iface: String,
    },
    /// The kernel refused the attachment.
    #[error(
        "attaching XDP to {iface} in {mode:?} mode failed: {source}. With xdp_mode = \"native\" the driver must support XDP; try \"auto\" or \"generic\"; another XDP program already attached also refuses it"
    )]
    Attach {
        /// The interface.
        iface: String,
        /// The mode.
        mode: ModeSetting,
        /// The error.
        #[source]
        source: ProgramError,
    },
    /// The kernel gave a netlink attachment, which cannot be pinned.
    #[error(
        "XDP on {iface} was attached without a bpf_link (kernel older than 5.9?), so it cannot be pinned to outlive vipd"
    )]
    NotPinnable {
        /// The interface.
        iface: String,
    },
    /// Pinning or reading a pin failed.
    #[error("pinning the XDP link at {path}: {message}. Is bpffs mounted at /sys/fs/bpf?")]
    Pin {
        /// The pin.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// What [`attach_pinned`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new attachment, now pinned.
    New,
    /// A pinned attachment from an earlier vipd: its program was replaced atomically, no
    /// packet was left without a program.
    Adopted,
}

/// Pin path of the link on `iface` under `dir`.
pub fn link_pin(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("link_{iface}"))
}

fn aya_mode(m: ModeSetting) -> XdpMode {
    match m {
        ModeSetting::Native => XdpMode::Driver,
        ModeSetting::Generic => XdpMode::Skb,
        // No flag: the kernel uses the driver hook if there is one, else generic.
        ModeSetting::Auto => XdpMode::Default,
    }
}

/// Attaches `prog` (loaded) to `iface` through a link pinned at `pin`, or adopts the link
/// already pinned there.
pub fn attach_pinned(
    prog: &mut Xdp,
    iface: &str,
    mode: ModeSetting,
    pin: &Path,
) -> Result<Attached, LinkSetupError> {
    let pin_err = |message: String| LinkSetupError::Pin {
        path: pin.to_owned(),
        message,
    };
    if pin.exists() {
        let link = PinnedLink::from_pin(pin).map_err(|e| pin_err(e.to_string()))?;
        let fd: FdLink = link.into();
        let xdp_link = XdpLink::try_from(fd).map_err(|e: LinkError| pin_err(e.to_string()))?;
        match prog.attach_to_link(xdp_link) {
            Ok(id) => {
                // The pin keeps the link; closing our fd must not detach it, so take it
                // out of the program (whose drop would detach what it owns).
                let owned = prog.take_link(id).map_err(|e| pin_err(e.to_string()))?;
                drop(FdLink::try_from(owned).map_err(|e| pin_err(e.to_string()))?);
                return Ok(Attached::Adopted);
            }
            Err(e) => {
                // A link whose interface went away cannot be updated: replace it.
                tracing::warn!(pin = %pin.display(), error = %e, "cannot adopt the pinned XDP link; attaching anew");
                std::fs::remove_file(pin).map_err(|e| pin_err(e.to_string()))?;
            }
        }
    }
    if !interface_exists(iface) {
        return Err(LinkSetupError::NoInterface {
            iface: iface.to_string(),
        });
    }
    let id = prog
        .attach(iface, aya_mode(mode))
        .map_err(|source| LinkSetupError::Attach {
            iface: iface.to_string(),
            mode,
            source,
        })?;
    let link = prog.take_link(id).map_err(|e| pin_err(e.to_string()))?;
    let fd = FdLink::try_from(link).map_err(|_| LinkSetupError::NotPinnable {
        iface: iface.to_string(),
    })?;
    if let Some(dir) = pin.parent() {
        std::fs::create_dir_all(dir).map_err(|e| pin_err(e.to_string()))?;
    }
    let pinned = fd.pin(pin).map_err(|e| pin_err(e.to_string()))?;
    // Closing our fd is fine: the pin holds the link.
    drop(pinned);
    Ok(Attached::New)
}

/// Detaches by removing the pin (the last reference to the link). Returns false if there
/// was no pin.
pub fn detach_pinned(pin: &Path) -> Result<bool, LinkSetupError> {
    match std::fs::remove_file(pin) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(LinkSetupError::Pin {
            path: pin.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// True if an interface of that name exists.
pub fn interface_exists(iface: &str) -> bool {
    interface_index(iface).is_some()
}

/// The ifindex of an interface.
pub fn interface_index(iface: &str) -> Option<u32> {
    let c = std::ffi::CString::new(iface).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Addresses configured on an interface (getifaddrs).
pub fn interface_addresses(iface: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills head with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        // SAFETY: ifa_name is a NUL-terminated string.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() == iface.as_bytes() && !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            if family == libc::AF_INET {
                // SAFETY: family is AF_INET.
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(IpAddr::from(u32::from_be(sa.sin_addr.s_addr).to_be_bytes()));
            } else if family == libc::AF_INET6 {
                // SAFETY: family is AF_INET6.
                let sa = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(IpAddr::from(sa.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out
}
