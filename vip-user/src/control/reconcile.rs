//! From desired state (VIP specs + health) to datapath writes.
//!
//! Pure planning plus a small applier: [`Allocation`] hands out stable ids (a VIP's slot,
//! a backend's id by its identity, the generation bumped when an id is reused);
//! [`desired_tables`] turns specs into the exact map contents; [`Applied`] remembers what
//! was written and writes only the difference, in an order that never lets a packet see
//! a table pointing at a backend that is not set up yet.
//!
//! Every backend value carries its VIP's slot and flags (`Backend::vip_id`,
//! `Backend::vip_flags`): a packet found in the connection table is forwarded with them,
//! without a VIP lookup. A VIP whose flags change therefore rewrites its backends too.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};
use vip_common::{
    BACKEND_DOWN, BACKEND_DRAINING, BACKEND_UNUSED, BACKEND_UP, Backend, GlobalConfig,
    VIP_F_DSR_L2, VIP_F_HASH_SRC_ONLY, VIP_F_NO_CONNTRACK, VipKey, VipMeta,
};

use super::maglev;
use crate::{
    config::{AdminState, DatapathSpec, HashMode, LimitsSpec, Mode, VipId, VipSpec},
    datapath::{
        keys::{addr_words, vip_id_key},
        tables::{DatapathOps, Tables},
    },
};

/// Identity of a backend id: the VIP it serves and its address. A backend shared by two
/// VIPs gets two ids, so drain, health and counters are per VIP.
pub type BackendIdentity = (VipId, SocketAddr);

/// Stable id assignment, persisted so a restarted vipd gives every backend the id (and
/// generation) the connection table already refers to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// VIP → slot (also its counter id).
    #[serde(with = "pairs")]
    pub vips: BTreeMap<VipId, u32>,
    /// Backend identity → (id, generation), as a list because JSON keys must be strings.
    pub backends: Vec<(BackendIdentity, u32, u32)>,
    /// Counters a backend id had when it was given to its current identity (ids are
    /// reused; counters in the maps are not reset), as [packets, bytes, new flows].
    #[serde(default, with = "pairs")]
    pub backend_base: BTreeMap<u32, [u64; 3]>,
    /// Counters a VIP slot had when given to its current VIP: [packets, bytes, new
    /// flows, dropped].
    #[serde(default, with = "pairs")]
    pub vip_base: BTreeMap<u32, [u64; 4]>,
    /// Generation of each allocated backend id. Only live ids are kept: the last
    /// generation of a freed id is in the backend array (a cleared entry keeps it), and
    /// the owner passes it back in [`Reserved::generations`] when the id is reused.
    #[serde(with = "pairs")]
    pub generations: BTreeMap<u32, u32>,
}

/// What an [`Allocation::update`] must respect besides its own ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    /// VIP slots of VIPs vipd keeps without managing them (found in the pinned maps,
    /// named nowhere): never handed out.
    pub vip_slots: BTreeSet<u32>,
    /// Backend ids of those VIPs' backends: never handed out.
    pub backend_ids: BTreeSet<u32>,
    /// The newest generation each backend id has had in the maps: a connection-table
    /// entry may still carry it, so an id handed out again gets a newer one.
    pub generations: BTreeMap<u32, u32>,
}

/// What the pinned maps hold, read once when vipd starts, before anything is written.
#[derive(Clone, Debug, Default)]
pub struct Pinned {
    /// Every published VIP entry (address markers left out).
    pub vips: Vec<(VipKey, VipMeta)>,
    /// Every backend entry that was ever written (a cleared one keeps its generation).
    pub backends: BTreeMap<u32, Backend>,
}

impl Pinned {
    /// Reads the VIP map and the backend array.
    pub fn read<T: DatapathOps>(tables: &T) -> Result<Self, T::Error> {
        Ok(Pinned {
            vips: tables.pinned_vips()?,
            backends: tables.pinned_backends()?,
        })
    }

    /// The generation of every backend id the maps have seen.
    pub fn generations(&self) -> BTreeMap<u32, u32> {
        self.backends
            .iter()
            .map(|(&id, b)| (id, b.generation))
            .collect()
    }

    /// The backends in use by the VIP whose slot is `slot` (each carries its VIP's
    /// slot, see [`Backend::vip_id`]).
    pub fn backends_of(&self, slot: u32) -> impl Iterator<Item = (u32, &Backend)> {
        self.backends
            .iter()
            .filter(move |(_, b)| b.vip_id == slot && b.state != BACKEND_UNUSED)
            .map(|(&id, b)| (id, b))
    }

