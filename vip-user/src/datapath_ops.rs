//! The owner's view of the real datapath: [`Tables`] and [`DatapathOps`] for
//! [`Datapath`], and the config's limits as the datapath's.

use vip_common::{
    Backend, BackendCounters, ConnState, FlowKey, GlobalConfig, Reason, VipCounters, VipKey,
};

use crate::{
    config::LimitsSpec,
    datapath::{Datapath, DatapathError, Limits},
    owner::DatapathOps,
    reconcile::Tables,
};

/// The datapath's limits from the config's.
pub fn limits(l: &LimitsSpec) -> Limits {
    Limits {
        max_vips: l.max_vips,
        max_backends: l.max_backends,
        table_size: l.table_size,
        max_conns: l.max_conns,
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
        slot: u32,
        table: &[u32],
    ) -> Result<u64, DatapathError> {
        // Table entries written, plus the VIP entry that publishes them.
        Datapath::publish_vip(self, key, id, flags, slot, table)
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

    fn set_nexthop(&mut self, id: u32, nh: &vip_common::NextHop) -> Result<(), DatapathError> {
        Datapath::set_nexthop(self, id, nh)
    }
}
