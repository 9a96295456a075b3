//! The backend role: `vipd decap attach` pins vip_decap on an interface (it stays after
//! the command exits), `vipd decap detach` removes it; errors say what to fix.

use std::process::Command;

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

struct Ns {
    name: String,
    instance: String,
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = vipd(&[
            "decap",
            "detach",
            "--iface",
            "vd0",
            "--instance",
            &self.instance,
        ]);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn vipd(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn decap_attach_survives_the_command_and_detach_removes_it() {
    if !require_root("decap_attach_survives_the_command_and_detach_removes_it") {
        return;
    }
    let ns = Ns {
        name: format!("vipdecap{}", std::process::id()),
        instance: format!("vd{}", std::process::id()),
    };
    ip(&["netns", "add", &ns.name]);
    ip(&[
        "-n", &ns.name, "link", "add", "vd0", "type", "veth", "peer", "name", "vd1",
    ]);
    ip(&["-n", &ns.name, "link", "set", "vd0", "up"]);
    // No address and none given: the error says what to pass.
    let (ok, out) = vipd(&[
        "decap",
        "attach",
        "--iface",
        "vd0",
        "--instance",
        &ns.instance,
        "--netns",
        &ns.name,
    ]);
    assert!(!ok && out.contains("pass --local ADDR"), "{out}");
    let (ok, out) = vipd(&[
        "decap",
        "attach",
        "--iface",
        "nope0",
        "--instance",
        &ns.instance,
        "--netns",
        &ns.name,
        "--local",
        "198.18.2.1",
    ]);
    assert!(
        !ok && out.contains("interface nope0 does not exist"),
        "{out}"
    );
    ip(&["-n", &ns.name, "addr", "add", "198.18.2.1/24", "dev", "vd0"]);
    let (ok, out) = vipd(&[
        "decap",
        "attach",
        "--iface",
        "vd0",
        "--instance",
        &ns.instance,
        "--netns",
        &ns.name,
        "--xdp-mode",
        "generic",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("attached on vd0, decapsulating for 198.18.2.1"),
        "{out}"
    );
    let link = ip(&["-n", &ns.name, "link", "show", "vd0"]);
    assert!(
        link.contains("prog/xdp") && link.contains("vip_decap"),
        "{link}"
    );
    // Attaching again adopts the pinned link.
    let (ok, out) = vipd(&[
        "decap",
        "attach",
        "--iface",
        "vd0",
        "--instance",
        &ns.instance,
        "--netns",
        &ns.name,
        "--local",
        "198.18.2.9",
    ]);
    assert!(ok && out.contains("re-attached"), "{out}");
    let (ok, out) = vipd(&[
        "decap",
        "detach",
        "--iface",
        "vd0",
        "--instance",
        &ns.instance,
    ]);
    assert!(ok && out.contains("detached from vd0"), "{out}");
    let link = ip(&["-n", &ns.name, "link", "show", "vd0"]);
    assert!(!link.contains("prog/xdp"), "{link}");
    assert!(
        !std::path::Path::new("/sys/fs/bpf/vip")
            .join(&ns.instance)
            .join("decap")
            .exists()
    );
    let (ok, out) = vipd(&[
        "decap",
        "detach",
        "--iface",
        "vd0",
        "--instance",
        &ns.instance,
    ]);
    assert!(ok && out.contains("was not attached"), "{out}");
}