    /// The pinned entry of a VIP, if it is published.
    pub fn vip(&self, id: &VipId) -> Option<&VipMeta> {
        let key = vip_id_key(id);
        self.vips.iter().find(|(k, _)| *k == key).map(|(_, m)| m)
    }
}

/// Why an allocation or plan failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No free VIP slot.
    #[error("no free VIP slot for {vip}: all {max} are used; raise [limits] max_vips")]
    NoVipSlot {
        /// The VIP.
        vip: VipId,
        /// limits.max_vips.
        max: u32,
    },
    /// No free backend id.
    #[error(
        "no free backend id for {backend} of {vip}: all {max} are used; raise [limits] max_backends"
    )]
    NoBackendId {
        /// The VIP.
        vip: VipId,
        /// The backend.
        backend: SocketAddr,
        /// limits.max_backends.
        max: u32,
    },
}

impl Allocation {
    /// Backend id and generation of an identity, if allocated.
    pub fn backend(&self, ident: &BackendIdentity) -> Option<(u32, u32)> {
        self.backends
            .iter()
            .find(|(i, _, _)| i == ident)
            .map(|&(_, id, g)| (id, g))
    }

    /// The ids the pinned maps give `vips` (a start without a usable state file): a VIP
    /// keeps the slot its entry names, and each of its backends the id of the entry
    /// that serves that VIP at that address, with its generation, so established flows
    /// keep their backend. Ids out of `limits`, taken twice or `reserved` are left for
    /// [`Allocation::update`] to hand out afresh.
    pub fn adopt(
        vips: &[VipSpec],
        pinned: &Pinned,
        limits: &LimitsSpec,
        reserved: &Reserved,
    ) -> Self {
        let mut a = Allocation::default();
        for v in vips {
            let Some(meta) = pinned.vip(&v.id) else {
                continue;
            };
            let slot = meta.id;
            if slot >= limits.max_vips
                || reserved.vip_slots.contains(&slot)
                || a.vips.values().any(|s| *s == slot)
            {
                continue;
            }
            a.vips.insert(v.id, slot);
            for b in &v.backends {
                let (words, family) = addr_words(b.addr.ip());
                let found = pinned.backends_of(slot).find(|(id, p)| {
                    p.addr == words
                        && p.family == family
                        && *id < limits.max_backends
                        && !reserved.backend_ids.contains(id)
                        && !a.backends.iter().any(|(_, i, _)| i == id)
                });
                if let Some((id, p)) = found {
                    a.backends.push(((v.id, b.addr), id, p.generation));
                    a.generations.insert(id, p.generation);
                }
            }
        }
        a
    }

    /// Reassigns ids for exactly `vips`: existing identities keep their ids, removed ones
    /// free theirs, new ones take the lowest free id that is not `reserved` (with a
    /// generation newer than any it had).
    pub fn update(
        &mut self,
        vips: &[VipSpec],
        limits: &LimitsSpec,
        reserved: &Reserved,
    ) -> Result<(), PlanError> {
        self.update_touched(vips, limits, reserved, None)
    }

