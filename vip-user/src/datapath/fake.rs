//! An in-memory stand-in for the datapath maps (tests only): records contents, counts
//! writes, checks publish order and can fail on a chosen write.

use std::collections::{BTreeMap, HashMap};

use vip_common::{
    BACKEND_UP, Backend, BackendCounters, ConnState, FlowKey, GlobalConfig, Reason, VipCounters,
    VipKey, VipMeta,
};

use super::tables::{DatapathOps, Tables};

/// A write failed on purpose.
#[derive(Debug, thiserror::Error)]
#[error("injected map write failure")]
pub struct Injected;

/// The fake maps.
#[derive(Debug, Default)]
pub struct FakeMaps {
    pub backends: BTreeMap<u32, Backend>,
    pub vips: HashMap<VipKey, (u32, u32, Vec<u32>)>,
    pub conns: HashMap<FlowKey, ConnState>,
    pub backend_writes: u64,
    pub publishes: u64,
    /// Number of further writes that succeed before one fails.
    pub fail_after: Option<u64>,
    /// Per-backend packet counters.
    pub backend_packets: HashMap<u32, u64>,
    /// Next hops per backend id.
    pub nexthops: BTreeMap<u32, vip_common::NextHop>,
    /// Counts every write, the global settings included, where a test can still see it
    /// after the maps were moved into something that failed.
    pub every_write: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Announced addresses → HA group index.
    pub announced: BTreeMap<std::net::IpAddr, u32>,
    /// HA groups by index.
    pub ha_groups: BTreeMap<u32, vip_common::HaGroup>,
    /// Each VIP's access list as last published.
    pub acls: HashMap<VipKey, Vec<crate::config::AclEntry>>,
}

impl FakeMaps {
    fn write(&mut self) -> Result<(), Injected> {
        self.count();
        match &mut self.fail_after {
            Some(0) => Err(Injected),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl FakeMaps {
    fn count(&self) {
        if let Some(n) = &self.every_write {
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Tables for FakeMaps {
    type Error = Injected;
    fn set_global(&mut self, _: &GlobalConfig) -> Result<(), Injected> {
        self.count();
        Ok(())
    }
    fn set_backend(&mut self, id: u32, b: &Backend) -> Result<(), Injected> {
        self.write()?;
        self.backends.insert(id, *b);
        self.backend_writes += 1;
        Ok(())
    }
    fn publish_vip(
        &mut self,
        key: &VipKey,
        id: u32,
        flags: u32,
        table_size: u32,
        table: &[u32],
        acl: &[crate::config::AclEntry],
    ) -> Result<u64, Injected> {
        self.write()?;
        assert!(
            table.is_empty() || table.len() == table_size as usize,
            "a table of {} entries published as M = {table_size}",
            table.len()
        );
        for id in table {
            assert_eq!(
                self.backends.get(id).map(|b| b.state),
                Some(BACKEND_UP),
                "table published before backend {id} was up"
            );
        }
        let old = self
            .vips
            .insert(*key, (id, flags | table_size << 8, table.to_vec()));
        self.publishes += 1;
        self.acls.insert(*key, acl.to_vec());
        let changed = match old {
            Some((_, _, t)) if t.len() == table.len() => {
                t.iter().zip(table).filter(|(a, b)| a != b).count()
            }
            _ => table.len(),
        };
        Ok(changed as u64 + 1)
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), Injected> {
        self.write()?;
        self.vips.remove(key);
        Ok(())
    }
}

impl DatapathOps for FakeMaps {
    fn vip_counters(&self, _: u32) -> Result<VipCounters, Injected> {
        Ok(VipCounters::default())
    }
    fn backend_counters(&self, id: u32) -> Result<BackendCounters, Injected> {
        Ok(BackendCounters {
            packets: self.backend_packets.get(&id).copied().unwrap_or(0),
            ..BackendCounters::default()
        })
    }
    fn reason_counts(&self) -> Result<Vec<(Reason, u64)>, Injected> {
        Ok(Vec::new())
    }
    fn conn_count(&self) -> Result<u64, Injected> {
        Ok(self.conns.len() as u64)
    }
    fn lookup_conn(&self, key: &FlowKey) -> Result<Option<ConnState>, Injected> {
        Ok(self.conns.get(key).copied())
    }
    fn live_table(&self, key: &VipKey) -> Result<Option<Vec<u32>>, Injected> {
        Ok(self.vips.get(key).map(|(_, _, t)| t.clone()))
    }

    fn pinned_vips(&self) -> Result<Vec<(VipKey, VipMeta)>, Injected> {
        Ok(self
            .vips
            .iter()
            .map(|(k, (id, flags_slot, table))| {
                (
                    *k,
                    VipMeta {
                        id: *id,
                        flags: flags_slot & 0xff,
                        table_base: 0,
                        table_size: table.len() as u32,
                    },
                )
            })
            .collect())
    }

    fn pinned_backends(&self) -> Result<BTreeMap<u32, Backend>, Injected> {
        Ok(self.backends.clone())
    }

    fn set_nexthop(&mut self, id: u32, nh: &vip_common::NextHop) -> Result<(), Injected> {
        self.write()?;
        self.nexthops.insert(id, *nh);
        Ok(())
    }

    fn sync_announced(&mut self, want: &BTreeMap<std::net::IpAddr, u32>) -> Result<(), Injected> {
        self.write()?;
        self.announced = want.clone();
        Ok(())
    }

    fn ha_group(&self, index: u32) -> Result<vip_common::HaGroup, Injected> {
        Ok(self.ha_groups.get(&index).copied().unwrap_or_default())
    }

    fn set_ha_group(&mut self, index: u32, g: &vip_common::HaGroup) -> Result<(), Injected> {
        self.write()?;
        self.ha_groups.insert(index, *g);
        Ok(())
    }
}
