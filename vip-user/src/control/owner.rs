//! The owner: the one writer of the maps.
//!
//! Desired state is the running VIP set (from the config file, changed by the API) plus
//! health results. Every change goes through [`Owner::set_vips`]: validated whole, ids
//! allocated, tables built and written; if anything fails the maps are reconciled back and
//! the running state is exactly what it was. Successful changes are persisted atomically.
//!
//! Starting is adopting: [`Owner::start`] reads what the pinned maps hold and brings
//! them to the desired state, removing every VIP and backend nothing wants (a vipd
//! killed during a change leaves some). Without a state file, VIPs the maps hold that
//! the config does not name are kept as found, as *unmanaged*, until an operator
//! deletes them: a lost bookkeeping file must not take down VIPs that are serving.
//! Everything that can be checked is checked before the first write, so a start that
//! fails that way leaves the maps exactly as it found them.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::SocketAddr,
    path::PathBuf,
};

use vip_common::{BACKEND_UNUSED, GlobalConfig, VIP_F_HASH_SRC_ONLY};

use super::{
    diff::by_id,
    reconcile::{
        self, Allocation, Applied, ApplyStats, BackendIdentity, HealthMap, Pinned, Reserved, Scope,
        VipKeyOrd, backend_state, desired_tables, desired_tables_of, global_config,
    },
    state_file::{StateFile, StateFileError, StateRef},
};
use crate::{
    config::{Config, LimitsSpec, Protocol, VipId, VipSpec},
    datapath::{
        keys::{self, flow_key, key_vip_id, vip_id_key},
        tables::{DatapathOps, limits},
    },
    protocol::{
        BackendState, BackendStatus, Change, ConnAnswer, FlowAnswer, Status, UnmanagedBackend,
        UnmanagedStatus, VipStatus,
    },
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
    /// What the pinned maps hold could not be read at start; nothing was written.
    #[error("reading what the pinned maps hold failed, so vipd changed nothing")]
    ReadPinned {
        /// The map error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The state file could not be written at start; nothing was written to the maps.
    #[error(
        "writing the state file {path} failed ({source}), so vipd changed nothing in the maps. Check that the directory exists and is writable"
    )]
    PersistAtStart {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A map write failed while a start brought the maps to the desired state. Nothing
    /// can be rolled back to what vipd found, so nothing is claimed: the maps hold a mix
    /// of the old and the new state (each entry whole, never a table pointing at a
    /// backend that is not set up).
    #[error(
        "bringing the pinned maps to the desired state failed part way ({source}): the maps are partly changed and keep forwarding with what they hold. Fix the cause and start vipd again: it reconciles from what the maps hold"
    )]
    StartWrite {
        /// The map error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Removing an unmanaged VIP failed part way.
    #[error(
        "removing unmanaged VIP {vip} from the maps failed ({source}); it may be partly removed: run `vipctl vip del {vip}` again"
    )]
    Unmanaged {
        /// The VIP.
        vip: VipId,
        /// The map error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A change planned against the running state, not yet written.
struct Plan {
    vips: Vec<VipSpec>,
    alloc: Allocation,
    health: HealthMap,
    /// With `scope`: only the touched VIPs' part of the maps (see [`Owner::plan`]).
    want: reconcile::Desired,
    /// What else the change may remove; `None`: `want` is the whole state.
    scope: Option<Scope>,
}

/// The running state a committed plan replaced, kept to go back to it.
struct Replaced {
    vips: Vec<VipSpec>,
    alloc: Allocation,
    health: HealthMap,
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
    /// VIPs found in the pinned maps that nothing names, kept as found.
    unmanaged: Vec<UnmanagedStatus>,
    /// What allocation must leave alone: the unmanaged VIPs' slots and ids, and the
    /// newest generation every backend id has had.
    reserved: Reserved,
    /// The node is drained: its VIP routes are withdrawn (persisted).
    drained: bool,
    /// The shadow (`applied`) is known to hold exactly the running state's entries (the
    /// last write succeeded), so a change can be planned and written for the VIPs it
    /// touches alone.
    in_step: bool,
}

impl<T: DatapathOps> Owner<T> {
    /// Takes over `tables` and brings them to `cfg` merged with the persisted runtime
    /// state (as a reload would, see [`reloaded_vips`]). Reads what the maps hold first:
    /// every VIP and backend entry nothing wants is removed, and without a state file
    /// the config's VIPs keep the ids the maps give them and other VIPs are kept as
    /// unmanaged. The state file, the VIP set and the ids are all checked, and the new
    /// state persisted, before the first map write.
    pub fn start(cfg: &Config, tables: T, state_file: Option<PathBuf>) -> Result<Self, OwnerError> {
        let limits = cfg.limits;
        let state = match &state_file {
            Some(p) => match StateFile::read(p)? {
                Some(s) => {
                    s.check(p, &limits)?;
                    Some(s)
                }
                None => None,
            },
            None => None,
        };
        let pinned = Pinned::read(&tables).map_err(|e| OwnerError::ReadPinned {
            source: Box::new(e),
        })?;
        let mut vips = cfg.vips.clone();
        let mut health = HealthMap::new();
        let mut alloc = None;
        let drained = state.as_ref().is_some_and(|s| s.drained);
        let kept: Vec<VipId> = match state {
            Some(s) => {
                if s.file_vips != cfg.vips {
                    tracing::warn!(
                        "the config file's VIPs changed since the state file was written: VIPs it changed take its definition, the others keep their runtime changes (as a reload does)"
                    );
                }
                vips = reloaded_vips(&s.file_vips, &s.vips, &cfg.vips);
                health = s.down.into_iter().map(|i| (i, false)).collect();
                match s.limits {
                    Some(l) if l != limits => tracing::info!(
                        "the state file's ids were made for maps of other [limits], which are gone: ids are handed out again"
                    ),
                    _ => alloc = Some(s.alloc),
                }
                s.unmanaged
            }
            None => {
                let kept: Vec<VipId> = pinned
                    .vips
                    .iter()
                    .filter_map(|(k, _)| key_vip_id(k))
                    .filter(|id| !vips.iter().any(|v| v.id == *id))
                    .collect();
                if !pinned.vips.is_empty() {
                    tracing::warn!(
                        pinned = pinned.vips.len(),
                        unmanaged = kept.len(),
                        "no state file: the config's VIPs keep the ids the pinned maps give them; VIPs the config does not name are kept forwarding as unmanaged until deleted (`vipctl vip list` shows them)"
                    );
                }
                kept
            }
        };
        let mut unmanaged = unmanaged_vips(&kept, &vips, &pinned, &limits);
        let mut reserved = Reserved {
            generations: pinned.generations(),
            ..Reserved::default()
        };
        let alloc = match alloc {
            Some(a) => {
                // A VIP kept as unmanaged whose slot or ids the state file's allocation
                // uses cannot be kept: it goes like any stray entry.
                unmanaged.retain(|u| {
                    let clash = a.vips.values().any(|s| *s == u.slot)
                        || u.backends
                            .iter()
                            .any(|b| a.backends.iter().any(|&(_, id, _)| id == b.id));
                    if clash {
                        tracing::warn!(vip = %u.vip, "an unmanaged VIP uses ids the state file gives to others: removing it");
                    }
                    !clash
                });
                a
            }
            None => Allocation::adopt(&vips, &pinned, &limits, &reserve(&unmanaged)),
        };
        let kept_reserved = reserve(&unmanaged);
        reserved.vip_slots = kept_reserved.vip_slots;
        reserved.backend_ids = kept_reserved.backend_ids;
        for u in &unmanaged {
            tracing::warn!(vip = %u.vip, slot = u.slot, backends = u.backends.len(), "unmanaged VIP kept as found: `vipctl vip del` removes it");
        }
        let applied = Applied::adopted(
            &pinned,
            &unmanaged
                .iter()
                .map(|u| vip_id_key(&u.vip))
                .collect::<Vec<_>>(),
            &reserved.backend_ids,
        );
        let mut owner = Owner {
            limits,
            global: global_config(&cfg.datapath),
            file_vips: cfg.vips.clone(),
            vips: Vec::new(),
            alloc,
            health,
            applied,
            tables,
            state_file,
            transitions: BTreeMap::new(),
            last_stats: ApplyStats::default(),
            live_tables: Default::default(),
            unmanaged,
            drained,
            reserved,
            in_step: false,
        };
        let plan = owner.plan(vips, false)?;
        let (want, _) = owner.commit(plan);
        if let Err(source) = owner.persist() {
            return Err(OwnerError::PersistAtStart {
                path: owner.state_file.clone().unwrap_or_default(),
                source,
            });
        }
        // The state file now says where the maps are going: were a write to fail (or
        // vipd to die) on the way, the next start goes there from what they hold.
        let stats = owner
            .write(&want, None)
            .map_err(|e| OwnerError::StartWrite {
                source: Box::new(e),
            })?;
        owner.last_stats = stats;
        tracing::info!(
            vips = owner.vips.len(),
            unmanaged = owner.unmanaged.len(),
            "runtime state restored"
        );
        Ok(owner)
    }

    /// Makes `vips` the running VIP set, transactionally.
    pub fn set_vips(&mut self, vips: Vec<VipSpec>) -> Result<ApplyStats, OwnerError> {
        let mut plan = self.plan(vips, true)?;
        let scope = plan.scope.take();
        match self.write(&plan.want, scope.as_ref()) {
            Ok(stats) => {
                let (_, old) = self.commit(plan);
                if let Err(source) = self.persist() {
                    let path = self.state_file.clone().unwrap_or_default();
                    (self.vips, self.alloc, self.health) = (old.vips, old.alloc, old.health);
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

    /// Checks `vips` whole and works out ids and map contents, writing nothing.
    ///
    /// With `scoped` (and the shadow in step with the running state), only the VIPs the
    /// change touches (added, removed, or different from their running definition) are
    /// planned: an untouched VIP was checked under the same limits, keeps its slot, ids
    /// and health, so its entries are already in the maps as they would be planned, and
    /// the plan holds the touched VIPs' entries and a [`Scope`] of what may go. The maps
    /// end the same as with a whole plan, and so do the ids and the errors; a change to
    /// one VIP of 10,000 costs comparisons for the others, not their planning.
    fn plan(&self, vips: Vec<VipSpec>, scoped: bool) -> Result<Plan, OwnerError> {
        let touched = (scoped && self.in_step && self.applied.stray.is_empty())
            .then(|| touched(&self.vips, &vips));
        let is_touched = |id: &VipId| touched.as_ref().is_none_or(|t| t.contains(id));
        crate::config::validate_vips_except(&vips, &self.limits, |v| !is_touched(&v.id))
            .map_err(OwnerError::Invalid)?;
        let mut alloc = self.alloc.clone();
        alloc.update_touched(&vips, &self.limits, &self.reserved, touched.as_ref())?;
        self.record_baselines(&mut alloc, touched.as_ref());
        let mut health = self.health.clone();
        if !health.is_empty() {
            let wanted: HashSet<BackendIdentity> = vips
                .iter()
                .filter(|v| is_touched(&v.id))
                .flat_map(|v| v.backends.iter().map(|b| (v.id, b.addr)))
                .collect();
            health.retain(|ident, _| !is_touched(&ident.0) || wanted.contains(ident));
        }
        let want = desired_tables_of(&vips, &alloc, &health, touched.as_ref());
        let scope = touched.map(|t| Scope {
            vips: t.iter().map(|&id| VipKeyOrd(id)).collect(),
            backends: self
                .alloc
                .backends
                .iter()
                .filter(|(i, _, _)| t.contains(&i.0))
                .map(|&(_, id, _)| id)
                .collect(),
        });
        Ok(Plan {
            vips,
            alloc,
            health,
            want,
            scope,
        })
    }

    /// Makes a plan the running state (in memory) and returns what it wants written and
    /// the state it replaced.
    fn commit(&mut self, plan: Plan) -> (reconcile::Desired, Replaced) {
        // Only ids handed out by this plan can be newer than what `reserved` holds: a
        // scoped plan's are all among the touched VIPs' backends.
        let newly = |i: &BackendIdentity| {
            plan.scope
                .as_ref()
                .is_none_or(|s| s.vips.contains(&VipKeyOrd(i.0)))
        };
        for &(_, id, g) in plan.alloc.backends.iter().filter(|(i, _, _)| newly(i)) {
            let newest = self.reserved.generations.entry(id).or_insert(g);
            *newest = (*newest).max(g);
        }
        let replaced = Replaced {
            vips: std::mem::replace(&mut self.vips, plan.vips),
            alloc: std::mem::replace(&mut self.alloc, plan.alloc),
            health: std::mem::replace(&mut self.health, plan.health),
        };
        (plan.want, replaced)
    }

    /// Counters of ids and slots newly handed out, so a reused id starts from zero in
    /// `vipctl stats` and the metrics. Only the VIPs in `touched` (`None`: all) can have
    /// any.
    fn record_baselines(&self, alloc: &mut Allocation, touched: Option<&HashSet<VipId>>) {
        let is_touched = |id: &VipId| touched.is_none_or(|t| t.contains(id));
        // Sets and maps built once: linear searches per backend took seconds at 10,000.
        let ids: HashSet<u32> = alloc.backends.iter().map(|&(_, i, _)| i).collect();
        alloc.backend_base.retain(|id, _| ids.contains(id));
        let before: std::collections::HashMap<BackendIdentity, (u32, u32)> = self
            .alloc
            .backends
            .iter()
            .filter(|(i, _, _)| is_touched(&i.0))
            .map(|&(i, id, g)| (i, (id, g)))
            .collect();
        let slots: HashSet<u32> = alloc.vips.values().copied().collect();
        alloc.vip_base.retain(|slot, _| slots.contains(slot));
        for &(ident, id, generation) in alloc.backends.iter().filter(|(i, _, _)| is_touched(&i.0)) {
            if before.get(&ident) != Some(&(id, generation)) {
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
        for (vip, &slot) in alloc.vips.iter().filter(|(v, _)| is_touched(v)) {
            if self.alloc.vips.get(vip) != Some(&slot) {
                let c = self.tables.vip_counters(slot).unwrap_or_default();
                alloc
                    .vip_base
                    .insert(slot, [c.packets, c.bytes, c.new_flows, c.dropped]);
            }
        }
    }

    /// The config file was (re)read: the VIPs it changed since it was last read take its
    /// definition, the others keep their running state (see [`reloaded_vips`]).
    pub fn reload(&mut self, cfg: &Config) -> Result<ApplyStats, OwnerError> {
        if cfg.limits != self.limits {
            return Err(OwnerError::Invalid(vec![
                "[limits] changed: map sizes are fixed while the datapath is loaded; run `vipd down` and start vipd again to resize".into(),
            ]));
        }
        let vips = reloaded_vips(&self.file_vips, &self.vips, &cfg.vips);
        let old_global = self.global;
        let old_file = std::mem::replace(&mut self.file_vips, cfg.vips.clone());
        self.global = global_config(&cfg.datapath);
        self.set_vips(vips).inspect_err(|_| {
            self.file_vips = old_file;
            self.global = old_global;
        })
    }

    /// The one place maps are written: reconcile to `want` (the whole state, or part of
    /// it and a `scope`, see [`Owner::plan`]), dropping cached read-backs.
    fn write(
        &mut self,
        want: &reconcile::Desired,
        scope: Option<&Scope>,
    ) -> Result<ApplyStats, T::Error> {
        self.live_tables.borrow_mut().clear();
        // Until this write succeeds the shadow may hold entries of neither state.
        self.in_step = false;
        let stats = self
            .applied
            .reconcile_scoped(&mut self.tables, &self.global, want, scope)?;
        self.in_step = true;
        Ok(stats)
    }

    fn restore(&mut self) -> Result<ApplyStats, T::Error> {
        let want = desired_tables(&self.vips, &self.alloc, &self.health);
        self.write(&want, None)
    }

    fn persist(&self) -> std::io::Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let down: Vec<BackendIdentity> = self
            .health
            .iter()
            .filter(|(_, up)| !**up)
            .map(|(i, _)| *i)
            .collect();
        let unmanaged: Vec<VipId> = self.unmanaged.iter().map(|u| u.vip).collect();
        StateRef {
            file_vips: &self.file_vips,
            vips: &self.vips,
            alloc: &self.alloc,
            down: &down,
            limits: Some(self.limits),
            unmanaged: &unmanaged,
            drained: self.drained,
        }
        .write(path)
    }

    /// Applies one API change.
    pub fn change(&mut self, c: Change) -> Result<ApplyStats, OwnerError> {
        let mut vips = self.vips.clone();
        let unmanaged: Vec<VipId> = self.unmanaged.iter().map(|u| u.vip).collect();
        let find = |vips: &mut Vec<VipSpec>, id: &VipId| -> Result<usize, OwnerError> {
            vips.iter().position(|v| v.id == *id).ok_or_else(|| {
                OwnerError::NotFound(if unmanaged.contains(id) {
                    format!(
                        "VIP {id} is unmanaged (found in the pinned maps, named by no config or state file): vipd only keeps or removes it; `vipctl vip del {id}` removes it, then add it again to manage it"
                    )
                } else {
                    format!(
                        "no VIP {id}: `vipctl vip list` shows the VIPs (protocol defaults to tcp; write ADDR:PORT/udp for UDP)"
                    )
                })
            })
        };
        match c {
            Change::VipDel { vip } if unmanaged.contains(&vip) => {
                return self.remove_unmanaged(&[vip]);
            }
            Change::VipAdd { mut spec } => {
                if spec.table_size == 0 {
                    spec.table_size = self.limits.table_size;
                }
                if unmanaged.contains(&spec.id) {
                    return Err(OwnerError::NotFound(format!(
                        "VIP {} is in the pinned maps, unmanaged (`vipctl vip list` shows it): delete it first with `vipctl vip del {}`",
                        spec.id, spec.id
                    )));
                }
                if vips.iter().any(|v| v.id == spec.id) {
                    return Err(OwnerError::NotFound(format!(
                        "VIP {} already exists: delete it first or change its backends with `vipctl backend`",
                        spec.id
                    )));
                }
                vips.push(*spec);
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
            Change::VipAcl { vip, acl } => {
                let i = find(&mut vips, &vip)?;
                vips[i].acl = acl;
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

    /// Makes `vips` the running set and removes every unmanaged VIP (`vipctl apply -f`:
    /// the file says what runs). An unmanaged VIP the file defines again is replaced in
    /// place: its new entry is published before its old backends are cleared.
    pub fn apply(&mut self, vips: Vec<VipSpec>) -> Result<ApplyStats, OwnerError> {
        let mut stats = self.set_vips(vips)?;
        let all: Vec<VipId> = self.unmanaged.iter().map(|u| u.vip).collect();
        if !all.is_empty() {
            let removed = self.remove_unmanaged(&all)?;
            stats.vips_removed += removed.vips_removed;
            stats.backend_writes += removed.backend_writes;
            self.last_stats = stats;
        }
        Ok(stats)
    }

    /// The unmanaged VIPs (see [`UnmanagedStatus`]).
    pub fn unmanaged(&self) -> &[UnmanagedStatus] {
        &self.unmanaged
    }

    /// Removes unmanaged VIPs from the maps: the entry (unless a managed VIP has that
    /// identity now), then its backends, marked unused; their slot and ids are free
    /// again.
    fn remove_unmanaged(&mut self, which: &[VipId]) -> Result<ApplyStats, OwnerError> {
        let mut stats = ApplyStats::default();
        self.live_tables.borrow_mut().clear();
        for vip in which {
            let Some(i) = self.unmanaged.iter().position(|u| u.vip == *vip) else {
                continue;
            };
            let u = self.unmanaged[i].clone();
            let fail = |e: T::Error| OwnerError::Unmanaged {
                vip: u.vip,
                source: Box::new(e),
            };
            if !self.vips.iter().any(|v| v.id == u.vip) {
                self.tables.remove_vip(&vip_id_key(&u.vip)).map_err(fail)?;
                stats.vips_removed += 1;
            }
            for b in &u.backends {
                let cleared = keys::backend(b.addr, BACKEND_UNUSED, b.generation, u.slot, 0);
                self.tables.set_backend(b.id, &cleared).map_err(fail)?;
                stats.backend_writes += 1;
                self.reserved.backend_ids.remove(&b.id);
            }
            self.reserved.vip_slots.remove(&u.slot);
            self.unmanaged.remove(i);
            tracing::info!(vip = %u.vip, "unmanaged VIP removed");
        }
        if let Err(e) = self.persist() {
            // Harmless: a restart finds the VIP gone from the maps and forgets it.
            tracing::warn!(error = %e, "could not persist the removal of unmanaged VIPs");
        }
        self.last_stats = stats;
        Ok(stats)
    }

    /// A health check result: `up` after `rise` passes, down after `fall` failures.
    pub fn set_health(
        &mut self,
        ident: BackendIdentity,
        up: bool,
    ) -> Result<ApplyStats, OwnerError> {
        self.set_healths(&[(ident, up)])
    }

    /// Health results that arrived together, in order: applied in one reconcile and
    /// persisted with one state-file write (1,500 backends failing at once cost one
    /// write, not 1,500).
    pub fn set_healths(
        &mut self,
        results: &[(BackendIdentity, bool)],
    ) -> Result<ApplyStats, OwnerError> {
        let old = self.health.clone();
        let mut flipped = Vec::new();
        for &(ident, up) in results {
            let was = self.health.get(&ident).copied().unwrap_or(true);
            if was == up
                || !self
                    .vips
                    .iter()
                    .any(|v| v.id == ident.0 && v.backends.iter().any(|b| b.addr == ident.1))
            {
                continue; // no change, or a result for a backend removed meanwhile
            }
            self.health.insert(ident, up);
            flipped.push((ident, up));
        }
        if flipped.is_empty() {
            return Ok(ApplyStats::default());
        }
        // Only the flipped backends' VIPs can change (as in `plan`, when the shadow is
        // in step): no VIP or id comes or goes.
        let touched: Option<HashSet<VipId>> = (self.in_step && self.applied.stray.is_empty())
            .then(|| flipped.iter().map(|(i, _)| i.0).collect());
        let want = desired_tables_of(&self.vips, &self.alloc, &self.health, touched.as_ref());
        let scope = touched.map(|t| Scope {
            vips: t.iter().map(|&id| VipKeyOrd(id)).collect(),
            backends: BTreeSet::new(),
        });
        match self.write(&want, scope.as_ref()) {
            Ok(stats) => {
                for &(ident, up) in &flipped {
                    *self.transitions.entry(ident).or_default() += 1;
                    tracing::info!(vip = %ident.0, backend = %ident.1, up, "backend health changed");
                }
                tracing::info!(
                    transitions = flipped.len(),
                    map_writes = stats.map_writes(),
                    "health changes applied"
                );
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

    /// Whether the node is drained (`vipctl node drain`).
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Drains or undrains the node and persists it; on a failed write nothing changes.
    pub fn set_drained(&mut self, drained: bool) -> Result<(), OwnerError> {
        let was = std::mem::replace(&mut self.drained, drained);
        self.persist().map_err(|source| {
            self.drained = was;
            OwnerError::Persist {
                path: self.state_file.clone().unwrap_or_default(),
                source,
            }
        })
    }

    /// Whether a backend of a running VIP.
    pub fn is_configured(&self, ident: &BackendIdentity) -> bool {
        self.vips
            .iter()
            .any(|v| v.id == ident.0 && v.backends.iter().any(|b| b.addr == ident.1))
    }

    /// What the owner believes of a backend's health (up unless a check said otherwise).
    pub fn is_up(&self, ident: &BackendIdentity) -> bool {
        self.health.get(ident).copied().unwrap_or(true)
    }

    /// Every backend in the maps: (VIP, address) and its datapath id; an unmanaged
    /// VIP's backends with the VIP's port (the maps keep none).
    pub fn backend_ids(&self) -> Vec<(BackendIdentity, u32)> {
        let unmanaged = self.unmanaged.iter().flat_map(|u| {
            u.backends
                .iter()
                .map(move |b| ((u.vip, SocketAddr::new(b.addr, u.vip.port)), b.id))
        });
        self.alloc
            .backends
            .iter()
            .map(|&(i, id, _)| (i, id))
            .chain(unmanaged)
            .collect()
    }

    /// Every managed VIP with its datapath id (`VipMeta::id`).
    pub fn vip_ids(&self) -> Vec<(VipId, u32)> {
        self.alloc.vips.iter().map(|(v, id)| (*v, *id)).collect()
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

    /// Gives the datapath back (a test moves it to the next owner, as a restart adopts
    /// the pinned maps).
    pub fn into_tables(self) -> T {
        self.tables
    }

    /// A view of everything: VIPs, backends with ids, state, health, counters.
    pub fn status(&self) -> Status {
        let mut vips = Vec::new();
        let mut slots = vec![0u32; self.limits.max_backends as usize];
        let ids: std::collections::HashMap<BackendIdentity, (u32, u32)> = self
            .alloc
            .backends
            .iter()
            .map(|&(i, id, g)| (i, (id, g)))
            .collect();
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
            // Slots per backend id, counted in one pass over the table (not one pass per
            // backend: 0.3 s per status at 8,192 backends), into `slots`, which is
            // zeroed again below for the next VIP.
            let table = self.applied.vips.get(&VipKeyOrd(v.id)).map(|(_, t)| t);
            for &x in table.into_iter().flatten() {
                if let Some(n) = slots.get_mut(x as usize) {
                    *n += 1;
                }
            }
            for b in &v.backends {
                let ident = (v.id, b.addr);
                let (id, generation) = ids.get(&ident).copied().unwrap_or((u32::MAX, 0));
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
                    health_check: v.check_of(b),
                    state: BackendState::from_datapath(backend_state(b.state, b.weight, healthy)),
                    slots: slots.get(id as usize).copied().unwrap_or(0),
                    packets: c.packets,
                    bytes: c.bytes,
                    new_flows: c.new_flows,
                    health_transitions: self.transitions.get(&ident).copied().unwrap_or(0),
                });
            }
            for &x in table.into_iter().flatten() {
                if let Some(n) = slots.get_mut(x as usize) {
                    *n = 0;
                }
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
                acl: v.acl.clone(),
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
            unmanaged: self.unmanaged.clone(),
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
        let decision =
            (!vip.acl.entries(vip.id.addr.is_ipv6()).is_empty()).then(|| vip.acl.decide(src.ip()));
        let backend = match &conntrack {
            Some(c) if c.usable => c.backend,
            // A new flow the list refuses is dropped.
            _ if decision.is_some_and(|d| !d.allowed) => None,
            _ => maglev,
        };
        Ok(FlowAnswer {
            acl: decision.map(|d| d.to_string()),
            vip: vip.id,
            hash,
            slot,
            maglev_backend: maglev,
            conntrack,
            backend,
        })
    }
}

/// The running VIP set after the config file's VIPs went from `old_file` to `new_file`
/// (a reload, or a start with a state file), per VIP, matched by identity:
///
/// - a VIP whose `[[vip]]` section is the same in both (or in neither) keeps its running
///   state: runtime changes to it (drain, maint, weights, backends added or removed), a
///   runtime addition and a runtime deletion all survive;
/// - a VIP whose section changed, was added or was removed takes the file's definition:
///   it is replaced whole (its runtime changes are dropped), added, or removed.
///
/// So an unchanged file changes nothing. Running VIPs keep their order; VIPs the file
/// adds come after them, in file order.
pub fn reloaded_vips(
    old_file: &[VipSpec],
    running: &[VipSpec],
    new_file: &[VipSpec],
) -> Vec<VipSpec> {
    // Indexed once: a search of the lists per VIP grows with the square of the VIPs.
    let (old_by_id, new_by_id) = (by_id(old_file), by_id(new_file));
    let running_ids: std::collections::HashSet<VipId> = running.iter().map(|v| v.id).collect();
    let mut out: Vec<VipSpec> = running
        .iter()
        .filter_map(|v| {
            let (old, new) = (old_by_id.get(&v.id), new_by_id.get(&v.id));
            if old == new {
                Some(v.clone())
            } else {
                new.map(|n| (*n).clone())
            }
        })
        .collect();
    for n in new_file {
        let changed = old_by_id.get(&n.id).copied() != Some(n);
        if changed && !running_ids.contains(&n.id) {
            out.push(n.clone());
        }
    }
    out
}

/// The VIPs a change from `running` to `new` touches: added, removed, or defined
/// differently (matched by identity).
fn touched(running: &[VipSpec], new: &[VipSpec]) -> HashSet<VipId> {
    let old = by_id(running);
    let mut out: HashSet<VipId> = new
        .iter()
        .filter(|v| old.get(&v.id).is_none_or(|o| *o != *v))
        .map(|v| v.id)
        .collect();
    let new_ids: HashSet<VipId> = new.iter().map(|v| v.id).collect();
    out.extend(
        running
            .iter()
            .filter(|v| !new_ids.contains(&v.id))
            .map(|v| v.id),
    );
    out
}

/// The pinned VIPs among `kept` that the running set does not define (it takes over a
/// VIP it defines), with their backends as the backend array holds them.
fn unmanaged_vips(
    kept: &[VipId],
    running: &[VipSpec],
    pinned: &Pinned,
    limits: &LimitsSpec,
) -> Vec<UnmanagedStatus> {
    let mut out: Vec<UnmanagedStatus> = Vec::new();
    for id in kept {
        if running.iter().any(|v| v.id == *id) || out.iter().any(|u| u.vip == *id) {
            continue;
        }
        let Some(meta) = pinned.vip(id) else {
            continue; // gone from the maps (`vipd down` since): forgotten
        };
        if meta.id >= limits.max_vips || out.iter().any(|u| u.slot == meta.id) {
            continue; // not a slot of these maps: removed as a stray entry
        }
        let backends = pinned
            .backends_of(meta.id)
            .filter(|(id, _)| *id < limits.max_backends)
            .map(|(id, b)| UnmanagedBackend {
                id,
                addr: keys::words_addr(b.addr, b.family),
                generation: b.generation,
                state: BackendState::from_datapath(b.state),
            })
            .collect();
        out.push(UnmanagedStatus {
            vip: *id,
            slot: meta.id,
            backends,
        });
    }
    out
}

/// The slots and ids unmanaged VIPs hold.
fn reserve(unmanaged: &[UnmanagedStatus]) -> Reserved {
    Reserved {
        vip_slots: unmanaged.iter().map(|u| u.slot).collect(),
        backend_ids: unmanaged
            .iter()
            .flat_map(|u| u.backends.iter().map(|b| b.id))
            .collect::<BTreeSet<u32>>(),
        generations: BTreeMap::new(),
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
