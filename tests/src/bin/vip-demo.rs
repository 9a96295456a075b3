//! `cargo xtask demo`: a lab in network namespaces with vipd, real traffic through a VIP.
//!
//! Builds client → router → LB node (vipd, vip_lb on eth0) → 3 backends (tunnel mode,
//! vip_decap), sends requests to an IPv4 and an IPv6 VIP, shows how they spread, kills
//! one backend's server and shows the health check taking it out, brings it back, shows
//! `vipctl list` and `vipctl stats`, and removes everything.
//!
//! Then a failover act: two LB nodes on one L2 segment with keepalived (VRRPv3) electing
//! the one that answers ARP/NDP for the VIP (`vip_tests::lab::failover`, the lab the
//! failover tests build). It SIGKILLs the active node's keepalived while long-lived
//! connections echo and new connections are probed every 10 ms, and shows the router
//! moving to the other node, the measured gap, what broke (nothing, as both nodes pick
//! the same backend for a flow) and `vipctl ha status` on both nodes.

use std::time::{Duration, Instant};

use vip_tests::lab::{
    Lab, LabSpec, Mode,
    client::{self, LongLived, Proto, Spread},
    failover::{Failover, GROUP, Keepalived, until_moved},
    netns,
    vipd::{HealthConfig, Vipd},
};

const REQUESTS: usize = 300;

fn main() {
    if !vip_tests::privileged::require_root("vip-demo") {
        std::process::exit(1);
    }
    vip_tests::lab::install_cleanup_handlers();
    let started = Instant::now();
    if let Err(e) = run() {
        eprintln!("\ndemo failed: {e}");
        netns::cleanup_everything();
        std::process::exit(1);
    }
    println!(
        "\nDone in {:.0} s. Everything the demo created is removed.",
        started.elapsed().as_secs_f64()
    );
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    println!("vip demo: an XDP load balancer in front of 3 backends, inside network namespaces.\n");
    println!("  client ── router ── LB node: vipd + vip_lb (XDP) ── backends b1 b2 b3");
    println!("                 ▲                                      │");
    println!("                 └──── replies go straight back (DSR) ──┘");
    println!(
        "  VIPs 198.18.100.1:80 and [2001:db8:100::1]:80; the LB tunnels (IPIP / IP6IP6) each"
    );
    println!("  flow to one backend, which holds the VIP on lo and answers the client directly.");

    step("Building the lab (namespaces, veth pairs, a bridge, backend servers)");
    let mut lab = Lab::build(LabSpec::new(3, Mode::Tunnel))?;
    lab.attach_decap()?;
    println!("   backends decapsulate with `vipd decap attach --iface eth0` (tunnel mode)");
    let all = [0, 1, 2];
    let vips = vec![
        lab.vip_config(false, "tcp", &all, HealthConfig::fast_http()),
        lab.vip_config(true, "tcp", &all, HealthConfig::fast_http()),
    ];
    let config = lab.vipd_config(0, vips);
    let vipd = Vipd::start(&lab, 0, config)?;
    println!(
        "   vipd runs on the LB node; its config (the IPv6 VIP is the same with IPv6 addresses):\n"
    );
    let toml = vipd.config.to_toml();
    let second_vip = toml
        .match_indices("[[vip]]")
        .nth(1)
        .map_or(toml.len(), |(i, _)| i);
    for line in toml[..second_vip].lines().filter(|l| {
        !l.is_empty() && !l.starts_with("state_file") && !l.starts_with("socket") && *l != "[api]"
    }) {
        println!("      {line}");
    }
    let ns = lab.client_netns(0).to_string();
    let (vip4, vip6) = (lab.vip4(), lab.vip6());

    step(&format!(
        "{REQUESTS} new TCP connections to each VIP; who answered?"
    ));
    show(
        &format!("{vip4}"),
        &client::spread(&ns, vip4, Proto::Tcp, REQUESTS, 2, Duration::from_secs(30))?,
    );
    show(
        &format!("{vip6}"),
        &client::spread(&ns, vip6, Proto::Tcp, REQUESTS, 2, Duration::from_secs(30))?,
    );

    step(
        "Killing b2's server; the HTTP health check (every 200 ms, down after 2 failures) notices",
    );
    let killed = Instant::now();
    lab.kill_server(1);
    let gone = wait_for(&ns, vip4, Duration::from_secs(15), |s| {
        s.count("b2") == 0 && s.failures.is_empty()
    });
    match gone {
        Some(t) => println!(
            "   b2 gets no new connections {:.1} s after its server died",
            (t - killed).as_secs_f64()
        ),
        None => println!("   b2 was still chosen after 15 s: the health check did not take it out"),
    }
    show(
        &format!("{vip4}"),
        &client::spread(&ns, vip4, Proto::Tcp, REQUESTS, 2, Duration::from_secs(30))?,
    );
    show(
        &format!("{vip6}"),
        &client::spread(&ns, vip6, Proto::Tcp, REQUESTS, 2, Duration::from_secs(30))?,
    );

    step("Restarting b2's server; it comes back after 2 passed checks");
    let back = Instant::now();
    lab.start_server(1)?;
    match wait_for(&ns, vip4, Duration::from_secs(15), |s| s.count("b2") > 0) {
        Some(t) => println!(
            "   b2 answers again {:.1} s after its server restarted",
            (t - back).as_secs_f64()
        ),
        None => println!("   b2 did not come back within 15 s"),
    }
    show(
        &format!("{vip4}"),
        &client::spread(&ns, vip4, Proto::Tcp, REQUESTS, 2, Duration::from_secs(30))?,
    );

    step("What the operator sees: `vipctl vip list` and `vipctl backend list`");
    indent(&vipd.vipctl(&["vip", "list"])?);
    println!();
    indent(&vipd.vipctl(&["backend", "list"])?);
    step("`vipctl stats`");
    indent(&vipd.vipctl(&["stats"])?);

    step("Tearing down");
    drop(vipd);
    drop(lab);

    failover_act()
}

