//! Failover on a shared L2 segment: two LB nodes with the same vipd config, a VIP in an
//! HA group with `announce = "arp"`, configured on no interface. The router has the VIP
//! prefix on-link, so it finds the VIP by ARP / neighbour discovery, and only the node
//! whose group is active answers. The role is set with `vipctl ha set`, by hand
//! ([`Failover::set`]) or by an election engine calling it ([`Keepalived`], from the
//! repository's `examples/ha/keepalived.conf`).
//!
//! ```text
//!  client ── router ── switch (br0) ─┬── LB node 0: vipd, group active  (answers ARP/NS)
//!              VIP prefix on-link    ├── LB node 1: vipd, group standby (silent)
//!                                    └── backends b1 b2
//! ```
//! Both nodes pick the same backend for a flow, so the router moving from one node to the
//! other breaks no connection. The namespace labs (`failover`) and `cargo xtask demo`'s
//! failover act both build this lab.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

use super::{
    Lab, LabError, LabSpec, Mode, addr,
    client::{self, Proto},
    cmd, netns,
    vipd::{HealthConfig, Vipd},
    workspace_binary,
};

/// The HA group every VIP of the lab belongs to.
pub const GROUP: &str = "web";

/// The two-node failover lab: vipd with the HA config on both LB nodes, no role set yet
/// (both start as vipd's default, standby). Dropping it stops both vipds (removing their
/// pins), then the lab.
#[derive(Debug)]
pub struct Failover {
    /// vipd on LB node 0 and 1 (dropped before the lab).
    pub vipds: Vec<Vipd>,
    /// The topology.
    pub lab: Lab,
    /// The MAC of each LB node's `eth0`, as the router's neighbour entry shows it.
    pub macs: Vec<String>,
}

/// The config text of node `i`: the lab's, with an IPv4 and an IPv6 VIP (TCP, backends
/// b1 and b2, no health checks) in group [`GROUP`] on `eth0`, announced with 5
/// gratuitous ARPs / unsolicited NAs 100 ms apart on takeover.
pub fn ha_config(lab: &Lab, i: usize) -> String {
    let vips = vec![
        lab.vip_config(false, "tcp", &[0, 1], HealthConfig::none()),
        lab.vip_config(true, "tcp", &[0, 1], HealthConfig::none()),
    ];
    let text = lab.vipd_config(i, vips).to_toml().replace(
        "[[vip]]\n",
        &format!("[[vip]]\nannounce = \"arp\"\ngroup = \"{GROUP}\"\n"),
    );
    format!(
        "{text}\n[[group]]\nname = \"{GROUP}\"\ninterfaces = [\"eth0\"]\ngarp_repeat = 5\ngarp_interval = \"100ms\"\n"
    )
}

impl Failover {
    /// Builds the lab in `mode` (2 backends, 2 LB nodes), makes the VIP prefix on-link at
    /// the router, keeps the backends (which hold the VIP on lo) from answering ARP for
    /// it, and starts vipd with [`ha_config`] on both nodes.
    pub fn build(mode: Mode) -> Result<Failover, LabError> {
        let mut spec = LabSpec::new(2, mode);
        spec.lb_nodes = 2;
        let mut lab = Lab::build(spec)?;
        if mode == Mode::Tunnel {
            lab.attach_decap()?;
        }
        // The VIP is on-link at the router (it asks the segment), on no LB interface; the
        // backends hold it on lo and must not answer for it.
        let r = lab.router_netns().to_string();
        cmd::ip(&r, &["route", "replace", addr::VIP4_PREFIX, "dev", "eth0"])?;
        cmd::ip(
            &r,
            &["-6", "route", "replace", addr::VIP6_PREFIX, "dev", "eth0"],
        )?;
        for b in &lab.backends {
            for scope in ["all", "eth0"] {
                cmd::sysctl(b.netns(), &format!("net.ipv4.conf.{scope}.arp_ignore"), "1")?;
                cmd::sysctl(
                    b.netns(),
                    &format!("net.ipv4.conf.{scope}.arp_announce"),
                    "2",
                )?;
            }
        }
        let mut vipds = Vec::new();
        let mut macs = Vec::new();
        for i in 0..2 {
            let mut v = Vipd::start(&lab, i, lab.vipd_config(i, Vec::new()))?;
            // The lab writes configs without groups: the HA config replaces it, and the
            // restarted vipd adopts the pinned datapath.
            v.kill();
            let path = lab.dir.join(format!("vipd-lb{i}.toml"));
            std::fs::write(&path, ha_config(&lab, i)).map_err(|source| LabError::Io {
                what: format!("writing {}", path.display()),
                source,
            })?;
            // On failure the error holds vipd's log.
            v.restart()?;
            let args = ["-br", "link", "show", "eth0"];
            let link = cmd::ip(lab.lb_nodes[i].netns(), &args)?;
            let mac = link
                .split_whitespace()
                .nth(2)
                .ok_or_else(|| LabError::Command {
                    command: format!("ip -n {} {}", lab.lb_nodes[i].netns(), args.join(" ")),
                    status: "no MAC in its output".into(),
                    stderr: link.clone(),
                })?;
            macs.push(mac.to_string());
            vipds.push(v);
        }
        Ok(Failover { vipds, lab, macs })
    }

