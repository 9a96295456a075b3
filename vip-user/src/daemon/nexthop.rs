//! Resolves each backend's next hop from the kernel (route, neighbour, egress link) so
//! the datapath can use its NEXTHOPS cache instead of paying `bpf_fib_lookup` per packet.
//!
//! The kernel is asked through rtnetlink, in vipd's current network namespace (the LB
//! node's, joined by `vipd run --netns`): `RTM_GETROUTE` for each backend address (what
//! `ip route get` asks, at most [`ROUTE_QUERIES_IN_FLIGHT`] at a time), and one dump each
//! of the neighbour table and the links. A second socket subscribes to the kernel's
//! neighbour, link and IPv4/IPv6 route events, and the resolver follows them:
//!
//! - a neighbour or link event updates the resolver's copy of that table and re-derives
//!   the next hops it affects, with no round trip to the kernel: a MAC change reaches
//!   the owner within milliseconds;
//! - a route event can move any backend, so every backend's route is asked again, once
//!   the events have been quiet for [`ROUTE_SETTLE`] (a burst of route changes costs one
//!   pass);
//! - a lost event (the event socket overran) and a slow safety refresh
//!   ([`SAFETY_REFRESH`]) read everything again.
//!
//! Only changed next hops are sent, as messages to the owner loop: it alone writes
//! NEXTHOPS. Anything unresolved (no route, a local or non-unicast route, a neighbour
//! missing, incomplete, stale or failed, an interface that is not Ethernet) yields an
//! invalid entry: the datapath then falls back to `bpf_fib_lookup`, and the health
//! checks' kernel traffic resolves ARP/ND meanwhile.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{LinkAttribute, LinkLayerType, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
    },
};
use tokio::sync::{mpsc, watch};
use vip_common::{NEXTHOP_F_VALID, NextHop};

use crate::datapath::tables::DatapathOps;

pub use rtnetlink::packet_route::neighbour::NeighbourState;

/// The route the kernel chose towards one backend address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// A unicast route (not local, broadcast, blackhole, ...).
    pub unicast: bool,
    /// Next-hop router, `None` when the destination is directly connected.
    pub gateway: Option<IpAddr>,
    /// Egress interface index (0 if the kernel named none).
    pub oif: u32,
}

/// One neighbour-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Its link-layer address, if it has one of 6 bytes (absent while incomplete or
    /// failed).
    pub lladdr: Option<[u8; 6]>,
    /// Its NUD state.
    pub state: NeighbourState,
}

/// The neighbour table: (interface index, address) → entry.
pub type Neighbours = HashMap<(u32, IpAddr), Neighbour>;

/// One interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Its MAC, `None` unless it is an Ethernet interface.
    pub mac: Option<[u8; 6]>,
}

/// The interfaces by index.
pub type Links = HashMap<u32, Link>;

/// Why the kernel could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum NextHopError {
    /// No netlink socket.
    #[error(
        "opening a netlink socket to read routes and neighbours failed: {source}; next hops stay unknown and the datapath uses bpf_fib_lookup (check that no seccomp filter or sandbox denies AF_NETLINK to vipd)"
    )]
    Socket {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A dump or query failed.
    #[error(
        "{what} through netlink failed: {source}; the datapath uses bpf_fib_lookup for backends whose next hop is unknown, and vipd asks again at the next refresh"
    )]
    Query {
        /// What was being asked.
        what: &'static str,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// The kernel did not answer in time.
    #[error(
        "{what} through netlink got no answer within {}; the datapath uses bpf_fib_lookup for backends whose next hop is unknown, and vipd asks again at the next refresh",
        humantime::format_duration(*.timeout)
    )]
    Timeout {
        /// What was being asked.
        what: &'static str,
        /// How long vipd waited.
        timeout: Duration,
    },
}

