//! The kernel side of route announcement: vipd's host routes (/32, /128) in a routing
//! table of their own, kept equal to the plan ([`crate::control::announce`]) through
//! netlink (rtnetlink). A routing daemon (BIRD's `kernel` protocol with `learn`) picks
//! the table up and announces it by BGP.
//!
//! The routes are `blackhole` routes: they exist to be announced, not to forward (the
//! table has no rule pointing at it, and `vip_lb` answers the VIPs before the kernel's
//! routing). vipd's routes are those in its table with its protocol id; it never touches
//! another route, whatever its table or protocol.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures_util::TryStreamExt;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType},
    },
};

use crate::control::announce::{Cause, Plan, Want};

/// Why the routing table could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The netlink socket could not be opened.
    #[error("opening a netlink socket to manage VIP routes failed; vipd needs CAP_NET_ADMIN")]
    Open {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Listing the table failed.
    #[error("listing the routes of table {table} failed")]
    List {
        /// The table.
        table: u32,
        /// What netlink said.
        #[source]
        source: rtnetlink::Error,
    },
    /// Another program's route holds the VIP's place in the table.
    #[error(
        "table {table} already has a route for {addr} that vipd did not add (another protocol id): remove it, or give vipd a table of its own in [announce] table"
    )]
    Occupied {
        /// The VIP address.
        addr: IpAddr,
        /// The table.
        table: u32,
    },
    /// Adding or removing a route failed.
    #[error(
        "{} the route {addr}/{} in table {table} failed; check that vipd has CAP_NET_ADMIN and that nothing else manages that table",
        if *.add { "adding" } else { "removing" },
        if .addr.is_ipv4() { 32 } else { 128 }
    )]
    Change {
        /// True for add, false for remove.
        add: bool,
        /// The VIP address.
        addr: IpAddr,
        /// The table.
        table: u32,
        /// What netlink said.
        #[source]
        source: rtnetlink::Error,
    },
}

/// vipd's routes in one table, identified by their protocol id.
#[derive(Debug, Clone)]
pub struct RouteTable {
    handle: Handle,
    table: u32,
    protocol: u8,
}

impl RouteTable {
    /// Opens a netlink connection in the current network namespace (needs a tokio
    /// runtime: the connection runs as a task of it).
    pub fn open(table: u32, protocol: u8) -> Result<Self, AnnounceError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|source| AnnounceError::Open { source })?;
        tokio::spawn(conn);
        Ok(RouteTable {
            handle,
            table,
            protocol,
        })
    }

    /// The table id.
    pub fn table(&self) -> u32 {
        self.table
    }

    fn message(&self, addr: IpAddr) -> RouteMessage {
        match addr {
            IpAddr::V4(a) => {
                self.ours_in(RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(a, 32))
            }
            IpAddr::V6(a) => {
                self.ours_in(RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(a, 128))
            }
        }
    }

    fn ours_in<T>(&self, b: RouteMessageBuilder<T>) -> RouteMessage {
        b.table_id(self.table)
            .protocol(RouteProtocol::from(self.protocol))
            .kind(RouteType::BlackHole)
            .build()
    }

    /// The host routes vipd owns in the table (its protocol id), both families.
    pub async fn list(&self) -> Result<BTreeSet<IpAddr>, AnnounceError> {
        let mut out = BTreeSet::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            let mut routes = self.handle.route().get(query).execute();
            while let Some(r) = routes
                .try_next()
                .await
                .map_err(|source| AnnounceError::List {
                    table: self.table,
                    source,
                })?
            {
                if let Some(addr) = self.ours(&r) {
                    out.insert(addr);
                }
            }
        }
        Ok(out)
    }

    /// The host address of `r` if it is one of vipd's routes in this table.
    fn ours(&self, r: &RouteMessage) -> Option<IpAddr> {
        let table = r
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        if table != self.table || u8::from(r.header.protocol) != self.protocol {
            return None;
        }
        let addr = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
            _ => None,
        })?;
        let host = if addr.is_ipv4() { 32 } else { 128 };
        (r.header.destination_prefix_length == host).then_some(addr)
    }

    /// Adds the host route of `addr`. It is never a replace: a route of another program
    /// in the same place (the kernel keys routes by table and prefix, not protocol) is
    /// left alone and reported.
    pub async fn add(&self, addr: IpAddr) -> Result<(), AnnounceError> {
        match self.handle.route().add(self.message(addr)).execute().await {
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.is_some_and(|c| c.get() == -libc::EEXIST) =>
            {
                Err(AnnounceError::Occupied {
                    addr,
                    table: self.table,
                })
            }
            r => r.map_err(|source| AnnounceError::Change {
                add: true,
                addr,
                table: self.table,
                source,
            }),
        }
    }

    /// Removes the host route of `addr` (vipd's only: the protocol id is matched).
    pub async fn remove(&self, addr: IpAddr) -> Result<(), AnnounceError> {
        match self.handle.route().del(self.message(addr)).execute().await {
            // ESRCH: already gone.
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.is_some_and(|c| c.get() == -libc::ESRCH) =>
            {
                Ok(())
            }
            r => r.map_err(|source| AnnounceError::Change {
                add: false,
                addr,
                table: self.table,
                source,
            }),
        }
    }

    /// Removes every route of vipd's in the table (`vipd down`); returns them.
    pub async fn remove_all(&self) -> Result<Vec<IpAddr>, AnnounceError> {
        let all = self.list().await?;
        for &a in &all {
            self.remove(a).await?;
        }
        Ok(all.into_iter().collect())
    }
}

