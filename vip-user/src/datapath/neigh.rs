//! The maps of proxy ARP/NDP and HA groups (`vip_common::neigh`): which VIP addresses the
//! datapath answers for, in which group, the role of each group, and the MAC of each
//! interface the answers leave by.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{SystemTime, UNIX_EPOCH},
};

use aya::maps::MapError;
use vip_common::{
    FAMILY_V6, HA_GROUP_NAME_LEN, HaGroup, IfMac, MAP_HA_GROUPS, MAP_IF_MACS, MAP_NEIGH,
    MAX_HA_GROUPS, NeighEntry, NeighKey, VipKey, solicited_node, vip_filter_slot,
};

use crate::protocol::HaRole;

use super::{Datapath, DatapathError, Result, check, keys::addr_words, map_err};

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A group name as the map stores it.
pub fn name_bytes(name: &str) -> [u8; HA_GROUP_NAME_LEN] {
    let mut b = [0u8; HA_GROUP_NAME_LEN];
    let n = name.len().min(HA_GROUP_NAME_LEN - 1);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    b
}

/// The name of a map entry (empty: unused).
pub fn entry_name(g: &HaGroup) -> String {
    let end = g.name.iter().position(|&b| b == 0).unwrap_or(g.name.len());
    String::from_utf8_lossy(&g.name[..end]).into_owned()
}

/// `g` with `role`, its transition count and time updated when the role changes.
pub fn with_role(g: &HaGroup, role: HaRole) -> HaGroup {
    let role = role.to_map();
    if g.role == role && g.since_unix_ms != 0 {
        return *g;
    }
    HaGroup {
        role,
        transitions: g.transitions + u32::from(g.role != role),
        since_unix_ms: now_unix_ms(),
        ..*g
    }
}

/// The [`NeighKey`] of an address.
pub fn neigh_key(addr: IpAddr) -> NeighKey {
    let (addr, family) = addr_words(addr);
    NeighKey {
        addr,
        family,
        _pad: [0; 3],
    }
}

/// The address of a [`NeighKey`].
pub fn key_addr(k: &NeighKey) -> IpAddr {
    if k.family == FAMILY_V6 {
        let mut o = [0u8; 16];
        for (i, w) in k.addr.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from(k.addr[0].to_ne_bytes()))
    }
}

/// The VIP-address filter key of the solicited-node address of an IPv6 key.
fn solicited_filter_key(k: &NeighKey) -> VipKey {
    VipKey {
        addr: solicited_node(&k.addr),
        port_be: 0,
        proto: 0,
        family: FAMILY_V6,
    }
}

impl Datapath {
    /// Reads the announced addresses back from an adopted map.
    pub(super) fn read_announced(&mut self) -> Result<()> {
        for entry in self.neigh.iter() {
            let (k, v) = entry.map_err(map_err(MAP_NEIGH, "listing announced addresses"))?;
            self.announced.insert(k, v.group);
        }
        Ok(())
    }

    /// True when an announced IPv6 address's solicited-node address has the filter bit
    /// `slot` (so the bit stays while it does).
    pub(super) fn solicited_node_in(&self, slot: (u32, u64)) -> bool {
        self.announced.keys().any(|k| {
            k.family == FAMILY_V6 && vip_filter_slot(&solicited_node(&k.addr), FAMILY_V6) == slot
        })
    }

    /// Answers ARP (IPv4) or neighbour solicitations (IPv6) for `addr` while HA group
    /// `group` is active. For IPv6 the solicited-node address is put in the VIP-address
    /// filter first, so the solicitations reach the neighbour code.
    pub fn announce(&mut self, addr: IpAddr, group: u32) -> Result<(), DatapathError> {
        check("HA group", group.into(), MAX_HA_GROUPS.into())?;
        let k = neigh_key(addr);
        if k.family == FAMILY_V6 {
            self.set_filter_bit(&solicited_filter_key(&k))?;
        }
        self.neigh
            .insert(k, NeighEntry { group }, 0)
            .map_err(map_err(MAP_NEIGH, format!("announcing {addr}")))?;
        self.announced.insert(k, group);
        Ok(())
    }

    /// Stops answering for `addr`; its solicited-node filter bit is cleared when no VIP
    /// address or other announced address needs it.
    pub fn withdraw(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        let k = neigh_key(addr);
        match self.neigh.remove(&k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(MAP_NEIGH, format!("withdrawing {addr}"))(e)),
        }
        self.announced.remove(&k);
        if k.family == FAMILY_V6 {
            let fk = solicited_filter_key(&k);
            let slot = vip_filter_slot(&fk.addr, FAMILY_V6);
            let vips = self
                .vips
                .keys()
                .collect::<std::result::Result<Vec<VipKey>, _>>()
                .map_err(map_err(super::MAP_VIPS, "listing VIPs"))?;
            if !vips
                .iter()
                .any(|v| vip_filter_slot(&v.addr, v.family) == slot)
                && !self.solicited_node_in(slot)
            {
                self.clear_filter_bit(&fk)?;
            }
        }
        Ok(())
    }

    /// Makes the announced addresses exactly `want` (address → HA group index):
    /// new and regrouped ones announced, the others withdrawn.
    pub fn sync_announced(&mut self, want: &BTreeMap<IpAddr, u32>) -> Result<(), DatapathError> {
        let want_keys: StdHashMap<NeighKey, (IpAddr, u32)> = want
            .iter()
            .map(|(a, g)| (neigh_key(*a), (*a, *g)))
            .collect();
        let gone: Vec<IpAddr> = self
            .announced
            .keys()
            .filter(|k| !want_keys.contains_key(k))
            .map(key_addr)
            .collect();
        for a in gone {
            self.withdraw(a)?;
        }
        for (k, (a, g)) in &want_keys {
            if self.announced.get(k) != Some(g) {
                self.announce(*a, *g)?;
            }
        }
        Ok(())
    }

    /// The announced addresses and their groups.
    pub fn announced(&self) -> impl Iterator<Item = (&NeighKey, &u32)> {
        self.announced.iter()
    }

    /// Sets the MAC that answers received on interface `ifindex` carry.
    pub fn set_if_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), DatapathError> {
        self.if_macs
            .insert(ifindex, IfMac { mac, _pad: [0; 2] }, 0)
            .map_err(map_err(
                MAP_IF_MACS,
                format!("setting the MAC of interface {ifindex}"),
            ))
    }

    /// The HA group at `index` (a zeroed entry when unused).
    pub fn ha_group(&self, index: u32) -> Result<HaGroup, DatapathError> {
        check("HA group", index.into(), MAX_HA_GROUPS.into())?;
        self.ha_groups
            .get(&index, 0)
            .map_err(map_err(MAP_HA_GROUPS, format!("reading HA group {index}")))
    }

    /// Writes the HA group at `index`.
    pub fn set_ha_group(&mut self, index: u32, g: &HaGroup) -> Result<(), DatapathError> {
        check("HA group", index.into(), MAX_HA_GROUPS.into())?;
        self.ha_groups
            .set(index, *g, 0)
            .map_err(map_err(MAP_HA_GROUPS, format!("writing HA group {index}")))
    }
}