/// NUD states in which the neighbour's MAC is trusted. STALE (unconfirmed for a while),
/// INCOMPLETE and FAILED are not: the fib fallback is used until the kernel confirms it.
fn trusted(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Permanent
            | NeighbourState::Delay
            | NeighbourState::Probe
    )
}

/// A 6-byte hardware address, or `None`.
fn mac6(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

/// The next hop towards `dst` given its route, the neighbour table and the interfaces:
/// valid only when the route is unicast out of an Ethernet interface and the neighbour
/// (gateway, or `dst` itself when directly connected) has a trusted MAC on that interface.
pub fn next_hop(dst: IpAddr, route: &Route, neighbours: &Neighbours, links: &Links) -> NextHop {
    let invalid = NextHop::default();
    if !route.unicast || route.oif == 0 {
        return invalid;
    }
    let Some(src_mac) = links.get(&route.oif).and_then(|l| l.mac) else {
        return invalid;
    };
    let hop = route.gateway.unwrap_or(dst);
    let Some(dst_mac) = neighbours
        .get(&(route.oif, hop))
        .filter(|n| trusted(n.state))
        .and_then(|n| n.lladdr)
    else {
        return invalid;
    };
    if dst_mac == [0; 6] {
        return invalid;
    }
    NextHop {
        dst_mac,
        src_mac,
        ifindex: route.oif,
        flags: NEXTHOP_F_VALID,
    }
}

/// The route in a `RTM_NEWROUTE` answer to `RTM_GETROUTE`.
pub fn route_of(msg: &RouteMessage) -> Route {
    let mut r = Route {
        unicast: msg.header.kind == RouteType::Unicast,
        gateway: None,
        oif: 0,
    };
    for a in &msg.attributes {
        match a {
            RouteAttribute::Oif(i) => r.oif = *i,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some((*g).into()),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => r.gateway = Some((*g).into()),
            // An IPv4 route through an IPv6 router (RFC 5549).
            RouteAttribute::Via(RouteVia::Inet(g)) => r.gateway = Some((*g).into()),
            RouteAttribute::Via(RouteVia::Inet6(g)) => r.gateway = Some((*g).into()),
            _ => {}
        }
    }
    r
}

/// The key and entry of a neighbour message (`None` for entries without an IP address,
/// such as bridge FDB entries).
pub fn neighbour_of(msg: &NeighbourMessage) -> Option<((u32, IpAddr), Neighbour)> {
    let mut dst = None;
    let mut lladdr = None;
    for a in &msg.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some((*d).into()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => dst = Some((*d).into()),
            NeighbourAttribute::LinkLayerAddress(m) => lladdr = mac6(m),
            _ => {}
        }
    }
    Some((
        (msg.header.ifindex, dst?),
        Neighbour {
            lladdr,
            state: msg.header.state,
        },
    ))
}

/// The index and entry of a link message.
pub fn link_of(msg: &LinkMessage) -> (u32, Link) {
    let mac = if msg.header.link_layer_type == LinkLayerType::Ether {
        msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(m) => mac6(m),
            _ => None,
        })
    } else {
        None
    };
    (msg.header.index, Link { mac })
}

/// Route queries in flight at once. The kernel answers each `RTM_GETROUTE` into the
/// socket's receive buffer as the request is sent and drops answers that do not fit, so
/// the number outstanding stays well below what the buffer holds (about 200 answers).
pub const ROUTE_QUERIES_IN_FLIGHT: usize = 64;
/// How long route events must be quiet before every route is asked again.
pub const ROUTE_SETTLE: Duration = Duration::from_millis(20);
/// Everything is read again this often, whatever the events said.
pub const SAFETY_REFRESH: Duration = Duration::from_secs(30);
/// How long one query or dump may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failure, how long before the resolver starts over.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Next hops the owner should write (only those that changed), or why the kernel could
/// not be asked.
pub type Update = Result<HashMap<IpAddr, NextHop>, NextHopError>;

