//! Building the lab: namespaces, veth pairs, the bridge, addresses, routes, sysctls,
//! backend servers, and the balancer on the LB node(s).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::OwnedFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{
    LabError, cmd,
    netns::{self, Netns},
    process::LabProcess,
};

/// The lab's address plan (all inside 198.18.0.0/15 and 2001:db8::/32).
pub mod addr {
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The IPv4 VIP.
    pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
    /// The IPv6 VIP.
    pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
    /// The prefixes the router sends to the LB node(s).
    pub const VIP4_PREFIX: &str = "198.18.100.0/24";
    /// IPv6 VIP prefix.
    pub const VIP6_PREFIX: &str = "2001:db8:100::/64";
    /// Router on the shared segment.
    pub const ROUTER_LAN4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
    /// Router on the shared segment, IPv6.
    pub const ROUTER_LAN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

    /// LB node `i` (0-based) on the shared segment.
    pub fn lb4(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 1, 10 + i as u8)
    }
    /// LB node `i`, IPv6.
    pub fn lb6(i: usize) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x10 + i as u16)
    }
    /// Backend `j` (0-based) on the shared segment.
    pub fn backend4(j: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 1, 100 + j as u8)
    }
    /// Backend `j`, IPv6.
    pub fn backend6(j: usize) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100 + j as u16)
    }
    /// Client `k` (0-based); each client has its own link to the router.
    pub fn client4(k: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 10 + k as u8, 2)
    }
    /// Client `k`, IPv6.
    pub fn client6(k: usize) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 10 + k as u16, 0, 0, 0, 0, 2)
    }
    /// The router's side of client `k`'s link.
    pub fn client_gw4(k: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 10 + k as u8, 1)
    }
    /// The router's side of client `k`'s link, IPv6.
    pub fn client_gw6(k: usize) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 10 + k as u16, 0, 0, 0, 0, 1)
    }
}

/// How backends receive VIP traffic (and so how they are set up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// IPIP / IP6IP6 from the LB; backends run `vip_decap` (`vipd decap attach`).
    Tunnel,
    /// Destination MAC rewrite; backends have the ARP sysctls of IPVS direct routing.
    DsrL2,
}

impl Mode {
    /// The name the config file uses.
    pub fn config_name(self) -> &'static str {
        match self {
            Mode::Tunnel => "tunnel",
            Mode::DsrL2 => "dsr-l2",
        }
    }
}

/// What balances on the LB node(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancer {
    /// Nothing yet: the caller starts vipd (see [`super::vipd`]).
    External,
    /// An nftables DNAT baseline on LB node 0 (`numgen inc` over the backends). Replies
    /// go back through the LB (NAT needs the reverse path), so there is no DSR here.
    NftDnat,
    /// A kernel-only direct-routing baseline on LB node 0: an nftables `netdev` ingress
    /// rule rewrites the destination MAC to a backend chosen by a per-flow hash (`jhash`
    /// of source address and port) and sends the frame back out (`fwd`). Same DSR set-up
    /// as vip's `dsr-l2` (VIP on the backends' lo, ARP sysctls), no XDP involved.
    NftDsrL2,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Backends (at most 100).
    pub backends: usize,
    /// LB nodes (1 or more; with 2+, the router spreads flows by ECMP).
    pub lb_nodes: usize,
    /// Client namespaces.
    pub clients: usize,
    /// How backends are set up.
    pub mode: Mode,
    /// What runs on the LB nodes.
    pub balancer: Balancer,
    /// The service port (TCP and UDP) of the VIPs and the backend servers.
    pub port: u16,
    /// MTU of the client links; the shared segment gets 100 bytes more (tunnel headers).
    pub client_mtu: u32,
}

impl LabSpec {
    /// One client, one LB node, `backends` backends, port 80.
    pub fn new(backends: usize, mode: Mode) -> Self {
        LabSpec {
            backends,
            lb_nodes: 1,
            clients: 1,
            mode,
            balancer: Balancer::External,
            port: 80,
            client_mtu: 1500,
        }
    }
}

