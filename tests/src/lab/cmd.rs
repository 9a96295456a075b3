//! A thin typed wrapper over the operator's tools (`ip`, `ethtool`, `nft`, `sysctl`).
//!
//! Why commands and not a netlink crate: the lab should be built exactly the way an
//! operator would build it, with the commands the README shows, so a failing step can be
//! copied from the error and run by hand; the tools are always on the machine (xtask
//! setup installs `iproute2`, `ethtool`, `nftables`), and no extra crate has to be
//! audited and kept within the workspace's rust-version. The cost (a fork per step) is a
//! few milliseconds and a lab has about a hundred steps.

use std::process::{Command, Output};

use super::LabError;

/// Runs `program args...` in the host namespace and fails with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn {
            command: describe(program, args),
            source,
        })?;
    check(program, args, out)
}

/// Runs `program args...` inside network namespace `netns` (`ip netns exec`).
pub fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<String, LabError> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// `ip -n NETNS args...`: an iproute2 command acting inside a namespace.
pub fn ip(netns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut full = vec!["-n", netns];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// A veth pair: `ifname` in namespace `ns`, its peer `peer` in `peer_ns` (which may be
/// `ns` itself). Both ends start down.
pub fn veth(ns: &str, ifname: &str, peer_ns: &str, peer: &str) -> Result<(), LabError> {
    ip(
        ns,
        &[
            "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", peer_ns,
        ],
    )
    .map(|_| ())
}

/// Sets a sysctl inside a namespace (`net.*` sysctls are per namespace).
pub fn sysctl(netns: &str, key: &str, value: &str) -> Result<(), LabError> {
    run_in(netns, "sysctl", &["-qw", &format!("{key}={value}")]).map(|_| ())
}

/// `ethtool args...` inside a namespace.
pub fn ethtool(netns: &str, args: &[&str]) -> Result<String, LabError> {
    run_in(netns, "ethtool", args)
}

/// Loads an nftables ruleset (`nft -f -` with the text on stdin) inside a namespace.
pub fn nft(netns: &str, ruleset: &str) -> Result<(), LabError> {
    use std::io::Write;
    let args = ["netns", "exec", netns, "nft", "-f", "-"];
    let mut child = Command::new("ip")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: describe("ip", &args),
            source,
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(ruleset.as_bytes())
        .map_err(|source| LabError::Spawn {
            command: describe("ip", &args),
            source,
        })?;
    let out = child.wait_with_output().map_err(|source| LabError::Spawn {
        command: describe("ip", &args),
        source,
    })?;
    check("ip", &args, out).map(|_| ()).map_err(|e| match e {
        LabError::Command {
            command,
            status,
            stderr,
        } => LabError::Command {
            command,
            status,
            stderr: format!("{stderr}\nruleset:\n{ruleset}"),
        },
        other => other,
    })
}

fn check(program: &str, args: &[&str], out: Output) -> Result<String, LabError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command: describe(program, args),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The command line as an operator would type it (for error messages).
pub fn describe(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}
