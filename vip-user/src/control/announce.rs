//! Which VIP host routes this node announces, and why not: a pure function of the VIP
//! set, health and the node's state. vipd keeps its routing table equal to the plan
//! (`daemon::announce`); a routing daemon (BIRD) announces that table.
//!
//! A host route stands for an address, and several VIPs (ports, protocols) may share it:
//! the address is announced only while every announcing VIP on it is ready. A node that
//! cannot serve one of them sends that address's traffic to nodes that can, which is what
//! ECMP across nodes is for; since every node picks the same backend for a flow, moving
//! flows breaks none.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::reconcile::BackendIdentity;
use crate::config::{AdminState, AnnounceSpec, CheckKind, VipId, VipSpec};

/// What the node as a whole allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The operator drained the node (`vipctl node drain`).
    pub drained: bool,
    /// `vip_lb` is attached, so traffic for the VIPs would be served.
    pub attached: bool,
}

/// Why a VIP is not announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withheld {
    /// The datapath is not attached.
    Detached,
    /// The node is drained.
    Drained,
    /// Fewer than `min_healthy` backends are up.
    TooFewHealthy {
        /// Backends up (healthy, ready, weight above 0).
        up: u32,
        /// The VIP's `min_healthy`.
        min: u32,
    },
    /// Another VIP on the same address is withheld.
    SharedAddress {
        /// That VIP.
        vip: VipId,
    },
}

impl Withheld {
    /// The cause as a metric label.
    pub fn cause(self) -> Cause {
        match self {
            Withheld::Detached => Cause::Detached,
            Withheld::Drained => Cause::Drain,
            Withheld::TooFewHealthy { .. } | Withheld::SharedAddress { .. } => Cause::Health,
        }
    }
}

impl fmt::Display for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Withheld::Detached => f.write_str("datapath not attached"),
            Withheld::Drained => f.write_str("node drained"),
            Withheld::TooFewHealthy { up, min } => {
                write!(f, "{up} backends up, min_healthy is {min}")
            }
            Withheld::SharedAddress { vip } => {
                write!(f, "VIP {vip} on the same address is withheld")
            }
        }
    }
}

/// Why a route was withdrawn, as counted in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// Backends failed.
    Health,
    /// The node was drained.
    Drain,
    /// The datapath is not attached.
    Detached,
    /// The VIP was removed or its announcing turned off.
    Removed,
}

impl Cause {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Health => "health",
            Cause::Drain => "drain",
            Cause::Detached => "detached",
            Cause::Removed => "removed",
        }
    }
}

/// One VIP's announcement state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VipRoute {
    /// Announcing is off for this VIP.
    Off,
    /// Its backends' first health round is not complete: the route is left as it is
    /// (absent on a fresh start, adopted unchanged after a restart).
    AwaitingHealth,
    /// The route should be in the table.
    Announced,
    /// The route should not be in the table.
    Withheld(Withheld),
}

/// What the table should hold for one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The route, present.
    Present,
    /// No route, and why.
    Absent(Cause),
    /// Whatever is there now (health not known yet).
    Unchanged,
}

/// The plan: every VIP's state and every announcing address's desired route.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per VIP, in the VIP set's order.
    pub vips: Vec<(VipId, VipRoute)>,
    /// Per address of an announcing VIP.
    pub routes: BTreeMap<IpAddr, Want>,
}