/// A backend host: its namespace, addresses and the server that says who it is.
#[derive(Debug)]
pub struct Backend {
    server: Option<LabProcess>,
    /// Its name, which its server answers to `whoami` (`b1`, `b2`, ...).
    pub name: String,
    /// Its IPv4 address on the shared segment.
    pub addr4: Ipv4Addr,
    /// Its IPv6 address on the shared segment.
    pub addr6: Ipv6Addr,
    /// Its MAC address on the shared segment.
    pub mac: String,
    netns: Netns,
}

impl Backend {
    /// The namespace name.
    pub fn netns(&self) -> &str {
        self.netns.name()
    }
}

/// An LB node: its namespace and its interface on the shared segment (`eth0`).
#[derive(Debug)]
pub struct LbNode {
    /// Its IPv4 address.
    pub addr4: Ipv4Addr,
    /// Its IPv6 address.
    pub addr6: Ipv6Addr,
    netns: Netns,
}

impl LbNode {
    /// The namespace name.
    pub fn netns(&self) -> &str {
        self.netns.name()
    }
    /// The interface that faces the router and the backends (where `vip_lb` attaches).
    pub const IFACE: &'static str = "eth0";
}

/// A built lab. Dropping it stops every process and removes every namespace.
#[derive(Debug)]
pub struct Lab {
    // Field order is drop order: processes (in backends) go before the namespaces.
    /// The backends, in order (`b1` is index 0).
    pub backends: Vec<Backend>,
    /// The LB nodes.
    pub lb_nodes: Vec<LbNode>,
    clients: Vec<Netns>,
    router: Netns,
    switch: Netns,
    /// What was built.
    pub spec: LabSpec,
    /// The lab's unique prefix (namespace names, vipd instance names).
    pub prefix: String,
    /// A directory for logs and configs, removed on drop.
    pub dir: PathBuf,
    server_bin: PathBuf,
    lb_macs: Vec<String>,
    /// bpffs pin directories created for this lab (vip_decap on the backends).
    pub(crate) pin_dirs: Vec<String>,
    /// XDP_PASS links on the LB-facing switch ports (detached when closed).
    #[expect(
        dead_code,
        reason = "only held open: closing the links detaches the programs"
    )]
    wake_links: Vec<OwnedFd>,
}