    /// `vipctl ha set GROUP ROLE` on node `i` (`active`, `standby`, `fault`).
    ///
    /// # Panics
    /// If vipctl fails, with vipd's log.
    pub fn set(&self, i: usize, role: &str) {
        self.vipds[i]
            .vipctl(&["ha", "set", GROUP, role])
            .unwrap_or_else(|e| {
                panic!(
                    "vipctl ha set on node {i}: {e}\n{}",
                    self.vipds[i].log_tail()
                )
            });
    }

    /// Node `i`'s role for [`GROUP`] as `vipctl ha status` reports it, `?` if vipd does
    /// not answer.
    pub fn role(&self, i: usize) -> String {
        let out = self.vipds[i]
            .vipctl(&["-o", "json", "ha", "status"])
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v[0]["role"].as_str().unwrap_or("?").to_string()
    }

    /// Waits up to 15 s until nodes 0 and 1 report the roles `want`.
    ///
    /// # Panics
    /// When they do not, naming `what`, with the logs of the keepalived instances `ks`
    /// (node 0's first).
    pub fn wait_roles(&self, want: [&str; 2], what: &str, ks: &[Keepalived]) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if self.role(0) == want[0] && self.role(1) == want[1] {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let logs: String = ks
            .iter()
            .enumerate()
            .map(|(i, k)| format!("\nkeepalived {i}:\n{}", k.log()))
            .collect();
        panic!(
            "{what}: roles {} / {}, want {want:?}{logs}",
            self.role(0),
            self.role(1),
        );
    }

    /// The router's neighbour entry (MAC) for the VIP of one family.
    pub fn router_mac(&self, v6: bool) -> Option<String> {
        let vip = if v6 {
            addr::VIP6.to_string()
        } else {
            addr::VIP4.to_string()
        };
        let out = cmd::ip(self.lab.router_netns(), &["neigh", "show", &vip]).ok()?;
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return words.next().map(str::to_string);
            }
        }
        None
    }

    /// Empties the router's neighbour cache on the segment, so its next packet to the
    /// VIP asks who has it.
    pub fn flush_router(&self) {
        let r = self.lab.router_netns();
        let _ = cmd::ip(r, &["neigh", "flush", "dev", "eth0"]);
        let _ = cmd::ip(r, &["-6", "neigh", "flush", "dev", "eth0"]);
    }

    /// Node `i`'s datapath counter for packet fate `name`.
    ///
    /// # Panics
    /// If vipd does not report its counters.
    pub fn reason(&self, i: usize, name: &str) -> u64 {
        self.vipds[i]
            .reason_counts()
            .expect("reason counters")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// The VIP of one family.
    pub fn vip(&self, v6: bool) -> SocketAddr {
        if v6 { self.lab.vip6() } else { self.lab.vip4() }
    }

    /// `n` new connections through the VIP of one family from client 0.
    ///
    /// # Panics
    /// Unless every one succeeds, naming `scenario`.
    pub fn traffic(&self, scenario: &str, v6: bool, n: usize) {
        let ns = self.lab.client_netns(0);
        let s = client::spread(ns, self.vip(v6), Proto::Tcp, n, 2, Duration::from_secs(30))
            .expect("client");
        assert!(
            s.failures.is_empty(),
            "{scenario}: every connection must succeed ({s}): {:?}",
            &s.failures[..s.failures.len().min(3)]
        );
    }
}