/// Opens a netlink route socket, its connection driven by a task of its own (which ends
/// when the handle and the stream are dropped); the stream carries the events of the
/// subscribed `groups`.
fn connect(
    groups: &[MulticastGroup],
) -> Result<
    (
        Handle,
        impl Stream<Item = NetlinkMessage<RouteNetlinkMessage>> + Unpin + use<>,
    ),
    NextHopError,
> {
    let (conn, handle, events) = if groups.is_empty() {
        rtnetlink::new_connection()
    } else {
        rtnetlink::new_multicast_connection(groups)
    }
    .map_err(|source| NextHopError::Socket { source })?;
    tokio::spawn(conn);
    Ok((handle, events.map(|(msg, _)| msg)))
}

async fn bounded<T>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, rtnetlink::Error>>,
) -> Result<T, NextHopError> {
    match tokio::time::timeout(QUERY_TIMEOUT, f).await {
        Ok(r) => r.map_err(|source| NextHopError::Query { what, source }),
        Err(_) => Err(NextHopError::Timeout {
            what,
            timeout: QUERY_TIMEOUT,
        }),
    }
}

/// The kernel's route towards `addr`; `None` if it has none (unreachable, prohibited).
async fn query_route(handle: &Handle, addr: IpAddr) -> Result<Option<Route>, NextHopError> {
    let mut msg = RouteMessage::default();
    let (family, len, dst) = match addr {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    msg.header.address_family = family;
    msg.header.destination_prefix_length = len;
    msg.attributes.push(RouteAttribute::Destination(dst));
    let answer = bounded("asking for a backend's route", async {
        let mut answers = handle.route().get(msg).execute();
        answers.try_next().await
    })
    .await;
    match answer {
        Ok(r) => Ok(r.as_ref().map(route_of)),
        // The kernel's "no route" (ENETUNREACH, EHOSTUNREACH, EACCES for prohibit...).
        Err(NextHopError::Query {
            source: rtnetlink::Error::NetlinkError(_),
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What the resolver knows of the kernel, and what it last sent.
#[derive(Debug, Default)]
struct View {
    routes: HashMap<IpAddr, Option<Route>>,
    neighbours: Neighbours,
    links: Links,
    sent: HashMap<IpAddr, NextHop>,
}

impl View {
    /// The next hops of `addrs` that differ from what was last sent.
    fn changes(&mut self, addrs: impl IntoIterator<Item = IpAddr>) -> HashMap<IpAddr, NextHop> {
        let mut out = HashMap::new();
        for a in addrs {
            let nh = match self.routes.get(&a) {
                Some(Some(r)) => next_hop(a, r, &self.neighbours, &self.links),
                _ => NextHop::default(),
            };
            if self.sent.get(&a) != Some(&nh) {
                self.sent.insert(a, nh);
                out.insert(a, nh);
            }
        }
        out
    }

    /// The backend addresses whose next hop goes through neighbour `key`.
    fn using(&self, key: (u32, IpAddr)) -> Vec<IpAddr> {
        self.routes
            .iter()
            .filter(|(dst, r)| {
                r.is_some_and(|r| r.oif == key.0 && r.gateway.unwrap_or(**dst) == key.1)
            })
            .map(|(dst, _)| *dst)
            .collect()
    }
}

/// Asks the kernel for the routes of `addrs`, a bounded number at a time.
async fn query_routes(
    handle: &Handle,
    addrs: Vec<IpAddr>,
) -> Result<Vec<(IpAddr, Option<Route>)>, NextHopError> {
    stream::iter(addrs)
        .map(|a| async move { query_route(handle, a).await.map(|r| (a, r)) })
        .buffer_unordered(ROUTE_QUERIES_IN_FLIGHT)
        .try_collect()
        .await
}

/// Reads the neighbour table, the links and the routes of `addrs` afresh.
async fn read_all(handle: &Handle, view: &mut View, addrs: &[IpAddr]) -> Result<(), NextHopError> {
    let neighbours: Vec<NeighbourMessage> = bounded(
        "dumping the neighbour table",
        handle.neighbours().get().execute().try_collect(),
    )
    .await?;
    let links: Vec<LinkMessage> = bounded(
        "dumping the interfaces",
        handle.link().get().execute().try_collect(),
    )
    .await?;
    view.neighbours = neighbours.iter().filter_map(neighbour_of).collect();
    view.links = links.iter().map(link_of).collect();
    view.routes = query_routes(handle, addrs.to_vec())
        .await?
        .into_iter()
        .collect();
    Ok(())
}

/// What an event asks the resolver to do.
enum Follow {
    /// Re-derive the next hops of these addresses (the tables are updated already).
    Derive(Vec<IpAddr>),
    /// Ask every route again (after the events settle).
    Routes,
    /// Read everything again (events were lost).
    Everything,
    /// Nothing to do.
    Nothing,
}

/// Applies one event to the view.
fn follow(view: &mut View, msg: NetlinkMessage<RouteNetlinkMessage>) -> Follow {
    match msg.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
            let Some((key, entry)) = neighbour_of(&n) else {
                return Follow::Nothing;
            };
            if view.neighbours.insert(key, entry) == Some(entry) {
                return Follow::Nothing;
            }
            Follow::Derive(view.using(key))
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(n)) => {
            match neighbour_of(&n) {
                Some((key, _)) if view.neighbours.remove(&key).is_some() => {
                    Follow::Derive(view.using(key))
                }
                _ => Follow::Nothing,
            }
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
            let (index, link) = link_of(&l);
            if view.links.insert(index, link) == Some(link) {
                return Follow::Nothing;
            }
            Follow::Derive(view.routes.keys().copied().collect())
        }
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
            view.links.remove(&l.header.index);
            Follow::Derive(view.routes.keys().copied().collect())
        }
        NetlinkPayload::InnerMessage(
            RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_),
        ) => Follow::Routes,
        NetlinkPayload::Overrun(_) => Follow::Everything,
        _ => Follow::Nothing,
    }
}

/// Runs the resolver until `addrs`' sender is dropped: follows the backend addresses in
/// `addrs` and sends their changed next hops (or an error) to `out`.
pub async fn run(mut addrs: watch::Receiver<Arc<Vec<IpAddr>>>, out: mpsc::UnboundedSender<Update>) {
    loop {
        let failure = follow_kernel(&mut addrs, &out).await;
        match failure {
            None => return,
            Some(e) => {
                if out.send(Err(e)).is_err() {
                    return;
                }
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// One life of the resolver: subscribe, read everything, follow events. Returns `None`
/// when vipd stops, or the failure that ended it.
async fn follow_kernel(
    addrs: &mut watch::Receiver<Arc<Vec<IpAddr>>>,
    out: &mpsc::UnboundedSender<Update>,
) -> Option<NextHopError> {
    // Subscribe first: a change between the dump and the subscription is not lost.
    let (_events_handle, mut events) = match connect(&[
        MulticastGroup::Neigh,
        MulticastGroup::Link,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ]) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let (handle, _) = match connect(&[]) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    let mut view = View::default();
    let mut wanted: Arc<Vec<IpAddr>> = addrs.borrow_and_update().clone();
    let mut read_everything = true;
    let mut routes_due: Option<tokio::time::Instant> = None;
    let mut safety = tokio::time::interval(SAFETY_REFRESH);
    safety.reset();
    loop {
        if read_everything {
            read_everything = false;
            routes_due = None;
            let start = Instant::now();
            if let Err(e) = read_all(&handle, &mut view, &wanted).await {
                return Some(e);
            }
            let changed = view.changes(wanted.iter().copied());
            tracing::info!(
                addresses = wanted.len(),
                neighbours = view.neighbours.len(),
                changed = changed.len(),
                took_ms = start.elapsed().as_secs_f64() * 1e3,
                "next hops resolved"
            );
            if out.send(Ok(changed)).is_err() {
                return None;
            }
        }
        let settle = async {
            match routes_due {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let changed = tokio::select! {
            r = addrs.changed() => {
                if r.is_err() {
                    return None;
                }
                let now: Arc<Vec<IpAddr>> = addrs.borrow_and_update().clone();
                let known: HashSet<IpAddr> = now.iter().copied().collect();
                view.routes.retain(|a, _| known.contains(a));
                view.sent.retain(|a, _| known.contains(a));
                let new: Vec<IpAddr> = now.iter().copied().filter(|a| !view.routes.contains_key(a)).collect();
                wanted = now;
                match query_routes(&handle, new.clone()).await {
                    Ok(routes) => view.routes.extend(routes),
                    Err(e) => return Some(e),
                }
                view.changes(new)
            }
            msg = events.next() => {
                let Some(msg) = msg else {
                    return Some(NextHopError::Socket {
                        source: std::io::Error::other("the kernel closed the netlink event socket"),
                    });
                };
                match follow(&mut view, msg) {
                    Follow::Derive(affected) => view.changes(affected),
                    Follow::Routes => {
                        routes_due = Some(tokio::time::Instant::now() + ROUTE_SETTLE);
                        continue;
                    }
                    Follow::Everything => {
                        tracing::warn!("netlink events were lost (socket buffer overran): reading routes and neighbours again");
                        read_everything = true;
                        continue;
                    }
                    Follow::Nothing => continue,
                }
            }
            () = settle => {
                routes_due = None;
                match query_routes(&handle, wanted.to_vec()).await {
                    Ok(routes) => view.routes = routes.into_iter().collect(),
                    Err(e) => return Some(e),
                }
                view.changes(wanted.iter().copied())
            }
            _ = safety.tick() => {
                read_everything = true;
                continue;
            }
        };
        if !changed.is_empty() && out.send(Ok(changed)).is_err() {
            return None;
        }
    }
}

/// What vipd last wrote to NEXTHOPS, so a refresh writes only what changed.
#[derive(Debug, Default)]
pub struct NextHopCache {
    written: HashMap<u32, (IpAddr, NextHop)>,
    /// The latest next hop of every address the resolver reported.
    known: HashMap<IpAddr, NextHop>,
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

    /// Records the resolver's `changed` next hops and writes the entry of every backend
    /// whose next hop is known and differs from what was written (a backend whose
    /// address the resolver has not answered for yet waits for it). Returns the map
    /// writes.
    pub fn apply<T: DatapathOps>(
        &mut self,
        tables: &mut T,
        backends: &[(u32, IpAddr)],
        changed: HashMap<IpAddr, NextHop>,
    ) -> Result<u64, T::Error> {
        self.known.extend(changed);
        let mut writes = self.forget_changed(tables, backends)?;
        for &(id, addr) in backends {
            let Some(&nh) = self.known.get(&addr) else {
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn links() -> Links {
        [
            (1, Link { mac: None }),
            (
                7,
                Link {
                    mac: Some([2, 0, 0, 0, 0, 1]),
                },
            ),
            (9, Link { mac: None }),
        ]
        .into()
    }

    fn neighbours() -> Neighbours {
        let n = |dev: u32, dst: &str, lladdr: Option<[u8; 6]>, state| {
            ((dev, ip(dst)), Neighbour { lladdr, state })
        };
        [
            n(
                7,
                "198.18.1.2",
                Some([2, 0, 0, 0, 0, 2]),
                NeighbourState::Reachable,
            ),
            n(
                7,
                "198.18.1.1",
                Some([2, 0, 0, 0, 0, 0xfe]),
                NeighbourState::Permanent,
            ),
            n(
                7,
                "198.18.1.3",
                Some([2, 0, 0, 0, 0, 3]),
                NeighbourState::Stale,
            ),
            n(7, "198.18.1.4", None, NeighbourState::Failed),
            n(
                7,
                "2001:db8::2",
                Some([2, 0, 0, 0, 0, 6]),
                NeighbourState::Delay,
            ),
        ]
        .into()
    }

    fn direct(oif: u32) -> Route {
        Route {
            unicast: true,
            gateway: None,
            oif,
        }
    }

    #[test]
    fn direct_route_uses_the_destinations_mac() {
        assert_eq!(
            next_hop(ip("198.18.1.2"), &direct(7), &neighbours(), &links()),
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
        let r = Route {
            gateway: Some(ip("198.18.1.1")),
            ..direct(7)
        };
        let nh = next_hop(ip("198.19.5.5"), &r, &neighbours(), &links());
        assert_eq!(nh.dst_mac, [2, 0, 0, 0, 0, 0xfe]);
        assert_eq!(nh.flags, NEXTHOP_F_VALID);
    }

    #[test]
    fn ipv6_neighbour_in_delay_is_trusted() {
        let nh = next_hop(ip("2001:db8::2"), &direct(7), &neighbours(), &links());
        assert_eq!(
            (nh.dst_mac, nh.flags),
            ([2, 0, 0, 0, 0, 6], NEXTHOP_F_VALID)
        );
    }

    #[test]
    fn stale_failed_or_missing_neighbours_are_invalid() {
        for a in ["198.18.1.3", "198.18.1.4", "198.18.1.99"] {
            assert_eq!(
                next_hop(ip(a), &direct(7), &neighbours(), &links()),
                NextHop::default(),
                "{a}"
            );
        }
    }

    #[test]
    fn neighbour_on_another_interface_is_not_used() {
        let mut links = links();
        links.insert(
            8,
            Link {
                mac: Some([2, 0, 0, 0, 0, 9]),
            },
        );
        assert_eq!(
            next_hop(ip("198.18.1.2"), &direct(8), &neighbours(), &links),
            NextHop::default()
        );
    }

    #[test]
    fn local_routes_and_links_without_mac_are_invalid() {
        let local = Route {
            unicast: false,
            ..direct(1)
        };
        assert_eq!(
            next_hop(ip("198.18.1.2"), &local, &neighbours(), &links()),
            NextHop::default()
        );
        assert_eq!(
            next_hop(ip("198.18.1.2"), &direct(9), &neighbours(), &links()),
            NextHop::default()
        );
    }

    #[test]
    fn netlink_messages_become_routes_neighbours_and_links() {
        let mut r = RouteMessage::default();
        r.header.kind = RouteType::Unicast;
        r.attributes.push(RouteAttribute::Oif(7));
        r.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(
                "198.18.1.1".parse().unwrap(),
            )));
        assert_eq!(
            route_of(&r),
            Route {
                unicast: true,
                gateway: Some(ip("198.18.1.1")),
                oif: 7
            }
        );
        r.header.kind = RouteType::Local;
        assert!(!route_of(&r).unicast);
        let mut n = NeighbourMessage::default();
        n.header.ifindex = 7;
        n.header.state = NeighbourState::Reachable;
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet6(
                "2001:db8::2".parse().unwrap(),
            )));
        n.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 6]));
        assert_eq!(
            neighbour_of(&n),
            Some((
                (7, ip("2001:db8::2")),
                Neighbour {
                    lladdr: Some([2, 0, 0, 0, 0, 6]),
                    state: NeighbourState::Reachable
                }
            ))
        );
        let mut l = LinkMessage::default();
        l.header.index = 7;
        l.header.link_layer_type = LinkLayerType::Ether;
        l.attributes
            .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]));
        assert_eq!(
            link_of(&l),
            (
                7,
                Link {
                    mac: Some([2, 0, 0, 0, 0, 1])
                }
            )
        );
        l.header.link_layer_type = LinkLayerType::Loopback;
        assert_eq!(link_of(&l).1, Link { mac: None });
    }

    /// A neighbour event re-derives only the backends behind that neighbour, from the
    /// resolver's copy of the tables, and reports only what changed.
    #[test]
    fn a_neighbour_event_updates_only_the_backends_behind_it() {
        let mut view = View {
            routes: [
                (ip("198.18.1.2"), Some(direct(7))),
                (
                    ip("198.19.5.5"),
                    Some(Route {
                        gateway: Some(ip("198.18.1.1")),
                        ..direct(7)
                    }),
                ),
                (ip("198.18.9.9"), None),
            ]
            .into(),
            neighbours: neighbours(),
            links: links(),
            sent: HashMap::new(),
        };
        assert_eq!(
            view.changes(view.routes.keys().copied().collect::<Vec<_>>())
                .len(),
            3
        );
        let mut n = NeighbourMessage::default();
        n.header.ifindex = 7;
        n.header.state = NeighbourState::Permanent;
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                "198.18.1.1".parse().unwrap(),
            )));
        n.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![
            2, 0, 0, 0, 0xaa, 1,
        ]));
        let msg = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(n.clone()));
        let Follow::Derive(affected) = follow(&mut view, msg) else {
            panic!("a neighbour change must re-derive")
        };
        assert_eq!(affected, vec![ip("198.19.5.5")]);
        let changed = view.changes(affected);
        assert_eq!(changed[&ip("198.19.5.5")].dst_mac, [2, 0, 0, 0, 0xaa, 1]);
        // The same entry again: nothing to do.
        let msg = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(n));
        assert!(matches!(follow(&mut view, msg), Follow::Nothing));
    }

    /// In the host's own namespace (read only, unprivileged): thousands of route queries
    /// complete (the `ip -batch` resolver deadlocked from about 4,000), and loopback
    /// addresses, whose routes are local, resolve to invalid entries.
    #[tokio::test]
    async fn thousands_of_route_queries_complete() {
        let (handle, _) = connect(&[]).unwrap();
        let addrs: Vec<IpAddr> = (0..5000u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0001 + i)))
            .collect();
        let routes = tokio::time::timeout(Duration::from_secs(30), query_routes(&handle, addrs))
            .await
            .expect("5,000 route queries within 30 s")
            .unwrap();
        assert_eq!(routes.len(), 5000);
        for (a, r) in routes {
            let nh = r.map_or_else(NextHop::default, |r| {
                next_hop(a, &r, &Neighbours::new(), &Links::new())
            });
            assert_eq!(nh, NextHop::default(), "{a}");
        }
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
                .apply(&mut maps, &[(0, a), (1, b)], resolved.clone())
                .unwrap(),
            2
        );
        assert_eq!(maps.nexthops[&0], valid);
        // Nothing changed: no writes.
        assert_eq!(
            cache
                .apply(&mut maps, &[(0, a), (1, b)], HashMap::new())
                .unwrap(),
            0
        );
        // A new id for a known address is written from what is known.
        assert_eq!(
            cache
                .apply(&mut maps, &[(0, a), (1, b), (2, a)], HashMap::new())
                .unwrap(),
            1
        );
        assert_eq!(maps.nexthops[&2], valid);
        // The neighbour went stale: invalidated.
        let stale: HashMap<IpAddr, NextHop> = [(a, NextHop::default())].into();
        assert_eq!(cache.apply(&mut maps, &[(0, a)], stale).unwrap(), 3);
        assert_eq!(maps.nexthops[&0], NextHop::default());
        assert_eq!(cache.apply(&mut maps, &[(0, a)], resolved).unwrap(), 1);
        // Id 0 now means another backend: cleared at once, before any resolution.
        assert_eq!(cache.forget_changed(&mut maps, &[(0, b)]).unwrap(), 1);
        assert_eq!(maps.nexthops[&0], NextHop::default());
    }
}
