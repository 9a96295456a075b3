//! Hitless restart: `vipd` is killed with SIGKILL while the datapath serves UDP flows in
//! namespaces this test creates; packets keep being forwarded while no vipd runs, and a
//! restarted vipd adopts the pinned maps and link: the connection table, its flows'
//! backends and the counters all survive.

use std::{
    net::UdpSocket,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Same contract as `vip_tests::privileged::require_root` (that crate depends on this one).
fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{test} needs root, and privileged tests may not skip under CI=true"
    );
    eprintln!(
        "vip-test-skipped: {test}: needs root (CAP_BPF, CAP_NET_ADMIN); run `sudo cargo xtask test`"
    );
    false
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair, a config, and a vipd; all removed on drop.
struct Lab {
    lb: String,
    client: String,
    instance: String,
    /// The LB namespace's veth.
    lb_dev: String,
    dir: PathBuf,
    vipd: Option<Child>,
}

/// The IP of a backend as vipctl prints it (`ip:port` or bare).
fn addr0_ip(backend: &str) -> String {
    backend
        .parse::<std::net::SocketAddr>()
        .map_or_else(|_| backend.to_string(), |a| a.ip().to_string())
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.vipd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(env!("CARGO_BIN_EXE_vipd"))
            .args(["down", "--force", "--instance", &self.instance])
            .output();
        for ns in [&self.lb, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn new(health: &str) -> Lab {
        let id = format!(
            "{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("vip-restart-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let lab = Lab {
            lb: format!("vrl{id}"),
            client: format!("vrc{id}"),
            instance: format!("vr{id}"),
            lb_dev: format!("vl{id}"),
            dir,
            vipd: None,
        };
        let (vl, vc) = (format!("vl{id}"), format!("vc{id}"));
        let (lb, cl) = (lab.lb.as_str(), lab.client.as_str());
        sh(&["ip", "netns", "add", lb]);
        sh(&["ip", "netns", "add", cl]);
        sh(&[
            "ip", "-n", lb, "link", "add", &vl, "type", "veth", "peer", "name", &vc, "netns", cl,
        ]);
        sh(&[
            "ip",
            "-n",
            cl,
            "link",
            "set",
            &vc,
            "address",
            "02:00:00:00:0c:01",
        ]);
        sh(&[
            "ip",
            "-n",
            lb,
            "link",
            "set",
            &vl,
            "address",
            "02:00:00:00:0b:01",
        ]);
        sh(&["ip", "-n", lb, "addr", "add", "198.18.0.2/24", "dev", &vl]);
        sh(&["ip", "-n", cl, "addr", "add", "198.18.0.1/24", "dev", &vc]);
        // A second address on the client side: the second backend.
        sh(&["ip", "-n", cl, "addr", "add", "198.18.0.3/24", "dev", &vc]);
        for (ns, dev) in [(lb, &vl), (cl, &vc)] {
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "-n",
            cl,
            "route",
            "add",
            "198.18.1.0/24",
            "via",
            "198.18.0.2",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            lb,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.forwarding=1",
        ]);
        for b in ["198.18.0.1", "198.18.0.3"] {
            sh(&[
                "ip",
                "-n",
                lb,
                "neigh",
                "replace",
                b,
                "lladdr",
                "02:00:00:00:0c:01",
                "dev",
                &vl,
                "nud",
                "permanent",
            ]);
        }
        sh(&[
            "ip",
            "-n",
            cl,
            "neigh",
            "replace",
            "198.18.0.2",
            "lladdr",
            "02:00:00:00:0b:01",
            "dev",
            &vc,
            "nud",
            "permanent",
        ]);
        std::fs::write(
            lab.dir.join("vipd.toml"),
            format!(
                r#"
instance = "{instance}"
state_file = "{dir}/state.json"
[datapath]
interfaces = ["{vl}"]
xdp_mode = "generic"
[limits]
max_vips = 4
max_backends = 16
table_size = 251
max_conns = 4096
[api]
socket = "{dir}/api.sock"
[[vip]]
address = "198.18.1.10:53"
protocol = "udp"
{health}
[[vip.backend]]
address = "198.18.0.1"
[[vip.backend]]
address = "198.18.0.3"
"#,
                instance = lab.instance,
                dir = lab.dir.display(),
            ),
        )
        .unwrap();
        lab
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    fn start_vipd(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new(env!("CARGO_BIN_EXE_vipd"))
            .args(["run", "-c"])
            .arg(self.dir.join("vipd.toml"))
            .args(["--netns", &self.lb])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join(format!(
                    "vipd-{}.log",
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                )))
                .unwrap(),
            )
            .spawn()
            .unwrap();
        self.vipd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "vipd did not come up; see {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_vipd(&mut self) {
        let mut c = self.vipd.take().expect("running");
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    fn vipctl(&self, args: &[&str]) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_vipctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(["-o", "json"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vipctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A TCP listener on `addr` in the client namespace (the kernel completes handshakes
    /// from the backlog, which is all a TCP health check needs).
    fn listen(&self, addr: &str) -> std::net::TcpListener {
        let ns = std::fs::File::open(Path::new("/run/netns").join(&self.client)).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: moves only this thread into the client's network namespace.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                std::net::TcpListener::bind(addr).unwrap()
            })
            .join()
            .unwrap()
        })
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
        let ns = std::fs::File::open(Path::new("/run/netns").join(&self.client)).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: moves only this thread into the client's network namespace.
                assert_eq!(
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                for i in 0..flows {
                    let sock = UdpSocket::bind(("198.18.0.1", 40000 + i)).unwrap();
                    sock.send_to(b"hello vip", "198.18.1.10:53").unwrap();
                }
            });
        });
    }
}

