//! `cargo xtask demo`: a lab in network namespaces with vipd, real traffic through a VIP.
//!
//! Builds client → router → LB node (vipd, vip_lb on eth0) → 3 backends (tunnel mode,
//! vip_decap), sends requests to an IPv4 and an IPv6 VIP, shows how they spread, kills
//! one backend's server and shows the health check taking it out, brings it back, shows
//! `vipctl list` and `vipctl stats`, and removes everything.

use std::time::{Duration, Instant};

use vip_tests::lab::{
    Lab, LabSpec, Mode,
    client::{self, Proto, Spread},
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
    println!("                 └──── replies go straight back (DSR) ──┘\n");

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
    println!("   vipd runs on the LB node with this config:\n");
    for line in vipd.config.to_toml().lines().filter(|l| !l.is_empty()) {
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

    step("What the operator sees: `vipctl list`");
    indent(&vipd.vipctl(&["list"])?);
    step("`vipctl stats`");
    indent(&vipd.vipctl(&["stats"])?);

    step("Tearing down");
    drop(vipd);
    drop(lab);
    Ok(())
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
