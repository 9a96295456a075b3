//! The owner: the one writer of the maps.
//!
//! Desired state is the running VIP set (from the config file, changed by the API) plus
//! health results. Every change goes through [`Owner::set_vips`]: validated whole, ids
//! allocated, tables built and written; if anything fails the maps are reconciled back and
//! the running state is exactly what it was. Successful changes are persisted atomically.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};
use vip_common::{
    BackendCounters, ConnState, FlowKey, GlobalConfig, Reason, VIP_F_HASH_SRC_ONLY, VipCounters,
};

use crate::{
    config::{AdminState, BackendSpec, Config, LimitsSpec, Protocol, VipId, VipSpec},
    reconcile::{
        Allocation, Applied, ApplyStats, BackendIdentity, HealthMap, Tables, VipKeyOrd,
        backend_state, desired_tables, global_config,
    },
};

/// Reads the datapath's counters and connection table (besides writing its tables).
pub trait DatapathOps: Tables {
    /// Per-VIP counters summed over CPUs.
    fn vip_counters(&self, id: u32) -> Result<VipCounters, Self::Error>;
    /// Per-backend counters summed over CPUs.
    fn backend_counters(&self, id: u32) -> Result<BackendCounters, Self::Error>;
    /// Packets per reason.
    fn reason_counts(&self) -> Result<Vec<(Reason, u64)>, Self::Error>;
    /// Connection-table entries.
    fn conn_count(&self) -> Result<u64, Self::Error>;
    /// One connection-table entry.
    fn lookup_conn(&self, key: &FlowKey) -> Result<Option<ConnState>, Self::Error>;
    /// The Maglev table a VIP's published entry points at, read from the maps.
    fn live_table(&self, key: &vip_common::VipKey) -> Result<Option<Vec<u32>>, Self::Error>;
    /// Writes a backend's cached next hop (an invalid one sends it back to
    /// `bpf_fib_lookup`).
    fn set_nexthop(&mut self, id: u32, nh: &vip_common::NextHop) -> Result<(), Self::Error>;
}

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
    Plan(#[from] crate::reconcile::PlanError),
    /// A map write failed; the maps were reconciled back to the previous state.
    #[error("writing the datapath maps failed ({source}); the previous state was restored{}", if *.restored { "" } else { " only partly: run `vipctl apply -f` with the config to retry" })]
    Datapath {
        /// The map error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// Whether the roll-back succeeded.
        restored: bool,
    },
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

/// A runtime change from the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// Add a VIP (with its backends).
    VipAdd {
        /// The VIP.
        spec: VipSpec,
    },
    /// Remove a VIP.
    VipDel {
        /// The VIP.
        vip: VipId,
    },
    /// Add a backend to a VIP.
    BackendAdd {
        /// The VIP.
        vip: VipId,
        /// The backend.
        backend: BackendSpec,
    },
    /// Remove a backend from a VIP.
    BackendDel {
        /// The VIP.
        vip: VipId,
        /// The backend's address.
        addr: SocketAddr,
    },
    /// Change a backend's weight and/or admin state.
    BackendSet {
        /// The VIP.
        vip: VipId,
        /// The backend's address.
        addr: SocketAddr,
        /// New weight.
        weight: Option<u32>,
        /// New admin state.
        state: Option<AdminState>,
    },
}

/// What is persisted: the running VIP set, the config-file VIP set it was derived from
/// (so an edited file wins over stale runtime changes), ids and health.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StateFile {
    /// VIPs as last read from the config file.
    pub file_vips: Vec<VipSpec>,
    /// Running VIPs (file + runtime changes).
    pub vips: Vec<VipSpec>,
    /// Stable ids.
    pub alloc: Allocation,
    /// Backends known down.
    pub down: Vec<BackendIdentity>,
    /// Map sizes the pinned maps were created with (a restart must use the same).
    #[serde(default)]
    pub limits: Option<LimitsSpec>,
}

