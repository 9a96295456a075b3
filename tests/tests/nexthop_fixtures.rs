//! Next hops: `bpf_fib_lookup` (no pinned next hop) and `XDP_REDIRECT` through the devmap,
//! with deterministic MACs: the test thread enters a private network namespace holding a
//! veth with static neighbours, so the kernel's routes and neighbours are the test's own.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use vip_common::{BACKEND_UP, NEXTHOP_F_VALID, NextHop, PROTO_TCP, Reason};
use vip_tests::{
    fixture::{Fixture, Output, action, run_table_on},
    packet::{L4, Outer, frame, sa, tunnelled},
    privileged::require_root,
};
use vip_user::datapath::{
    Datapath, Limits,
    keys::{backend, flow_key, vip_key},
};

static COUNTER: AtomicU32 = AtomicU32::new(0);
const CLONE_NEWNET: i32 = 0x4000_0000;
const NEIGH4_MAC: [u8; 6] = [0x02, 0, 0, 0, 5, 2];
const NEIGH6_MAC: [u8; 6] = [0x02, 0, 0, 0, 5, 3];

unsafe extern "C" {
    fn setns(fd: i32, nstype: i32) -> i32;
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A network namespace with a veth `va` (198.18.5.1/24, 2001:db8:5::1/64) whose
/// neighbours 198.18.5.2 and 2001:db8:5::2 are static; removed on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        let name = format!(
            "vipdp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        let x = |cmd: &str| {
            let mut args = vec!["ip", "netns", "exec", &ns.name];
            args.extend(cmd.split(' '));
            sh(&args)
        };
        x("ip link add va type veth peer name vb");
        x("ip link set lo up");
        x("ip link set va up");
        x("ip link set vb up");
        x("sysctl -qw net.ipv4.conf.all.forwarding=1");
        x("sysctl -qw net.ipv6.conf.all.forwarding=1");
        x("ip addr add 198.18.5.1/24 dev va");
        x("ip -6 addr add 2001:db8:5::1/64 dev va nodad");
        x("ip neigh add 198.18.5.2 lladdr 02:00:00:00:05:02 dev va nud permanent");
        x("ip -6 neigh add 2001:db8:5::2 lladdr 02:00:00:00:05:03 dev va nud permanent");
        ns
    }

    fn exec(&self, cmd: &str) -> String {
        let mut args = vec!["ip", "netns", "exec", &self.name];
        args.extend(cmd.split(' '));
        sh(&args)
    }

    /// Moves the calling thread into the namespace (for `bpf()` calls that resolve
    /// interfaces: devmap inserts, the test run's ingress device, fib lookups).
    fn enter(&self) {
        let f = File::open(format!("/var/run/netns/{}", self.name)).expect("netns file");
        // SAFETY: plain syscall on a valid fd; only this test thread changes namespace.
        let rc = unsafe { setns(f.as_raw_fd(), CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

#[test]
fn fib_lookup_and_devmap_redirect() {
    if !require_root("fib_lookup_and_devmap_redirect") {
        return;
    }
    // Run in a thread of its own: it changes its network namespace for good.
    std::thread::spawn(|| {
        let ns = Netns::new();
        let va_mac = mac(&ns.exec("cat /sys/class/net/va/address"));
        let va_index: u32 = ns.exec("cat /sys/class/net/va/ifindex").parse().unwrap();
        ns.enter();
        let limits = Limits {
            max_vips: 4,
            max_backends: 8,
            table_size: 7,
            max_conns: 64,
        };
        let mut dp = Datapath::load(&limits, None).expect("loading vip_lb");
        let seed = dp.written_global().flow_seed;
        // Backend i serves VIP i - 1 (below).
        dp.set_backend(
            1,
            &backend("198.18.5.2".parse().unwrap(), BACKEND_UP, 1, 0, 0),
        )
        .unwrap();
        dp.set_backend(
            2,
            &backend("2001:db8:5::2".parse().unwrap(), BACKEND_UP, 1, 1, 0),
        )
        .unwrap();
        dp.set_backend(
            3,
            &backend("198.18.6.2".parse().unwrap(), BACKEND_UP, 1, 2, 0),
        )
        .unwrap();
        // Backend 4: pinned next hop out of va.
        dp.set_backend(
            4,
            &backend("198.18.7.2".parse().unwrap(), BACKEND_UP, 1, 3, 0),
        )
        .unwrap();
        let vips = [
            ("198.18.1.10:80", 1u32),
            ("198.18.1.11:80", 2),
            ("198.18.1.12:80", 3),
            ("198.18.1.13:80", 4),
        ];
        for (i, (addr, b)) in vips.iter().enumerate() {
            dp.publish_vip(
                &vip_key(sa(addr), PROTO_TCP),
                i as u32,
                0,
                i as u32,
                &[*b; 7],
            )
            .unwrap();
        }
        let c = "198.18.0.1:40000";
        let f = |vip| frame(sa(c), sa(vip), L4::Tcp { syn: true }, b"");
        let outer = |vip: &str, dst: &str| {
            let th = vip_common::tunnel_hash(vip_common::flow_table_hash(
                &flow_key(sa(c), sa(vip), PROTO_TCP),
                seed,
            ));
            let dst: std::net::IpAddr = dst.parse().unwrap();
            // No global settings written: the outer source prefix is all zeros (and no
            // hash bits for IPv4).
            let src = match dst {
                std::net::IpAddr::V4(_) => std::net::IpAddr::from([0u8; 4]),
                std::net::IpAddr::V6(_) => {
                    let mut o = [0u8; 16];
                    o[12..].copy_from_slice(&th.to_be_bytes());
                    std::net::IpAddr::from(o)
                }
            };
            Outer {
                src,
                dst,
                flow_label: th & 0xfffff,
            }
        };
        // Before the egress is in the devmap, a redirect cannot happen: dropped, counted.
        let no_port = vec![Fixture {
            name: "fib finds va, va not in the devmap",
            input: f("198.18.1.10:80"),
            verdict: action::DROP,
            output: Output::Any,
            reason: Reason::DropNoRoute,
        }];
        run_table_on(&mut dp, &no_port);
        dp.add_tx_port(va_index).unwrap();
        // (Pinning a next hop adds its egress to the devmap too.)
        dp.set_nexthop(
            4,
            &NextHop {
                dst_mac: [2, 0, 0, 0, 7, 2],
                src_mac: va_mac,
                ifindex: va_index,
                flags: NEXTHOP_F_VALID,
            },
        )
        .unwrap();
        let v4 = f("198.18.1.10:80");
        let v6b = f("198.18.1.11:80");
        let pinned = f("198.18.1.13:80");
        let table = vec![
            Fixture {
                name: "fib lookup: neighbour MAC, egress MAC, XDP_REDIRECT",
                input: v4.clone(),
                verdict: action::REDIRECT,
                output: Output::Bytes(tunnelled(
                    &v4,
                    NEIGH4_MAC,
                    va_mac,
                    outer("198.18.1.10:80", "198.18.5.2"),
                )),
                reason: Reason::Forwarded,
            },
            Fixture {
                name: "fib lookup, ipv6 backend (4-in-6)",
                input: v6b.clone(),
                verdict: action::REDIRECT,
                output: Output::Bytes(tunnelled(
                    &v6b,
                    NEIGH6_MAC,
                    va_mac,
                    outer("198.18.1.11:80", "2001:db8:5::2"),
                )),
                reason: Reason::Forwarded,
            },
            Fixture {
                name: "no route to the backend",
                input: f("198.18.1.12:80"),
                verdict: action::DROP,
                output: Output::Any,
                reason: Reason::DropNoRoute,
            },
            Fixture {
                name: "pinned next hop out of another interface: XDP_REDIRECT",
                input: pinned.clone(),
                verdict: action::REDIRECT,
                output: Output::Bytes(tunnelled(
                    &pinned,
                    [2, 0, 0, 0, 7, 2],
                    va_mac,
                    outer("198.18.1.13:80", "198.18.7.2"),
                )),
                reason: Reason::Forwarded,
            },
        ];
        run_table_on(&mut dp, &table);
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}