    /// [`Allocation::update`] when only the VIPs in `touched` can differ from the ones
    /// this allocation covers (every other VIP of `vips` is covered as it is, every VIP
    /// it covers and `vips` lacks is in `touched`); `None`: any can. The ids handed out
    /// are the same as `update`'s: an untouched VIP has its slot and all its ids, so
    /// `update` would hand it nothing, and it is not looked at.
    pub fn update_touched(
        &mut self,
        vips: &[VipSpec],
        limits: &LimitsSpec,
        reserved: &Reserved,
        touched: Option<&HashSet<VipId>>,
    ) -> Result<(), PlanError> {
        let is_touched = |id: &VipId| touched.is_none_or(|t| t.contains(id));
        // Bitmaps over the id and slot ranges, not sets of every id: building those
        // took longer than the rest of a change to one VIP of 10,000.
        let ids_in = |n: u32| vec![false; n as usize];
        let mark = |bits: &mut Vec<bool>, i: u32| {
            if let Some(b) = bits.get_mut(i as usize) {
                *b = true;
            }
        };
        let has = |bits: &Vec<bool>, i: u32| bits.get(i as usize).copied().unwrap_or(false);
        // Ids freed by this update are handed out only when nothing else is free, so a
        // table still being replaced never sees its old id suddenly mean another backend.
        let mut freed_vips = ids_in(limits.max_vips);
        for &s in self.vips.values() {
            mark(&mut freed_vips, s);
        }
        let mut freed_backends = ids_in(limits.max_backends);
        for &(_, id, _) in &self.backends {
            mark(&mut freed_backends, id);
        }
        // The touched VIPs as wanted, and their backends.
        let wanted: HashSet<VipId> = vips
            .iter()
            .filter(|v| is_touched(&v.id))
            .map(|v| v.id)
            .collect();
        let wanted_b: HashSet<BackendIdentity> = vips
            .iter()
            .filter(|v| is_touched(&v.id))
            .flat_map(|v| v.backends.iter().map(move |b| (v.id, b.addr)))
            .collect();
        self.vips
            .retain(|id, _| !is_touched(id) || wanted.contains(id));
        self.backends
            .retain(|(i, _, _)| !is_touched(&i.0) || wanted_b.contains(i));
        // Built once, not per new backend: 10,000 new backends took minutes otherwise.
        let mut known: HashSet<BackendIdentity> = self
            .backends
            .iter()
            .filter(|(i, _, _)| is_touched(&i.0))
            .map(|&(i, _, _)| i)
            .collect();
        let mut used = ids_in(limits.max_backends);
        for &(_, id, _) in &self.backends {
            mark(&mut used, id);
        }
        for &id in &reserved.backend_ids {
            mark(&mut used, id);
        }
        // Ids are only taken below, never freed, so the lowest free id only grows: each
        // search goes on from where the last one stopped.
        let (mut fresh_from, mut any_from) = (0, 0);
        // The same for VIP slots: built once, searched on from the last slot taken.
        let mut used_slots = ids_in(limits.max_vips);
        for &s in self.vips.values() {
            mark(&mut used_slots, s);
        }
        for &s in &reserved.vip_slots {
            mark(&mut used_slots, s);
        }
        let (mut fresh_slot_from, mut any_slot_from) = (0, 0);
        for v in vips.iter().filter(|v| is_touched(&v.id)) {
            if let std::collections::btree_map::Entry::Vacant(entry) = self.vips.entry(v.id) {
                let fresh = (fresh_slot_from..limits.max_vips)
                    .find(|&s| !has(&used_slots, s) && !has(&freed_vips, s));
                fresh_slot_from = fresh.unwrap_or(limits.max_vips);
                let slot = fresh
                    .or_else(|| {
                        let any = (any_slot_from..limits.max_vips).find(|&s| !has(&used_slots, s));
                        if let Some(a) = any {
                            any_slot_from = a;
                        }
                        any
                    })
                    .ok_or(PlanError::NoVipSlot {
                        vip: v.id,
                        max: limits.max_vips,
                    })?;
                mark(&mut used_slots, slot);
                entry.insert(slot);
            }
            for b in &v.backends {
                let ident = (v.id, b.addr);
                if !known.insert(ident) {
                    continue;
                }
                let fresh = (fresh_from..limits.max_backends)
                    .find(|&s| !has(&used, s) && !has(&freed_backends, s));
                fresh_from = fresh.unwrap_or(limits.max_backends);
                let id = fresh
                    .or_else(|| {
                        let any = (any_from..limits.max_backends).find(|&s| !has(&used, s));
                        if let Some(a) = any {
                            any_from = a;
                        }
                        any
                    })
                    .ok_or(PlanError::NoBackendId {
                        vip: v.id,
                        backend: b.addr,
                        max: limits.max_backends,
                    })?;
                let last = self
                    .generations
                    .get(&id)
                    .into_iter()
                    .chain(reserved.generations.get(&id))
                    .max();
                let generation = last.map_or(1, |g| g.wrapping_add(1));
                self.generations.insert(id, generation);
                mark(&mut used, id);
                self.backends.push((ident, id, generation));
            }
        }
        let mut live = ids_in(limits.max_backends);
        for &(_, id, _) in &self.backends {
            mark(&mut live, id);
        }
        let backends = &self.backends;
        self.generations.retain(|&id, _| {
            has(&live, id)
                || (id >= limits.max_backends && backends.iter().any(|&(_, i, _)| i == id))
        });
        Ok(())
    }
}

