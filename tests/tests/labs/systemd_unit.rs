//! The systemd unit in `examples/systemd/vipd.service` runs vipd as an unprivileged user
//! with only its `AmbientCapabilities`: vipd started that way (as `nobody`, through
//! `setpriv`, in a namespace of its own) loads, pins and attaches the datapath and
//! answers `vipctl`, holds no other capability, and fails to start, with a message, when
//! any one of the capabilities it needs to load is taken away.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use vip_tests::{
    lab::{
        cmd,
        netns::{self, Netns},
        process::LabProcess,
        serial, workspace_binary,
    },
    privileged::require_root,
};

const UNIT: &str = include_str!("../../../examples/systemd/vipd.service");

/// `nobody`/`nogroup` on Debian.
const NOBODY: u32 = 65534;

/// The capability names a unit's `KEY=` line lists, lower case without `CAP_`.
fn unit_caps(key: &str) -> Vec<String> {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="));
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// Bit numbers of capabilities (linux/capability.h).
fn cap_bit(name: &str) -> u32 {
    match name {
        "net_admin" => 12,
        "net_raw" => 13,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("capability {other} is not known to this test"),
    }
}

/// A namespace with a veth pair, a scratch directory, the instance's pin directory and
/// lock file, owned by `nobody` as the unit's directories are owned by `vip`. All removed
/// on drop, with whatever vipd pinned.
struct Node {
    ns: Netns,
    name: String,
    dir: PathBuf,
}

impl Node {
    fn new() -> Node {
        let name = netns::unique_prefix();
        let ns = Netns::create(&format!("{name}u")).expect("namespace");
        cmd::veth(ns.name(), "va", ns.name(), "vb").expect("veth");
        for dev in ["va", "vb"] {
            cmd::ip(ns.name(), &["link", "set", dev, "up"]).expect("link up");
        }
        cmd::ip(ns.name(), &["addr", "add", "198.18.0.1/24", "dev", "va"]).expect("address");
        let dir = std::env::temp_dir().join(format!("vip-systemd-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pins = format!("/sys/fs/bpf/vip/{name}");
        netns::register_pin_dir(&pins);
        std::fs::create_dir_all(&pins).unwrap();
        std::fs::create_dir_all("/run/vip").unwrap();
        let lock = PathBuf::from(format!("/run/vip/{name}.lock"));
        std::fs::write(&lock, "").unwrap();
        for p in [dir.as_path(), Path::new(&pins), lock.as_path()] {
            std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        std::fs::write(
            dir.join("vipd.toml"),
            format!(
                "instance = \"{name}\"\nstate_file = \"{d}/state.json\"\n[datapath]\ninterfaces = [\"va\"]\n[limits]\nmax_vips = 4\nmax_backends = 16\ntable_size = 251\nmax_conns = 4096\n[api]\nsocket = \"{d}/api.sock\"\n[[vip]]\naddress = \"198.18.1.10:80\"\n[[vip.backend]]\naddress = \"198.18.0.2\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        Node { ns, name, dir }
    }

    /// vipd as `nobody` with exactly `caps` (ambient, inheritable and bounding).
    fn start(&self, caps: &[String], log: &str) -> LabProcess {
        let set = |prefix: &str| {
            std::iter::once(format!("{prefix}-all"))
                .chain(caps.iter().map(|c| format!("+{c}")))
                .collect::<Vec<_>>()
                .join(",")
        };
        let args = vec![
            format!("--net=/run/netns/{}", self.ns.name()),
            "--".into(),
            "setpriv".into(),
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
            format!("--inh-caps={}", set("")),
            format!("--ambient-caps={}", set("")),
            format!("--bounding-set={}", set("")),
            workspace_binary("vipd", "vip-user")
                .unwrap()
                .display()
                .to_string(),
            "run".into(),
            "-c".into(),
            self.dir.join("vipd.toml").display().to_string(),
        ];
        LabProcess::spawn("vipd", "", Path::new("nsenter"), &args, &self.dir.join(log))
            .expect("starting vipd")
    }

    /// `vipctl vip list` as root, once it answers (within 20 s).
    fn vipctl_list(&self, vipd: &mut LabProcess) -> Result<String, String> {
        let vipctl = workspace_binary("vipctl", "vip-user").unwrap();
        let socket = self.dir.join("api.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = std::process::Command::new(&vipctl)
                .arg("--socket")
                .arg(&socket)
                .args(["vip", "list"])
                .output()
                .unwrap();
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            if !vipd.is_running() || Instant::now() > deadline {
                return Err(vipd.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(vipd) = workspace_binary("vipd", "vip-user") {
            let _ = std::process::Command::new(vipd)
                .args(["down", "--force", "--instance", &self.name])
                .output();
        }
        netns::remove_pin_dir(&format!("/sys/fs/bpf/vip/{}", self.name));
        let _ = std::fs::remove_file(format!("/run/vip/{}.lock", self.name));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn systemd_unit_vipd_serves_as_an_unprivileged_user_with_only_the_units_capabilities() {
    if !require_root(
        "systemd_unit_vipd_serves_as_an_unprivileged_user_with_only_the_units_capabilities",
    ) {
        return;
    }
    let _serial = serial();
    let caps = unit_caps("AmbientCapabilities");
    assert_eq!(
        caps,
        unit_caps("CapabilityBoundingSet"),
        "the unit's bounding set and ambient set differ"
    );
    let node = Node::new();
    let mut vipd = node.start(&caps, "vipd.log");
    let list = node
        .vipctl_list(&mut vipd)
        .unwrap_or_else(|log| panic!("vipd with the unit's capabilities did not serve:\n{log}"));
    assert!(list.contains("198.18.1.10:80/tcp"), "{list}");
    let link = cmd::ip(node.ns.name(), &["link", "show", "va"]).unwrap();
    assert!(link.contains("vip_lb"), "vip_lb is not attached:\n{link}");
    // The process holds exactly those capabilities, as nobody.
    let status = std::fs::read_to_string(format!("/proc/{}/status", vipd.pid().unwrap())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{k} missing"))
            .to_string()
    };
    let want: u64 = caps.iter().map(|c| 1u64 << cap_bit(c)).sum();
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).unwrap(),
        want,
        "effective capabilities"
    );
    assert!(
        field("Uid:").starts_with(&NOBODY.to_string()),
        "{}",
        field("Uid:")
    );
    vipd.kill_with(libc::SIGTERM);

    // Each capability vipd needs to load and attach is needed: without it vipd says why
    // and exits. (CAP_NET_RAW is for HA announcements, sent only on a takeover.)
    for missing in ["bpf", "perfmon", "net_admin"] {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let node = Node::new();
        let mut vipd = node.start(&fewer, "vipd.log");
        let deadline = Instant::now() + Duration::from_secs(20);
        while vipd.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !vipd.is_running(),
            "vipd without CAP_{} kept running",
            missing.to_uppercase()
        );
        let log = String::from_utf8_lossy(&std::fs::read(node.dir.join("vipd.log")).unwrap())
            .into_owned();
        let error = log.lines().find(|l| l.starts_with("vipd: "));
        assert!(
            error.is_some(),
            "no error message without CAP_{missing}:\n{}",
            vipd.log_tail()
        );
        eprintln!(
            "without CAP_{}: {}",
            missing.to_uppercase(),
            error.unwrap_or_default()
        );
    }
}
