//! VIPs announced by BGP: vipd keeps each announceable VIP's host route in a kernel table
//! of its own; BIRD (`examples/bird/lb.conf`, as shipped, only its addresses filled in)
//! announces that table to a router running BIRD (`examples/bird/router.conf`), which
//! installs one ECMP route per VIP over the nodes that announce it.
//!
//! - `lab_bgp_routes_follow_vipd`: the netlink side alone, one LB node: routes appear
//!   once the backends are healthy, go when every backend's check fails, stay through a
//!   SIGKILL and a restart (no flap), go with `vipd down`; other programs' routes (another
//!   protocol id, another table) are never touched.
//! - `lab_bgp_two_nodes`: a router, two LB nodes with vipd and BIRD, backends, a client:
//!   both announce and traffic spreads over both; every backend check failing on one node
//!   only withdraws that node (time from the verdict to one path at the router measured),
//!   with 0 broken long-lived connections; a node whose link goes down loses its path
//!   through BFD (time measured); a drained node (drain kept across a vipd restart) gets
//!   no VIP traffic and breaks nothing; a VIP whose backends fail everywhere is withdrawn
//!   from every node; a node whose BIRD and vipd are killed loses its path (time
//!   measured) with 0 broken connections.
//!
//! Every lab takes [`vip_tests::lab::serial`]; namespaces, instances and directories are
//! named from `lab::netns::unique_prefix` and removed on drop, BIRD processes included.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use vip_tests::lab::{
    Lab, LabError, LabSpec, Mode, addr,
    client::LongLived,
    cmd,
    process::LabProcess,
    vipd::{HealthConfig, Vipd},
};

const TABLE: &str = "100";
const PROTOCOL: &str = "200";
const ROUTER_AS: u32 = 65000;
const LB_AS: u32 = 65001;

/// What every LB node's vipd.toml adds: announcing on, table 100, protocol 200.
fn announce(text: String) -> String {
    text + "\n[announce]\nenabled = true\ntable = 100\nprotocol = 200\n"
}

/// [`announce`], and every VIP needs all of its 4 backends: a node withdraws at the first
/// backend it loses, before its datapath re-hashes any flow (a node with fewer backends
/// than the others would send some flows elsewhere than they do).
fn announce_all_backends(text: String) -> String {
    announce(text.replace(
        "mode = \"dsr-l2\"\n",
        "mode = \"dsr-l2\"\nmin_healthy = 4\n",
    ))
}

fn must<T>(what: &str, r: Result<T, LabError>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bird")
}

/// Health checks quick enough for a lab: HTTP every 100 ms, down after 2 failures.
fn quick_http() -> HealthConfig {
    HealthConfig {
        interval_ms: 100,
        timeout_ms: 80,
        ..HealthConfig::fast_http()
    }
}

/// vipd's routes in `ns` (table 100, protocol 200), as `ip` prints them.
fn vipd_routes(ns: &str) -> String {
    let v4 = must(
        "listing routes",
        cmd::ip(ns, &["route", "show", "table", TABLE, "proto", PROTOCOL]),
    );
    let v6 = must(
        "listing routes",
        cmd::ip(
            ns,
            &["-6", "route", "show", "table", TABLE, "proto", PROTOCOL],
        ),
    );
    v4 + &v6
}

fn has_route(ns: &str, vip: IpAddr) -> bool {
    vipd_routes(ns)
        .lines()
        .any(|l| l.split_whitespace().any(|w| w == vip.to_string()))
}