/// (connections, VIP packets, VIP new flows), once the VIP has counted `packets` (the
/// veth delivers asynchronously) or after 5 s.
fn stats(lab: &Lab, packets: u64) -> (u64, u64, u64) {
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
                for ns in [&lab.lb, &lab.client] {
                    let o = Command::new("ip")
                        .args(["-n", ns, "-s", "link"])
                        .output()
                        .unwrap();
                    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
                    let o = Command::new("ip")
                        .args(["-n", ns, "route"])
                        .output()
                        .unwrap();
                    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
                }
            }
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn owners(lab: &Lab, flows: u16) -> Vec<(u64, String)> {
    (0..flows)
        .map(|i| {
            let src = format!("198.18.0.1:{}", 40000 + i);
            let f = lab.vipctl(&["flow", "udp", &src, "198.18.1.10:53"]);
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
fn pinned_nexthop(lab: &Lab, id: u32, want: &vip_common::NextHop) -> vip_common::NextHop {
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
fn lb_ifindex(lab: &Lab) -> u32 {
    let out = Command::new("ip")
        .args(["-n", &lab.lb, "-j", "link", "show", "dev", &lab.lb_dev])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    u32::try_from(v[0]["ifindex"].as_u64().expect("ifindex")).unwrap()
}

#[test]
fn sigkill_under_traffic_keeps_flows_and_counters() {
    if !require_root("sigkill_under_traffic_keeps_flows_and_counters") {
        return;
    }
    const FLOWS: u16 = 40;
    let mut lab = Lab::new("");
    lab.start_vipd();
    lab.send(FLOWS);
    let (conns, packets, new_flows) = stats(&lab, u64::from(FLOWS));
    assert_eq!(
        (conns, packets, new_flows),
        (u64::from(FLOWS), u64::from(FLOWS), u64::from(FLOWS))
    );
    let before = owners(&lab, FLOWS);
    let used: std::collections::BTreeSet<_> = before.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(used.len(), 2, "both backends serve flows: {before:?}");

    // vipd resolved each backend's next hop from the LB namespace (permanent neighbours
    // on the veth), so the datapath skips bpf_fib_lookup.
    let want = vip_common::NextHop {
        dst_mac: [2, 0, 0, 0, 0x0c, 1],
        src_mac: [2, 0, 0, 0, 0x0b, 1],
        ifindex: lb_ifindex(&lab),
        flags: vip_common::NEXTHOP_F_VALID,
    };
    let ids: std::collections::BTreeSet<u64> = before.iter().map(|(id, _)| *id).collect();
    for id in ids {
        let id = u32::try_from(id).unwrap();
        assert_eq!(pinned_nexthop(&lab, id, &want), want, "backend id {id}");
    }
    // A neighbour that fails is invalidated: the datapath falls back to the fib lookup.
    let (id0, addr0) = before[0].clone();
    sh(&[
        "ip",
        "-n",
        &lab.lb,
        "neigh",
        "replace",
        &addr0_ip(&addr0),
        "dev",
        &lab.lb_dev,
        "nud",
        "failed",
    ]);
    let id0 = u32::try_from(id0).unwrap();
    let invalid = vip_common::NextHop::default();
    assert_eq!(
        pinned_nexthop(&lab, id0, &invalid),
        invalid,
        "{addr0} failed"
    );
    sh(&[
        "ip",
        "-n",
        &lab.lb,
        "neigh",
        "replace",
        &addr0_ip(&addr0),
        "lladdr",
        "02:00:00:00:0c:01",
        "dev",
        &lab.lb_dev,
        "nud",
        "permanent",
    ]);
    assert_eq!(pinned_nexthop(&lab, id0, &want), want, "{addr0} back");

    lab.kill_vipd();
    // No vipd: the pinned link and maps keep forwarding.
    lab.send(FLOWS);
    lab.start_vipd();
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
    let cfg = lab.dir.join("vipd.toml");
    let apply = lab.dir.join("apply.toml");
    std::fs::write(
        &apply,
        std::fs::read_to_string(&cfg).unwrap()
            + "[[vip]]\naddress = \"198.18.1.11:80\"\n[[vip.backend]]\naddress = \"198.18.0.3\"\n",
    )
    .unwrap();
    let applied = lab.vipctl(&["apply", "-f", apply.to_str().unwrap()]);
    assert_eq!(applied["changes"].as_array().unwrap().len(), 2, "{applied}");
    assert_eq!(
        stats(&lab, 3 * u64::from(FLOWS)),
        (u64::from(FLOWS), 3 * u64::from(FLOWS), u64::from(FLOWS))
    );
    assert_eq!(owners(&lab, FLOWS), before);
    let again = lab.vipctl(&["apply", "-f", apply.to_str().unwrap()]);
    assert_eq!(again["map_writes"], 0, "{again}");
    std::fs::write(&cfg, std::fs::read_to_string(&apply).unwrap()).unwrap();

    // A restart that would resize the pinned maps is refused, and traffic keeps flowing.
    lab.kill_vipd();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("max_conns = 4096", "max_conns = 8192")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["run", "-c"])
        .arg(&cfg)
        .args(["--netns", &lab.lb])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("map sizes cannot change") && err.contains("vipd down"),
        "{err}"
    );
    std::fs::write(&cfg, text).unwrap();
    lab.send(FLOWS);
    lab.start_vipd();
    let (conns, packets, new_flows) = stats(&lab, 4 * u64::from(FLOWS));
    assert_eq!(
        (conns, packets, new_flows),
        (u64::from(FLOWS), 4 * u64::from(FLOWS), u64::from(FLOWS))
    );
}

#[test]
fn a_failing_health_check_rehashes_only_that_backends_flows() {
    if !require_root("a_failing_health_check_rehashes_only_that_backends_flows") {
        return;
    }
    const FLOWS: u16 = 40;
    let mut lab = Lab::new(
        "[vip.health]\ntype = \"tcp\"\nport = 9000\ninterval = \"100ms\"\ntimeout = \"50ms\"\nrise = 1\nfall = 2",
    );
    let _one = lab.listen("198.18.0.1:9000");
    let three = lab.listen("198.18.0.3:9000");
    lab.start_vipd();
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
    if !require_root("sighup_reloads_the_file_and_sigterm_leaves_traffic_flowing") {
        return;
    }
    const FLOWS: u16 = 10;
    let mut lab = Lab::new("");
    lab.start_vipd();
    let pid = lab.vipd.as_ref().unwrap().id() as i32;
    let cfg = lab.dir.join("vipd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let weight_of = |lab: &Lab, addr: &str| -> u64 {
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
    std::fs::write(
        &cfg,
        text.replace(
            "address = \"198.18.0.3\"",
            "address = \"198.18.0.3\"\nweight = 5",
        ),
    )
    .unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while weight_of(&lab, "198.18.0.3:53") != 5 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not apply the new weight"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGHUP with a broken file: refused, vipd keeps running the previous config.
    std::fs::write(&cfg, text.clone() + "typo_key = 1\n").unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(weight_of(&lab, "198.18.0.3:53"), 5);
    std::fs::write(
        &cfg,
        text.replace(
            "address = \"198.18.0.3\"",
            "address = \"198.18.0.3\"\nweight = 5",
        ),
    )
    .unwrap();

    // SIGTERM: vipd exits cleanly, the datapath keeps forwarding.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = lab.vipd.take().unwrap().wait().unwrap();
    assert!(status.success(), "vipd exited with {status}");
    let link = Command::new("ip")
        .args(["-n", &lab.lb, "link"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&link.stdout).contains("vip_lb"),
        "XDP still attached"
    );
    lab.send(FLOWS);
    lab.start_vipd();
    let (conns, packets, new_flows) = stats(&lab, u64::from(FLOWS));
    assert_eq!(
        (conns, packets, new_flows),
        (u64::from(FLOWS), u64::from(FLOWS), u64::from(FLOWS))
    );
    let log = std::fs::read_dir(&lab.dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("vipd-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(
        log.contains("reload refused") && log.contains("typo_key"),
        "{log}"
    );
}