impl Lab {
    /// Builds the topology of `spec` and starts every backend server.
    pub fn build(spec: LabSpec) -> Result<Lab, LabError> {
        assert!(spec.backends <= 100 && spec.lb_nodes >= 1 && spec.clients >= 1);
        let server_bin = super::workspace_binary("vip-lab-server", "vip-tests")?;
        let prefix = netns::unique_prefix();
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let lan_mtu = (spec.client_mtu + 100).to_string();
        let client_mtu = spec.client_mtu.to_string();

        let switch = host(&format!("{prefix}sw"))?;
        cmd::ip(switch.name(), &["link", "add", "br0", "type", "bridge"])?;
        // No STP delay, no multicast snooping (IPv6 neighbour discovery must just flood).
        cmd::ip(
            switch.name(),
            &[
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        // With br_netfilter loaded (the host's Docker or firewall may load it) a bridge
        // validates IP headers before forwarding and silently frees frames with a bad IHL,
        // a total length beyond the frame or a bad checksum: those would never reach
        // vip_lb, and the lab could not show how the datapath counts them. A real switch
        // forwards them. The sysctls are per namespace; they exist only with the module.
        if std::path::Path::new("/proc/sys/net/bridge").exists() {
            for key in [
                "net.bridge.bridge-nf-call-iptables",
                "net.bridge.bridge-nf-call-ip6tables",
                "net.bridge.bridge-nf-call-arptables",
            ] {
                cmd::sysctl(switch.name(), key, "0")?;
            }
        }
        cmd::ip(switch.name(), &["link", "set", "br0", "up"])?;

        let router = host(&format!("{prefix}r"))?;
        for key in [
            "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding",
            // L4 hashing for the ECMP route to the LB nodes (scale-out).
            "net.ipv4.fib_multipath_hash_policy",
            "net.ipv6.fib_multipath_hash_policy",
        ] {
            cmd::sysctl(router.name(), key, "1")?;
        }
        cmd::sysctl(router.name(), "net.ipv4.conf.all.send_redirects", "0")?;
        plug(&switch, &router, "eth0", "prouter", &lan_mtu, false)?;
        address(router.name(), "eth0", addr::ROUTER_LAN4.into(), 24)?;
        address(router.name(), "eth0", addr::ROUTER_LAN6.into(), 64)?;

        let mut clients = Vec::new();
        for k in 0..spec.clients {
            let client = host(&format!("{prefix}c{k}"))?;
            let rif = format!("c{k}");
            cmd::veth(router.name(), &rif, client.name(), "eth0")?;
            for (ns, ifname) in [(router.name(), rif.as_str()), (client.name(), "eth0")] {
                cmd::ip(ns, &["link", "set", ifname, "mtu", &client_mtu, "up"])?;
                offloads_off(ns, ifname)?;
            }
            address(router.name(), &rif, addr::client_gw4(k).into(), 24)?;
            address(router.name(), &rif, addr::client_gw6(k).into(), 64)?;
            serialise_flows(client.name(), "eth0")?;
            address(client.name(), "eth0", addr::client4(k).into(), 24)?;
            address(client.name(), "eth0", addr::client6(k).into(), 64)?;
            default_routes(
                client.name(),
                addr::client_gw4(k).into(),
                addr::client_gw6(k).into(),
            )?;
            clients.push(client);
        }

        let mut lb_nodes = Vec::new();
        let mut lb_macs = Vec::new();
        let mut wake_links = Vec::new();
        for i in 0..spec.lb_nodes {
            let node = host(&format!("{prefix}lb{i}"))?;
            // The switch port receives what vip_lb sends back with XDP_TX: it needs an XDP
            // program of its own, or the frames wait (see xdp_pass).
            wake_links.extend(plug(
                &switch,
                &node,
                LbNode::IFACE,
                &format!("plb{i}"),
                &lan_mtu,
                true,
            )?);
            address(node.name(), LbNode::IFACE, addr::lb4(i).into(), 24)?;
            address(node.name(), LbNode::IFACE, addr::lb6(i).into(), 64)?;
            default_routes(
                node.name(),
                addr::ROUTER_LAN4.into(),
                addr::ROUTER_LAN6.into(),
            )?;
            lb_macs.push(
                cmd::run_in(node.name(), "cat", &["/sys/class/net/eth0/address"])?
                    .trim()
                    .to_string(),
            );
            lb_nodes.push(LbNode {
                addr4: addr::lb4(i),
                addr6: addr::lb6(i),
                netns: node,
            });
        }

        let mut backends = Vec::new();
        for j in 0..spec.backends {
            let node = host(&format!("{prefix}b{}", j + 1))?;
            plug(
                &switch,
                &node,
                "eth0",
                &format!("pb{}", j + 1),
                &lan_mtu,
                false,
            )?;
            serialise_flows(node.name(), "eth0")?;
            address(node.name(), "eth0", addr::backend4(j).into(), 24)?;
            address(node.name(), "eth0", addr::backend6(j).into(), 64)?;
            let mac = cmd::run_in(node.name(), "cat", &["/sys/class/net/eth0/address"])?
                .trim()
                .to_string();
            backends.push(Backend {
                server: None,
                name: format!("b{}", j + 1),
                addr4: addr::backend4(j),
                addr6: addr::backend6(j),
                mac,
                netns: node,
            });
        }

        let mut lab = Lab {
            backends,
            lb_nodes,
            clients,
            router,
            switch,
            spec,
            prefix,
            dir,
            server_bin,
            lb_macs,
            pin_dirs: Vec::new(),
            wake_links,
        };
        match lab.spec.balancer {
            Balancer::External => lab.setup_dsr()?,
            Balancer::NftDnat => lab.setup_nft_dnat()?,
            Balancer::NftDsrL2 => {
                lab.setup_dsr()?;
                let ns = lab.lb_nodes[0].netns().to_string();
                cmd::nft(&ns, &lab.nft_dsr_ruleset())?;
            }
        }
        for j in 0..lab.backends.len() {
            lab.start_server(j)?;
        }
        lab.warm_neighbours()?;
        Ok(lab)
    }

    /// DSR set-up: VIPs routed to the LB node(s); backends hold the VIPs on `lo` and
    /// answer clients through the router.
    fn setup_dsr(&mut self) -> Result<(), LabError> {
        let lbs4: Vec<IpAddr> = self.lb_nodes.iter().map(|n| n.addr4.into()).collect();
        let lbs6: Vec<IpAddr> = self.lb_nodes.iter().map(|n| n.addr6.into()).collect();
        self.route_vips_to(&lbs4, &lbs6)?;
        for node in &self.lb_nodes {
            // bpf_fib_lookup answers FWD_DISABLED unless the LB node forwards (as an LB does).
            cmd::sysctl(node.netns(), "net.ipv4.ip_forward", "1")?;
            cmd::sysctl(node.netns(), "net.ipv6.conf.all.forwarding", "1")?;
            cmd::sysctl(node.netns(), "net.ipv4.conf.all.send_redirects", "0")?;
            // What vip_lb passes up for a VIP address (a port with no VIP) must be refused,
            // not forwarded back to the router, which routes it here again until TTL ends.
            cmd::ip(
                node.netns(),
                &["route", "replace", "unreachable", addr::VIP4_PREFIX],
            )?;
            cmd::ip(
                node.netns(),
                &["-6", "route", "replace", "unreachable", addr::VIP6_PREFIX],
            )?;
        }
        for b in &self.backends {
            let ns = b.netns();
            address(ns, "lo", addr::VIP4.into(), 32)?;
            address(ns, "lo", addr::VIP6.into(), 128)?;
            default_routes(ns, addr::ROUTER_LAN4.into(), addr::ROUTER_LAN6.into())?;
            if self.spec.mode == Mode::DsrL2 {
                // IPVS direct routing: never answer ARP for the VIP on lo, and never use it
                // as the source of ARP requests, or the segment learns the VIP at a backend.
                for scope in ["all", "eth0"] {
                    cmd::sysctl(ns, &format!("net.ipv4.conf.{scope}.arp_ignore"), "1")?;
                    cmd::sysctl(ns, &format!("net.ipv4.conf.{scope}.arp_announce"), "2")?;
                }
            }
        }
        Ok(())
    }

    /// The nftables DNAT baseline: LB node 0 forwards and DNATs the VIPs round-robin to
    /// the backends; backends route back through it (so NAT can be undone).
    fn setup_nft_dnat(&mut self) -> Result<(), LabError> {
        let lb = &self.lb_nodes[0];
        let lb_ns = lb.netns().to_string();
        let (lb4, lb6) = (lb.addr4, lb.addr6);
        self.route_vips_to(&[lb4.into()], &[lb6.into()])?;
        cmd::sysctl(&lb_ns, "net.ipv4.ip_forward", "1")?;
        cmd::sysctl(&lb_ns, "net.ipv6.conf.all.forwarding", "1")?;
        cmd::sysctl(&lb_ns, "net.ipv4.conf.all.send_redirects", "0")?;
        cmd::nft(&lb_ns, &self.nft_ruleset())?;
        for b in &self.backends {
            default_routes(b.netns(), lb4.into(), lb6.into())?;
        }
        Ok(())
    }

    /// The DNAT ruleset for [`Balancer::NftDnat`].
    pub fn nft_ruleset(&self) -> String {
        let n = self.backends.len();
        let port = self.spec.port;
        let map = |v6: bool| {
            (0..n)
                .map(|j| {
                    if v6 {
                        format!("{j} : {}", addr::backend6(j))
                    } else {
                        format!("{j} : {}", addr::backend4(j))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "table inet viplab {{\n chain prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n  \
             ip daddr {v4} meta l4proto {{ tcp, udp }} th dport {port} dnat ip to numgen inc mod {n} map {{ {m4} }}\n  \
             ip6 daddr {v6} meta l4proto {{ tcp, udp }} th dport {port} dnat ip6 to numgen inc mod {n} map {{ {m6} }}\n }}\n}}\n",
            v4 = addr::VIP4,
            v6 = addr::VIP6,
            m4 = map(false),
            m6 = map(true),
        )
    }

    /// The direct-routing ruleset for [`Balancer::NftDsrL2`].
    pub fn nft_dsr_ruleset(&self) -> String {
        let n = self.backends.len();
        let port = self.spec.port;
        let macs = self
            .backends
            .iter()
            .enumerate()
            .map(|(j, b)| format!("{j} : {}", b.mac))
            .collect::<Vec<_>>()
            .join(", ");
        let dev = LbNode::IFACE;
        // The source MAC must become the LB's own, or the bridge learns the router's MAC
        // on the LB's port and the backends' replies to the router go to the LB.
        let lb_mac = &self.lb_macs[0];
        format!(
            "table netdev viplab {{\n chain ingress {{\n  type filter hook ingress device {dev} priority 0; policy accept;\n  \
             ip daddr {v4} tcp dport {port} ether daddr set jhash ip saddr . tcp sport mod {n} seed 0x5eed map {{ {macs} }} ether saddr set {lb_mac} fwd to {dev}\n  \
             ip daddr {v4} udp dport {port} ether daddr set jhash ip saddr . udp sport mod {n} seed 0x5eed map {{ {macs} }} ether saddr set {lb_mac} fwd to {dev}\n  \
             ip6 daddr {v6} tcp dport {port} ether daddr set jhash ip6 saddr . tcp sport mod {n} seed 0x5eed map {{ {macs} }} ether saddr set {lb_mac} fwd to {dev}\n  \
             ip6 daddr {v6} udp dport {port} ether daddr set jhash ip6 saddr . udp sport mod {n} seed 0x5eed map {{ {macs} }} ether saddr set {lb_mac} fwd to {dev}\n }}\n}}\n",
            v4 = addr::VIP4,
            v6 = addr::VIP6,
        )
    }

    /// Routes the VIP prefixes in the router to these next hops (ECMP when several).
    pub fn route_vips_to(&self, hops4: &[IpAddr], hops6: &[IpAddr]) -> Result<(), LabError> {
        for (prefix, hops) in [(addr::VIP4_PREFIX, hops4), (addr::VIP6_PREFIX, hops6)] {
            let mut args: Vec<String> = vec!["route".into(), "replace".into(), prefix.into()];
            if hops.len() == 1 {
                args.extend(["via".into(), hops[0].to_string()]);
            } else {
                for h in hops {
                    args.extend(["nexthop".into(), "via".into(), h.to_string()]);
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cmd::ip(self.router.name(), &args)?;
        }
        Ok(())
    }

    /// Has every LB node talk to every backend once (a TCP connect per family), so the
    /// LB's ARP/neighbour cache knows the backends' MACs, as on an LB whose health checks
    /// run: the datapath's `bpf_fib_lookup` finds no MAC for a neighbour the kernel never
    /// resolved. The entries stay usable (STALE counts) for the life of the lab.
    pub fn warm_neighbours(&self) -> Result<(), LabError> {
        let targets: Vec<SocketAddr> = self
            .backends
            .iter()
            .flat_map(|b| {
                [
                    SocketAddr::new(b.addr4.into(), self.spec.port),
                    SocketAddr::new(b.addr6.into(), self.spec.port),
                ]
            })
            .collect();
        for node in &self.lb_nodes {
            let targets = targets.clone();
            netns::within(node.netns(), move || {
                for t in targets {
                    let _ = std::net::TcpStream::connect_timeout(&t, Duration::from_millis(500));
                }
            })?;
        }
        Ok(())
    }

    /// Takes LB node `i` out of the router's ECMP route (as an operator would withdraw it).
    pub fn withdraw_lb_node(&self, i: usize) -> Result<(), LabError> {
        let keep = |v6: bool| -> Vec<IpAddr> {
            self.lb_nodes
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != i)
                .map(|(_, n)| if v6 { n.addr6.into() } else { n.addr4.into() })
                .collect()
        };
        self.route_vips_to(&keep(false), &keep(true))
    }

    /// (Re)starts backend `j`'s server and waits until it accepts connections.
    pub fn start_server(&mut self, j: usize) -> Result<(), LabError> {
        let port = self.spec.port;
        let b = &self.backends[j];
        let mut args = vec![
            "--name".to_string(),
            b.name.clone(),
            "--port".into(),
            port.to_string(),
        ];
        // UDP answers must leave from the address they were sent to (the VIP): one socket
        // bound to each address.
        let mut udp: Vec<IpAddr> = vec![b.addr4.into(), b.addr6.into()];
        if self.spec.balancer != Balancer::NftDnat {
            udp.extend([IpAddr::from(addr::VIP4), addr::VIP6.into()]);
        }
        for a in udp {
            args.extend(["--udp".to_string(), SocketAddr::new(a, port).to_string()]);
        }
        let log = self.dir.join(format!("server-{}.log", b.name));
        let process = LabProcess::spawn(
            &format!("server of {}", b.name),
            b.netns(),
            &self.server_bin,
            &args,
            &log,
        )?;
        let ns = b.netns().to_string();
        let target = SocketAddr::new(b.addr4.into(), port);
        self.backends[j].server = Some(process);
        let ready = wait_until(
            &format!("server of backend b{}", j + 1),
            Duration::from_secs(10),
            || {
                netns::within(&ns, move || {
                    std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200))
                        .is_ok()
                })
                .unwrap_or(false)
            },
        );
        ready.map_err(|e| match (e, &self.backends[j].server) {
            (LabError::NotReady { what, secs, .. }, Some(p)) => LabError::NotReady {
                what,
                secs,
                detail: format!("; its log:\n{}", p.log_tail()),
            },
            (e, _) => e,
        })
    }

    /// Stops (SIGKILL) backend `j`'s server, as if it crashed.
    pub fn kill_server(&mut self, j: usize) {
        if let Some(mut p) = self.backends[j].server.take() {
            p.kill_with(libc::SIGKILL);
        }
    }

    /// Packets received so far on LB node `i`'s interface (to see which node ECMP used).
    pub fn lb_rx_packets(&self, i: usize) -> Result<u64, LabError> {
        let path = format!("/sys/class/net/{}/statistics/rx_packets", LbNode::IFACE);
        let text = cmd::run_in(self.lb_nodes[i].netns(), "cat", &[&path])?;
        Ok(text.trim().parse().unwrap_or(0))
    }

    /// The namespace of client `k`.
    pub fn client_netns(&self, k: usize) -> &str {
        self.clients[k].name()
    }

    /// The router's namespace.
    pub fn router_netns(&self) -> &str {
        self.router.name()
    }

    /// The switch's namespace (the bridge of the shared segment).
    pub fn switch_netns(&self) -> &str {
        self.switch.name()
    }

    /// The IPv4 VIP with the lab's port.
    pub fn vip4(&self) -> SocketAddr {
        SocketAddr::new(addr::VIP4.into(), self.spec.port)
    }

    /// The IPv6 VIP with the lab's port.
    pub fn vip6(&self) -> SocketAddr {
        SocketAddr::new(addr::VIP6.into(), self.spec.port)
    }

    /// Each client's and backend's TCP reset and drop counters (`nstat`), one line per
    /// host: what a test prints when a request failed, to tell which host reset it.
    pub fn tcp_reset_counters(&self) -> String {
        const COUNTERS: [&str; 7] = [
            "TcpOutRsts",
            "TcpEstabResets",
            "TcpAttemptFails",
            "TcpExtTCPAbortOnData",
            "TcpExtTCPAbortOnClose",
            "TcpExtListenDrops",
            "TcpExtTCPReqQFullDrop",
        ];
        let hosts = self
            .clients
            .iter()
            .enumerate()
            .map(|(k, c)| (format!("client{k}"), c.name()))
            .chain(self.backends.iter().map(|b| (b.name.clone(), b.netns())));
        let mut out = String::new();
        for (name, ns) in hosts {
            // -a absolute values, -s leave nstat's history file alone, -z zeros too.
            let mut args = vec!["-asz"];
            args.extend(COUNTERS);
            let line = match cmd::run_in(ns, "nstat", &args) {
                Ok(text) => text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| {
                        let mut f = l.split_whitespace();
                        Some(format!("{}={}", f.next()?, f.next()?))
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(e) => format!("(nstat failed: {e})"),
            };
            out.push_str(&format!("{name}: {line}\n"));
        }
        out
    }

    /// Index of the backend called `name`.
    pub fn backend_index(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Servers first (their namespaces go with the fields below).
        for b in &mut self.backends {
            b.server = None;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespaces (fields below) go after this; pinned links whose interface is gone
        // detach by themselves, the pin files must be removed.
        for b in &self.backends {
            netns::kill_all_in(b.netns());
        }
        for dir in &self.pin_dirs {
            netns::remove_pin_dir(dir);
        }
    }
}

/// A namespace with the sysctls every host of the lab shares.
fn host(name: &str) -> Result<Netns, LabError> {
    let ns = Netns::create(name)?;
    // No duplicate address detection (addresses usable at once), no reverse-path filter
    // (DSR replies leave with the VIP as source on an interface the VIP is not routed to).
    cmd::sysctl(name, "net.ipv6.conf.default.accept_dad", "0")?;
    cmd::sysctl(name, "net.ipv6.conf.all.accept_dad", "0")?;
    cmd::sysctl(name, "net.ipv4.conf.all.rp_filter", "0")?;
    cmd::sysctl(name, "net.ipv4.conf.default.rp_filter", "0")?;
    Ok(ns)
}

/// Connects `node` to the bridge: `ifname` in the node, `port` in the switch. With
/// `wake_port`, the port gets an XDP_PASS program (see [`super::xdp_pass`]), returned.
fn plug(
    switch: &Netns,
    node: &Netns,
    ifname: &str,
    port: &str,
    mtu: &str,
    wake_port: bool,
) -> Result<Option<OwnedFd>, LabError> {
    cmd::veth(switch.name(), port, node.name(), ifname)?;
    cmd::ip(
        switch.name(),
        &["link", "set", port, "mtu", mtu, "master", "br0", "up"],
    )?;
    cmd::ip(node.name(), &["link", "set", ifname, "mtu", mtu, "up"])?;
    offloads_off(node.name(), ifname)?;
    offloads_off(switch.name(), port)?;
    if wake_port {
        return super::xdp_pass::attach(switch.name(), port).map(Some);
    }
    Ok(None)
}

/// Checksum offload off: a veth hands packets on with the checksum still to be filled in
/// (CHECKSUM_PARTIAL), and a frame that XDP rewrites and sends on would keep it unfilled.
/// (Turning tx checksumming off turns TSO off with it, so frames stay MTU-sized.)
fn offloads_off(ns: &str, ifname: &str) -> Result<(), LabError> {
    cmd::ethtool(ns, &["-K", ifname, "tx", "off"]).map(|_| ())
}

/// Serialises each flow's packets on the interface of a host where TCP ends (a client or
/// a backend), as a real NIC's receive queue does: GRO on a veth makes it receive through
/// its own NAPI queue, polled by one CPU at a time. Without it a veth hands each packet
/// to the backlog of whichever CPU forwarded it: a client's handshake ACK and its first
/// data segment, sent back to back, can then reach a server's TCP on two CPUs at once,
/// and the kernel may answer the second with a reset while the first turns the request
/// socket into a connection (its lockless lookup can miss both). The likely cause of one
/// `Connection reset by peer` in 3,000 requests once seen in a dsr-l2 lab, whose
/// backends have no XDP program (which also gives a veth its NAPI queue); a real network
/// never shows it. (RPS would do too, but costs the lab a third of its connection rate.)
fn serialise_flows(ns: &str, ifname: &str) -> Result<(), LabError> {
    cmd::ethtool(ns, &["-K", ifname, "gro", "on"]).map(|_| ())
}

fn address(ns: &str, ifname: &str, ip: IpAddr, prefix_len: u8) -> Result<(), LabError> {
    let a = format!("{ip}/{prefix_len}");
    if ip.is_ipv6() {
        cmd::ip(ns, &["-6", "addr", "add", &a, "dev", ifname, "nodad"])?;
    } else {
        cmd::ip(ns, &["addr", "add", &a, "dev", ifname])?;
    }
    Ok(())
}

fn default_routes(ns: &str, gw4: IpAddr, gw6: IpAddr) -> Result<(), LabError> {
    cmd::ip(
        ns,
        &["route", "replace", "default", "via", &gw4.to_string()],
    )?;
    cmd::ip(
        ns,
        &["-6", "route", "replace", "default", "via", &gw6.to_string()],
    )?;
    Ok(())
}

/// Polls `ready` every 50 ms until it is true or `limit` has passed.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), LabError> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(LabError::NotReady {
        what: what.to_string(),
        secs: limit.as_secs(),
        detail: String::new(),
    })
}