/// The datapath's global settings from the config.
pub fn global_config(d: &DatapathSpec) -> GlobalConfig {
    let (v4, v4len) = d.tunnel_source_v4;
    let (v6, _) = d.tunnel_source_v6;
    let (v6w, _) = addr_words(IpAddr::V6(v6));
    GlobalConfig {
        flags: if d.icmp_too_big {
            vip_common::CONFIG_F_ICMP_TOO_BIG
        } else {
            0
        },
        mtu: d.mtu,
        tunnel_src_v4_be: u32::from_ne_bytes(v4.octets()),
        tunnel_src_v4_hash_bits: 32 - u32::from(v4len),
        tunnel_src_v6: v6w,
        // Filled in by the datapath (`Datapath::set_global`), which owns the table.
        flow_sets_mask: 0,
        flow_seed: 0,
        vip_slots_mask: 0,
    }
}

/// Health of each backend identity; absent = healthy (a new or restarted vipd must not
/// take backends out before their checks had a chance to fail).
pub type HealthMap = HashMap<BackendIdentity, bool>;

/// What one backend looks like to the datapath and to Maglev.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendPlan {
    /// Map value.
    pub value: Backend,
    /// Weight in the Maglev table (0 = not in the table).
    pub table_weight: u32,
}

/// One VIP as the datapath will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipPlan {
    /// Slot = counter id.
    pub slot: u32,
    /// `VIP_F_*`.
    pub flags: u32,
    /// Maglev table size.
    pub table_size: u32,
    /// (id, identity, weight) of backends in the table, sorted by id: the Maglev input.
    pub members: Vec<(u32, SocketAddr, u32)>,
    /// The source access list as the datapath's trie holds it (empty: none).
    pub acl: Vec<crate::config::AclEntry>,
}

/// Complete desired map contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Backend id → value.
    pub backends: BTreeMap<u32, BackendPlan>,
    /// VIP key → plan.
    pub vips: BTreeMap<VipKeyOrd, VipPlan>,
}

/// [`VipKey`] with an order, for deterministic iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VipKeyOrd(pub VipId);

impl VipKeyOrd {
    /// The map key.
    pub fn key(&self) -> VipKey {
        vip_id_key(&self.0)
    }
}

/// State of a backend as the datapath sees it.
pub fn backend_state(admin: AdminState, weight: u32, healthy: bool) -> u8 {
    match (admin, healthy) {
        (AdminState::Maint, _) | (_, false) => BACKEND_DOWN,
        (AdminState::Drain, true) => BACKEND_DRAINING,
        (AdminState::Ready, true) if weight == 0 => BACKEND_DRAINING,
        (AdminState::Ready, true) => BACKEND_UP,
    }
}

/// The `VIP_F_*` flags of a VIP.
pub fn vip_flags(v: &VipSpec) -> u32 {
    let mut flags = 0;
    if v.mode == Mode::DsrL2 {
        flags |= VIP_F_DSR_L2;
    }
    if v.hash == HashMode::Src {
        flags |= VIP_F_HASH_SRC_ONLY;
    }
    if !v.conntrack {
        flags |= VIP_F_NO_CONNTRACK;
    }
    flags
}

/// Builds the desired map contents. `alloc` must already cover `vips`. Each backend value
/// carries its VIP's slot and flags, the same as the VIP's plan.
pub fn desired_tables(vips: &[VipSpec], alloc: &Allocation, health: &HealthMap) -> Desired {
    desired_tables_of(vips, alloc, health, None)
}

/// [`desired_tables`] of the VIPs in `only` alone (`None`: of all): the entries of the
/// others' backends and tables are left out, for [`Applied::reconcile_scoped`].
pub fn desired_tables_of(
    vips: &[VipSpec],
    alloc: &Allocation,
    health: &HealthMap,
    only: Option<&HashSet<VipId>>,
) -> Desired {
    let wanted = |id: &VipId| only.is_none_or(|o| o.contains(id));
    let mut out = Desired::default();
    // Looked up once per backend: a search of the list per backend took seconds at
    // 10,000 backends (and grows with their square).
    let ids: HashMap<&BackendIdentity, (u32, u32)> = alloc
        .backends
        .iter()
        .filter(|(i, _, _)| wanted(&i.0))
        .map(|(i, id, g)| (i, (*id, *g)))
        .collect();
    for v in vips.iter().filter(|v| wanted(&v.id)) {
        let slot = alloc.vips[&v.id];
        let flags = vip_flags(v);
        let mut members = Vec::new();
        for b in &v.backends {
            let ident = (v.id, b.addr);
            let (id, generation) = *ids.get(&ident).expect("allocation covers the spec");
            let healthy = health.get(&ident).copied().unwrap_or(true);
            let state = backend_state(b.state, b.weight, healthy);
            let (words, family) = addr_words(b.addr.ip());
            out.backends.insert(
                id,
                BackendPlan {
                    value: Backend {
                        addr: words,
                        generation,
                        family,
                        state,
                        _pad: [0; 2],
                        vip_id: slot,
                        vip_flags: flags,
                    },
                    table_weight: if state == BACKEND_UP { b.weight } else { 0 },
                },
            );
            if state == BACKEND_UP {
                members.push((id, b.addr, b.weight));
            }
        }
        members.sort();
        out.vips.insert(
            VipKeyOrd(v.id),
            VipPlan {
                slot,
                flags,
                table_size: v.table_size,
                members,
                acl: v.acl.entries(v.id.addr.is_ipv6()),
            },
        );
    }
    out
}