/// Long-lived connections per family during the failover act.
const LONG_LIVED: usize = 100;

/// Two LB nodes, keepalived electing one; the active one's keepalived is SIGKILLed.
fn failover_act() -> Result<(), Box<dyn std::error::Error>> {
    step("Failover: two LB nodes on one L2 segment, keepalived (VRRPv3) elects which one answers");
    println!("  client ── router ── switch ─┬── lb0: vipd + vip_lb, keepalived priority 150");
    println!("                              ├── lb1: vipd + vip_lb, keepalived priority 100");
    println!("                              └── backends b1 b2");
    println!(
        "  The router has the VIPs' prefixes on-link and asks the segment who has a VIP; vip_lb on"
    );
    println!(
        "  the active node answers ARP/NDP from XDP, the standby stays silent. keepalived (adverts"
    );
    println!("  every 0.1 s) only elects, and calls `vipctl ha set {GROUP} active|standby|fault`.");
    let f = Failover::build(Mode::Tunnel)?;
    let elected = Instant::now();
    let mut ks = vec![Keepalived::start(&f, 0), Keepalived::start(&f, 1)];
    f.wait_roles(["active", "standby"], "keepalived's election", &ks);
    println!(
        "   keepalived elected lb0 in {:.1} s (lb0 active, lb1 standby)",
        elected.elapsed().as_secs_f64()
    );
    f.flush_router();
    let ns = f.lab.client_netns(0).to_string();
    for v6 in [false, true] {
        let vip = f.vip(v6);
        show(
            &format!("{vip}"),
            &client::spread(&ns, vip, Proto::Tcp, 100, 2, Duration::from_secs(30))?,
        );
    }
    println!("   the router's neighbour entries for the VIPs:");
    router_entries(&f);

    step(&format!(
        "Killing lb0's keepalived (SIGKILL) with {LONG_LIVED}+{LONG_LIVED} long-lived connections open and a new one every 10 ms"
    ));
    let pause = Duration::from_millis(50);
    let limit = Duration::from_secs(60);
    let long4 = LongLived::start(&ns, f.vip(false), LONG_LIVED, 2, pause, limit)?;
    let long6 = LongLived::start(&ns, f.vip(true), LONG_LIVED, 2, pause, limit)?;
    let killed = Instant::now();
    ks[0].kill();
    let (t4, failed4) = until_moved(&f, false, &f.macs[1], killed);
    let (t6, failed6) = until_moved(&f, true, &f.macs[1], killed);
    println!(
        "   lb1 missed lb0's adverts, became VRRP master and set its group active; its gratuitous"
    );
    println!("   ARPs / unsolicited NAs moved the router. New connections succeed through lb1:");
    println!(
        "     {:<21} {:.2} s after the kill",
        f.vip(false).to_string(),
        t4.as_secs_f64()
    );
    println!(
        "     {:<21} {:.2} s after the kill",
        f.vip(true).to_string(),
        t6.as_secs_f64()
    );
    println!(
        "   new connections that failed on the way: {} (probes with a 200 ms timeout)",
        failed4 + failed6
    );
    println!("   the router's neighbour entries for the VIPs:");
    router_entries(&f);
    // A few echo rounds through lb1 before counting.
    std::thread::sleep(Duration::from_millis(500));
    for (vip, long) in [(f.vip(false), long4), (f.vip(true), long6)] {
        let report = long.finish();
        println!(
            "   long-lived connections to {vip} broken: {} of {}",
            report.broken().len(),
            report.conns.len()
        );
        if !report.broken().is_empty() {
            println!("     {}", report.describe_broken());
        }
    }

    step("`vipctl ha status` on both nodes");
    for (i, v) in f.vipds.iter().enumerate() {
        println!("   lb{i}:");
        indent(&v.vipctl(&["ha", "status"])?);
    }
    println!(
        "   lb0's vipd still holds `active`: SIGKILL left its keepalived no time to call vipctl."
    );
    println!(
        "   The router sends to lb1 since its announcement, and both nodes pick the same backend"
    );
    println!("   for a flow, so no connection notices which node carries it.");

    step("Tearing down the failover lab");
    drop(ks);
    drop(f);
    Ok(())
}