/// Probes a new connection every ~10 ms from `start` until the router's entry holds
/// `mac` and a connection succeeds; returns the time and the probes that failed on the
/// way (new connections lost during the switch).
///
/// # Panics
/// If the router has not moved to `mac` within 15 s.
pub fn until_moved(f: &Failover, v6: bool, mac: &str, start: Instant) -> (Duration, u32) {
    let vip = f.vip(v6);
    let ns = f.lab.client_netns(0).to_string();
    let mut failed = 0;
    while start.elapsed() < Duration::from_secs(15) {
        let moved = f.router_mac(v6).as_deref() == Some(mac);
        let ns = ns.clone();
        let ok = netns::within(&ns, move || {
            std::net::TcpStream::connect_timeout(&vip, Duration::from_millis(200)).is_ok()
        })
        .unwrap_or(false);
        if !ok {
            failed += 1;
        } else if moved {
            return (start.elapsed(), failed);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "the router's entry for {vip} did not move to {mac} within 15 s (it holds {:?})",
        f.router_mac(v6)
    );
}

/// keepalived on LB node `i`, from the repository's example configuration with its
/// definitions set for the lab (priority 150 on node 0, 100 on node 1; VRRP adverts
/// every 0.1 s as the example has them). Killed on drop.
#[derive(Debug)]
pub struct Keepalived {
    netns: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl Keepalived {
    /// Writes node `i`'s keepalived.conf under the lab's directory and starts keepalived
    /// (`-n -l -P`: foreground, log to the console, VRRP only) in its namespace.
    ///
    /// # Panics
    /// If vipctl is not built or keepalived cannot be started.
    pub fn start(f: &Failover, i: usize) -> Keepalived {
        let example = include_str!("../../../examples/ha/keepalived.conf");
        let vipctl = workspace_binary("vipctl", "vip-user").expect("vipctl");
        let socket = f.lab.dir.join(format!("vipd-lb{i}.sock"));
        let defs = [
            ("IFACE", "eth0".to_string()),
            ("GROUP", GROUP.to_string()),
            ("PRIORITY", if i == 0 { "150" } else { "100" }.to_string()),
            ("VRID", "51".to_string()),
            (
                "VIPCTL",
                format!("{} --socket {}", vipctl.display(), socket.display()),
            ),
            (
                "NOTIFY",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples/ha/keepalived-notify.sh")
                    .display()
                    .to_string(),
            ),
            (
                "FIFO",
                f.lab
                    .dir
                    .join(format!("keepalived-lb{i}.fifo"))
                    .display()
                    .to_string(),
            ),
        ];
        let conf: String = example
            .lines()
            .map(|l| {
                for (k, v) in &defs {
                    if l.starts_with(&format!("${k}=")) {
                        return format!("${k}={v}\n");
                    }
                }
                format!("{l}\n")
            })
            .collect();
        let dir = f.lab.dir.join(format!("keepalived-lb{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keepalived.conf"), conf).unwrap();
        let mut k = Keepalived {
            netns: f.lab.lb_nodes[i].netns().to_string(),
            dir,
            child: None,
        };
        k.restart();
        k
    }

    /// Starts keepalived again after [`Keepalived::kill`].
    ///
    /// # Panics
    /// If keepalived cannot be started (`cargo xtask setup` installs it).
    pub fn restart(&mut self) {
        let d = &self.dir;
        let log = std::fs::File::create(d.join("keepalived.log")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "keepalived",
                "-n",
                "-l",
                "-P",
                "-f",
            ])
            .arg(d.join("keepalived.conf"))
            .arg("-p")
            .arg(d.join("keepalived.pid"))
            .arg("-r")
            .arg(d.join("vrrp.pid"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting keepalived");
        self.child = Some(child);
    }

    /// SIGKILLs keepalived and its VRRP process: no priority-0 advert, no notify.
    pub fn kill(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("vrrp.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            // SAFETY: signalling a process this lab started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(self.dir.join("vrrp.pid"));
        let _ = std::fs::remove_file(self.dir.join("keepalived.pid"));
    }

    /// keepalived's log since its last (re)start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("keepalived.log")).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill();
    }
}
