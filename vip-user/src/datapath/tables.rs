//! What the control plane needs of a datapath: [`Tables`] (the writes) and
//! [`DatapathOps`] (the reads, and the next-hop cache), implemented for the real
//! [`Datapath`] here and by an in-memory fake in tests; and the config's limits as the
//! datapath's.

use std::{collections::BTreeMap, net::IpAddr};

use vip_common::{
    Backend, BackendCounters, ConnState, FlowKey, GlobalConfig, HaGroup, NextHop, Reason,
    VipCounters, VipKey, VipMeta,
};

use super::{Datapath, DatapathError, Limits};
use crate::config::{AclEntry, LimitsSpec};

/// The writes the owner makes. Implemented by `Datapath`, and by a recorder in tests.
pub trait Tables {
    /// The writer's error.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Writes the global settings.
    fn set_global(&mut self, cfg: &GlobalConfig) -> Result<(), Self::Error>;
    /// Writes one backend entry.
    fn set_backend(&mut self, id: u32, b: &Backend) -> Result<(), Self::Error>;
    /// Writes a VIP's table aside and publishes it; returns the map writes made.
    /// `table_size` is the VIP's M: `table` has that many entries, or none (no backend).
    fn publish_vip(
        &mut self,
        key: &VipKey,
        id: u32,
        flags: u32,
        table_size: u32,
        table: &[u32],
        acl: &[AclEntry],
    ) -> Result<u64, Self::Error>;
    /// Removes a VIP.
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), Self::Error>;
}

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
    fn live_table(&self, key: &VipKey) -> Result<Option<Vec<u32>>, Self::Error>;
    /// Writes a backend's cached next hop (an invalid one sends it back to
    /// `bpf_fib_lookup`).
    fn set_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<(), Self::Error>;
    /// Every VIP entry the VIP map holds (address markers left out): what a start adopts
    /// and reconciles.
    fn pinned_vips(&self) -> Result<Vec<(VipKey, VipMeta)>, Self::Error>;
    /// Every backend entry that was ever written (all-zero entries left out; a cleared
    /// entry keeps its generation), by id.
    fn pinned_backends(&self) -> Result<BTreeMap<u32, Backend>, Self::Error>;
    /// Makes the addresses answered by proxy ARP/NDP exactly `want` (address → HA
    /// group index).
    fn sync_announced(&mut self, want: &BTreeMap<IpAddr, u32>) -> Result<(), Self::Error>;
    /// The HA group entry at `index`.
    fn ha_group(&self, index: u32) -> Result<HaGroup, Self::Error>;
    /// Writes the HA group entry at `index`.
    fn set_ha_group(&mut self, index: u32, g: &HaGroup) -> Result<(), Self::Error>;
}

/// The datapath's limits from the config's.
pub fn limits(l: &LimitsSpec) -> Limits {
    Limits {
        max_vips: l.max_vips,
        max_backends: l.max_backends,
        table_size: l.table_size,
        max_conns: l.max_conns,
        maglev_pool: l.maglev_pool,
    }
}

impl Tables for Datapath {
    type Error = DatapathError;

    fn set_global(&mut self, cfg: &GlobalConfig) -> Result<(), DatapathError> {
        Datapath::set_global(self, cfg)
    }

    fn set_backend(&mut self, id: u32, b: &Backend) -> Result<(), DatapathError> {
        Datapath::set_backend(self, id, b)
    }

    fn publish_vip(
        &mut self,
        key: &VipKey,
        id: u32,
        flags: u32,
        table_size: u32,
        table: &[u32],
        acl: &[AclEntry],
    ) -> Result<u64, DatapathError> {
        // Table entries written, plus the VIP entry that publishes them.
        Datapath::publish_vip(self, key, id, flags, table_size, table, acl)
            .map(|s| u64::from(s.table_writes) + 1)
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DatapathError> {
        Datapath::remove_vip(self, key)
    }
}

impl DatapathOps for Datapath {
    fn vip_counters(&self, id: u32) -> Result<VipCounters, DatapathError> {
        Datapath::vip_counters(self, id)
    }

    fn backend_counters(&self, id: u32) -> Result<BackendCounters, DatapathError> {
        Datapath::backend_counters(self, id)
    }

    fn reason_counts(&self) -> Result<Vec<(Reason, u64)>, DatapathError> {
        Datapath::reason_counts(self)
    }

    fn conn_count(&self) -> Result<u64, DatapathError> {
        Datapath::conn_count(self)
    }

    fn lookup_conn(&self, key: &FlowKey) -> Result<Option<ConnState>, DatapathError> {
        Datapath::lookup_conn(self, key)
    }

    fn live_table(&self, key: &VipKey) -> Result<Option<Vec<u32>>, DatapathError> {
        Datapath::vip_table(self, key)
    }

    fn set_nexthop(&mut self, id: u32, nh: &NextHop) -> Result<(), DatapathError> {
        Datapath::set_nexthop(self, id, nh)
    }

    fn pinned_vips(&self) -> Result<Vec<(VipKey, VipMeta)>, DatapathError> {
        Datapath::published_vips(self)
    }

    fn pinned_backends(&self) -> Result<BTreeMap<u32, Backend>, DatapathError> {
        Datapath::written_backends(self)
    }

    fn sync_announced(&mut self, want: &BTreeMap<IpAddr, u32>) -> Result<(), DatapathError> {
        Datapath::sync_announced(self, want)
    }

    fn ha_group(&self, index: u32) -> Result<HaGroup, DatapathError> {
        Datapath::ha_group(self, index)
    }

    fn set_ha_group(&mut self, index: u32, g: &HaGroup) -> Result<(), DatapathError> {
        Datapath::set_ha_group(self, index, g)
    }
}
