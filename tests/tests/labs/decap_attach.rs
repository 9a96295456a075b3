//! The backend role: `vipd decap attach` pins vip_decap on an interface (it stays after
//! the command exits), `vipd decap detach` removes it; errors say what to fix.

use std::path::Path;

use vip_tests::lab::{
    LabError, cmd,
    netns::{self, Netns},
    workspace_binary,
};

/// A namespace holding the veth pair `vd0`/`vd1`, and the vip_decap pin instance the
/// test attaches with; detached and removed on drop (also when the test fails).
struct Backend {
    instance: String,
    pin_dir: String,
    netns: Netns,
}

impl Backend {
    fn new() -> Backend {
        let prefix = netns::unique_prefix();
        let instance = format!("{prefix}d");
        let pin_dir = format!("/sys/fs/bpf/vip/{instance}");
        netns::register_pin_dir(&pin_dir);
        let netns = Netns::create(&format!("{prefix}d")).expect("creating the namespace");
        let ns = netns.name();
        cmd::veth(ns, "vd0", ns, "vd1").expect("creating the veth pair");
        cmd::ip(ns, &["link", "set", "vd0", "up"]).expect("setting vd0 up");
        Backend {
            instance,
            pin_dir,
            netns,
        }
    }

    /// `vipd decap ARGS --instance INSTANCE`: its output, or the error it printed.
    fn vipd(&self, args: &[&str]) -> Result<String, LabError> {
        let vipd = workspace_binary("vipd", "vip-user").expect("vipd is built");
        let mut full = vec!["decap"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--instance", &self.instance]);
        cmd::run(&vipd.to_string_lossy(), &full)
    }

    fn link(&self) -> String {
        cmd::ip(self.netns.name(), &["link", "show", "vd0"]).expect("ip link show")
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.vipd(&["detach", "--iface", "vd0"]);
        netns::remove_pin_dir(&self.pin_dir);
    }
}

/// The error a failed command printed (the message vipd gives the operator).
fn refused(result: Result<String, LabError>) -> String {
    match result {
        Err(e @ LabError::Command { .. }) => e.to_string(),
        other => panic!("expected vipd to refuse, got {other:?}"),
    }
}

#[test]
fn decap_attach_survives_the_command_and_detach_removes_it() {
    if !vip_tests::privileged::require_root(
        "decap_attach_survives_the_command_and_detach_removes_it",
    ) {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let b = Backend::new();
    let ns = b.netns.name();
    // No address and none given: the error says what to pass.
    let out = refused(b.vipd(&["attach", "--iface", "vd0", "--netns", ns]));
    assert!(out.contains("pass --local ADDR"), "{out}");
    let out = refused(b.vipd(&[
        "attach",
        "--iface",
        "nope0",
        "--netns",
        ns,
        "--local",
        "198.18.2.1",
    ]));
    assert!(out.contains("interface nope0 does not exist"), "{out}");
    cmd::ip(ns, &["addr", "add", "198.18.2.1/24", "dev", "vd0"]).expect("adding an address");
    let out = b
        .vipd(&[
            "attach",
            "--iface",
            "vd0",
            "--netns",
            ns,
            "--xdp-mode",
            "generic",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.contains("attached on vd0, decapsulating for 198.18.2.1"),
        "{out}"
    );
    let link = b.link();
    assert!(
        link.contains("prog/xdp") && link.contains("vip_decap"),
        "{link}"
    );
    // Attaching again adopts the pinned link.
    let out = b
        .vipd(&[
            "attach",
            "--iface",
            "vd0",
            "--netns",
            ns,
            "--local",
            "198.18.2.9",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("re-attached"), "{out}");
    let out = b
        .vipd(&["detach", "--iface", "vd0"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("detached from vd0"), "{out}");
    let link = b.link();
    assert!(!link.contains("prog/xdp"), "{link}");
    assert!(!Path::new(&b.pin_dir).join("decap").exists());
    let out = b
        .vipd(&["detach", "--iface", "vd0"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("was not attached"), "{out}");
}
