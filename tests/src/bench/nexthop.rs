//! Section 1c: what the next-hop choice costs. The datapath either reads the backend's
//! next hop from a cache that user space fills (NEXTHOPS) or asks the kernel with
//! `bpf_fib_lookup` for every packet; this section's figure is why the datapath reads the
//! cache first and keeps the lookup as its fallback. `bpf_fib_lookup` needs a real
//! ingress interface with routes and neighbours, so this section runs in a network
//! namespace of its own: one veth pair, the backends' prefixes on it, permanent
//! neighbour entries, forwarding on.

use std::{fs::File, os::fd::AsRawFd, process::Command, sync::atomic::Ordering};

use anyhow::{Context, Result, bail, ensure};

use super::{
    datapath::DEFAULT_SETUP,
    lbsetup::{self, BACKENDS_PER_FAMILY, Setup, backend_addr},
    packets,
    per_packet::Floors,
    report::{NS_PER_PACKET, Report},
    testrun::{Case, INGRESS_IFINDEX, Method, interleaved, run_once},
};
use crate::fixture::action;

/// Section title.
pub const SECTION: &str = "1c. next hop: cached vs bpf_fib_lookup per packet";

/// A namespace this thread has entered; leaving it (drop) returns the thread to where
/// it was and deletes the namespace.
struct BenchNetns {
    name: String,
    home: File,
}

impl BenchNetns {
    fn create() -> Result<Self> {
        let name = format!("vipbench{}", std::process::id());
        let home = File::open("/proc/self/task/self/ns/net")
            .or_else(|_| File::open("/proc/thread-self/ns/net"))
            .context("opening this thread's network namespace")?;
        ip(&["netns", "add", &name])?;
        let ns = BenchNetns { name, home };
        let n = ns.name.clone();
        let run = |args: &[&str]| -> Result<()> {
            let mut full = vec!["-n", n.as_str()];
            full.extend_from_slice(args);
            ip(&full)
        };
        run(&["link", "add", "vb0", "type", "veth", "peer", "name", "vb1"])?;
        run(&["link", "set", "vb0", "up"])?;
        run(&["link", "set", "vb1", "up"])?;
        run(&["addr", "add", "198.19.0.254/24", "dev", "vb0"])?;
        run(&["addr", "add", "2001:db8:1::fe/64", "dev", "vb0", "nodad"])?;
        for i in 0..BACKENDS_PER_FAMILY {
            for v6 in [false, true] {
                let addr = backend_addr(i, v6).ip().to_string();
                let mac = format!("02:00:00:00:01:{i:02x}");
                run(&[
                    "neigh",
                    "add",
                    &addr,
                    "lladdr",
                    &mac,
                    "dev",
                    "vb0",
                    "nud",
                    "permanent",
                ])?;
            }
        }
        let status = Command::new("ip")
            .args(["netns", "exec", &ns.name, "sysctl", "-qw"])
            .args([
                "net.ipv4.conf.all.forwarding=1",
                "net.ipv6.conf.all.forwarding=1",
            ])
            .status()
            .context("running sysctl")?;
        ensure!(
            status.success(),
            "enabling forwarding in {} failed",
            ns.name
        );
        let target = File::open(format!("/run/netns/{}", ns.name))
            .with_context(|| format!("opening /run/netns/{}", ns.name))?;
        // SAFETY: valid fd and namespace type; affects only this thread.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("entering {}: {}", ns.name, std::io::Error::last_os_error());
        }
        Ok(ns)
    }
}

impl Drop for BenchNetns {
    fn drop(&mut self) {
        INGRESS_IFINDEX.store(0, Ordering::Relaxed);
        // SAFETY: as in create.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Measures the tunnel and dsr-l2 established paths with and without the next-hop cache.
pub fn run(report: &mut Report, method: Method, floors: Option<Floors>) -> Result<()> {
    let _ns = BenchNetns::create().context("preparing the next-hop namespace")?;
    let ifindex: u32 = std::fs::read_to_string("/sys/class/net/vb0/ifindex")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| {
            // /sys shows the namespace it was mounted in; ask the kernel by name instead.
            let c = std::ffi::CString::new("vb0").ok()?;
            // SAFETY: a valid C string.
            Some(unsafe { libc::if_nametoindex(c.as_ptr()) })
        })
        .filter(|i| *i != 0)
        .context("finding vb0's interface index")?;
    INGRESS_IFINDEX.store(ifindex, Ordering::Relaxed);
    let client = packets::client_v4();
    let cases = |label: &str| {
        vec![
            Case {
                name: format!("tunnel: TCP established, {label}"),
                prog: "bench_lb",
                packet: packets::tcp_v4(client),
                verdict: action::TX,
            },
            Case {
                name: format!("tunnel: IPv6 TCP established, {label}"),
                prog: "bench_lb",
                packet: packets::tcp_v6(),
                verdict: action::TX,
            },
            Case {
                name: format!("dsr-l2: TCP established, {label}"),
                prog: "bench_lb",
                packet: packets::tcp_dsr_v4(client),
                verdict: action::TX,
            },
        ]
    };
    for (label, resolved) in [("next hop cached", true), ("bpf_fib_lookup", false)] {
        let mut ebpf = lbsetup::load(Setup {
            resolved_nexthops: resolved,
            ..DEFAULT_SETUP
        })?;
        let mut cs = vec![Case {
            name: "floor: parse + IPIP encap + XDP_TX".into(),
            prog: "bench_encap",
            packet: packets::tcp_v4(client),
            verdict: action::TX,
        }];
        cs.extend(cases(label));
        for c in &cs[1..] {
            let (v, _) = run_once(&mut ebpf, "bench_lb_once", &c.packet)?;
            ensure!(
                v == action::TX,
                "{}: the datapath answered {} (want XDP_TX): the next hop did not resolve",
                c.name,
                action::name(v)
            );
        }
        let t = interleaved(&mut ebpf, &cs, method)?;
        for (c, tt) in cs.iter().zip(&t).skip(1) {
            let r = report.push(SECTION, c.name.clone(), NS_PER_PACKET, *tt);
            r.ratios
                .push(("encap floor (same run)".into(), tt.median / t[0].median));
            if let Some(f) = floors {
                r.ratios
                    .push(("pass floor (section 0)".into(), tt.median / f.pass));
            }
            r.note = format!("ingress vb0 (ifindex {ifindex}) in a bench namespace");
        }
    }
    Ok(())
}
