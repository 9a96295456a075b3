//! Hitless restart and vipd's signals: `vipd` is killed with SIGKILL while the datapath
//! serves UDP flows; packets keep being forwarded while no vipd runs, and a restarted
//! vipd adopts the pinned maps and link: the connection table, its flows' backends and
//! the counters all survive. A failing health check re-hashes only its backend's flows;
//! SIGHUP reloads the config file (and refuses a broken one); after SIGTERM the datapath
//! keeps forwarding.
//!
//! The lab is two namespaces on one veth (`eth0` on both sides): the LB, and a client
//! that also holds the two backends' addresses. Neighbours are static, so the next hops
//! vipd resolves are known in advance; what reaches the backends is not looked at, the
//! VIP's counters and connection table are.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use vip_tests::lab::{
    LabError, Mode, cmd,
    netns::{self, Netns},
    vipd::{BackendConfig, HealthConfig, LimitsConfig, VipConfig, Vipd, VipdConfig},
    workspace_binary,
};

const LB_MAC: &str = "02:00:00:00:0b:01";
const CLIENT_MAC: &str = "02:00:00:00:0c:01";
/// The LB's address on the veth, the next hop of the client's route to the VIPs.
const LB_ADDR: &str = "198.18.0.2";
/// Both backends live in the client namespace; the first is also the client's address.
const BACKENDS: [&str; 2] = ["198.18.0.1", "198.18.0.3"];
const VIP: &str = "198.18.1.10:53";

