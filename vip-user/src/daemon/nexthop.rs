//! Resolves each backend's next hop from the kernel (route, neighbour, egress link) so
//! the datapath can use its NEXTHOPS cache instead of paying `bpf_fib_lookup` per packet.
//!
//! The kernel is asked through `ip -j` (iproute2's JSON output): `route get` per backend
//! address, one `neigh show` and one `link show` per refresh. This runs in vipd's current
//! network namespace (the LB node's, joined by `vipd run --netns`). Anything unresolved
//! (no route, local or non-unicast route, neighbour missing, incomplete, stale or failed,
//! interface without a MAC) yields an invalid entry: the datapath then falls back to
//! `bpf_fib_lookup`, and the health checks' kernel traffic resolves ARP/ND meanwhile.

use std::{collections::HashMap, net::IpAddr, process::Command};

use serde::Deserialize;
use vip_common::{NEXTHOP_F_VALID, NextHop};

use crate::datapath::tables::DatapathOps;

/// One route as `ip -j route get ADDR` prints it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Route {
    /// Route type; absent means unicast.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Next-hop router, absent when the destination is directly connected.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Egress interface name.
    pub dev: String,
}

/// One neighbour-table entry as `ip -j neigh show` prints it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's address.
    pub dst: IpAddr,
    /// The interface it was learnt on.
    pub dev: String,
    /// Its link-layer address (absent while incomplete or failed).
    #[serde(default)]
    pub lladdr: Option<String>,
    /// NUD states, e.g. `["REACHABLE"]`.
    #[serde(default)]
    pub state: Vec<String>,
}

/// One interface as `ip -j link show` prints it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub ifname: String,
    /// Its MAC (absent or not 6 bytes on non-Ethernet links).
    #[serde(default)]
    pub address: Option<String>,
}

