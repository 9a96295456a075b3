//! The owner: the one writer of the maps.
//!
//! Desired state is the running VIP set (from the config file, changed by the API) plus
//! health results. Every change goes through [`Owner::set_vips`]: validated whole, ids
//! allocated, tables built and written; if anything fails the maps are reconciled back and
//! the running state is exactly what it was. Successful changes are persisted atomically.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use vip_common::{GlobalConfig, VIP_F_HASH_SRC_ONLY};

use super::{
    reconcile::{
        self, Allocation, Applied, ApplyStats, BackendIdentity, HealthMap, VipKeyOrd,
        backend_state, desired_tables, global_config,
    },
    state_file::{StateFile, StateFileError},
};
use crate::{
    config::{Config, LimitsSpec, Protocol, VipId, VipSpec},
    datapath::{
        keys::{flow_key, vip_id_key},
        tables::{DatapathOps, limits},
    },
    protocol::{BackendState, BackendStatus, Change, ConnAnswer, FlowAnswer, Status, VipStatus},
};

/// Why a change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The change would produce an invalid configuration. Nothing was changed.
    #[error("change refused, nothing was changed:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<String>),
    /// The change names something that does not exist or already exists.
    #[error("{0}")]
    NotFound(String),
    /// Ids ran out.
    #[error("change refused, nothing was changed: {0}")]
    Plan(#[from] reconcile::PlanError),
    /// A map write failed; the maps were reconciled back to the previous state.
    #[error("writing the datapath maps failed ({source}); the previous state was restored{}", if *.restored { "" } else { " only partly: run `vipctl apply -f` with the config to retry" })]
    Datapath {
        /// The map error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether the roll-back succeeded.
        restored: bool,
    },
    /// The state file could not be read at start.
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    /// The state file could not be written; the maps were restored.
    #[error(
        "persisting the state to {path} failed ({source}); the change was undone. Check that the directory exists and is writable"
    )]
    Persist {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The owner of the maps.
#[derive(Debug)]
pub struct Owner<T> {
    limits: LimitsSpec,
    global: GlobalConfig,
    file_vips: Vec<VipSpec>,
    vips: Vec<VipSpec>,
    alloc: Allocation,
    health: HealthMap,
    applied: Applied,
    tables: T,
    state_file: Option<PathBuf>,
    /// Health transitions seen, per backend identity (up→down, down→up).
    pub transitions: BTreeMap<BackendIdentity, u64>,
    /// Map writes made by the last change.
    pub last_stats: ApplyStats,
    /// Maglev tables read back from the maps for `flow`, valid until the next write.
    live_tables: std::cell::RefCell<std::collections::HashMap<vip_common::VipKey, Vec<u32>>>,
}

impl<T: DatapathOps> Owner<T> {
    /// Takes over `tables` and brings them to `cfg` (or to the persisted runtime state if
    /// the config file's VIPs did not change since it was written).
    pub fn start(cfg: &Config, tables: T, state_file: Option<PathBuf>) -> Result<Self, OwnerError> {
        let state = match &state_file {
            Some(p) => StateFile::read(p)?,
            None => None,
        };
        let mut owner = Owner {
            limits: cfg.limits,
            global: global_config(&cfg.datapath),
            file_vips: cfg.vips.clone(),
            vips: Vec::new(),
            alloc: Allocation::default(),
            health: HealthMap::new(),
            applied: Applied::default(),
            tables,
            state_file,
            transitions: BTreeMap::new(),
            last_stats: ApplyStats::default(),
            live_tables: Default::default(),
        };
        let mut vips = cfg.vips.clone();
        if let Some(s) = state {
            owner.alloc = s.alloc;
            owner.health = s.down.into_iter().map(|i| (i, false)).collect();
            if s.file_vips == cfg.vips {
                tracing::info!(
                    vips = s.vips.len(),
                    "restoring runtime state from the state file"
                );
                vips = s.vips;
            } else {
                tracing::warn!(
                    "the config file's VIPs changed since the state file was written: the file wins, runtime changes are dropped"
                );
            }
        }
        owner.set_vips(vips)?;
        Ok(owner)
    }

    /// Makes `vips` the running VIP set, transactionally.
    pub fn set_vips(&mut self, vips: Vec<VipSpec>) -> Result<ApplyStats, OwnerError> {
        crate::config::validate_vips(&vips, &self.limits).map_err(OwnerError::Invalid)?;
        let mut alloc = self.alloc.clone();
        alloc.update(&vips, &self.limits)?;
        self.record_baselines(&mut alloc);
        let mut health = self.health.clone();
        health.retain(|(v, a), _| {
            vips.iter()
                .any(|s| s.id == *v && s.backends.iter().any(|b| b.addr == *a))
        });
        let want = desired_tables(&vips, &alloc, &health);
        match self.write(&want) {
            Ok(stats) => {
                let old = (
                    std::mem::replace(&mut self.vips, vips),
                    std::mem::replace(&mut self.alloc, alloc),
                    std::mem::replace(&mut self.health, health),
                );
                if let Err(source) = self.persist() {
                    let path = self.state_file.clone().unwrap_or_default();
                    (self.vips, self.alloc, self.health) = old;
                    let _ = self.restore();
                    return Err(OwnerError::Persist { path, source });
                }
                self.last_stats = stats;
                Ok(stats)
            }
            Err(e) => {
                let restored = self.restore().is_ok();
                Err(OwnerError::Datapath {
                    source: Box::new(e),
                    restored,
                })
            }
        }
    }

    /// Counters of ids and slots newly handed out, so a reused id starts from zero in
    /// `vipctl stats` and the metrics.
    fn record_baselines(&self, alloc: &mut Allocation) {
        alloc
            .backend_base
            .retain(|id, _| alloc.backends.iter().any(|&(_, i, _)| i == *id));
        alloc
            .vip_base
            .retain(|slot, _| alloc.vips.values().any(|s| s == slot));
        for &(ident, id, generation) in &alloc.backends {
            if self.alloc.backend(&ident) != Some((id, generation)) {
                let mut c = self.tables.backend_counters(id).unwrap_or_default();
                if let Some([p, b, n]) = self.alloc.backend_base.get(&id) {
                    c.packets = c.packets.saturating_sub(*p);
                    c.bytes = c.bytes.saturating_sub(*b);
                    c.new_flows = c.new_flows.saturating_sub(*n);
                }
                alloc
                    .backend_base
                    .insert(id, [c.packets, c.bytes, c.new_flows]);
            }
        }
        for (vip, &slot) in &alloc.vips {
            if self.alloc.vips.get(vip) != Some(&slot) {
                let c = self.tables.vip_counters(slot).unwrap_or_default();
                alloc
                    .vip_base
                    .insert(slot, [c.packets, c.bytes, c.new_flows, c.dropped]);
            }
        }
    }

    /// The config file was (re)read: its VIPs become the running set.
    pub fn reload(&mut self, cfg: &Config) -> Result<ApplyStats, OwnerError> {
        if cfg.limits != self.limits {
            return Err(OwnerError::Invalid(vec![
                "[limits] changed: map sizes are fixed while the datapath is loaded; run `vipd down` and start vipd again to resize".into(),
            ]));
        }
        let old_global = self.global;
        let old_file = std::mem::replace(&mut self.file_vips, cfg.vips.clone());
        self.global = global_config(&cfg.datapath);
        self.set_vips(cfg.vips.clone()).inspect_err(|_| {
            self.file_vips = old_file;
            self.global = old_global;
        })
    }

    /// The one place maps are written: reconcile to `want`, dropping cached read-backs.
    fn write(&mut self, want: &reconcile::Desired) -> Result<ApplyStats, T::Error> {
        self.live_tables.borrow_mut().clear();
        self.applied.reconcile(&mut self.tables, &self.global, want)
    }

    fn restore(&mut self) -> Result<ApplyStats, T::Error> {
        let want = desired_tables(&self.vips, &self.alloc, &self.health);
        self.write(&want)
    }

    fn persist(&self) -> std::io::Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        StateFile {
            file_vips: self.file_vips.clone(),
            vips: self.vips.clone(),
            alloc: self.alloc.clone(),
            down: self
                .health
                .iter()
                .filter(|(_, up)| !**up)
                .map(|(i, _)| *i)
                .collect(),
            limits: Some(self.limits),
        }
        .write(path)
    }

    /// Applies one API change.
    pub fn change(&mut self, c: Change) -> Result<ApplyStats, OwnerError> {
        let mut vips = self.vips.clone();
        let find = |vips: &mut Vec<VipSpec>, id: &VipId| -> Result<usize, OwnerError> {
            vips.iter().position(|v| v.id == *id).ok_or_else(|| {
                OwnerError::NotFound(format!(
                    "no VIP {id}: `vipctl vip list` shows the VIPs (protocol defaults to tcp; write ADDR:PORT/udp for UDP)"
                ))
            })
        };
        match c {
            Change::VipAdd { mut spec } => {
                if spec.table_size == 0 {
                    spec.table_size = self.limits.table_size;
                }
                if vips.iter().any(|v| v.id == spec.id) {
                    return Err(OwnerError::NotFound(format!(
                        "VIP {} already exists: delete it first or change its backends with `vipctl backend`",
                        spec.id
                    )));
                }
                vips.push(spec);
            }
            Change::VipDel { vip } => {
                let i = find(&mut vips, &vip)?;
                vips.remove(i);
            }
            Change::BackendAdd { vip, backend } => {
                let i = find(&mut vips, &vip)?;
                if vips[i].backends.iter().any(|b| b.addr == backend.addr) {
                    return Err(OwnerError::NotFound(format!(
                        "backend {} already exists in VIP {vip}: use `vipctl backend set` to change it",
                        backend.addr
                    )));
                }
                vips[i].backends.push(backend);
            }
            Change::BackendDel { vip, addr } => {
                let i = find(&mut vips, &vip)?;
                let j = backend_index(&vips[i], addr)?;
                vips[i].backends.remove(j);
            }
            Change::BackendSet {
                vip,
                addr,
                weight,
                state,
            } => {
                let i = find(&mut vips, &vip)?;
                let j = backend_index(&vips[i], addr)?;
                let b = &mut vips[i].backends[j];
                if let Some(w) = weight {
                    b.weight = w;
                }
                if let Some(s) = state {
                    b.state = s;
                }
            }
        }
        self.set_vips(vips)
    }

    /// A health check result: `up` after `rise` passes, down after `fall` failures.
    pub fn set_health(
        &mut self,
        ident: BackendIdentity,
        up: bool,
    ) -> Result<ApplyStats, OwnerError> {
        let was = self.health.get(&ident).copied().unwrap_or(true);
        if was == up {
            return Ok(ApplyStats::default());
        }
        if !self
            .vips
            .iter()
            .any(|v| v.id == ident.0 && v.backends.iter().any(|b| b.addr == ident.1))
        {
            return Ok(ApplyStats::default()); // a result for a backend removed meanwhile
        }
        let old = self.health.clone();
        self.health.insert(ident, up);
        *self.transitions.entry(ident).or_default() += 1;
        let want = desired_tables(&self.vips, &self.alloc, &self.health);
        match self.write(&want) {
            Ok(stats) => {
                tracing::info!(vip = %ident.0, backend = %ident.1, up, map_writes = stats.map_writes(), "backend health changed");
                if let Err(e) = self.persist() {
                    tracing::warn!(error = %e, "could not persist health state");
                }
                self.last_stats = stats;
                Ok(stats)
            }
            Err(e) => {
                self.health = old;
                let restored = self.restore().is_ok();
                Err(OwnerError::Datapath {
                    source: Box::new(e),
                    restored,
                })
            }
        }
    }

    /// The owner's belief about a backend's health (unknown = healthy).
    pub fn is_up(&self, ident: &BackendIdentity) -> bool {
        self.health.get(ident).copied().unwrap_or(true)
    }

    /// Every allocated backend: (VIP, address) and its datapath id.
    pub fn backend_ids(&self) -> Vec<(BackendIdentity, u32)> {
        self.alloc
            .backends
            .iter()
            .map(|&(i, id, _)| (i, id))
            .collect()
    }

    /// Running VIPs.
    pub fn vips(&self) -> &[VipSpec] {
        &self.vips
    }

    /// Limits the datapath was loaded with.
    pub fn limits(&self) -> &LimitsSpec {
        &self.limits
    }

    /// The datapath (for trace runs and counters).
    pub fn tables_mut(&mut self) -> &mut T {
        &mut self.tables
    }

    /// The datapath, read-only.
    pub fn tables(&self) -> &T {
        &self.tables
    }

    /// A view of everything: VIPs, backends with ids, state, health, counters.
    pub fn status(&self) -> Status {
        let mut vips = Vec::new();
        for v in &self.vips {
            let slot = self.alloc.vips[&v.id];
            let mut counters = self.tables.vip_counters(slot).unwrap_or_default();
            if let Some([p, b, n, d]) = self.alloc.vip_base.get(&slot) {
                counters.packets = counters.packets.saturating_sub(*p);
                counters.bytes = counters.bytes.saturating_sub(*b);
                counters.new_flows = counters.new_flows.saturating_sub(*n);
                counters.dropped = counters.dropped.saturating_sub(*d);
            }
            let mut backends = Vec::new();
            let table = self
                .applied
                .vips
                .get(&VipKeyOrd(v.id))
                .map(|(_, t)| t.clone())
                .unwrap_or_default();
            for b in &v.backends {
                let ident = (v.id, b.addr);
                let (id, generation) = self.alloc.backend(&ident).unwrap_or((u32::MAX, 0));
                let healthy = self.health.get(&ident).copied().unwrap_or(true);
                let mut c = self.tables.backend_counters(id).unwrap_or_default();
                if let Some([p, b, n]) = self.alloc.backend_base.get(&id) {
                    c.packets = c.packets.saturating_sub(*p);
                    c.bytes = c.bytes.saturating_sub(*b);
                    c.new_flows = c.new_flows.saturating_sub(*n);
                }
                backends.push(BackendStatus {
                    addr: b.addr,
                    id,
                    generation,
                    weight: b.weight,
                    admin: b.state,
                    healthy,
                    state: BackendState::from_datapath(backend_state(b.state, b.weight, healthy)),
                    slots: table.iter().filter(|&&x| x == id).count() as u32,
                    packets: c.packets,
                    bytes: c.bytes,
                    new_flows: c.new_flows,
                    health_transitions: self.transitions.get(&ident).copied().unwrap_or(0),
                });
            }
            vips.push(VipStatus {
                vip: v.id,
                mode: v.mode.to_string(),
                hash: v.hash.to_string(),
                conntrack: v.conntrack,
                table_size: v.table_size,
                health_check: v.health.clone(),
                slot,
                packets: counters.packets,
                bytes: counters.bytes,
                new_flows: counters.new_flows,
                dropped: counters.dropped,
                backends,
            });
        }
        Status {
            vips,
            conns: self.tables.conn_count().unwrap_or(0),
            conn_capacity: limits(&self.limits).conn_capacity(),
            reasons: self
                .tables
                .reason_counts()
                .unwrap_or_default()
                .into_iter()
                .map(|(r, n)| (r.name().to_string(), n))
                .collect(),
            last_change_map_writes: self.last_stats.map_writes(),
            ha: Vec::new(),
        }
    }

    /// Which backend owns a flow, from the live tables: the connection table first, then
    /// the VIP's Maglev table.
    pub fn flow(
        &self,
        proto: Protocol,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<FlowAnswer, OwnerError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(OwnerError::NotFound(
                "the client and VIP addresses are of different families".into(),
            ));
        }
        let exact = VipId {
            addr: dst.ip(),
            port: dst.port(),
            proto,
        };
        let any = VipId { port: 0, ..exact };
        let vip = self
            .vips
            .iter()
            .find(|v| v.id == exact)
            .or_else(|| self.vips.iter().find(|v| v.id == any))
            .ok_or_else(|| OwnerError::NotFound(format!("{dst}/{proto} is not a VIP: the datapath passes such packets to the kernel untouched")))?;
        let key = flow_key(src, dst, proto.number());
        let by_id = |id: u32| {
            self.alloc
                .backends
                .iter()
                .find(|&&(_, i, _)| i == id)
                .map(|&((_, a), _, g)| (a, g))
        };
        // The live table (what packets use), not the owner's idea of it.
        // Read once per published version: the owner is the only writer, and clears the
        // cache whenever it writes.
        let vkey = vip_id_key(&vip.id);
        let cached = self.live_tables.borrow().get(&vkey).cloned();
        let table = match cached {
            Some(t) => t,
            None => {
                let t = match self.tables.live_table(&vkey) {
                    Ok(t) => t.unwrap_or_default(),
                    Err(e) => {
                        return Err(OwnerError::NotFound(format!(
                            "reading the Maglev table of {} from the datapath failed: {e}",
                            vip.id
                        )));
                    }
                };
                self.live_tables.borrow_mut().insert(vkey, t.clone());
                t
            }
        };
        let src_only = reconcile::vip_flags(vip) & VIP_F_HASH_SRC_ONLY != 0;
        let hash = vip_common::flow_hash(&key, src_only);
        let slot = if table.is_empty() {
            None
        } else {
            Some(hash % table.len() as u32)
        };
        let maglev = slot.and_then(|s| by_id(table[s as usize]).map(|(a, _)| a));
        let conn = if vip.conntrack {
            self.tables.lookup_conn(&key).ok().flatten()
        } else {
            None
        };
        let conntrack = conn.map(|c| {
            let usable = by_id(c.backend_id).is_some_and(|(a, g)| {
                g == c.generation && {
                    let ident = (vip.id, a);
                    let b = vip.backends.iter().find(|b| b.addr == a);
                    b.is_some_and(|b| {
                        backend_state(
                            b.state,
                            b.weight,
                            self.health.get(&ident).copied().unwrap_or(true),
                        ) != vip_common::BACKEND_DOWN
                    })
                }
            });
            ConnAnswer {
                backend_id: c.backend_id,
                generation: c.generation,
                backend: by_id(c.backend_id).map(|(a, _)| a),
                usable,
            }
        });
        let backend = match &conntrack {
            Some(c) if c.usable => c.backend,
            _ => maglev,
        };
        Ok(FlowAnswer {
            vip: vip.id,
            hash,
            slot,
            maglev_backend: maglev,
            conntrack,
            backend,
        })
    }
}

fn backend_index(v: &VipSpec, addr: SocketAddr) -> Result<usize, OwnerError> {
    v.backends
        .iter()
        .position(|b| b.addr == addr)
        .ok_or_else(|| {
            OwnerError::NotFound(format!(
                "VIP {} has no backend {addr}: `vipctl backend list {}` shows its backends",
                v.id, v.id
            ))
        })
}

#[cfg(test)]
mod tests;
