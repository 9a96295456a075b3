//! vipd on the lab's LB node(s): its config file (written the way an operator writes
//! one), the daemon process, `vipctl`, and `vipd decap attach` on tunnel-mode backends.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{Duration, Instant},
};

use super::{
    LabError, Mode, cmd,
    netns::{self},
    process::LabProcess,
    topology::{Lab, LbNode},
};

/// A backend entry of a VIP.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Backend address and port.
    pub addr: SocketAddr,
    /// Maglev weight.
    pub weight: u32,
    /// `ready`, `drain` or `maint`.
    pub state: &'static str,
}

/// The health check of a VIP (as the config writes it).
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// `none`, `tcp`, `http` or `udp`.
    pub kind: &'static str,
    /// The port checked, when not the backend's service port.
    pub port: Option<u16>,
    /// Milliseconds between checks.
    pub interval_ms: u64,
    /// Milliseconds a check may take.
    pub timeout_ms: u64,
    /// Passes that bring a backend up.
    pub rise: u32,
    /// Failures that take it down.
    pub fall: u32,
}

impl HealthConfig {
    /// Fast checks for labs: HTTP GET /healthz every 200 ms, down after 2 failures.
    pub fn fast_http() -> Self {
        HealthConfig {
            kind: "http",
            port: None,
            interval_ms: 200,
            timeout_ms: 150,
            rise: 2,
            fall: 2,
        }
    }
    /// No checks: backends always healthy.
    pub fn none() -> Self {
        HealthConfig {
            kind: "none",
            port: None,
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 1,
            fall: 1,
        }
    }
}

/// One VIP of the config.
#[derive(Debug, Clone)]
pub struct VipConfig {
    /// Address and port.
    pub addr: SocketAddr,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// Forwarding mode.
    pub mode: Mode,
    /// Maglev table size (prime).
    pub table_size: u32,
    /// Health check.
    pub health: HealthConfig,
    /// Backends.
    pub backends: Vec<BackendConfig>,
}

/// The `[limits]` of a config: the sizes of the pinned maps, which a restart that
/// adopts them cannot change.
#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// VIPs.
    pub max_vips: u32,
    /// Backends over all VIPs.
    pub max_backends: u32,
    /// Largest Maglev table (prime).
    pub table_size: u32,
    /// Connection-table entries.
    pub max_conns: u32,
}

impl Default for LimitsConfig {
    /// Room for every lab: 16 VIPs, 256 backends, M = 65537, 65536 connections.
    fn default() -> Self {
        LimitsConfig {
            max_vips: 16,
            max_backends: 256,
            table_size: 65537,
            max_conns: 65536,
        }
    }
}

/// A whole vipd config for one LB node of a lab.
#[derive(Debug, Clone)]
pub struct VipdConfig {
    /// Unique instance name (pins under `/sys/fs/bpf/vip/<instance>`).
    pub instance: String,
    /// Interface vip_lb attaches to.
    pub interface: String,
    /// `native`, `generic` or `auto`; `None` leaves vipd's default.
    pub xdp_mode: Option<&'static str>,
    /// The API socket.
    pub socket: PathBuf,
    /// Where runtime changes are persisted.
    pub state_file: PathBuf,
    /// Largest IP packet after encapsulation (the shared segment's MTU).
    pub mtu: u32,
    /// Map sizes.
    pub limits: LimitsConfig,
    /// The VIPs.
    pub vips: Vec<VipConfig>,
}

impl VipdConfig {
    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "instance = \"{}\"", self.instance);
        let _ = writeln!(s, "state_file = \"{}\"\n", self.state_file.display());
        let _ = writeln!(s, "[datapath]\ninterfaces = [\"{}\"]", self.interface);
        if let Some(mode) = self.xdp_mode {
            let _ = writeln!(s, "xdp_mode = \"{mode}\"");
        }
        let _ = writeln!(s, "mtu = {}\n", self.mtu);
        let l = &self.limits;
        let _ = writeln!(
            s,
            "[limits]\nmax_vips = {}\nmax_backends = {}\ntable_size = {}\nmax_conns = {}\n",
            l.max_vips, l.max_backends, l.table_size, l.max_conns
        );
        let _ = writeln!(s, "[api]\nsocket = \"{}\"\n", self.socket.display());
        for v in &self.vips {
            let address = match v.addr {
                SocketAddr::V4(a) => a.to_string(),
                SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
            };
            let _ = writeln!(
                s,
                "[[vip]]\naddress = \"{address}\"\nprotocol = \"{}\"\nmode = \"{}\"\ntable_size = {}\n",
                v.protocol,
                v.mode.config_name(),
                v.table_size
            );
            let h = &v.health;
            let _ = writeln!(s, "[vip.health]\ntype = \"{}\"", h.kind);
            if let Some(port) = h.port {
                let _ = writeln!(s, "port = {port}");
            }
            if h.kind == "http" {
                let _ = writeln!(s, "path = \"/healthz\"\nexpect_status = \"200-299\"");
            }
            if h.kind == "udp" {
                let _ = writeln!(s, "payload = \"whoami\"");
            }
            let _ = writeln!(
                s,
                "interval = \"{}ms\"\ntimeout = \"{}ms\"\nrise = {}\nfall = {}\n",
                h.interval_ms, h.timeout_ms, h.rise, h.fall
            );
            for b in &v.backends {
                let address = match b.addr {
                    SocketAddr::V4(a) => a.to_string(),
                    SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
                };
                let _ = writeln!(
                    s,
                    "[[vip.backend]]\naddress = \"{address}\"\nweight = {}\nstate = \"{}\"\n",
                    b.weight, b.state
                );
            }
        }
        s
    }
}

