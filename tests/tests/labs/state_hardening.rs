//! State correctness against the real kernel: vipd started, killed and
//! started again on one instance whose maps are pinned in bpffs, in a network namespace
//! of its own (a veth pair to attach to; no traffic is needed): one owner per instance,
//! ghost VIPs removed on restart, a failed start that changes nothing, pinned maps of
//! other limits refused, an unknown interface that pins nothing, a reload that keeps
//! runtime changes.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vip_tests::{
    lab::{
        cmd,
        netns::{self, Netns},
        process::LabProcess,
        workspace_binary,
    },
    privileged::require_root,
};

/// One vipd instance: its namespace, files and (while it runs) process. Everything is
/// removed on drop: process, pins, lock file, files, namespace.
struct Instance {
    ns: Netns,
    name: String,
    iface: String,
    dir: PathBuf,
    vipd: Option<LabProcess>,
    runs: u32,
}

const VIPS: &str = r#"
[[vip]]
address = "198.18.1.10:80"
[[vip.backend]]
address = "198.18.2.1"
[[vip.backend]]
address = "198.18.2.2"
"#;

fn sh(args: &[&str]) {
    cmd::run(args[0], &args[1..]).unwrap_or_else(|e| panic!("{e}"));
}

impl Instance {
    fn new() -> Instance {
        let prefix = netns::unique_prefix();
        let ns = Netns::create(&format!("{prefix}s")).unwrap();
        let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
        sh(&[
            "ip",
            "-n",
            ns.name(),
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
        ]);
        for dev in [&a, &b] {
            sh(&["ip", "-n", ns.name(), "link", "set", dev, "up"]);
        }
        let dir = std::env::temp_dir().join(format!("vip-state-hardening-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        netns::register_pin_dir(&format!("/sys/fs/bpf/vip/{prefix}"));
        let inst = Instance {
            ns,
            name: prefix,
            iface: a,
            dir,
            vipd: None,
            runs: 0,
        };
        inst.write_config(&inst.config(""));
        inst
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("vipd.toml")
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    fn pin_dir(&self) -> PathBuf {
        Path::new("/sys/fs/bpf/vip").join(&self.name)
    }

    /// The config: this instance, generic XDP on its veth, small limits, one VIP, with
    /// `extra` appended (more VIPs).
    fn config(&self, extra: &str) -> String {
        format!(
            r#"instance = "{name}"
state_file = "{state}"
[datapath]
interfaces = ["{iface}"]
xdp_mode = "generic"
[limits]
max_vips = 64
max_backends = 256
table_size = 251
max_conns = 4096
[api]
socket = "{socket}"
{VIPS}{extra}"#,
            name = self.name,
            state = self.state_path().display(),
            iface = self.iface,
            socket = self.socket().display(),
        )
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    fn log(&mut self) -> PathBuf {
        self.runs += 1;
        self.dir.join(format!("vipd-{}.log", self.runs))
    }

    /// Starts `vipd run` and waits until it answers.
    fn start(&mut self) {
        let log = self.log();
        let args: Vec<String> = [
            "run",
            "-c",
            self.config_path().to_str().unwrap(),
            "--netns",
            self.ns.name(),
        ]
        .map(String::from)
        .to_vec();
        let mut p = LabProcess::spawn(
            "vipd",
            "",
            &workspace_binary("vipd", "vip-user").unwrap(),
            &args,
            &log,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.vipctl(&["vip", "list"]).is_err() {
            assert!(
                p.is_running() && Instant::now() < deadline,
                "vipd did not come up: {}",
                p.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.vipd = Some(p);
    }

    /// Runs `vipd run -c config` expecting it to refuse: its stderr. Panics if it is
    /// still running after 15 s (it started).
    fn refused(&mut self, config: &Path) -> String {
        let log = self.log();
        let mut child = Command::new(workspace_binary("vipd", "vip-user").unwrap())
            .args(["run", "-c"])
            .arg(config)
            .args(["--netns", self.ns.name()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "vipd started instead of refusing: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let err = std::fs::read_to_string(&log).unwrap();
        assert!(!status.success(), "vipd exited 0: {err}");
        err
    }

    fn signal(&mut self, sig: i32) {
        self.vipd.take().expect("vipd runs").kill_with(sig);
    }

    fn vipctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(workspace_binary("vipctl", "vip-user").unwrap())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.vipctl(args)
            .unwrap_or_else(|e| panic!("vipctl {args:?}: {e}"))
    }

    /// The VIPs the pinned VIP map holds (address markers left out), as `ADDR:PORT`.
    fn pinned_vips(&self) -> BTreeMap<String, vip_common::VipMeta> {
        let map = aya::maps::MapData::from_pin(self.pin_dir().join(vip_common::MAP_VIPS)).unwrap();
        let vips: aya::maps::HashMap<_, vip_common::VipKey, vip_common::VipMeta> =
            aya::maps::HashMap::try_from(aya::maps::Map::HashMap(map)).unwrap();
        vips.iter()
            .map(Result::unwrap)
            .filter(|(k, _)| k.proto != 0)
            .map(|(k, m)| {
                let addr = std::net::Ipv4Addr::from(k.addr[0].to_ne_bytes());
                (
                    SocketAddr::from((addr, u16::from_be(k.port_be))).to_string(),
                    m,
                )
            })
            .collect()
    }

    /// Every backend entry ever written, by id.
    fn pinned_backends(&self) -> BTreeMap<u32, vip_common::Backend> {
        let map =
            aya::maps::MapData::from_pin(self.pin_dir().join(vip_common::MAP_BACKENDS)).unwrap();
        let arr: aya::maps::Array<_, vip_common::Backend> =
            aya::maps::Array::try_from(aya::maps::Map::Array(map)).unwrap();
        (0..arr.len())
            .map(|i| (i, arr.get(&i, 0).unwrap()))
            .filter(|(_, b)| *b != vip_common::Backend::default())
            .collect()
    }

    /// What the datapath holds: VIP entries and backends, comparable.
    fn snapshot(&self) -> String {
        format!("{:?}\n{:?}", self.pinned_vips(), self.pinned_backends())
    }

    fn edit_state(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.state_path()).unwrap()).unwrap();
        edit(&mut s);
        std::fs::write(self.state_path(), serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut p) = self.vipd.take() {
            p.kill_with(libc::SIGKILL);
        }
        let _ = Command::new(workspace_binary("vipd", "vip-user").unwrap())
            .args(["down", "--force", "--instance", &self.name])
            .output();
        netns::remove_pin_dir(&self.pin_dir().to_string_lossy());
        let _ = std::fs::remove_file(format!("/run/vip/{}.lock", self.name));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `[[vip]]` sections for VIPs 198.18.3.`first`..=`last`:80, two backends each.
fn many_vips(first: u8, last: u8) -> String {
    (first..=last)
        .map(|i| {
            format!(
                "[[vip]]\naddress = \"198.18.3.{i}:80\"\ntable_size = 251\n[[vip.backend]]\naddress = \"198.18.4.{i}\"\n[[vip.backend]]\naddress = \"198.18.5.{i}\"\n"
            )
        })
        .collect()
}

/// Finding 4: a second `vipd run` of a running instance is refused, naming the
/// holder's PID, and changes nothing; a vipd removes the API socket on exit only if it
/// is still its own.
#[test]
fn state_hardening_one_vipd_per_instance_and_the_socket_is_removed_by_its_owner() {
    if !require_root("state_hardening_one_vipd_per_instance_and_the_socket_is_removed_by_its_owner")
    {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut inst = Instance::new();
    inst.start();
    let pid = inst.vipd.as_ref().unwrap().pid().unwrap();
    let before = inst.snapshot();
    // Same instance, another socket and state file: still the same pins.
    let other = inst.dir.join("other.toml");
    std::fs::write(
        &other,
        inst.config("")
            .replace("api.sock", "api2.sock")
            .replace("state.json", "state2.json"),
    )
    .unwrap();
    let err = inst.refused(&other);
    assert!(
        err.contains("is running") && err.contains(&format!("pid {pid}")),
        "{err}"
    );
    assert!(!inst.dir.join("api2.sock").exists());
    assert_eq!(inst.snapshot(), before, "the refused vipd wrote the maps");
    inst.ok(&["vip", "list"]);
    // Another process took the socket path over: the first vipd leaves it alone.
    let moved = inst.dir.join("api.sock.moved");
    std::fs::rename(inst.socket(), &moved).unwrap();
    let _theirs = std::os::unix::net::UnixListener::bind(inst.socket()).unwrap();
    inst.signal(libc::SIGTERM);
    assert!(
        inst.socket().exists(),
        "vipd removed a socket it did not bind"
    );
}

/// Finding 2: vipd killed during an apply leaves VIPs in the pinned map that the state
/// file does not know; a restart removes them. With the state file gone, VIPs the
/// config does not name are kept forwarding and shown as unmanaged until deleted.
#[test]
fn state_hardening_a_restart_removes_ghost_vips_and_keeps_unknown_ones_as_unmanaged() {
    if !require_root(
        "state_hardening_a_restart_removes_ghost_vips_and_keeps_unknown_ones_as_unmanaged",
    ) {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut inst = Instance::new();
    inst.start();
    let persisted = std::fs::read(inst.state_path()).unwrap();
    let big = inst.dir.join("big.toml");
    std::fs::write(&big, inst.config(&many_vips(1, 50))).unwrap();
    inst.ok(&["apply", "-f", big.to_str().unwrap()]);
    assert_eq!(inst.pinned_vips().len(), 51);
    // SIGKILL after the maps were written, before the state file was replaced.
    inst.signal(libc::SIGKILL);
    std::fs::write(inst.state_path(), persisted).unwrap();
    inst.start();
    let left: Vec<String> = inst.pinned_vips().into_keys().collect();
    assert_eq!(
        left,
        ["198.18.1.10:80"],
        "ghost VIPs left in the pinned map"
    );
    let used: Vec<u32> = inst
        .pinned_backends()
        .into_iter()
        .filter(|(_, b)| b.state != vip_common::BACKEND_UNUSED)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        used.len(),
        2,
        "only the two wanted backends are in use: {used:?}"
    );

    // A VIP added at runtime, then the state file is lost.
    inst.ok(&["vip", "add", "198.18.1.20:80", "--table-size", "251"]);
    inst.ok(&["backend", "add", "198.18.1.20:80", "198.18.2.7"]);
    inst.signal(libc::SIGKILL);
    let entry = inst.pinned_vips()["198.18.1.20:80"];
    std::fs::remove_file(inst.state_path()).unwrap();
    inst.start();
    assert_eq!(
        inst.pinned_vips().get("198.18.1.20:80"),
        Some(&entry),
        "kept forwarding as found"
    );
    let list = inst.ok(&["vip", "list"]);
    assert!(
        list.contains("unmanaged")
            && list.contains("198.18.1.20:80/tcp")
            && list.contains("198.18.2.7"),
        "{list}"
    );
    inst.ok(&["vip", "del", "198.18.1.20:80"]);
    assert!(!inst.pinned_vips().contains_key("198.18.1.20:80"));
    assert!(!inst.ok(&["vip", "list"]).contains("unmanaged"));
}

/// Finding 6: a start that cannot succeed leaves the datapath exactly as it found it
/// and does not claim a restore; the resize procedure vipd prescribes works.
#[test]
fn state_hardening_a_failed_start_leaves_the_datapath_as_it_found_it() {
    if !require_root("state_hardening_a_failed_start_leaves_the_datapath_as_it_found_it") {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut inst = Instance::new();
    inst.start();
    inst.ok(&["backend", "drain", "198.18.1.10:80", "198.18.2.1"]);
    inst.signal(libc::SIGKILL);
    let good = std::fs::read(inst.state_path()).unwrap();
    let before = inst.snapshot();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 3] = [
        (
            "backend id out of range",
            |s| s["alloc"]["backends"][0][1] = 9999.into(),
            "backend id 9999",
        ),
        (
            "VIP slot out of range",
            |s| s["alloc"]["vips"][0][1] = 999.into(),
            "slot 999",
        ),
        (
            "duplicated backend ids",
            |s| s["alloc"]["backends"][1][1] = s["alloc"]["backends"][0][1].clone(),
            "is given to both",
        ),
    ];
    let config = inst.config_path();
    for (name, edit, want) in cases {
        std::fs::write(inst.state_path(), &good).unwrap();
        inst.edit_state(edit);
        let err = inst.refused(&config);
        assert!(
            err.contains(want) && !err.contains("restored"),
            "{name}: {err}"
        );
        assert_eq!(inst.snapshot(), before, "{name}: the datapath changed");
    }
    std::fs::write(inst.state_path(), &good).unwrap();
    // The resize procedure: `vipd down`, lower max_backends, start.
    sh(&[
        workspace_binary("vipd", "vip-user")
            .unwrap()
            .to_str()
            .unwrap(),
        "down",
        "-c",
        config.to_str().unwrap(),
    ]);
    inst.write_config(
        &inst
            .config("")
            .replace("max_backends = 256", "max_backends = 4"),
    );
    inst.start();
    let list = inst.ok(&["backend", "list"]);
    assert!(
        list.lines()
            .any(|l| l.contains("198.18.2.1:80") && l.contains("drain")),
        "the runtime drain survives the resize: {list}"
    );
}

/// Finding 7: pinned maps of other limits (or of another layout) are refused, state
/// file or not, with the fix, and nothing is adopted or written.
#[test]
fn state_hardening_pinned_maps_of_other_limits_or_layout_are_refused_without_a_state_file() {
    if !require_root(
        "state_hardening_pinned_maps_of_other_limits_or_layout_are_refused_without_a_state_file",
    ) {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut inst = Instance::new();
    inst.start();
    inst.signal(libc::SIGKILL);
    std::fs::remove_file(inst.state_path()).unwrap();
    let before = inst.snapshot();
    let good = inst.config("");
    for (name, text, want) in [
        (
            "max_conns",
            good.replace("max_conns = 4096", "max_conns = 65536"),
            "CONNS has 1024 entries, [limits] max_conns needs 16384",
        ),
        (
            "max_vips",
            good.replace("max_vips = 64", "max_vips = 32"),
            "VIP_STATS has 64 entries, [limits] max_vips needs 32",
        ),
    ] {
        inst.write_config(&text);
        let err = inst.refused(&inst.config_path());
        assert!(
            err.contains(want) && err.contains("vipd down"),
            "{name}: {err}"
        );
        assert_eq!(inst.snapshot(), before, "{name}: the datapath changed");
        assert!(
            !inst.state_path().exists(),
            "{name}: a state file was written"
        );
    }
    inst.write_config(&good);
    // Maps marked with another layout.
    let marker = inst.pin_dir().join("layout_v99");
    aya::maps::MapData::from_pin(inst.pin_dir().join(vip_common::MAP_CONFIG))
        .unwrap()
        .pin(&marker)
        .unwrap();
    let err = inst.refused(&inst.config_path());
    assert!(
        err.contains("layout 99") && err.contains("vipd down"),
        "{err}"
    );
    std::fs::remove_file(&marker).unwrap();
    inst.start();
    assert_eq!(inst.pinned_vips().len(), 1);
}

/// Finding 11: a typo in `interfaces` is refused before anything is pinned.
#[test]
fn state_hardening_an_unknown_interface_leaves_nothing_pinned() {
    if !require_root("state_hardening_an_unknown_interface_leaves_nothing_pinned") {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut inst = Instance::new();
    let typo = inst.config("").replace(&inst.iface, "nosuch0");
    inst.write_config(&typo);
    let err = inst.refused(&inst.config_path());
    assert!(err.contains("interface nosuch0 does not exist"), "{err}");
    let pinned: Vec<String> = std::fs::read_dir(inst.pin_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(pinned.is_empty(), "left pinned: {pinned:?}");
}

/// Finding 5 (and 11): SIGHUP with an unchanged file keeps every runtime change; a
/// reload that changes a restart-only setting is refused with an error.
#[test]
fn state_hardening_sighup_with_an_unchanged_file_keeps_runtime_changes() {
    if !require_root("state_hardening_sighup_with_an_unchanged_file_keeps_runtime_changes") {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut inst = Instance::new();
    inst.start();
    inst.ok(&[
        "backend",
        "set",
        "198.18.1.10:80",
        "198.18.2.2",
        "--state",
        "maint",
    ]);
    inst.ok(&["vip", "add", "198.18.1.30:80", "--table-size", "251"]);
    let before = inst.ok(&["-o", "json", "backend", "list"]);
    let pid = inst.vipd.as_ref().unwrap().pid().unwrap();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inst.ok(&["-o", "json", "backend", "list"]), before);
    assert!(inst.ok(&["vip", "list"]).contains("198.18.1.30:80/tcp"));
    assert_eq!(inst.ok(&["reload"]), "ok (0 map writes)\n");
    inst.write_config(
        &inst
            .config("")
            .replace("[api]\n", "[api]\nmode = \"0660\"\n"),
    );
    let err = inst.vipctl(&["reload"]).unwrap_err();
    assert!(
        err.contains("[api]") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(inst.ok(&["-o", "json", "backend", "list"]), before);
}