/// What one reconcile did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyStats {
    /// Backend entries written.
    pub backend_writes: u64,
    /// Maglev tables rebuilt.
    pub tables_built: u64,
    /// VIPs (re)published.
    pub vips_published: u64,
    /// Map writes made by publishing (table entries + VIP entries).
    pub publish_writes: u64,
    /// VIPs removed.
    pub vips_removed: u64,
}

impl ApplyStats {
    /// All map writes.
    pub fn map_writes(&self) -> u64 {
        self.backend_writes + self.publish_writes + self.vips_removed
    }
}

/// What a partial desired state (see [`desired_tables_of`]) may leave behind besides
/// what it names: the VIPs and backend ids it may remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// VIPs that may be gone, in order.
    pub vips: BTreeSet<VipKeyOrd>,
    /// Backend ids that may be unused, in order.
    pub backends: BTreeSet<u32>,
}

/// What is in the maps now (the owner's shadow), plus built tables by their input so an
/// unchanged VIP is neither rebuilt nor republished.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    /// Backend id → value written.
    pub backends: BTreeMap<u32, Backend>,
    /// VIP → (plan, table) published.
    pub vips: BTreeMap<VipKeyOrd, (VipPlan, Vec<u32>)>,
    /// Global settings written.
    pub global: Option<GlobalConfig>,
    /// VIP entries found in the pinned maps that this shadow has no plan for: removed
    /// first unless wanted (then published over), see [`Applied::adopted`].
    pub stray: Vec<VipKey>,
}