impl Lab {
    /// A VIP on the lab's IPv4 (or IPv6) address over the backends `which` (indexes),
    /// weight 1 each, in the lab's mode.
    pub fn vip_config(
        &self,
        v6: bool,
        protocol: &'static str,
        which: &[usize],
        health: HealthConfig,
    ) -> VipConfig {
        VipConfig {
            addr: if v6 { self.vip6() } else { self.vip4() },
            protocol,
            mode: self.spec.mode,
            table_size: 65537,
            health,
            backends: which
                .iter()
                .map(|&j| BackendConfig {
                    addr: self.backend_addr(j, v6),
                    weight: 1,
                    state: "ready",
                })
                .collect(),
        }
    }

    /// Backend `j`'s service address in one family.
    pub fn backend_addr(&self, j: usize, v6: bool) -> SocketAddr {
        let b = &self.backends[j];
        if v6 {
            SocketAddr::new(b.addr6.into(), self.spec.port)
        } else {
            SocketAddr::new(b.addr4.into(), self.spec.port)
        }
    }

    /// The config of LB node `i` with these VIPs (same VIPs on every node: scale-out).
    pub fn vipd_config(&self, i: usize, vips: Vec<VipConfig>) -> VipdConfig {
        VipdConfig {
            instance: format!("{}lb{i}", self.prefix),
            interface: LbNode::IFACE.to_string(),
            xdp_mode: None,
            socket: self.dir.join(format!("vipd-lb{i}.sock")),
            state_file: self.dir.join(format!("vipd-lb{i}-state.json")),
            mtu: self.spec.client_mtu + 100,
            limits: LimitsConfig::default(),
            vips,
        }
    }

    /// Attaches vip_decap to every backend's interface (tunnel mode), as an operator does:
    /// `vipd decap attach --iface eth0` inside each backend.
    pub fn attach_decap(&mut self) -> Result<(), LabError> {
        let vipd = super::workspace_binary("vipd", "vip-user")?;
        let vipd = vipd.to_string_lossy().to_string();
        for b in &self.backends {
            // One pin instance per backend: other labs on this machine attach theirs too.
            let instance = format!("{}{}", self.prefix, b.name);
            let pin_dir = format!("/sys/fs/bpf/vip/{instance}");
            netns::register_pin_dir(&pin_dir);
            self.pin_dirs.push(pin_dir);
            let args = [
                "decap",
                "attach",
                "--iface",
                "eth0",
                "--netns",
                b.netns(),
                "--instance",
                &instance,
            ];
            cmd::run(&vipd, &args)?;
        }
        Ok(())
    }
}

/// A running vipd on one LB node, with its config. Killed on drop; its pins are removed
/// with it (the lab owns the instance name).
#[derive(Debug)]
pub struct Vipd {
    process: Option<LabProcess>,
    /// The config it runs with.
    pub config: VipdConfig,
    config_path: PathBuf,
    netns: String,
    log: PathBuf,
    /// Applied to the config text every time it is written (for what [`VipdConfig`] does
    /// not model, e.g. `[announce]`).
    edit: fn(String) -> String,
}

impl Vipd {
    /// Writes `config` and starts `vipd run -c FILE` inside LB node `i`; waits until its
    /// API answers.
    pub fn start(lab: &Lab, i: usize, config: VipdConfig) -> Result<Vipd, LabError> {
        let netns = lab.lb_nodes[i].netns();
        Vipd::start_in(netns, &lab.dir, &format!("vipd-lb{i}"), config)
    }

    /// Like [`Vipd::start`], in namespace `netns` of a lab of another shape than
    /// [`Lab`]: the config is written to `DIR/NAME.toml`, the log to `DIR/NAME.log`.
    pub fn start_in(
        netns: &str,
        dir: &Path,
        name: &str,
        config: VipdConfig,
    ) -> Result<Vipd, LabError> {
        Vipd::start_in_edited(netns, dir, name, config, |text| text)
    }