/// Backends of `vip` that count towards `min_healthy`: up, ready and with weight.
pub fn backends_up(vip: &VipSpec, is_up: impl Fn(&BackendIdentity) -> bool) -> u32 {
    let n = vip
        .backends
        .iter()
        .filter(|b| b.state == AdminState::Ready && b.weight > 0 && is_up(&(vip.id, b.addr)))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Plans the routes. `is_up` is the owner's health; `settled` says whether a backend's
/// checker has delivered its first verdict (backends without a check always have).
pub fn plan(
    vips: &[VipSpec],
    spec: &AnnounceSpec,
    node: NodeState,
    is_up: impl Fn(&BackendIdentity) -> bool,
    settled: impl Fn(&BackendIdentity) -> bool,
) -> Plan {
    let mut out = Plan::default();
    for v in vips {
        let state = if !spec.covers(v) {
            VipRoute::Off
        } else if !node.attached {
            VipRoute::Withheld(Withheld::Detached)
        } else if node.drained {
            VipRoute::Withheld(Withheld::Drained)
        } else if !matches!(v.health.kind, CheckKind::None)
            && !v.backends.iter().all(|b| settled(&(v.id, b.addr)))
        {
            VipRoute::AwaitingHealth
        } else {
            let up = backends_up(v, &is_up);
            if up >= v.min_healthy {
                VipRoute::Announced
            } else {
                VipRoute::Withheld(Withheld::TooFewHealthy {
                    up,
                    min: v.min_healthy,
                })
            }
        };
        out.vips.push((v.id, state));
    }
    // Per address: one withheld VIP withholds the address; one awaiting VIP keeps it as is.
    let mut first_withheld: BTreeMap<IpAddr, (VipId, Withheld)> = BTreeMap::new();
    for (id, state) in &out.vips {
        let want = match state {
            VipRoute::Off => continue,
            VipRoute::AwaitingHealth => Want::Unchanged,
            VipRoute::Announced => Want::Present,
            VipRoute::Withheld(w) => {
                first_withheld.entry(id.addr).or_insert((*id, *w));
                Want::Absent(w.cause())
            }
        };
        let slot = out.routes.entry(id.addr).or_insert(want);
        *slot = match (*slot, want) {
            (Want::Absent(c), _) | (_, Want::Absent(c)) => Want::Absent(c),
            (Want::Unchanged, _) | (_, Want::Unchanged) => Want::Unchanged,
            (Want::Present, Want::Present) => Want::Present,
        };
    }
    for (id, state) in &mut out.vips {
        if *state == VipRoute::Announced
            && let Some((other, _)) = first_withheld.get(&id.addr)
        {
            *state = VipRoute::Withheld(Withheld::SharedAddress { vip: *other });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, net::SocketAddr};

    use super::*;
    use crate::config::Config;

    const CFG: &str = r#"
[announce]
enabled = true

[[vip]]
address = "198.18.1.10:80"
min_healthy = 2
health = { type = "tcp", interval = "1s" }
backend = [{ address = "198.18.2.1" }, { address = "198.18.2.2" }, { address = "198.18.2.3", state = "maint" }]

[[vip]]
address = "198.18.1.10:443"
backend = [{ address = "198.18.2.1" }]

[[vip]]
address = "198.18.1.11:80"
announce = false
backend = [{ address = "198.18.2.1" }]

[[vip]]
address = "[2001:db8::10]:80"
health = { type = "tcp", interval = "1s" }
backend = [{ address = "[2001:db8::2:1]" }]
"#;

    fn b(vip: &str, backend: &str) -> BackendIdentity {
        (vip_id(vip), backend.parse::<SocketAddr>().unwrap())
    }

    fn vip_id(s: &str) -> VipId {
        let a: SocketAddr = s.parse().unwrap();
        VipId {
            addr: a.ip(),
            port: a.port(),
            proto: crate::config::Protocol::Tcp,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const UP: NodeState = NodeState {
        drained: false,
        attached: true,
    };

    #[test]
    fn routes_follow_health_drain_and_attachment() {
        let cfg = Config::parse(CFG, "test").unwrap();
        let v4 = ip("198.18.1.10");
        let v6 = ip("2001:db8::10");
        let down_one = [b("198.18.1.10:80", "198.18.2.2:80")];
        let down_v6 = [b("[2001:db8::10]:80", "[2001:db8::2:1]:80")];
        struct Case {
            name: &'static str,
            node: NodeState,
            down: &'static [usize],
            unsettled: bool,
            want: [(IpAddr, Want); 2],
        }
        let cases = [
            Case {
                name: "all up",
                node: UP,
                down: &[],
                unsettled: false,
                want: [(v4, Want::Present), (v6, Want::Present)],
            },
            Case {
                name: "one of two needed down (the maint backend does not count)",
                node: UP,
                down: &[0],
                unsettled: false,
                want: [(v4, Want::Absent(Cause::Health)), (v6, Want::Present)],
            },
            Case {
                name: "the only v6 backend down",
                node: UP,
                down: &[1],
                unsettled: false,
                want: [(v4, Want::Present), (v6, Want::Absent(Cause::Health))],
            },
            Case {
                name: "first health round not complete",
                node: UP,
                down: &[],
                unsettled: true,
                want: [(v4, Want::Unchanged), (v6, Want::Unchanged)],
            },
            Case {
                name: "drained, even before the first round",
                node: NodeState {
                    drained: true,
                    attached: true,
                },
                down: &[],
                unsettled: true,
                want: [
                    (v4, Want::Absent(Cause::Drain)),
                    (v6, Want::Absent(Cause::Drain)),
                ],
            },
            Case {
                name: "detached",
                node: NodeState {
                    drained: true,
                    attached: false,
                },
                down: &[],
                unsettled: false,
                want: [
                    (v4, Want::Absent(Cause::Detached)),
                    (v6, Want::Absent(Cause::Detached)),
                ],
            },
        ];
        let mut failures = Vec::new();
        for c in cases {
            let down: HashSet<BackendIdentity> = c
                .down
                .iter()
                .map(|&i| [down_one[0], down_v6[0]][i])
                .collect();
            let p = plan(
                &cfg.vips,
                &cfg.announce,
                c.node,
                |i| !down.contains(i),
                |_| !c.unsettled,
            );
            let want: BTreeMap<IpAddr, Want> = c.want.into_iter().collect();
            if p.routes != want {
                failures.push(format!("{}: {:?}, want {want:?}", c.name, p.routes));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn a_vip_says_why_it_is_withheld_and_its_address_siblings_follow() {
        let cfg = Config::parse(CFG, "test").unwrap();
        let down = b("198.18.1.10:80", "198.18.2.2:80");
        let p = plan(&cfg.vips, &cfg.announce, UP, |i| *i != down, |_| true);
        assert_eq!(
            p.vips,
            [
                (
                    vip_id("198.18.1.10:80"),
                    VipRoute::Withheld(Withheld::TooFewHealthy { up: 1, min: 2 })
                ),
                (
                    vip_id("198.18.1.10:443"),
                    VipRoute::Withheld(Withheld::SharedAddress {
                        vip: vip_id("198.18.1.10:80")
                    })
                ),
                (vip_id("198.18.1.11:80"), VipRoute::Off),
                (vip_id("[2001:db8::10]:80"), VipRoute::Announced),
            ]
        );
        assert!(
            !p.routes.contains_key(&ip("198.18.1.11")),
            "announce = false is not managed"
        );
    }

    #[test]
    fn announcing_is_off_unless_enabled() {
        let text = CFG.replace("enabled = true", "enabled = false");
        let cfg = Config::parse(&text, "test").unwrap();
        let p = plan(&cfg.vips, &cfg.announce, UP, |_| true, |_| true);
        assert!(p.routes.is_empty(), "{:?}", p.routes);
    }
}