/// Why the kernel could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum NextHopError {
    /// `ip` could not be run.
    #[error(
        "running `ip {args}` failed ({source}); install iproute2 so vipd can resolve next hops"
    )]
    Spawn {
        /// The arguments.
        args: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `ip` printed something that is not the expected JSON.
    #[error(
        "`ip {args}` printed unexpected output ({source}); iproute2 with JSON output (-j) is needed"
    )]
    Parse {
        /// The arguments.
        args: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// NUD states in which the neighbour's MAC is trusted. STALE (unconfirmed for a while),
/// INCOMPLETE and FAILED are not: the fib fallback is used until the kernel confirms it.
const TRUSTED_STATES: &[&str] = &["REACHABLE", "PERMANENT", "DELAY", "PROBE"];

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The next hop towards `dst` given its route, the neighbour table and the interfaces:
/// valid only when the route is unicast out of an Ethernet interface and the neighbour
/// (gateway, or `dst` itself when directly connected) has a trusted MAC on that interface.
pub fn next_hop(dst: IpAddr, route: &Route, neighbours: &[Neighbour], links: &[Link]) -> NextHop {
    let invalid = NextHop::default();
    if route.kind.as_deref().is_some_and(|k| k != "unicast") {
        return invalid;
    }
    let Some(link) = links.iter().find(|l| l.ifname == route.dev) else {
        return invalid;
    };
    let Some(src_mac) = link.address.as_deref().and_then(parse_mac) else {
        return invalid;
    };
    let hop = route.gateway.unwrap_or(dst);
    let Some(dst_mac) = neighbours
        .iter()
        .find(|n| n.dst == hop && n.dev == route.dev)
        .filter(|n| n.state.iter().any(|s| TRUSTED_STATES.contains(&s.as_str())))
        .and_then(|n| n.lladdr.as_deref())
        .and_then(parse_mac)
    else {
        return invalid;
    };
    if dst_mac == [0; 6] || link.ifindex == 0 {
        return invalid;
    }
    NextHop {
        dst_mac,
        src_mac,
        ifindex: link.ifindex,
        flags: NEXTHOP_F_VALID,
    }
}

fn run_ip(args: &[&str], stdin: Option<String>) -> Result<String, NextHopError> {
    use std::{io::Write, process::Stdio};
    let spawn_err = |source| NextHopError::Spawn {
        args: args.join(" "),
        source,
    };
    let mut child = Command::new("ip")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses the concatenated JSON arrays `ip -j` prints (one per command in batch mode).
fn parse_arrays<T: for<'de> Deserialize<'de>>(
    args: &[&str],
    text: &str,
) -> Result<Vec<T>, NextHopError> {
    let mut all = Vec::new();
    for doc in serde_json::Deserializer::from_str(text).into_iter::<Vec<T>>() {
        all.extend(doc.map_err(|source| NextHopError::Parse {
            args: args.join(" "),
            source,
        })?);
    }
    Ok(all)
}

/// A route with the destination it answers for (`route get` prints it as `dst`).
#[derive(Deserialize)]
struct RouteFor {
    dst: IpAddr,
    #[serde(flatten)]
    route: Route,
}

/// Resolves the next hop of every address in the current network namespace (blocking:
/// runs `ip` three times, routes in one batch; call it off the async loop).
pub fn resolve_all(addrs: &[IpAddr]) -> Result<HashMap<IpAddr, NextHop>, NextHopError> {
    let neigh_args = ["-j", "neigh", "show"];
    let neighbours: Vec<Neighbour> = parse_arrays(&neigh_args, &run_ip(&neigh_args, None)?)?;
    let link_args = ["-j", "link", "show"];
    let links: Vec<Link> = parse_arrays(&link_args, &run_ip(&link_args, None)?)?;
    // `-force` keeps going past addresses without a route; those print nothing, so
    // answers are matched by their `dst`, not by position.
    let route_args = ["-j", "-force", "-batch", "-"];
    let batch: String = addrs.iter().map(|a| format!("route get {a}\n")).collect();
    let routes: Vec<RouteFor> = if addrs.is_empty() {
        Vec::new()
    } else {
        parse_arrays(&route_args, &run_ip(&route_args, Some(batch))?)?
    };
    Ok(addrs
        .iter()
        .map(|&addr| {
            let nh = routes
                .iter()
                .find(|r| r.dst == addr)
                .map_or_else(NextHop::default, |r| {
                    next_hop(addr, &r.route, &neighbours, &links)
                });
            (addr, nh)
        })
        .collect())
}

/// What vipd last wrote to NEXTHOPS, so a refresh writes only what changed.
#[derive(Debug, Default)]
pub struct NextHopCache {
    written: HashMap<u32, (IpAddr, NextHop)>,
}

impl NextHopCache {
    /// Clears the entries of ids that no longer exist or now mean another address (ids
    /// are reused), so no backend ever inherits another's next hop for longer than one
    /// owner-loop turn. Returns the number of map writes.
    pub fn forget_changed<T: DatapathOps>(
        &mut self,
        tables: &mut T,
        backends: &[(u32, IpAddr)],
    ) -> Result<u64, T::Error> {
        let now: HashMap<u32, IpAddr> = backends.iter().copied().collect();
        let gone: Vec<u32> = self
            .written
            .iter()
            .filter(|(id, (addr, _))| now.get(id) != Some(addr))
            .map(|(&id, _)| id)
            .collect();
        for &id in &gone {
            tables.set_nexthop(id, &NextHop::default())?;
            self.written.remove(&id);
        }
        Ok(gone.len() as u64)
    }

    /// Writes the resolved next hop of every backend whose entry changed (backends added
    /// after the resolution started wait for the next one). Returns the map writes.
    pub fn apply<T: DatapathOps>(
        &mut self,
        tables: &mut T,
        backends: &[(u32, IpAddr)],
        resolved: &HashMap<IpAddr, NextHop>,
    ) -> Result<u64, T::Error> {
        let mut writes = self.forget_changed(tables, backends)?;
        for &(id, addr) in backends {
            let Some(&nh) = resolved.get(&addr) else {
                continue;
            };
            if self.written.get(&id) == Some(&(addr, nh)) {
                continue;
            }
            tables.set_nexthop(id, &nh)?;
            self.written.insert(id, (addr, nh));
            writes += 1;
        }
        Ok(writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Vec<Link> {
        serde_json::from_str(
            r#"[{"ifindex":1,"ifname":"lo","address":"00:00:00:00:00:00"},
                {"ifindex":7,"ifname":"eth1","flags":["UP"],"address":"02:00:00:00:00:01"},
                {"ifindex":9,"ifname":"tun0"}]"#,
        )
        .unwrap()
    }

    fn neighbours() -> Vec<Neighbour> {
        serde_json::from_str(
            r#"[{"dst":"198.18.1.2","dev":"eth1","lladdr":"02:00:00:00:00:02","state":["REACHABLE"]},
                {"dst":"198.18.1.1","dev":"eth1","lladdr":"02:00:00:00:00:fe","state":["PERMANENT"]},
                {"dst":"198.18.1.3","dev":"eth1","lladdr":"02:00:00:00:00:03","state":["STALE"]},
                {"dst":"198.18.1.4","dev":"eth1","state":["FAILED"]},
                {"dst":"2001:db8::2","dev":"eth1","lladdr":"02:00:00:00:00:06","state":["DELAY"]}]"#,
        )
        .unwrap()
    }

    fn route(json: &str) -> Route {
        serde_json::from_str::<Vec<Route>>(json).unwrap().remove(0)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn direct_route_uses_the_destinations_mac() {
        let r = route(
            r#"[{"dst":"198.18.1.2","dev":"eth1","prefsrc":"198.18.1.10","flags":[],"uid":0,"cache":[]}]"#,
        );
        assert_eq!(
            next_hop(ip("198.18.1.2"), &r, &neighbours(), &links()),
            NextHop {
                dst_mac: [2, 0, 0, 0, 0, 2],
                src_mac: [2, 0, 0, 0, 0, 1],
                ifindex: 7,
                flags: NEXTHOP_F_VALID,
            }
        );
    }

    #[test]
    fn routed_destination_uses_the_gateways_mac() {
        let r = route(r#"[{"dst":"198.19.5.5","gateway":"198.18.1.1","dev":"eth1"}]"#);
        let nh = next_hop(ip("198.19.5.5"), &r, &neighbours(), &links());
        assert_eq!(nh.dst_mac, [2, 0, 0, 0, 0, 0xfe]);
        assert_eq!(nh.flags, NEXTHOP_F_VALID);
    }

    #[test]
    fn ipv6_neighbour_in_delay_is_trusted() {
        let r = route(r#"[{"dst":"2001:db8::2","dev":"eth1","metric":256}]"#);
        let nh = next_hop(ip("2001:db8::2"), &r, &neighbours(), &links());
        assert_eq!(
            (nh.dst_mac, nh.flags),
            ([2, 0, 0, 0, 0, 6], NEXTHOP_F_VALID)
        );
    }

    #[test]
    fn stale_failed_or_missing_neighbours_are_invalid() {
        for a in ["198.18.1.3", "198.18.1.4", "198.18.1.99"] {
            let r = route(&format!(r#"[{{"dst":"{a}","dev":"eth1"}}]"#));
            assert_eq!(
                next_hop(ip(a), &r, &neighbours(), &links()),
                NextHop::default(),
                "{a}"
            );
        }
    }

    #[test]
    fn neighbour_on_another_interface_is_not_used() {
        let r = route(r#"[{"dst":"198.18.1.2","dev":"eth2"}]"#);
        let mut links = links();
        links.push(Link {
            ifindex: 8,
            ifname: "eth2".into(),
            address: Some("02:00:00:00:00:09".into()),
        });
        assert_eq!(
            next_hop(ip("198.18.1.2"), &r, &neighbours(), &links),
            NextHop::default()
        );
    }

    #[test]
    fn local_routes_and_links_without_mac_are_invalid() {
        let local = route(r#"[{"type":"local","dst":"198.18.1.2","dev":"lo"}]"#);
        assert_eq!(
            next_hop(ip("198.18.1.2"), &local, &neighbours(), &links()),
            NextHop::default()
        );
        let tun = route(r#"[{"dst":"198.18.1.2","dev":"tun0"}]"#);
        assert_eq!(
            next_hop(ip("198.18.1.2"), &tun, &neighbours(), &links()),
            NextHop::default()
        );
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("0a:1B:02:03:04:ff"), Some([10, 27, 2, 3, 4, 255]));
        assert_eq!(parse_mac("0a:1b:02:03:04"), None);
        assert_eq!(parse_mac("0a:1b:02:03:04:05:06"), None);
        assert_eq!(parse_mac("zz:1b:02:03:04:05"), None);
    }

    #[test]
    fn cache_writes_only_changes_and_clears_reused_or_removed_ids() {
        let mut maps = crate::datapath::fake::FakeMaps::default();
        let mut cache = NextHopCache::default();
        let valid = NextHop {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            ifindex: 7,
            flags: NEXTHOP_F_VALID,
        };
        let (a, b) = (ip("198.18.1.2"), ip("198.18.1.3"));
        let resolved: HashMap<IpAddr, NextHop> = [(a, valid), (b, NextHop::default())].into();
        assert_eq!(
            cache
                .apply(&mut maps, &[(0, a), (1, b)], &resolved)
                .unwrap(),
            2
        );
        assert_eq!(maps.nexthops[&0], valid);
        // Nothing changed: no writes.
        assert_eq!(
            cache
                .apply(&mut maps, &[(0, a), (1, b)], &resolved)
                .unwrap(),
            0
        );
        // The neighbour went stale: invalidated.
        let stale: HashMap<IpAddr, NextHop> = [(a, NextHop::default())].into();
        assert_eq!(cache.apply(&mut maps, &[(0, a)], &stale).unwrap(), 2);
        assert_eq!(maps.nexthops[&0], NextHop::default());
        assert_eq!(cache.apply(&mut maps, &[(0, a)], &resolved).unwrap(), 1);
        // Id 0 now means another backend: cleared at once, before any resolution.
        assert_eq!(cache.forget_changed(&mut maps, &[(0, b)]).unwrap(), 1);
        assert_eq!(maps.nexthops[&0], NextHop::default());
    }
}
