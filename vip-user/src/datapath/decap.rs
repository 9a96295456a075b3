//! The backend side: `vip_decap` on a backend's interface removes vip's tunnel header
//! from packets addressed to this host's tunnel endpoints, so the kernel's socket on the
//! VIP (bound on `lo`) answers the client directly. [`Decap`] is the loaded program and its
//! map of local tunnel endpoints; [`attach`] and [`detach`] give a backend that role,
//! pinned like the LB so it survives the command that attached it.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuArray},
    programs::Xdp,
};
use vip_common::{MAP_DECAP_ADDRS, MAP_REASONS, Reason, VipKey};

use super::{
    DatapathError, ebpf, map_err, prepare_pin_dir, vip_addr_marker,
    xdp_link::{self, Attached},
};
use crate::config::XdpMode;

/// Most local tunnel endpoints one backend decapsulates for.
pub const MAX_DECAP_ADDRS: u32 = 64;

/// The loaded `vip_decap` program.
pub struct Decap {
    ebpf: Ebpf,
    addrs: HashMap<MapData, VipKey, u32>,
    reasons: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Decap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decap").finish_non_exhaustive()
    }
}

impl Decap {
    /// Loads the embedded `vip_decap`; with `pin_dir`, its maps are pinned (or adopted)
    /// there (use a directory of its own, not the load balancer's).
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, DatapathError> {
        prepare_pin_dir(pin_dir, MAP_DECAP_ADDRS)?;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(MAP_DECAP_ADDRS, MAX_DECAP_ADDRS);
        let paths: Vec<(&'static str, PathBuf)> = pin_dir
            .map(|d| {
                [MAP_DECAP_ADDRS, MAP_REASONS]
                    .iter()
                    .map(|n| (*n, d.join(n)))
                    .collect()
            })
            .unwrap_or_default();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(ebpf::VIP_DECAP)
            .map_err(|source| DatapathError::Load {
                program: ebpf::PROG_DECAP,
                pin_dir: pin_dir.map(Path::to_path_buf),
                source: Box::new(source),
            })?;
        let prog: &mut Xdp = ebpf
            .program_mut(ebpf::PROG_DECAP)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::MissingMap {
                name: ebpf::PROG_DECAP,
            })?;
        prog.load().map_err(|source| DatapathError::Program {
            program: ebpf::PROG_DECAP,
            source: Box::new(source),
        })?;
        let addrs = ebpf
            .take_map(MAP_DECAP_ADDRS)
            .ok_or(DatapathError::MissingMap {
                name: MAP_DECAP_ADDRS,
            })?
            .try_into()
            .map_err(map_err(MAP_DECAP_ADDRS, "opening the map"))?;
        let reasons = ebpf
            .take_map(MAP_REASONS)
            .ok_or(DatapathError::MissingMap { name: MAP_REASONS })?
            .try_into()
            .map_err(map_err(MAP_REASONS, "opening the map"))?;
        Ok(Self {
            ebpf,
            addrs,
            reasons,
        })
    }

    /// The XDP program, to attach or to `test_run`.
    pub fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(ebpf::PROG_DECAP)
            .expect("loaded in Decap::load")
            .try_into()
            .expect("vip_decap is an XDP program")
    }

    /// Decapsulates tunnel packets whose outer destination is `addr`.
    pub fn add_local(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        self.addrs
            .insert(vip_addr_marker(addr), 1, 0)
            .map_err(map_err(MAP_DECAP_ADDRS, format!("adding {addr}")))
    }

    /// Stops decapsulating for `addr`.
    pub fn remove_local(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        match self.addrs.remove(&vip_addr_marker(addr)) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(MAP_DECAP_ADDRS, format!("removing {addr}"))(e)),
        }
    }

    /// Packets per reason, summed over CPUs.
    pub fn reason_counts(&self) -> Result<Vec<(Reason, u64)>, DatapathError> {
        super::reason_counts(&self.reasons)
    }
}

/// Why the decap program could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    /// Loading or writing its map failed.
    #[error(transparent)]
    Datapath(Box<DatapathError>),
    /// No address to accept tunnels for.
    #[error(
        "interface {0} has no IP address and none was given: pass --local ADDR (the address the LB tunnels to)"
    )]
    NoAddress(String),
    /// Attaching failed.
    #[error(transparent)]
    Link(#[from] xdp_link::LinkSetupError),
}

impl From<DatapathError> for DecapError {
    fn from(e: DatapathError) -> Self {
        DecapError::Datapath(Box::new(e))
    }
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
        // The instance directory too, if nothing else (an LB) is pinned there.
        if let Some(parent) = dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(removed)
}