impl Applied {
    /// The shadow of maps found pinned at start: every backend entry in use as it is
    /// (so an unchanged one is not written again, and one nothing wants is cleared),
    /// and every VIP entry as stray (a VIP nothing wants is removed before anything
    /// else is written). `keep` are VIPs left alone, entries and backends: those vipd
    /// keeps without managing them.
    pub fn adopted(pinned: &Pinned, keep_vips: &[VipKey], keep_backends: &BTreeSet<u32>) -> Self {
        Applied {
            backends: pinned
                .backends
                .iter()
                .filter(|(id, b)| b.state != BACKEND_UNUSED && !keep_backends.contains(id))
                .map(|(&id, b)| (id, *b))
                .collect(),
            vips: BTreeMap::new(),
            global: None,
            stray: pinned
                .vips
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| !keep_vips.contains(k))
                .collect(),
        }
    }

    /// Writes what differs between `self` and `want`, updating `self` after each write so
    /// it always matches the maps (a failed reconcile can be undone by reconciling back).
    pub fn reconcile<T: Tables>(
        &mut self,
        tables: &mut T,
        global: &GlobalConfig,
        want: &Desired,
    ) -> Result<ApplyStats, T::Error> {
        self.reconcile_scoped(tables, global, want, None)
    }

    /// [`Applied::reconcile`] when `want` holds only part of the maps (see
    /// [`desired_tables_of`]) and `scope` says what else can go: the writes are those
    /// of a reconcile to the whole desired state, in the same order, but what `want`
    /// leaves out is not looked at. `None`: `want` is the whole state. With stray
    /// entries left from the start, the whole state is needed (`self.stray` must be
    /// empty).
    pub fn reconcile_scoped<T: Tables>(
        &mut self,
        tables: &mut T,
        global: &GlobalConfig,
        want: &Desired,
        scope: Option<&Scope>,
    ) -> Result<ApplyStats, T::Error> {
        let mut stats = ApplyStats::default();
        debug_assert!(scope.is_none() || self.stray.is_empty());
        // 0. Pinned VIPs nothing wants (a vipd killed during a change left them) go
        //    before anything else is written: their tables may point at ids this change
        //    gives to other backends.
        if !self.stray.is_empty() {
            let wanted: HashSet<VipKey> = want.vips.keys().map(VipKeyOrd::key).collect();
            while let Some(&key) = self.stray.last() {
                if !wanted.contains(&key) {
                    tables.remove_vip(&key)?;
                    stats.vips_removed += 1;
                }
                // A wanted one is published over in 2.
                self.stray.pop();
            }
        }
        if self.global.as_ref() != Some(global) {
            tables.set_global(global)?;
            self.global = Some(*global);
        }
        // 1. Backends that become usable (or change address, generation, or their VIP's
        //    flags) first, so a new table never points at an id that is not set up yet.
        //    A VIP whose flags change is republished in 2: until then, flows found in
        //    the connection table already use the new flags and new flows the old ones
        //    (each packet is still handled wholly one way or the other).
        for (&id, plan) in &want.backends {
            let cur = self.backends.get(&id);
            if cur == Some(&plan.value) {
                continue;
            }
            let going_out = cur.is_some_and(|c| {
                c.addr == plan.value.addr
                    && c.generation == plan.value.generation
                    && c.state == BACKEND_UP
            }) && plan.value.state != BACKEND_UP;
            if !going_out {
                tables.set_backend(id, &plan.value)?;
                self.backends.insert(id, plan.value);
                stats.backend_writes += 1;
            }
        }
        // 2. Tables: build only for VIPs whose Maglev input changed.
        for (key, plan) in &want.vips {
            let old = self.vips.get(key);
            let same_input =
                |p: &VipPlan| p.members == plan.members && p.table_size == plan.table_size;
            let table = match old {
                // Unchanged: nothing to build, copy or compare (a change to one VIP
                // must not cost a copy of every table).
                Some((p, _)) if p == plan => continue,
                Some((p, t)) if same_input(p) => t.clone(),
                _ => {
                    stats.tables_built += 1;
                    build_table(plan)
                }
            };
            stats.publish_writes += tables.publish_vip(
                &key.key(),
                plan.slot,
                plan.flags,
                plan.table_size,
                &table,
                &plan.acl,
            )?;
            stats.vips_published += 1;
            self.vips.insert(*key, (plan.clone(), table));
        }
        // 3. VIPs that went away. Their pinned flows keep going to their backends (the
        //    datapath does not look the VIP up for them) until 4 clears those.
        let gone: Vec<VipKeyOrd> = match scope {
            None => self
                .vips
                .keys()
                .filter(|k| !want.vips.contains_key(k))
                .copied()
                .collect(),
            Some(scope) => scope
                .vips
                .iter()
                .filter(|k| self.vips.contains_key(k) && !want.vips.contains_key(k))
                .copied()
                .collect(),
        };
        for key in gone {
            tables.remove_vip(&key.key())?;
            self.vips.remove(&key);
            stats.vips_removed += 1;
        }
        // 4. Backends leaving service, after no table points at them any more: their
        //    flows re-hash (down) or stay (draining).
        for (&id, plan) in &want.backends {
            if self.backends.get(&id) != Some(&plan.value) {
                tables.set_backend(id, &plan.value)?;
                self.backends.insert(id, plan.value);
                stats.backend_writes += 1;
            }
        }
        let unused: Vec<u32> = match scope {
            None => self
                .backends
                .keys()
                .filter(|id| !want.backends.contains_key(id))
                .copied()
                .collect(),
            Some(scope) => scope
                .backends
                .iter()
                .filter(|id| self.backends.contains_key(id) && !want.backends.contains_key(id))
                .copied()
                .collect(),
        };
        for id in unused {
            let old = self.backends[&id];
            let cleared = Backend {
                state: BACKEND_UNUSED,
                ..old
            };
            if old != cleared {
                tables.set_backend(id, &cleared)?;
                stats.backend_writes += 1;
            }
            self.backends.remove(&id);
        }
        Ok(stats)
    }
}

/// The Maglev table of a VIP plan.
pub fn build_table(plan: &VipPlan) -> Vec<u32> {
    let input: Vec<maglev::MaglevBackend> = plan
        .members
        .iter()
        .map(|&(id, identity, weight)| maglev::MaglevBackend {
            id,
            identity,
            weight,
        })
        .collect();
    maglev::build(&input, plan.table_size)
}

/// Serde for maps with non-string keys, as a list of pairs (JSON keys must be strings).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
