//! The backend role: `vip_decap` on a backend's interface removes vip's tunnel header
//! from packets addressed to this host's tunnel endpoints, so the kernel's socket on the
//! VIP (bound on `lo`) answers the client directly. Pinned like the LB, so it survives
//! the command that attached it.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use crate::{
    config::XdpMode,
    datapath::{DatapathError, decap::Decap},
    xdp_link::{self, Attached},
};

/// Why the decap program could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    /// Loading or writing its map failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// No address to accept tunnels for.
    #[error(
        "interface {0} has no IP address and none was given: pass --local ADDR (the address the LB tunnels to)"
    )]
    NoAddress(String),
    /// Attaching failed.
    #[error(transparent)]
    Link(#[from] xdp_link::LinkSetupError),
}

/// Pin directory of the decap role.
pub fn pin_dir(instance: &str) -> PathBuf {
    crate::config::pin_dir(instance).join("decap")
}

/// Loads vip_decap (maps pinned under `dir`), sets the local tunnel endpoints and attaches
/// it to `iface` through a pinned link.
pub fn attach(
    iface: &str,
    locals: &[IpAddr],
    mode: XdpMode,
    dir: &Path,
) -> Result<(Attached, Vec<IpAddr>), DecapError> {
    let locals = if locals.is_empty() {
        xdp_link::interface_addresses(iface)
            .into_iter()
            .filter(|a| !matches!(a, IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80))
            .collect()
    } else {
        locals.to_vec()
    };
    if locals.is_empty() {
        return Err(DecapError::NoAddress(iface.to_string()));
    }
    let mut decap = Decap::load(Some(dir))?;
    for a in &locals {
        decap.add_local(*a)?;
    }
    let prog = decap.program_mut();
    let how = xdp_link::attach_pinned(prog, iface, mode, &xdp_link::link_pin(dir, iface))?;
    Ok((how, locals))
}

/// Detaches vip_decap from `iface`; removes the pinned map when no link is left.
pub fn detach(iface: &str, dir: &Path) -> Result<bool, DecapError> {
    let removed = xdp_link::detach_pinned(&xdp_link::link_pin(dir, iface))?;
    let links_left = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("link_"))
        })
        .unwrap_or(false);
    if !links_left {
        for map in [vip_common::MAP_DECAP_ADDRS, vip_common::MAP_REASONS] {
            let _ = std::fs::remove_file(dir.join(map));
        }
        let _ = std::fs::remove_dir(dir);
    }
    Ok(removed)
}