impl StateFile {
    /// Reads a state file; `Ok(None)` if there is none.
    pub fn read(path: &std::path::Path) -> Result<Option<Self>, String> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                format!(
                    "state file {} is corrupt ({e}): move it away to start from the config file",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading state file {}: {e}", path.display())),
        }
    }

    /// Writes atomically: temp file, fsync, rename.
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("state serializes"))?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
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
            Some(p) => StateFile::read(p).map_err(|e| OwnerError::Invalid(vec![e]))?,
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
    fn write(&mut self, want: &crate::reconcile::Desired) -> Result<ApplyStats, T::Error> {
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
                    state: state_name(backend_state(b.state, b.weight, healthy)).into(),
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
            conn_capacity: crate::datapath_ops::limits(&self.limits).conn_capacity(),
            reasons: self
                .tables
                .reason_counts()
                .unwrap_or_default()
                .into_iter()
                .map(|(r, n)| (r.name().to_string(), n))
                .collect(),
            last_change_map_writes: self.last_stats.map_writes(),
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
        let key = flow_key(proto, src, dst);
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
        let vkey = crate::reconcile::vip_key(&vip.id);
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
        let src_only = crate::reconcile::vip_flags(vip) & VIP_F_HASH_SRC_ONLY != 0;
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

/// The connection-table key of a flow.
pub fn flow_key(proto: Protocol, src: SocketAddr, dst: SocketAddr) -> FlowKey {
    crate::datapath::flow_key(src, dst, proto.number())
}

/// Printable backend state.
pub fn state_name(s: u8) -> &'static str {
    match s {
        vip_common::BACKEND_UP => "up",
        vip_common::BACKEND_DRAINING => "draining",
        vip_common::BACKEND_DOWN => "down",
        _ => "unused",
    }
}

/// Everything `vipctl list/stats` and the metrics show.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// VIPs.
    pub vips: Vec<VipStatus>,
    /// Connection-table entries in use (flows seen recently).
    pub conns: u64,
    /// Connection-table entries (sets × ways).
    pub conn_capacity: u64,
    /// Packets by reason.
    pub reasons: Vec<(String, u64)>,
    /// Map writes of the last change.
    pub last_change_map_writes: u64,
}

/// One VIP.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VipStatus {
    /// Identity.
    pub vip: VipId,
    /// Mode.
    pub mode: String,
    /// Hash.
    pub hash: String,
    /// Conntrack on.
    pub conntrack: bool,
    /// M.
    pub table_size: u32,
    /// Health check.
    pub health_check: crate::config::HealthCheck,
    /// Slot / counter id.
    pub slot: u32,
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
    /// Drops.
    pub dropped: u64,
    /// Backends.
    pub backends: Vec<BackendStatus>,
}

/// One backend of a VIP.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Address.
    pub addr: SocketAddr,
    /// Datapath id.
    pub id: u32,
    /// Generation of the id.
    pub generation: u32,
    /// Weight.
    pub weight: u32,
    /// Admin state.
    pub admin: AdminState,
    /// Health.
    pub healthy: bool,
    /// Datapath state (up/draining/down).
    pub state: String,
    /// Maglev slots owned.
    pub slots: u32,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// New flows.
    pub new_flows: u64,
    /// Health transitions.
    pub health_transitions: u64,
}

/// `vipctl flow`'s answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowAnswer {
    /// The VIP that matched (exact port or all ports).
    pub vip: VipId,
    /// The flow hash.
    pub hash: u32,
    /// Maglev slot (`hash % M`), if the VIP has a table.
    pub slot: Option<u32>,
    /// Backend at that slot.
    pub maglev_backend: Option<SocketAddr>,
    /// Connection-table entry, if any.
    pub conntrack: Option<ConnAnswer>,
    /// The backend the next packet of this flow goes to.
    pub backend: Option<SocketAddr>,
}

/// A connection-table entry as `vipctl flow` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConnAnswer {
    /// Backend id.
    pub backend_id: u32,
    /// Generation recorded.
    pub generation: u32,
    /// The backend that id means now.
    pub backend: Option<SocketAddr>,
    /// False if the backend is down or the id was reused (the flow will re-hash).
    pub usable: bool,
}

/// The IP of a socket address as the operator writes it (IPv6 in brackets).
pub fn show_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

#[cfg(test)]
mod tests;