/// The router's neighbour entry for each VIP: the MAC and the LB node it belongs to.
fn router_entries(f: &Failover) {
    for v6 in [false, true] {
        let vip = f.vip(v6).ip();
        match f.router_mac(v6) {
            Some(mac) => {
                let node = f
                    .macs
                    .iter()
                    .position(|m| *m == mac)
                    .map_or("not an LB node".to_string(), |i| format!("lb{i}"));
                println!("     {vip:<16} lladdr {mac}  = {node}");
            }
            None => println!("     {vip:<16} no entry"),
        }
    }
}

/// Sends rounds of 30 requests until `done` holds for one round; returns when.
fn wait_for(
    ns: &str,
    vip: std::net::SocketAddr,
    limit: Duration,
    done: impl Fn(&Spread) -> bool,
) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(s) = client::spread(ns, vip, Proto::Tcp, 30, 1, Duration::from_secs(5))
            && done(&s)
        {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn step(what: &str) {
    println!("\n== {what}");
}

fn indent(text: &str) {
    for line in text.lines() {
        println!("   {line}");
    }
}

fn show(label: &str, s: &Spread) {
    println!("   {label}");
    let total = s.answered().max(1);
    for (name, n) in &s.counts {
        let bar = "#".repeat((*n as usize * 40).div_ceil(total as usize));
        println!("     {name}  {n:>4}  {bar}");
    }
    if !s.failures.is_empty() {
        println!(
            "     failed: {} (first: {})",
            s.failures.len(),
            s.failures[0]
        );
    }
}