fn wait(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Drops every TCP packet the LB node sends to port 80 (its health checks; what vip_lb
/// forwards never passes the node's netfilter), or lets them through again.
fn block_checks(ns: &str, block: bool) {
    let ruleset = if block {
        "table inet vipbgp {\n chain out {\n  type filter hook output priority 0;\n  tcp dport 80 drop\n }\n}\n"
    } else {
        "table inet vipbgp {}\ndelete table inet vipbgp\n"
    };
    must("nft", cmd::nft(ns, ruleset));
}

#[test]
fn lab_bgp_routes_follow_vipd() {
    if !vip_tests::privileged::require_root("lab_bgp_routes_follow_vipd") {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut spec = LabSpec::new(2, Mode::DsrL2);
    spec.lb_nodes = 1;
    let lab = must("building the lab", Lab::build(spec));
    let ns = lab.lb_nodes[0].netns().to_string();
    let (v4, v6) = (lab.vip4().ip(), lab.vip6().ip());
    // Other programs' routes: same table, another protocol; same protocol, another table.
    let foreign = [
        [
            "route",
            "add",
            "blackhole",
            "198.18.100.2/32",
            "table",
            TABLE,
            "proto",
            "201",
        ],
        [
            "route",
            "add",
            "blackhole",
            "198.18.100.1/32",
            "table",
            "101",
            "proto",
            PROTOCOL,
        ],
    ];
    for args in &foreign {
        must("adding a foreign route", cmd::ip(&ns, args));
    }
    let foreign_intact = || {
        let t100 = must(
            "",
            cmd::ip(&ns, &["route", "show", "table", TABLE, "proto", "201"]),
        );
        let t101 = must("", cmd::ip(&ns, &["route", "show", "table", "101"]));
        t100.contains("198.18.100.2") && t101.contains("198.18.100.1")
    };
    let vips = vec![
        lab.vip_config(false, "tcp", &[0, 1], quick_http()),
        lab.vip_config(true, "tcp", &[0, 1], quick_http()),
    ];
    let config = lab.vipd_config(0, vips);
    let mut vipd = must(
        "starting vipd",
        Vipd::start_in_edited(&ns, &lab.dir, "vipd-lb0", config, announce),
    );
    wait("both VIP routes announced", Duration::from_secs(5), || {
        has_route(&ns, v4) && has_route(&ns, v6)
    });
    let routes = vipd_routes(&ns);
    assert!(
        routes.contains("blackhole 198.18.100.1 ") && routes.contains("blackhole 2001:db8:100::1 "),
        "host routes of the VIPs expected: {routes}"
    );

    block_checks(&ns, true);
    wait(
        "withdrawn once every check fails",
        Duration::from_secs(5),
        || !has_route(&ns, v4) && !has_route(&ns, v6),
    );
    block_checks(&ns, false);
    wait("announced again", Duration::from_secs(5), || {
        has_route(&ns, v4) && has_route(&ns, v6)
    });
    let log_lines = |vipd: &Vipd, what: &str| vipd.log().matches(what).count();
    let (announced, withdrawn) = (
        log_lines(&vipd, "VIP route announced"),
        log_lines(&vipd, "VIP route withdrawn"),
    );

    // SIGKILL leaves the routes (the datapath still forwards); a restart adopts them and
    // neither withdraws nor re-adds anything.
    vipd.kill();
    assert!(
        has_route(&ns, v4) && has_route(&ns, v6),
        "a killed vipd must leave its routes"
    );
    let watch_ns = ns.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut gaps = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !has_route(&watch_ns, v4) {
                    gaps += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            gaps
        })
    };
    must("restarting vipd", vipd.restart());
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let gaps = watcher.join().expect("the route watcher");
    assert_eq!(
        gaps,
        0,
        "the route flapped across the restart:\n{}",
        vipd.log_tail()
    );
    assert_eq!(
        (
            log_lines(&vipd, "VIP route announced"),
            log_lines(&vipd, "VIP route withdrawn")
        ),
        (announced, withdrawn),
        "a restarted vipd adopts the routes without changing them:\n{}",
        vipd.log_tail()
    );
    assert!(
        vipd.log().contains("adopted VIP routes"),
        "{}",
        vipd.log_tail()
    );

    // `vipd down` withdraws them; other programs' routes stay throughout.
    vipd.stop(libc::SIGTERM);
    assert!(
        has_route(&ns, v4),
        "SIGTERM leaves the routes (the datapath keeps serving)"
    );
    let bin = must(
        "finding vipd",
        vip_tests::lab::workspace_binary("vipd", "vip-user"),
    );
    let config_path = vipd.config_path().to_string_lossy().to_string();
    let out = must(
        "vipd down",
        cmd::run(
            &bin.to_string_lossy(),
            &["down", "-c", &config_path, "--netns", &ns],
        ),
    );
    assert!(out.contains("withdrew the route of 198.18.100.1"), "{out}");
    assert_eq!(
        vipd_routes(&ns).trim(),
        "",
        "vipd down withdraws every route of vipd's"
    );
    assert!(foreign_intact(), "routes vipd did not add must stay");
}

/// A BIRD daemon with its control socket and config in the lab's directory.
struct Bird {
    #[expect(dead_code, reason = "only held: dropping it kills bird")]
    process: LabProcess,
    socket: PathBuf,
}

impl Bird {
    fn start(ns: &str, dir: &Path, name: &str, conf: &str) -> Bird {
        let conf_path = dir.join(format!("{name}.conf"));
        std::fs::write(&conf_path, conf).expect("writing a BIRD config");
        let socket = dir.join(format!("{name}.ctl"));
        let args: Vec<String> = [
            "-f",
            "-c",
            &conf_path.to_string_lossy(),
            "-s",
            &socket.to_string_lossy(),
            "-P",
            &dir.join(format!("{name}.pid")).to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let process = must(
            "starting bird (`cargo xtask setup` installs bird2)",
            LabProcess::spawn(
                name,
                ns,
                Path::new("bird"),
                &args,
                &dir.join(format!("{name}.log")),
            ),
        );
        Bird { process, socket }
    }

    fn birdc(&self, cmd_line: &str) -> String {
        let mut args = vec!["-s".to_string(), self.socket.to_string_lossy().to_string()];
        args.extend(cmd_line.split_whitespace().map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cmd::run("birdc", &args).unwrap_or_else(|e| e.to_string())
    }
}

fn fill(template: &str, pairs: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in pairs {
        s = s.replace(&format!("@{k}@"), v);
    }
    assert!(
        !s.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains('@')),
        "a placeholder left unfilled in:\n{s}"
    );
    s
}

/// The next hops of the router's kernel route to `vip` (0 when it has none).
fn paths(router: &str, vip: IpAddr) -> usize {
    let fam = if vip.is_ipv4() { "-4" } else { "-6" };
    let out = cmd::ip(
        router,
        &[fam, "route", "show", &vip.to_string(), "proto", "bird"],
    )
    .unwrap_or_default();
    if out.trim().is_empty() {
        0
    } else {
        out.matches("nexthop").count().max(1)
    }
}

/// Polls the router until `vip` has `want` paths; returns when it saw it (wall clock).
fn until_paths(router: &str, vip: IpAddr, want: usize, limit: Duration) -> SystemTime {
    let start = Instant::now();
    loop {
        if paths(router, vip) == want {
            return SystemTime::now();
        }
        assert!(
            start.elapsed() < limit,
            "the router's route to {vip} did not get {want} paths within {limit:?} (has {})",
            paths(router, vip)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// From vipd's log (tracing's lines start with an RFC 3339 UTC time): the first withdrawal
/// of `vip`'s route and the health verdict that caused it (the last one before it).
fn verdict_and_withdrawal(log: &str, vip: IpAddr) -> Option<(SystemTime, SystemTime)> {
    let stamp = |l: &str| parse_rfc3339(l.split_whitespace().next()?);
    let mut verdict = None;
    for l in log.lines() {
        if l.contains("health check transition") {
            verdict = stamp(l);
        } else if l.contains("VIP route withdrawn") && l.contains(&format!("addr={vip} ")) {
            return Some((verdict?, stamp(l)?));
        }
    }
    None
}

/// `2026-12-01T02:25:07.123456Z` to a SystemTime (UTC, no leap seconds).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    let nanos: u32 = format!("{frac:0<9}")[..9].parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// The BGP lab: the [`Lab`] topology with the router's static VIP routes replaced by BIRD.
struct BgpLab {
    // Drop order: BIRD and vipd before the lab's namespaces.
    birds: Vec<Bird>,
    vipds: Vec<Vipd>,
    lab: Lab,
}

impl BgpLab {
    fn start(v6: bool) -> BgpLab {
        let mut spec = LabSpec::new(4, Mode::DsrL2);
        spec.lb_nodes = 2;
        let lab = must("building the lab", Lab::build(spec));
        let router = lab.router_netns().to_string();
        must("", cmd::ip(&router, &["route", "del", addr::VIP4_PREFIX]));
        must(
            "",
            cmd::ip(&router, &["-6", "route", "del", addr::VIP6_PREFIX]),
        );
        let dir = lab.dir.clone();
        let lb_tpl =
            std::fs::read_to_string(examples().join("lb.conf")).expect("examples/bird/lb.conf");
        let r_tpl = std::fs::read_to_string(examples().join("router.conf"))
            .expect("examples/bird/router.conf");
        let mut birds = vec![Bird::start(
            &router,
            &dir,
            "bird-router",
            &fill(
                &r_tpl,
                &[
                    ("ROUTER_ID", addr::ROUTER_LAN4.to_string()),
                    ("LOCAL_AS", ROUTER_AS.to_string()),
                    ("LB_AS", LB_AS.to_string()),
                    ("LB4_0", addr::lb4(0).to_string()),
                    ("LB4_1", addr::lb4(1).to_string()),
                    ("LB6_0", addr::lb6(0).to_string()),
                    ("LB6_1", addr::lb6(1).to_string()),
                ],
            ),
        )];
        let mut vipds = Vec::new();
        for i in 0..2 {
            let ns = lab.lb_nodes[i].netns().to_string();
            birds.push(Bird::start(
                &ns,
                &dir,
                &format!("bird-lb{i}"),
                &fill(
                    &lb_tpl,
                    &[
                        ("ROUTER_ID", addr::lb4(i).to_string()),
                        ("LOCAL_AS", LB_AS.to_string()),
                        ("PEER_AS", ROUTER_AS.to_string()),
                        ("PEER4", addr::ROUTER_LAN4.to_string()),
                        ("PEER6", addr::ROUTER_LAN6.to_string()),
                    ],
                ),
            ));
            let mut vips = vec![lab.vip_config(false, "tcp", &[0, 1, 2, 3], quick_http())];
            if v6 {
                vips.push(lab.vip_config(true, "tcp", &[0, 1, 2, 3], quick_http()));
            }
            let config = lab.vipd_config(i, vips);
            vipds.push(must(
                "starting vipd",
                Vipd::start_in_edited(
                    &ns,
                    &dir,
                    &format!("vipd-lb{i}"),
                    config,
                    announce_all_backends,
                ),
            ));
        }
        BgpLab { birds, vipds, lab }
    }

    fn router(&self) -> &str {
        self.lab.router_netns()
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for b in &self.birds {
            s += &b.birdc("show protocols");
        }
        for v in &self.vipds {
            s += &v.log_tail();
        }
        s
    }
}

#[test]
fn lab_bgp_two_nodes() {
    if !vip_tests::privileged::require_root("lab_bgp_two_nodes") {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut bl = BgpLab::start(true);
    let lab = &bl.lab;
    let router = bl.router().to_string();
    let (v4, v6) = (lab.vip4().ip(), lab.vip6().ip());
    let limit = Duration::from_secs(20);
    let start = Instant::now();
    while paths(&router, v4) != 2 || paths(&router, v6) != 2 {
        assert!(
            start.elapsed() < limit,
            "both nodes must announce both VIPs (v4 {} paths, v6 {}):\n{}",
            paths(&router, v4),
            paths(&router, v6),
            bl.describe()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("bgp: both nodes announced after {:?}", start.elapsed());

    // Both announce: traffic spreads over both nodes.
    let ns = lab.client_netns(0);
    let pause = Duration::from_millis(50);
    let long4 = LongLived::start(ns, lab.vip4(), 200, 2, pause, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("bgp: {e}"));
    let long6 = LongLived::start(ns, lab.vip6(), 100, 2, pause, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("bgp: {e}"));
    let rx = |i| lab.lb_rx_packets(i).expect("reading LB rx counters");
    let before = (rx(0), rx(1));
    std::thread::sleep(Duration::from_secs(1));
    let during = (rx(0) - before.0, rx(1) - before.1);
    eprintln!(
        "bgp: packets in 1 s, node0 {}, node1 {}",
        during.0, during.1
    );
    assert!(
        during.0 > 200 && during.1 > 200,
        "ECMP over the BGP routes must use both nodes (node0 {}, node1 {})",
        during.0,
        during.1
    );

    // Every backend check fails on node 1 only: node 1 withdraws; node 0 takes its flows,
    // and picks the same backends for them.
    block_checks(lab.lb_nodes[1].netns(), true);
    let one_path = until_paths(&router, v4, 1, Duration::from_secs(10));
    let log = bl.vipds[1].log();
    let (verdict, withdrawn) = verdict_and_withdrawal(&log, v4)
        .unwrap_or_else(|| panic!("a verdict and a withdrawal of {v4} in vipd's log:\n{log}"));
    let ms = |a: SystemTime, b: SystemTime| {
        a.duration_since(b)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(-1.0)
    };
    eprintln!(
        "bgp: health verdict -> route withdrawn in table {:.1} ms -> one path at the router {:.1} ms",
        ms(withdrawn, verdict),
        ms(one_path, verdict)
    );
    until_paths(&router, v6, 1, Duration::from_secs(10));
    // Counted by the datapath for the VIPs (the node's health checks go on, so its
    // interface still receives their answers).
    let vip_packets = |v: &Vipd| -> u64 {
        v.status()
            .unwrap_or_else(|e| panic!("vipctl stats: {e}"))
            .vips
            .iter()
            .map(|s| s.packets)
            .sum()
    };
    let before = vip_packets(&bl.vipds[1]);
    std::thread::sleep(Duration::from_secs(1));
    let after = vip_packets(&bl.vipds[1]) - before;
    assert_eq!(
        after,
        0,
        "node 1 withdrew: it must get no VIP traffic; its log:\n{}",
        bl.vipds[1].log_tail()
    );
    block_checks(lab.lb_nodes[1].netns(), false);
    until_paths(&router, v4, 2, Duration::from_secs(10));
    until_paths(&router, v6, 2, Duration::from_secs(10));
    for (family, long) in [("IPv4", long4), ("IPv6", long6)] {
        let report = long.finish();
        eprintln!(
            "bgp, {family}: {} connections, broken across withdraw and re-announce: {}",
            report.conns.len(),
            report.broken().len()
        );
        assert!(
            report.broken().is_empty(),
            "bgp, {family}: 0 broken connections expected: {}",
            report.describe_broken()
        );
    }

    // Node 1's link goes down: BFD takes its path away at the router.
    let sw_port = "plb1";
    let down_at = SystemTime::now();
    must(
        "link down",
        cmd::ip(lab.switch_netns(), &["link", "set", sw_port, "down"]),
    );
    let one_path = until_paths(&router, v4, 1, Duration::from_secs(10));
    eprintln!(
        "bgp: link down -> one path at the router {:.1} ms (BFD 100 ms x 3)",
        ms(one_path, down_at)
    );
    must(
        "link up",
        cmd::ip(lab.switch_netns(), &["link", "set", sw_port, "up"]),
    );
    until_paths(&router, v4, 2, Duration::from_secs(15));

    // Drain node 1: its routes go, its datapath is untouched; flows move to node 0 with
    // their backends. The drain survives a restart of vipd; undrain brings node 1 back.
    let long4 = LongLived::start(ns, lab.vip4(), 200, 2, pause, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("bgp drain: {e}"));
    let drain_at = SystemTime::now();
    let out = bl.vipds[1]
        .vipctl(&["node", "drain"])
        .unwrap_or_else(|e| panic!("vipctl node drain: {e}"));
    let one_path = until_paths(&router, v4, 1, Duration::from_secs(10));
    eprintln!(
        "bgp: vipctl node drain -> one path at the router {:.1} ms",
        ms(one_path, drain_at)
    );
    assert!(out.contains("DRAINED"), "{out}");
    let status = bl.vipds[1]
        .vipctl_json(&["node", "status"])
        .unwrap_or_else(|e| panic!("vipctl node status: {e}"));
    assert_eq!(status["drained"], true, "{status}");
    assert_eq!(status["vips"][0]["state"], "withheld", "{status}");
    assert_eq!(status["vips"][0]["reason"], "node drained", "{status}");
    let before = vip_packets(&bl.vipds[1]);
    std::thread::sleep(Duration::from_secs(1));
    let after = vip_packets(&bl.vipds[1]) - before;
    assert_eq!(after, 0, "a drained node gets no VIP traffic");
    bl.vipds[1].kill();
    must("restarting vipd", bl.vipds[1].restart());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(paths(&router, v4), 1, "the drain must survive a restart");
    let out = bl.vipds[1]
        .vipctl(&["node", "undrain"])
        .unwrap_or_else(|e| panic!("vipctl node undrain: {e}"));
    assert!(out.contains("in service"), "{out}");
    until_paths(&router, v4, 2, Duration::from_secs(10));
    let report = long4.finish();
    eprintln!(
        "bgp, drain: {} connections, broken across drain, restart and undrain: {}",
        report.conns.len(),
        report.broken().len()
    );
    assert!(
        report.broken().is_empty(),
        "bgp, drain: 0 broken connections expected: {}",
        report.describe_broken()
    );

    // The VIP's backends fail everywhere: every node withdraws it.
    for n in &lab.lb_nodes {
        block_checks(n.netns(), true);
    }
    until_paths(&router, v4, 0, Duration::from_secs(10));
    until_paths(&router, v6, 0, Duration::from_secs(10));
    for n in &lab.lb_nodes {
        block_checks(n.netns(), false);
    }
    until_paths(&router, v4, 2, Duration::from_secs(10));

    // Node 1 crashes: its BIRD and vipd are killed. The router's BGP session ends with
    // the TCP connection (or BFD, whichever is first); node 0 serves every flow.
    let long4 = LongLived::start(ns, lab.vip4(), 200, 2, pause, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("bgp crash: {e}"));
    let crash_at = SystemTime::now();
    drop(bl.birds.remove(2)); // bird-lb1: SIGKILL
    bl.vipds[1].kill();
    let one_path = until_paths(&router, v4, 1, Duration::from_secs(10));
    eprintln!(
        "bgp: BIRD and vipd of node 1 killed -> one path at the router {:.1} ms",
        ms(one_path, crash_at)
    );
    std::thread::sleep(Duration::from_millis(500));
    let report = long4.finish();
    eprintln!(
        "bgp, crash: {} connections, broken: {}",
        report.conns.len(),
        report.broken().len()
    );
    assert!(
        report.broken().is_empty(),
        "bgp, crash: node 0 picks the same backends, 0 broken expected: {}",
        report.describe_broken()
    );
}
