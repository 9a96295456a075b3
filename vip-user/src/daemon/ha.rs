//! HA groups on this node: each `[[group]]` has an entry in the pinned `HA_GROUPS` map
//! (found again by name after a restart, so the role outlives vipd), the addresses of
//! its `announce = "arp"` VIPs in `NEIGH`, and on becoming active its VIPs announced on
//! its interfaces ([`garp`]). The role itself is set by an election engine
//! (keepalived, ucarp) through `vipctl ha set`; vip elects nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use vip_common::{HaGroup, MAX_HA_GROUPS};

use super::garp;
use crate::{
    config::{GroupSpec, VipSpec},
    datapath::{
        neigh::{entry_name, name_bytes, now_unix_ms, with_role},
        tables::DatapathOps,
        xdp_link,
    },
    protocol::{BackendState, HaGroupStatus, HaRole, Status},
};

/// Why an HA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// No `[[group]]` of that name.
    #[error(
        "no HA group {group:?} in vipd's config (groups: {known}): add a [[group]] with that name and reload"
    )]
    UnknownGroup {
        /// The name asked for.
        group: String,
        /// The configured names.
        known: String,
    },
    /// All `HA_GROUPS` entries hold other groups.
    #[error(
        "no free entry in the pinned HA group map for group {group:?} ({MAX_HA_GROUPS} groups at most): `vipd down` clears groups no longer configured"
    )]
    Full {
        /// The group.
        group: String,
    },
    /// A map access failed.
    #[error("{action}: {source}")]
    Map {
        /// What was being done.
        action: String,
        /// The datapath's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn map_err<E: std::error::Error + Send + Sync + 'static>(
    action: impl Into<String>,
) -> impl FnOnce(E) -> HaError {
    let action = action.into();
    move |e| HaError::Map {
        action,
        source: Box::new(e),
    }
}

#[derive(Debug)]
struct Group {
    spec: GroupSpec,
    index: u32,
    /// Announcements sent (shared with the sending threads).
    garps: Arc<AtomicU64>,
    /// The role as vipd last wrote or adopted it, and the group's VIP addresses: what
    /// the carrier watcher needs without the maps.
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    role: AtomicU32,
    addrs: Mutex<Vec<IpAddr>>,
}

/// How often the carrier of a group's interfaces is looked at (groups with two or more).
const CARRIER_POLL: Duration = Duration::from_millis(50);

/// The HA groups of a running vipd.
#[derive(Debug, Default)]
pub struct Ha {
    groups: Vec<Group>,
    /// (interface, multicast MAC) added to interface filters.
    joined: BTreeSet<(String, [u8; 6])>,
}

impl Ha {
    /// Finds or creates each group's entry in the (possibly adopted) group map: a group
    /// already there keeps its role; a new one starts as standby.
    pub fn start<T: DatapathOps>(specs: &[GroupSpec], dp: &mut T) -> Result<Self, HaError> {
        let mut entries = Vec::with_capacity(MAX_HA_GROUPS as usize);
        for i in 0..MAX_HA_GROUPS {
            entries.push(
                dp.ha_group(i)
                    .map_err(map_err(format!("reading HA group entry {i}")))?,
            );
        }
        let mut groups = Vec::new();
        for spec in specs {
            let found = entries.iter().position(|e| entry_name(e) == spec.name);
            let index = match found {
                Some(i) => i as u32,
                None => {
                    let free = entries
                        .iter()
                        .enumerate()
                        .position(|(i, e)| {
                            entry_name(e).is_empty()
                                || !specs.iter().any(|s| s.name == entry_name(e))
                                    && !groups.iter().any(|g: &Group| g.index == i as u32)
                        })
                        .ok_or_else(|| HaError::Full {
                            group: spec.name.clone(),
                        })?;
                    let e = HaGroup {
                        role: vip_common::HA_ROLE_STANDBY,
                        transitions: 0,
                        since_unix_ms: now_unix_ms(),
                        name: name_bytes(&spec.name),
                    };
                    dp.set_ha_group(free as u32, &e)
                        .map_err(map_err(format!("creating HA group {}", spec.name)))?;
                    entries[free] = e;
                    free as u32
                }
            };
            tracing::info!(
                group = %spec.name,
                index,
                role = HaRole::from_map(entries[index as usize].role).name(),
                adopted = found.is_some(),
                "HA group"
            );
            let g = Group {
                spec: spec.clone(),
                index,
                garps: Arc::new(AtomicU64::new(0)),
                shared: Arc::new(Shared {
                    role: AtomicU32::new(entries[index as usize].role),
                    addrs: Mutex::new(Vec::new()),
                }),
            };
            if spec.interfaces.len() > 1 {
                watch_carrier(&g);
            }
            groups.push(g);
        }
        Ok(Self {
            groups,
            joined: BTreeSet::new(),
        })
    }