/// One route change made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// The route was added.
    Added(IpAddr),
    /// The route was removed, for this cause.
    Removed(IpAddr, Cause),
}

/// The routes vipd believes are in its table and the table they are in.
#[derive(Debug)]
pub struct Announcer {
    table: RouteTable,
    installed: BTreeSet<IpAddr>,
    /// When each route was last removed (routers hear of it some milliseconds later).
    removed_at: std::collections::HashMap<IpAddr, std::time::Instant>,
}

impl Announcer {
    /// Adopts what is in the table now: after a restart the routes stay as they are until
    /// the plan says otherwise, so nothing flaps.
    pub async fn adopt(table: RouteTable) -> Result<Self, AnnounceError> {
        let installed = table.list().await?;
        if !installed.is_empty() {
            tracing::info!(
                table = table.table,
                routes = installed.len(),
                "adopted VIP routes left by a previous vipd"
            );
        }
        Ok(Announcer {
            table,
            installed,
            removed_at: Default::default(),
        })
    }

    /// Whether the route of `addr` is in the table.
    pub fn is_installed(&self, addr: IpAddr) -> bool {
        self.installed.contains(&addr)
    }

    /// Whether the route of `addr` was removed less than `within` ago.
    pub fn removed_within(&self, addr: IpAddr, within: std::time::Duration) -> bool {
        self.removed_at
            .get(&addr)
            .is_some_and(|t| t.elapsed() < within)
    }

    /// Brings the table to `plan`; routes of addresses no longer planned are removed.
    /// On an error the changes made so far are returned with it; the next call retries.
    pub async fn apply(&mut self, plan: &Plan) -> (Vec<RouteChange>, Option<AnnounceError>) {
        let mut done = Vec::new();
        let stale: Vec<IpAddr> = self
            .installed
            .iter()
            .filter(|a| !plan.routes.contains_key(a))
            .copied()
            .collect();
        let removals =
            stale
                .into_iter()
                .map(|a| (a, Cause::Removed))
                .chain(plan.routes.iter().filter_map(|(&a, w)| match w {
                    Want::Absent(c) if self.installed.contains(&a) => Some((a, *c)),
                    _ => None,
                }));
        let removals: Vec<_> = removals.collect();
        for (a, cause) in removals {
            if let Err(e) = self.table.remove(a).await {
                return (done, Some(e));
            }
            self.installed.remove(&a);
            self.removed_at.insert(a, std::time::Instant::now());
            done.push(RouteChange::Removed(a, cause));
        }
        for (&a, w) in &plan.routes {
            if *w == Want::Present && !self.installed.contains(&a) {
                if let Err(e) = self.table.add(a).await {
                    return (done, Some(e));
                }
                self.installed.insert(a);
                done.push(RouteChange::Added(a));
            }
        }
        (done, None)
    }

    /// Removes every route of vipd's from the table (`vipd down` or announcing turned
    /// off).
    pub async fn withdraw_all(&mut self) -> Result<Vec<IpAddr>, AnnounceError> {
        let gone = self.table.remove_all().await?;
        self.installed.clear();
        Ok(gone)
    }
}