    /// Like [`Vipd::start_in`], with the config text passed through `edit` every time it
    /// is written: for what [`VipdConfig`] does not model (e.g. `[announce]`).
    pub fn start_in_edited(
        netns: &str,
        dir: &Path,
        name: &str,
        config: VipdConfig,
        edit: fn(String) -> String,
    ) -> Result<Vipd, LabError> {
        netns::register_pin_dir(&format!("/sys/fs/bpf/vip/{}", config.instance));
        let mut vipd = Vipd {
            process: None,
            config,
            config_path: dir.join(format!("{name}.toml")),
            netns: netns.to_string(),
            log: dir.join(format!("{name}.log")),
            edit,
        };
        vipd.write_config(vipd.config.clone())?;
        vipd.restart()?;
        Ok(vipd)
    }

    /// Replaces the config file with `config`; the daemon reads it on SIGHUP, a restart
    /// or `vipctl apply -f`.
    pub fn write_config(&mut self, config: VipdConfig) -> Result<(), LabError> {
        std::fs::write(&self.config_path, (self.edit)(config.to_toml())).map_err(|source| {
            LabError::Io {
                what: format!("writing {}", self.config_path.display()),
                source,
            }
        })?;
        self.config = config;
        Ok(())
    }

    /// The config file (`vipd run -c` reads it).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The namespace it runs in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// (Re)starts the daemon with the same config (it adopts what is pinned).
    pub fn restart(&mut self) -> Result<(), LabError> {
        let bin = super::workspace_binary("vipd", "vip-user")?;
        let args = vec![
            "run".to_string(),
            "-c".into(),
            self.config_path.to_string_lossy().to_string(),
            "--netns".into(),
            self.netns.clone(),
        ];
        self.process = Some(LabProcess::spawn("vipd", "", &bin, &args, &self.log)?);
        let start = Instant::now();
        let limit = Duration::from_secs(20);
        while start.elapsed() < limit {
            if self.vipctl(&["vip", "list"]).is_ok() {
                return Ok(());
            }
            if let Some(p) = &mut self.process
                && !p.is_running()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(LabError::NotReady {
            what: format!("vipd in {}", self.netns),
            secs: limit.as_secs(),
            detail: format!("; its log:\n{}", self.log_tail()),
        })
    }

    /// SIGKILLs the daemon (traffic must keep flowing: the program and maps are pinned).
    pub fn kill(&mut self) {
        self.stop(libc::SIGKILL);
    }

    /// Sends `signal` and waits for the daemon to exit; returns how it ended (`None` if it
    /// was not running).
    pub fn stop(&mut self, signal: i32) -> Option<ExitStatus> {
        self.process.take()?.kill_with(signal)
    }

    /// Sends `signal` (`SIGHUP`: reload the config file) and lets the daemon go on.
    pub fn signal(&self, signal: i32) {
        if let Some(p) = &self.process {
            p.signal(signal);
        }
    }

    /// Runs `vipctl --socket SOCKET args...` and returns its output.
    pub fn vipctl(&self, args: &[&str]) -> Result<String, LabError> {
        let bin = super::workspace_binary("vipctl", "vip-user")?;
        let socket = self.config.socket.to_string_lossy().to_string();
        let mut full = vec!["--socket", socket.as_str()];
        full.extend_from_slice(args);
        cmd::run(&bin.to_string_lossy(), &full)
    }

    /// The end of vipd's log.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// vipd's whole log, over every (re)start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Vipd {
    fn drop(&mut self) {
        self.kill();
        netns::remove_pin_dir(&format!("/sys/fs/bpf/vip/{}", self.config.instance));
    }
}

impl Vipd {
    /// The datapath's per-reason packet counters, from `vipctl -o json stats`.
    pub fn reason_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, LabError> {
        Ok(self.status()?.reasons.into_iter().collect())
    }

    /// vipd's whole status (`vipctl -o json stats`), typed.
    pub fn status(&self) -> Result<vip_user::protocol::Status, LabError> {
        let value = self.vipctl_json(&["stats"])?;
        serde_json::from_value(value).map_err(|e| LabError::Command {
            command: "vipctl -o json stats".into(),
            status: "output not a status".into(),
            stderr: e.to_string(),
        })
    }

    /// Runs `vipctl -o json args...` and parses its output, for the parts of an answer a
    /// test reads one field at a time.
    pub fn vipctl_json(&self, args: &[&str]) -> Result<serde_json::Value, LabError> {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let text = self.vipctl(&full)?;
        serde_json::from_str(&text).map_err(|e| LabError::Command {
            command: format!("vipctl {}", full.join(" ")),
            status: "unreadable output".into(),
            stderr: format!("{e}: {text}"),
        })
    }
}