    fn group(&self, name: &str) -> Result<&Group, HaError> {
        self.groups
            .iter()
            .find(|g| g.spec.name == name)
            .ok_or_else(|| HaError::UnknownGroup {
                group: name.to_string(),
                known: self
                    .groups
                    .iter()
                    .map(|g| g.spec.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The addresses of `group`'s VIPs, each once.
    fn addrs(group: &str, vips: &[VipSpec]) -> Vec<IpAddr> {
        let set: BTreeSet<IpAddr> = vips
            .iter()
            .filter(|v| v.ha_group.as_deref() == Some(group))
            .map(|v| v.id.addr)
            .collect();
        set.into_iter().collect()
    }

    /// Brings `NEIGH` and the interfaces' multicast filters to the running VIPs.
    pub fn sync<T: DatapathOps>(&mut self, dp: &mut T, vips: &[VipSpec]) -> Result<(), HaError> {
        let mut want = BTreeMap::new();
        let mut joins = BTreeSet::new();
        for g in &self.groups {
            *g.shared.addrs.lock().unwrap_or_else(|e| e.into_inner()) =
                Self::addrs(&g.spec.name, vips);
            for a in Self::addrs(&g.spec.name, vips) {
                want.insert(a, g.index);
                if let IpAddr::V6(v6) = a {
                    for i in &g.spec.interfaces {
                        joins.insert((i.clone(), garp::solicited_node_mac(v6)));
                    }
                }
            }
        }
        dp.sync_announced(&want)
            .map_err(map_err("writing the announced addresses"))?;
        for (iface, mac) in joins.difference(&self.joined) {
            if let Err(e) = garp::multicast_mac(iface, *mac, true) {
                tracing::warn!(%iface, error = %e, "could not add the solicited-node multicast MAC: neighbour solicitations for the VIP may not arrive on a NIC that filters multicast");
            }
        }
        for (iface, mac) in self.joined.difference(&joins) {
            let _ = garp::multicast_mac(iface, *mac, false);
        }
        self.joined = joins;
        Ok(())
    }

    /// Sets `group`'s role (idempotent); on becoming active its VIPs are announced.
    pub fn set_role<T: DatapathOps>(
        &mut self,
        dp: &mut T,
        vips: &[VipSpec],
        group: &str,
        role: HaRole,
    ) -> Result<(), HaError> {
        let g = self.group(group)?;
        let cur = dp
            .ha_group(g.index)
            .map_err(map_err(format!("reading HA group {group}")))?;
        let new = with_role(&cur, role);
        if new != cur {
            dp.set_ha_group(g.index, &new)
                .map_err(map_err(format!("writing HA group {group}")))?;
            g.shared.role.store(new.role, Ordering::Relaxed);
            tracing::info!(%group, from = HaRole::from_map(cur.role).name(), to = role.name(), "HA role changed");
            if role == HaRole::Active && cur.role != new.role {
                self.announce(g, vips);
            }
        }
        Ok(())
    }

    /// Announces the VIPs of every group that is active (at start: an adopted active
    /// role is announced again, harmless and quick to repair a stale router cache).
    pub fn announce_active<T: DatapathOps>(&self, dp: &T, vips: &[VipSpec]) {
        for g in &self.groups {
            if dp
                .ha_group(g.index)
                .is_ok_and(|e| e.role == vip_common::HA_ROLE_ACTIVE)
            {
                self.announce(g, vips);
            }
        }
    }

    /// Sends the group's announcements from a thread of their own on all its interfaces.
    fn announce(&self, g: &Group, vips: &[VipSpec]) {
        let addrs = Self::addrs(&g.spec.name, vips);
        announce_on(
            &g.spec,
            g.spec.interfaces.clone(),
            addrs,
            Arc::clone(&g.garps),
            Arc::clone(&g.shared),
        );
    }

    /// Every group as `vipctl ha status` shows it; `status` says which backends are up.
    pub fn status<T: DatapathOps>(
        &self,
        dp: &T,
        vips: &[VipSpec],
        status: &Status,
    ) -> Result<Vec<HaGroupStatus>, HaError> {
        let mut out = Vec::new();
        for g in &self.groups {
            let e = dp
                .ha_group(g.index)
                .map_err(map_err(format!("reading HA group {}", g.spec.name)))?;
            let healthy = status
                .vips
                .iter()
                .filter(|v| {
                    vips.iter().any(|s| {
                        s.id == v.vip && s.ha_group.as_deref() == Some(g.spec.name.as_str())
                    }) && v.backends.iter().any(|b| b.state == BackendState::Up)
                })
                .count() as u32;
            out.push(HaGroupStatus {
                group: g.spec.name.clone(),
                role: HaRole::from_map(e.role),
                since_unix_ms: e.since_unix_ms,
                transitions: e.transitions,
                interfaces: g.spec.interfaces.clone(),
                vips: Self::addrs(&g.spec.name, vips)
                    .iter()
                    .map(IpAddr::to_string)
                    .collect(),
                healthy_vips: healthy,
                garps_sent: g.garps.load(Ordering::Relaxed),
            });
        }
        Ok(out)
    }
}

/// Sends `addrs`' announcements on `ifaces` from a thread of its own: `garp_repeat`
/// rounds `garp_interval` apart, each with every VIP on every interface, as long as the
/// group stays active (a node that lost the group within the rounds must not pull the
/// routers back to itself).
fn announce_on(
    spec: &GroupSpec,
    ifaces: Vec<String>,
    addrs: Vec<IpAddr>,
    counter: Arc<AtomicU64>,
    shared: Arc<Shared>,
) {
    if addrs.is_empty() || ifaces.is_empty() {
        return;
    }
    let spec = spec.clone();
    std::thread::spawn(move || {
        let mut outs = Vec::new();
        for iface in &ifaces {
            let Some(idx) = xdp_link::interface_index(iface) else {
                tracing::warn!(%iface, group = %spec.name, "no such interface: VIPs not announced there");
                continue;
            };
            let mac = match garp::interface_mac(iface) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(%iface, error = %e, "cannot read the interface's MAC: VIPs not announced there");
                    continue;
                }
            };
            match garp::PacketSocket::open(idx) {
                Ok(s) => outs.push((iface.clone(), s, mac)),
                Err(e) => {
                    tracing::warn!(%iface, error = %e, "cannot open a packet socket: VIPs not announced there")
                }
            }
        }
        for round in 0..spec.garp_repeat {
            if round > 0 {
                std::thread::sleep(spec.garp_interval);
            }
            if shared.role.load(Ordering::Relaxed) != vip_common::HA_ROLE_ACTIVE {
                break;
            }
            for (iface, sock, mac) in &outs {
                for a in &addrs {
                    for frame in garp::announcements(*mac, *a) {
                        match sock.send(&frame) {
                            Ok(()) => {
                                counter.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                tracing::warn!(%iface, vip = %a, error = %e, "sending an announcement failed")
                            }
                        }
                    }
                }
            }
        }
    });
}

/// For a group on several interfaces: when one loses carrier while the group is active,
/// its VIPs are announced again on the others, so a router that reached them through
/// the failed NIC moves to a live one.
fn watch_carrier(g: &Group) {
    let spec = g.spec.clone();
    let shared = Arc::clone(&g.shared);
    let counter = Arc::clone(&g.garps);
    std::thread::spawn(move || {
        let mut up: Vec<bool> = spec
            .interfaces
            .iter()
            .map(|i| garp::has_carrier(i).unwrap_or(false))
            .collect();
        loop {
            std::thread::sleep(CARRIER_POLL);
            let now: Vec<bool> = spec
                .interfaces
                .iter()
                .map(|i| garp::has_carrier(i).unwrap_or(false))
                .collect();
            let lost = up.iter().zip(&now).any(|(was, is)| *was && !*is);
            if lost {
                let live: Vec<String> = spec
                    .interfaces
                    .iter()
                    .zip(&now)
                    .filter(|(_, is)| **is)
                    .map(|(i, _)| i.clone())
                    .collect();
                tracing::warn!(group = %spec.name, live = ?live, "an interface of the group lost carrier");
                if shared.role.load(Ordering::Relaxed) == vip_common::HA_ROLE_ACTIVE {
                    let addrs = shared
                        .addrs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    announce_on(
                        &spec,
                        live,
                        addrs,
                        Arc::clone(&counter),
                        Arc::clone(&shared),
                    );
                }
            }
            up = now;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{config::Config, datapath::fake::FakeMaps};

    fn group(name: &str) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            interfaces: Vec::new(),
            garp_repeat: 1,
            garp_interval: Duration::from_millis(1),
        }
    }

    fn vips() -> Vec<VipSpec> {
        Config::parse(
            "[[group]]\nname = \"web\"\n\
             [[vip]]\naddress = \"198.18.1.10:80\"\nannounce = \"arp\"\ngroup = \"web\"\n\
             [[vip]]\naddress = \"198.18.1.10:443\"\nannounce = \"arp\"\ngroup = \"web\"\n\
             [[vip]]\naddress = \"198.18.1.11:80\"\n",
            "t.toml",
        )
        .unwrap()
        .vips
    }

    #[test]
    fn groups_are_found_again_by_name_and_keep_their_role() {
        let mut dp = FakeMaps::default();
        let mut ha = Ha::start(&[group("web"), group("db")], &mut dp).unwrap();
        assert_eq!(entry_name(&dp.ha_groups[&0]), "web");
        assert_eq!(entry_name(&dp.ha_groups[&1]), "db");
        ha.set_role(&mut dp, &[], "db", HaRole::Active).unwrap();
        let once = dp.ha_groups[&1];
        ha.set_role(&mut dp, &[], "db", HaRole::Active).unwrap();
        assert_eq!(
            dp.ha_groups[&1], once,
            "setting the same role again changes nothing"
        );
        assert_eq!(once.transitions, 1);
        // A restart with the groups in another order adopts each by name.
        let _ha = Ha::start(&[group("db"), group("web")], &mut dp).unwrap();
        assert_eq!(dp.ha_groups[&1].role, vip_common::HA_ROLE_ACTIVE);
        assert_eq!(dp.ha_groups[&0].role, vip_common::HA_ROLE_STANDBY);
        assert!(matches!(
            ha.set_role(&mut dp, &[], "nope", HaRole::Active),
            Err(HaError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn each_announced_address_is_written_once_with_its_group() {
        let mut dp = FakeMaps::default();
        let mut ha = Ha::start(&[group("web")], &mut dp).unwrap();
        ha.sync(&mut dp, &vips()).unwrap();
        let want: BTreeMap<IpAddr, u32> = [("198.18.1.10".parse().unwrap(), 0)].into();
        assert_eq!(dp.announced, want);
        ha.sync(&mut dp, &[]).unwrap();
        assert!(dp.announced.is_empty());
    }
}
