//! Failover on a shared L2 segment: two LB nodes with the same vipd config, a
//! VIP in an HA group with `announce = "arp"`, configured on no interface. The router has
//! the VIP prefix on-link, so it finds the VIP by ARP / neighbour discovery, and only the
//! node whose group is active answers. The role is set with `vipctl ha set`, as
//! keepalived's `notify` does it. The lab itself is `vip_tests::lab::failover` (the demo
//! builds it too).
//!
//! Shown here: exactly one node answers and the router's neighbour entry holds its MAC;
//! a handover moves the router to the other node by gratuitous ARP / unsolicited NA
//! (time measured, 5 runs), with no long-lived connection broken (both nodes pick the
//! same backend); vipd SIGKILLed on the active node leaves the pinned role answering,
//! and the restarted vipd adopts it.

use std::time::{Duration, Instant};

use vip_tests::lab::{
    Mode, addr,
    client::LongLived,
    cmd,
    failover::{Failover, GROUP, Keepalived, ha_config, until_moved},
};

fn setup(mode: Mode) -> Failover {
    Failover::build(mode).unwrap_or_else(|e| panic!("building the failover lab: {e}"))
}

fn median_max(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

fn failover(mode: Mode) {
    let scenario = format!("failover, {}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let f = setup(mode);
    f.set(0, "active");
    f.set(1, "standby");

    // Steady state: only node 0 answers; the router learns node 0's MAC.
    f.flush_router();
    let before: Vec<(u64, u64)> = (0..2)
        .map(|i| (f.reason(i, "arp_replied"), f.reason(i, "ndp_advertised")))
        .collect();
    for v6 in [false, true] {
        f.traffic(&scenario, v6, 20);
        assert_eq!(
            f.router_mac(v6).as_deref(),
            Some(f.macs[0].as_str()),
            "{scenario}: the router's neighbour entry for the VIP (v6: {v6}) must be the active node's MAC"
        );
    }
    let answered = |i: usize| {
        (
            f.reason(i, "arp_replied") - before[i].0,
            f.reason(i, "ndp_advertised") - before[i].1,
        )
    };
    let (a0, n0) = answered(0);
    let (a1, n1) = answered(1);
    eprintln!("{scenario}: steady state answers: node0 arp={a0} nd={n0}, node1 arp={a1} nd={n1}");
    assert!(
        a0 >= 1 && n0 >= 1,
        "{scenario}: the active node must answer ARP and NS"
    );
    assert_eq!(
        (a1, n1),
        (0, 0),
        "{scenario}: the standby node must answer nothing"
    );
    assert!(
        f.reason(1, "pass_neigh_not_active") >= 1,
        "{scenario}: the standby node saw the broadcast ARP and passed it"
    );
    // Both nodes' NICs accept the VIP's solicited-node multicast MAC (a real NIC filters
    // multicast; SIOCADDMULTI as `ip maddr add` does).
    for i in 0..2 {
        let maddr = cmd::ip(f.lab.lb_nodes[i].netns(), &["maddr", "show", "dev", "eth0"]).unwrap();
        assert!(
            maddr.contains("33:33:ff:00:00:01"),
            "{scenario}: node {i} must accept the solicited-node MAC of {}: {maddr}",
            addr::VIP6
        );
    }

    // Handovers, both directions, with long-lived connections open throughout.
    let ns = f.lab.client_netns(0).to_string();
    let pause = Duration::from_millis(50);
    let limit = Duration::from_secs(120);
    let long4 = LongLived::start(&ns, f.vip(false), 200, 4, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let long6 = LongLived::start(&ns, f.vip(true), 100, 2, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let mut times4 = Vec::new();
    let mut times6 = Vec::new();
    let mut failed_probes = 0;
    let mut active = 0;
    for run in 0..5 {
        let next = 1 - active;
        let start = Instant::now();
        f.set(active, "standby");
        f.set(next, "active");
        let (t4, p4) = until_moved(&f, false, &f.macs[next], start);
        let (t6, p6) = until_moved(&f, true, &f.macs[next], start);
        eprintln!("{scenario}: run {run}: node {active} -> {next}: IPv4 {t4:?}, IPv6 {t6:?}");
        times4.push(t4);
        times6.push(t6);
        failed_probes += p4 + p6;
        active = next;
        std::thread::sleep(Duration::from_millis(300));
    }
    let (m4, x4) = median_max(&mut times4);
    let (m6, x6) = median_max(&mut times6);
    eprintln!(
        "{scenario}: handover by vipctl ha set, 5 runs: IPv4 median {m4:?} max {x4:?}; IPv6 median {m6:?} max {x6:?}; failed new-connection probes after the router moved: {failed_probes}"
    );
    std::thread::sleep(Duration::from_millis(500));
    for (family, long) in [("IPv4", long4), ("IPv6", long6)] {
        let report = long.finish();
        eprintln!(
            "{scenario}, {family}: broken long-lived connections: {}",
            report.broken().len()
        );
        assert!(
            report.broken().is_empty(),
            "{scenario}, {family}: expected 0 broken connections across 5 handovers: {}",
            report.describe_broken()
        );
    }

    // vipd SIGKILLed on the active node: the pinned role keeps answering.
    let mut f = f;
    f.vipds[active].kill();
    f.flush_router();
    for v6 in [false, true] {
        f.traffic(&scenario, v6, 20);
        assert_eq!(
            f.router_mac(v6).as_deref(),
            Some(f.macs[active].as_str()),
            "{scenario}: with vipd dead the active node must still answer (pinned role)"
        );
    }
    f.vipds[active].restart().expect("restarting vipd");
    assert_eq!(
        f.role(active),
        "active",
        "{scenario}: the restarted vipd adopts the active role"
    );
    // vipctl ha set with vipd down writes the pinned map: the node falls silent, the
    // other takes the VIP, and the restarted vipd adopts standby.
    let other = 1 - active;
    f.vipds[active].kill();
    let instance = format!("{}lb{active}", f.lab.prefix);
    let out = f.vipds[active]
        .vipctl(&["--instance", &instance, "ha", "set", GROUP, "standby"])
        .unwrap_or_else(|e| panic!("{scenario}: vipctl ha set with vipd down: {e}"));
    assert!(
        out.contains("vipd is not running"),
        "{scenario}: vipctl must say it wrote the pinned map: {out}"
    );
    let start = Instant::now();
    f.set(other, "active");
    let (t, _) = until_moved(&f, false, &f.macs[other], start);
    eprintln!("{scenario}: handover with the old node's vipd down: {t:?}");
    f.flush_router();
    f.traffic(&scenario, false, 10);
    assert_eq!(
        f.router_mac(false).as_deref(),
        Some(f.macs[other].as_str()),
        "{scenario}: the node set standby offline must not answer"
    );
    f.vipds[active].restart().expect("restarting vipd");
    assert_eq!(
        f.role(active),
        "standby",
        "{scenario}: the restarted vipd adopts the role vipctl wrote"
    );
}

fn keepalived_failover(mode: Mode) {
    let scenario = format!("keepalived failover, {}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let f = setup(mode);
    let mut ks = vec![Keepalived::start(&f, 0), Keepalived::start(&f, 1)];
    f.wait_roles(["active", "standby"], &scenario, &ks);
    f.flush_router();
    f.traffic(&scenario, false, 10);
    assert_eq!(f.router_mac(false).as_deref(), Some(f.macs[0].as_str()));
    let ns = f.lab.client_netns(0).to_string();
    let long4 = LongLived::start(
        &ns,
        f.vip(false),
        200,
        4,
        Duration::from_millis(50),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let mut over = Vec::new();
    let mut over6 = Vec::new();
    let mut back = Vec::new();
    let mut failed = 0;
    for run in 0..5 {
        // The active node's keepalived dies: the other's takes over after the master-down
        // interval and calls vipctl ha set, whose announcements move the router.
        let start = Instant::now();
        ks[0].kill();
        let (t, p) = until_moved(&f, false, &f.macs[1], start);
        let (t6, p6) = until_moved(&f, true, &f.macs[1], start);
        failed += p + p6;
        over.push(t);
        over6.push(t6);
        // Failback: the higher priority preempts once its keepalived is back.
        ks[0].restart();
        let start = Instant::now();
        let (t, p) = until_moved(&f, false, &f.macs[0], start);
        failed += p;
        back.push(t);
        f.wait_roles(["active", "standby"], &scenario, &ks);
        eprintln!(
            "{scenario}: run {run}: failover {:?}, failback {:?}",
            over[run], back[run]
        );
    }
    let (mo, xo) = median_max(&mut over);
    let (mo6, xo6) = median_max(&mut over6);
    let (mb, xb) = median_max(&mut back);
    eprintln!(
        "{scenario}: keepalived SIGKILL -> new connections through the standby, 5 runs: IPv4 median {mo:?} max {xo:?}, IPv6 median {mo6:?} max {xo6:?}; failback by preemption (IPv4): median {mb:?} max {xb:?}; failed new-connection probes: {failed}"
    );
    // After convergence only the active node answers.
    let before: Vec<u64> = (0..2).map(|i| f.reason(i, "arp_replied")).collect();
    f.flush_router();
    f.traffic(&scenario, false, 10);
    let answers: Vec<u64> = (0..2)
        .map(|i| f.reason(i, "arp_replied") - before[i])
        .collect();
    eprintln!(
        "{scenario}: ARP answers after convergence: node0 {}, node1 {}",
        answers[0], answers[1]
    );
    assert!(
        answers[0] >= 1 && answers[1] == 0,
        "{scenario}: one answerer: {answers:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let report = long4.finish();
    eprintln!(
        "{scenario}: broken long-lived connections: {} of 200",
        report.broken().len()
    );
    assert!(report.broken().is_empty(), "{}", report.describe_broken());

    // The active node's link goes down: its keepalived faults, the other takes over.
    let lb0 = f.lab.lb_nodes[0].netns().to_string();
    let start = Instant::now();
    cmd::ip(&lb0, &["link", "set", "eth0", "down"]).unwrap();
    let (t, p) = until_moved(&f, false, &f.macs[1], start);
    eprintln!(
        "{scenario}: link down -> new connections through the standby: {t:?}, failed probes {p}"
    );
    cmd::ip(&lb0, &["link", "set", "eth0", "up"]).unwrap();
    // The link flap emptied node 0's neighbour cache, which the datapath's next hops
    // come from; health checks would refill it, this lab has none.
    f.lab.warm_neighbours().expect("neighbours");
    f.wait_roles(["active", "standby"], &scenario, &ks);
    let (t, _) = until_moved(&f, false, &f.macs[0], Instant::now());
    eprintln!("{scenario}: link back up -> failback in {t:?}");

    // `vipd down` on the active node: the datapath goes, `vipctl ha check` fails, its
    // keepalived faults after track_script's fall count and the other takes over.
    let vipd_bin = vip_tests::lab::workspace_binary("vipd", "vip-user").expect("vipd");
    let conf = f.lab.dir.join("vipd-lb0.toml");
    let start = Instant::now();
    let mut f = f;
    f.vipds[0].kill();
    let down = std::process::Command::new(&vipd_bin)
        .arg("down")
        .arg("-c")
        .arg(&conf)
        .arg("--force")
        .output()
        .expect("vipd down");
    assert!(
        down.status.success(),
        "{scenario}: vipd down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let (t, p) = until_moved(&f, false, &f.macs[1], start);
    eprintln!(
        "{scenario}: vipd down -> new connections through the standby: {t:?}, failed probes {p} (track_script: interval 1 s, fall 2)"
    );
    f.vipds[0].restart().expect("vipd after down");
    f.wait_roles(["active", "standby"], &scenario, &ks);
    assert!(
        xo < Duration::from_secs(2),
        "{scenario}: failover took {xo:?} (VRRP master-down with advert_int 0.1 is ~0.35 s)"
    );
    drop(ks);
}

/// ucarp on LB node `i` with the repository's up/down scripts (node 0 preferred:
/// advskew 0 and preemption).
struct Ucarp {
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
}

impl Ucarp {
    fn start(f: &Failover, i: usize) -> Ucarp {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ha");
        let vipctl = vip_tests::lab::workspace_binary("vipctl", "vip-user").expect("vipctl");
        let socket = f.lab.dir.join(format!("vipd-lb{i}.sock"));
        let log = f.lab.dir.join(format!("ucarp-lb{i}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let src = f.lab.lb_nodes[i].addr4.to_string();
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", f.lab.lb_nodes[i].netns(), "ucarp"])
            .args(["-i", "eth0", "-s", &src, "-v", "52", "-p", "vip-lab"])
            .args(["-a", "169.254.255.52", "-b", "1", "-k"])
            .arg(if i == 0 { "0" } else { "50" })
            .arg("-u")
            .arg(root.join("ucarp-up.sh"))
            .arg("-d")
            .arg(root.join("ucarp-down.sh"))
            .env("VIP_GROUP", GROUP)
            .env(
                "VIPCTL",
                format!("{} --socket {}", vipctl.display(), socket.display()),
            )
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if i == 0 {
            cmd.arg("-P");
        }
        Ucarp {
            child: Some(cmd.spawn().expect("starting ucarp")),
            log,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Ucarp {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ucarp_failover(mode: Mode) {
    let scenario = format!("ucarp failover, {}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let f = setup(mode);
    let mut us = [Ucarp::start(&f, 0), Ucarp::start(&f, 1)];
    let start = Instant::now();
    while !(f.role(0) == "active" && f.role(1) == "standby") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{scenario}: ucarp did not elect node 0 (roles {} / {}):\n{}",
            f.role(0),
            f.role(1),
            std::fs::read_to_string(&us[0].log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stable: the backup hears the master's advertisements (no split brain).
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        (f.role(0), f.role(1)),
        ("active".to_string(), "standby".to_string()),
        "{scenario}: roles must stay put while node 0 advertises:\n{}\n{}",
        std::fs::read_to_string(&us[0].log).unwrap_or_default(),
        std::fs::read_to_string(&us[1].log).unwrap_or_default()
    );
    f.flush_router();
    f.traffic(&scenario, false, 10);
    let ns = f.lab.client_netns(0).to_string();
    let long4 = LongLived::start(
        &ns,
        f.vip(false),
        200,
        4,
        Duration::from_millis(50),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    f.traffic(&scenario, true, 10);
    let (mut over, mut over6, mut failed) = (Vec::new(), Vec::new(), 0);
    for run in 0..5 {
        // The active node's ucarp dies: the backup's takes over once it misses three
        // advertisements and runs ucarp-up.sh, whose `vipctl ha set` announces the VIPs.
        let start = Instant::now();
        us[0].kill();
        let (t, p) = until_moved(&f, false, &f.macs[1], start);
        let (t6, p6) = until_moved(&f, true, &f.macs[1], start);
        failed += p + p6;
        over.push(t);
        over6.push(t6);
        eprintln!("{scenario}: run {run}: IPv4 {t:?}, IPv6 {t6:?}");
        // Node 0's ucarp comes back and preempts (-P, the lower skew): node 1 steps down.
        us[0] = Ucarp::start(&f, 0);
        let start = Instant::now();
        while !(f.role(0) == "active" && f.role(1) == "standby") {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{scenario}: run {run}: node 0 did not take the group back (roles {} / {}):\n{}\n{}",
                f.role(0),
                f.role(1),
                std::fs::read_to_string(&us[0].log).unwrap_or_default(),
                std::fs::read_to_string(&us[1].log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, p) = until_moved(&f, false, &f.macs[0], Instant::now());
        failed += p;
    }
    let (mo, xo) = median_max(&mut over);
    let (mo6, xo6) = median_max(&mut over6);
    eprintln!(
        "{scenario}: ucarp SIGKILL -> new connections through the standby, 5 runs: IPv4 median {mo:?} max {xo:?}, IPv6 median {mo6:?} max {xo6:?} (CARP's advertisement base is whole seconds); failed new-connection probes: {failed}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let report = long4.finish();
    eprintln!(
        "{scenario}: broken long-lived connections: {} of 200",
        report.broken().len()
    );
    assert!(report.broken().is_empty(), "{}", report.describe_broken());
    assert!(
        xo < Duration::from_secs(6) && xo6 < Duration::from_secs(6),
        "{scenario}: failover took up to {xo:?} (IPv6 {xo6:?})"
    );
}

/// One node, two NICs on the segment: the group spans both; when the NIC the router
/// uses loses carrier, vipd announces the VIPs again on the other.
fn two_nics(mode: Mode) {
    let scenario = format!("two NICs, {}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let mut f = setup(mode);
    let lb0 = f.lab.lb_nodes[0].netns().to_string();
    let sw = format!("{}sw", f.lab.prefix);
    cmd::ip(
        &lb0,
        &[
            "link", "add", "eth1", "type", "veth", "peer", "name", "plb0b", "netns", &sw,
        ],
    )
    .unwrap();
    cmd::ip(&sw, &["link", "set", "plb0b", "master", "br0", "up"]).unwrap();
    // The switch port receives what vip_lb sends back with XDP_TX: it needs an XDP
    // program of its own, as the lab's other LB ports (see xdp_pass).
    let _wake = vip_tests::lab::xdp_pass::attach(&sw, "plb0b").expect("XDP_PASS on plb0b");
    cmd::ip(&lb0, &["link", "set", "eth1", "up"]).unwrap();
    // An address on eth1 too, so the node still reaches the backends (its tunnels'
    // next hops) when eth0 is gone.
    cmd::ip(&lb0, &["addr", "add", "198.18.1.20/24", "dev", "eth1"]).unwrap();
    let text = ha_config(&f.lab, 0).replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\", \"eth1\"]",
    );
    f.vipds[0].kill();
    std::fs::write(f.lab.dir.join("vipd-lb0.toml"), text).unwrap();
    f.vipds[0].restart().expect("vipd with two NICs");
    f.set(0, "active");
    f.set(1, "standby");
    let link = cmd::ip(&lb0, &["-br", "link", "show", "eth1"]).unwrap();
    let mac1 = link.split_whitespace().nth(2).expect("a MAC").to_string();
    f.flush_router();
    f.traffic(&scenario, false, 10);
    let used = f.router_mac(false).expect("the router resolved the VIP");
    let (down, other_mac) = if used == f.macs[0] {
        ("eth0", mac1.clone())
    } else {
        assert_eq!(used, mac1, "{scenario}: the router must reach node 0");
        ("eth1", f.macs[0].clone())
    };
    f.traffic(&scenario, true, 10);
    let used6 = f
        .router_mac(true)
        .expect("the router resolved the IPv6 VIP");
    let start = Instant::now();
    cmd::ip(&lb0, &["link", "set", down, "down"]).unwrap();
    let (t, p) = until_moved(&f, false, &other_mac, start);
    eprintln!(
        "{scenario}: {down} of the active node down -> the router reaches the VIP through the other NIC in {t:?} (failed probes {p})"
    );
    if used6 == used {
        let (t6, p6) = until_moved(&f, true, &other_mac, start);
        eprintln!("{scenario}: IPv6: {t6:?} (failed probes {p6})");
    }
    assert!(t < Duration::from_secs(2), "{scenario}: took {t:?}");
}

#[test]
fn lab_failover_two_nics_tunnel() {
    if !vip_tests::privileged::require_root("lab_failover_two_nics_tunnel") {
        return;
    }
    two_nics(Mode::Tunnel);
}

#[test]
fn lab_failover_ucarp_tunnel() {
    if !vip_tests::privileged::require_root("lab_failover_ucarp_tunnel") {
        return;
    }
    ucarp_failover(Mode::Tunnel);
}

#[test]
fn lab_failover_keepalived_dsr_l2() {
    if !vip_tests::privileged::require_root("lab_failover_keepalived_dsr_l2") {
        return;
    }
    keepalived_failover(Mode::DsrL2);
}

#[test]
fn lab_failover_keepalived_tunnel() {
    if !vip_tests::privileged::require_root("lab_failover_keepalived_tunnel") {
        return;
    }
    keepalived_failover(Mode::Tunnel);
}

#[test]
fn lab_failover_tunnel() {
    if !vip_tests::privileged::require_root("lab_failover_tunnel") {
        return;
    }
    failover(Mode::Tunnel);
}

#[test]
fn lab_failover_dsr_l2() {
    if !vip_tests::privileged::require_root("lab_failover_dsr_l2") {
        return;
    }
    failover(Mode::DsrL2);
}
