//! The backend side: the loaded `vip_decap` program and its map of local tunnel
//! endpoints.

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

use super::{DatapathError, map_err, prepare_pin_dir, vip_addr_marker};
use crate::ebpf;

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
            loader.map_pin_path(*name, path.as_path());
        }
        let mut ebpf = loader
            .load(ebpf::VIP_DECAP)
            .map_err(|source| DatapathError::Load {
                program: ebpf::PROG_DECAP,
                pin_dir: pin_dir.map(Path::to_path_buf),
                source,
            })?;
        let prog: &mut Xdp = ebpf
            .program_mut(ebpf::PROG_DECAP)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::MissingMap {
                name: ebpf::PROG_DECAP,
            })?;
        prog.load().map_err(|source| DatapathError::Program {
            program: ebpf::PROG_DECAP,
            source,
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