fn must<T>(what: &str, result: Result<T, LabError>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The two namespaces and the vipd of the LB; all removed on drop.
struct WireLab {
    /// Dropped first: killed, its pins removed.
    vipd: Option<Vipd>,
    lb: Netns,
    client: Netns,
    instance: String,
    dir: PathBuf,
}

impl Drop for WireLab {
    fn drop(&mut self) {
        self.vipd = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl WireLab {
    fn new() -> WireLab {
        let prefix = netns::unique_prefix();
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("creating the lab's directory");
        let lab = WireLab {
            vipd: None,
            lb: must(
                "creating the LB namespace",
                Netns::create(&format!("{prefix}lb")),
            ),
            client: must(
                "creating the client namespace",
                Netns::create(&format!("{prefix}c")),
            ),
            instance: format!("{prefix}lb"),
            dir,
        };
        let (lb, cl) = (lab.lb.name(), lab.client.name());
        let ip = |ns: &str, args: &[&str]| must("building the lab", cmd::ip(ns, args));
        must("creating the veth", cmd::veth(lb, "eth0", cl, "eth0"));
        ip(cl, &["link", "set", "eth0", "address", CLIENT_MAC]);
        ip(lb, &["link", "set", "eth0", "address", LB_MAC]);
        ip(
            lb,
            &["addr", "add", &format!("{LB_ADDR}/24"), "dev", "eth0"],
        );
        for b in BACKENDS {
            ip(cl, &["addr", "add", &format!("{b}/24"), "dev", "eth0"]);
        }
        for ns in [lb, cl] {
            ip(ns, &["link", "set", "eth0", "up"]);
        }
        ip(cl, &["route", "add", "198.18.1.0/24", "via", LB_ADDR]);
        must(
            "enabling forwarding",
            cmd::sysctl(lb, "net.ipv4.conf.all.forwarding", "1"),
        );
        let permanent = |ns: &str, addr: &str, mac: &str| {
            ip(
                ns,
                &[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            );
        };
        for b in BACKENDS {
            permanent(lb, b, CLIENT_MAC);
        }
        permanent(cl, LB_ADDR, LB_MAC);
        lab
    }

    /// One UDP VIP over both backends (on its port), checked by `health`; small maps.
    fn config(&self, health: HealthConfig) -> VipdConfig {
        VipdConfig {
            instance: self.instance.clone(),
            interface: "eth0".into(),
            xdp_mode: Some("generic"),
            socket: self.dir.join("api.sock"),
            state_file: self.dir.join("state.json"),
            mtu: 1500,
            limits: LimitsConfig {
                max_vips: 4,
                max_backends: 16,
                table_size: 251,
                max_conns: 4096,
            },
            vips: vec![vip(VIP, "udp", &BACKENDS, health)],
        }
    }

    /// Starts vipd in the LB namespace with `config`.
    fn start_vipd(&mut self, config: VipdConfig) {
        let vipd = Vipd::start_in(self.lb.name(), &self.dir, "vipd", config);
        self.vipd = Some(must("starting vipd", vipd));
    }

    /// Starts vipd again with its config file as it is now (it adopts what is pinned).
    fn restart_vipd(&mut self) {
        must("restarting vipd", self.vipd().restart());
    }

    fn vipd(&mut self) -> &mut Vipd {
        self.vipd.as_mut().expect("vipd was started")
    }

    fn vipctl(&self, args: &[&str]) -> Value {
        let vipd = self.vipd.as_ref().expect("vipd was started");
        vipd.vipctl_json(args)
            .unwrap_or_else(|e| panic!("{e}\nvipd log:\n{}", vipd.log_tail()))
    }

    /// A TCP listener on `addr` in the client namespace (the kernel completes handshakes
    /// from the backlog, which is all a TCP health check needs).
    fn listen(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().expect("a socket address");
        must(
            "entering the client namespace",
            netns::within(self.client.name(), move || TcpListener::bind(addr)),
        )
        .unwrap_or_else(|e| panic!("listening on {addr}: {e}"))
    }

    /// Waits until `backend` has datapath state `state`.
    fn wait_state(&self, backend: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = self.vipctl(&["backend", "list"]);
            let now = list
                .as_array()
                .unwrap()
                .iter()
                .find(|row| row[1]["addr"] == backend)
                .map(|row| row[1]["state"].as_str().unwrap().to_string());
            if now.as_deref() == Some(state) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{backend} did not become {state}: {list}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one datagram on each flow (client port = 40000 + i) from the client namespace.
    fn send(&self, flows: u16) {
        let sent = netns::within(self.client.name(), move || {
            for i in 0..flows {
                let sock = UdpSocket::bind((BACKENDS[0], 40000 + i)).unwrap();
                sock.send_to(b"hello vip", VIP).unwrap();
            }
        });
        must("entering the client namespace", sent);
    }
}

/// A VIP over `backends` (on the VIP's port), weight 1 each.
fn vip(addr: &str, protocol: &'static str, backends: &[&str], health: HealthConfig) -> VipConfig {
    let addr: SocketAddr = addr.parse().expect("a socket address");
    VipConfig {
        addr,
        protocol,
        mode: Mode::Tunnel,
        table_size: 251,
        health,
        backends: backends
            .iter()
            .map(|b| BackendConfig {
                addr: SocketAddr::new(b.parse().expect("an address"), addr.port()),
                weight: 1,
                state: "ready",
            })
            .collect(),
    }
}

/// The IP of a backend as vipctl prints it (`ip:port` or bare).
fn addr0_ip(backend: &str) -> String {
    backend
        .parse::<SocketAddr>()
        .map_or_else(|_| backend.to_string(), |a| a.ip().to_string())
}

/// (connections, VIP packets, VIP new flows), once the VIP has counted `packets` (the
/// veth delivers asynchronously) or after 5 s.
fn stats(lab: &WireLab, packets: u64) -> (u64, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = lab.vipctl(&["stats"]);
        let v = &s["vips"][0];
        let got = (
            s["conns"].as_u64().unwrap(),
            v["packets"].as_u64().unwrap(),
            v["new_flows"].as_u64().unwrap(),
        );
        if got.1 >= packets || Instant::now() > deadline {
            if got.1 < packets {
                eprintln!("stats: {s}");
                for ns in [lab.lb.name(), lab.client.name()] {
                    for args in [&["-s", "link"][..], &["route"]] {
                        match cmd::ip(ns, args) {
                            Ok(text) => eprintln!("{text}"),
                            Err(e) => eprintln!("{e}"),
                        }
                    }
                }
            }
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn owners(lab: &WireLab, flows: u16) -> Vec<(u64, String)> {
    (0..flows)
        .map(|i| {
            let src = format!("{}:{}", BACKENDS[0], 40000 + i);
            let f = lab.vipctl(&["flow", "udp", &src, VIP]);
            let c = &f["conntrack"];
            assert!(
                c.is_object(),
                "flow {src} has no connection-table entry: {f}"
            );
            (
                c["backend_id"].as_u64().unwrap(),
                f["backend"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until vipd has written backend `id`'s NEXTHOPS entry (it resolves from the LB
/// namespace's routes and neighbours every second) and returns it, read from the pin.
fn pinned_nexthop(lab: &WireLab, id: u32, want: &vip_common::NextHop) -> vip_common::NextHop {
    let path = Path::new("/sys/fs/bpf/vip")
        .join(&lab.instance)
        .join(vip_common::MAP_NEXTHOPS);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let map = aya::maps::MapData::from_pin(&path).unwrap();
        let arr: aya::maps::Array<_, vip_common::NextHop> =
            aya::maps::Array::try_from(aya::maps::Map::Array(map)).unwrap();
        let got = arr.get(&id, 0).unwrap();
        if &got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The LB side veth's ifindex inside its namespace.
fn lb_ifindex(lab: &WireLab) -> u32 {
    let text = must(
        "ip link show",
        cmd::ip(lab.lb.name(), &["-j", "link", "show", "dev", "eth0"]),
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    u32::try_from(v[0]["ifindex"].as_u64().expect("ifindex")).unwrap()
}

#[test]
fn sigkill_under_traffic_keeps_flows_and_counters() {
    if !vip_tests::privileged::require_root("sigkill_under_traffic_keeps_flows_and_counters") {
        return;
    }
    let _serial = vip_tests::lab::serial();
    const FLOWS: u16 = 40;
    let mut lab = WireLab::new();
    lab.start_vipd(lab.config(HealthConfig::none()));
    lab.send(FLOWS);
    let (conns, packets, new_flows) = stats(&lab, u64::from(FLOWS));
    assert_eq!(
        (conns, packets, new_flows),
        (u64::from(FLOWS), u64::from(FLOWS), u64::from(FLOWS))
    );
    let before = owners(&lab, FLOWS);
    let used: BTreeSet<_> = before.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(used.len(), 2, "both backends serve flows: {before:?}");

    // vipd resolved each backend's next hop from the LB namespace (permanent neighbours
    // on the veth), so the datapath skips bpf_fib_lookup.
    let want = vip_common::NextHop {
        dst_mac: [2, 0, 0, 0, 0x0c, 1],
        src_mac: [2, 0, 0, 0, 0x0b, 1],
        ifindex: lb_ifindex(&lab),
        flags: vip_common::NEXTHOP_F_VALID,
    };
    let ids: BTreeSet<u64> = before.iter().map(|(id, _)| *id).collect();
    for id in ids {
        let id = u32::try_from(id).unwrap();
        assert_eq!(pinned_nexthop(&lab, id, &want), want, "backend id {id}");
    }
    // A neighbour that fails is invalidated: the datapath falls back to the fib lookup.
    let (id0, addr0) = before[0].clone();
    let neigh = |state: &[&str]| {
        let ip0 = addr0_ip(&addr0);
        let args = [&["neigh", "replace", ip0.as_str()][..], state].concat();
        must("changing a neighbour", cmd::ip(lab.lb.name(), &args));
    };
    neigh(&["dev", "eth0", "nud", "failed"]);
    let id0 = u32::try_from(id0).unwrap();
    let invalid = vip_common::NextHop::default();
    assert_eq!(
        pinned_nexthop(&lab, id0, &invalid),
        invalid,
        "{addr0} failed"
    );
    neigh(&["lladdr", CLIENT_MAC, "dev", "eth0", "nud", "permanent"]);
    assert_eq!(pinned_nexthop(&lab, id0, &want), want, "{addr0} back");

    lab.vipd().kill();
    // No vipd: the pinned link and maps keep forwarding.
    lab.send(FLOWS);
    lab.restart_vipd();
    let (conns, packets, new_flows) = stats(&lab, 2 * u64::from(FLOWS));
    assert_eq!(conns, u64::from(FLOWS), "connection table survived");
    assert_eq!(
        packets,
        2 * u64::from(FLOWS),
        "counters survived and counted while vipd was dead"
    );
    assert_eq!(new_flows, u64::from(FLOWS), "no flow was re-hashed");
    assert_eq!(
        owners(&lab, FLOWS),
        before,
        "every flow kept its backend id and backend"
    );

    // And after the restart, the same flows still hit the connection table.
    lab.send(FLOWS);
    let (conns, packets, new_flows) = stats(&lab, 3 * u64::from(FLOWS));
    assert_eq!(
        (conns, packets, new_flows),
        (u64::from(FLOWS), 3 * u64::from(FLOWS), u64::from(FLOWS))
    );

    // `vipctl apply -f` adding a VIP leaves the existing VIP's flows and counters alone.
    let mut with_second = lab.vipd().config.clone();
    with_second.vips.push(vip(
        "198.18.1.11:80",
        "tcp",
        &BACKENDS[1..],
        HealthConfig::none(),
    ));
    let apply = lab.dir.join("apply.toml");
    std::fs::write(&apply, with_second.to_toml()).unwrap();
    let applied = lab.vipctl(&["apply", "-f", apply.to_str().unwrap()]);
    assert_eq!(applied["changes"].as_array().unwrap().len(), 2, "{applied}");
    assert_eq!(
        stats(&lab, 3 * u64::from(FLOWS)),
        (u64::from(FLOWS), 3 * u64::from(FLOWS), u64::from(FLOWS))
    );
    assert_eq!(owners(&lab, FLOWS), before);
    let again = lab.vipctl(&["apply", "-f", apply.to_str().unwrap()]);
    assert_eq!(again["map_writes"], 0, "{again}");
    must(
        "writing the config",
        lab.vipd().write_config(with_second.clone()),
    );

    // A restart that would resize the pinned maps is refused, and traffic keeps flowing.
    lab.vipd().kill();
    let mut resized = with_second.clone();
    resized.limits.max_conns = 8192;
    must("writing the config", lab.vipd().write_config(resized));
    let vipd_bin = must("finding vipd", workspace_binary("vipd", "vip-user"));
    let config_path = lab.vipd().config_path().to_string_lossy().to_string();
    let run = cmd::run(
        &vipd_bin.to_string_lossy(),
        &["run", "-c", &config_path, "--netns", lab.lb.name()],
    );
    let err = match run {
        Err(e @ LabError::Command { .. }) => e.to_string(),
        other => panic!("vipd must refuse to resize the pinned maps, got {other:?}"),
    };
    assert!(
        err.contains("map sizes cannot change") && err.contains("vipd down"),
        "{err}"
    );
    must("writing the config", lab.vipd().write_config(with_second));
    lab.send(FLOWS);
    lab.restart_vipd();
    let (conns, packets, new_flows) = stats(&lab, 4 * u64::from(FLOWS));
    assert_eq!(
        (conns, packets, new_flows),
        (u64::from(FLOWS), 4 * u64::from(FLOWS), u64::from(FLOWS))
    );
}

#[test]
fn a_failing_health_check_rehashes_only_that_backends_flows() {
    if !vip_tests::privileged::require_root(
        "a_failing_health_check_rehashes_only_that_backends_flows",
    ) {
        return;
    }
    let _serial = vip_tests::lab::serial();
    const FLOWS: u16 = 40;
    let mut lab = WireLab::new();
    let _one = lab.listen("198.18.0.1:9000");
    let three = lab.listen("198.18.0.3:9000");
    lab.start_vipd(lab.config(HealthConfig {
        kind: "tcp",
        port: Some(9000),
        interval_ms: 100,
        timeout_ms: 50,
        rise: 1,
        fall: 2,
    }));
    lab.send(FLOWS);
    assert_eq!(stats(&lab, u64::from(FLOWS)).2, u64::from(FLOWS));
    let before = owners(&lab, FLOWS);
    let on_three = before.iter().filter(|(_, b)| b == "198.18.0.3:53").count() as u64;
    assert!(on_three > 0 && on_three < u64::from(FLOWS), "{before:?}");

    drop(three); // the check now gets a RST
    lab.wait_state("198.18.0.3:53", "down");
    lab.send(FLOWS);
    let (_, _, new_flows) = stats(&lab, 2 * u64::from(FLOWS));
    assert_eq!(
        new_flows,
        u64::from(FLOWS) + on_three,
        "exactly the down backend's flows re-hashed"
    );
    let after = owners(&lab, FLOWS);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.1, "198.18.0.1:53");
        if b.1 == "198.18.0.1:53" {
            assert_eq!(a, b, "flows of the healthy backend stay put");
        }
    }

    // Back up: it gets new flows again, but the re-hashed ones stay where they are.
    let _three = lab.listen("198.18.0.3:9000");
    lab.wait_state("198.18.0.3:53", "up");
    lab.send(FLOWS);
    let (_, _, new_flows) = stats(&lab, 3 * u64::from(FLOWS));
    assert_eq!(new_flows, u64::from(FLOWS) + on_three);
    assert_eq!(owners(&lab, FLOWS), after);
}

#[test]
fn sighup_reloads_the_file_and_sigterm_leaves_traffic_flowing() {
    if !vip_tests::privileged::require_root(
        "sighup_reloads_the_file_and_sigterm_leaves_traffic_flowing",
    ) {
        return;
    }
    let _serial = vip_tests::lab::serial();
    const FLOWS: u16 = 10;
    let mut lab = WireLab::new();
    lab.start_vipd(lab.config(HealthConfig::none()));
    let weight_of = |lab: &WireLab, addr: &str| -> u64 {
        let list = lab.vipctl(&["backend", "list"]);
        let row = list
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[1]["addr"] == addr)
            .cloned();
        row.unwrap()[1]["weight"].as_u64().unwrap()
    };
    // SIGHUP with an edited file: applied.
    let mut weighted = lab.vipd().config.clone();
    weighted.vips[0].backends[1].weight = 5;
    must(
        "writing the config",
        lab.vipd().write_config(weighted.clone()),
    );
    lab.vipd().signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while weight_of(&lab, "198.18.0.3:53") != 5 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not apply the new weight"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGHUP with a broken file: refused, vipd keeps running the previous config.
    let config_path = lab.vipd().config_path().to_path_buf();
    std::fs::write(&config_path, weighted.to_toml() + "typo_key = 1\n").unwrap();
    lab.vipd().signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(weight_of(&lab, "198.18.0.3:53"), 5);
    must("writing the config", lab.vipd().write_config(weighted));

    // SIGTERM: vipd exits cleanly, the datapath keeps forwarding.
    let status = lab.vipd().stop(libc::SIGTERM).expect("vipd was running");
    assert!(status.success(), "vipd exited with {status}");
    let link = must("ip link", cmd::ip(lab.lb.name(), &["link"]));
    assert!(link.contains("vip_lb"), "XDP still attached");
    lab.send(FLOWS);
    lab.restart_vipd();
    let (conns, packets, new_flows) = stats(&lab, u64::from(FLOWS));
    assert_eq!(
        (conns, packets, new_flows),
        (u64::from(FLOWS), u64::from(FLOWS), u64::from(FLOWS))
    );
    let log = lab.vipd().log();
    assert!(
        log.contains("reload refused") && log.contains("typo_key"),
        "{log}"
    );
}
