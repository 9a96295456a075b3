//! Bad traffic: a burst of malformed and non-VIP packets sent straight at the LB node's
//! interface breaks no connection, and each kind is counted under its reason.

use std::{net::SocketAddr, time::Duration};

use vip_tests::{
    lab::{LabSpec, LbNode, Mode, client::LongLived, inject, vipd::HealthConfig, viplab::VipLab},
    packet::{self, L4},
};

const ETH: usize = 14;

/// A burst of each kind, `n` times, from the router to LB node 0.
fn burst(
    router_mac: [u8; 6],
    lb_mac: [u8; 6],
    vip4: SocketAddr,
    vip6: SocketAddr,
    n: usize,
) -> Vec<Vec<u8>> {
    let client: SocketAddr = "198.18.10.2:40000".parse().expect("literal");
    let client6: SocketAddr = "[2001:db8:10::2]:40000".parse().expect("literal");
    let not_vip: SocketAddr = "198.18.1.10:9".parse().expect("literal");
    let mut kinds: Vec<Vec<u8>> = Vec::new();
    // TCP to the VIP with a data offset of 2 words (less than the header itself).
    let mut f = packet::frame(client, vip4, L4::Tcp { syn: true }, b"");
    f[ETH + 20 + 12] = 2 << 4;
    kinds.push(f);
    // TCP to the VIP cut short inside its header.
    let f = packet::frame(client, vip4, L4::Tcp { syn: true }, b"");
    kinds.push(f[..ETH + 20 + 8].to_vec());
    // IPv6 TCP to the VIP cut short inside its header.
    let f = packet::frame(client6, vip6, L4::Tcp { syn: true }, b"");
    kinds.push(f[..ETH + 40 + 6].to_vec());
    // A non-first fragment to the VIP (no ports to hash on).
    let mut f = packet::frame(client, vip4, L4::Udp, b"fragment payload");
    f[ETH + 6] = 0x00;
    f[ETH + 7] = 0x10; // fragment offset 16 (x8 bytes)
    kinds.push(f);
    // IPv4 header length 4 words (below the minimum).
    let mut f = packet::frame(client, vip4, L4::Udp, b"bad ihl");
    f[ETH] = 0x44;
    kinds.push(f);
    // Not for a VIP: UDP to the LB node's own address.
    kinds.push(packet::frame(client, not_vip, L4::Udp, b"not a vip"));
    // A VIP address on a port with no VIP.
    kinds.push(packet::frame(
        client,
        SocketAddr::new(vip4.ip(), 81),
        L4::Tcp { syn: true },
        b"",
    ));
    // Not IP at all (an experimental ethertype), and a runt.
    let mut f = packet::frame(client, vip4, L4::Udp, b"not ip");
    f[12] = 0x88;
    f[13] = 0xb5;
    kinds.push(f);
    kinds.push(vec![0u8; 14]);
    let mut out = Vec::new();
    for _ in 0..n {
        for k in &kinds {
            let mut f = k.clone();
            if f.len() >= 12 {
                f[..6].copy_from_slice(&lb_mac);
                f[6..12].copy_from_slice(&router_mac);
            }
            out.push(f);
        }
    }
    out
}

fn bad_traffic(mode: Mode) {
    let scenario = format!("bad traffic, {}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let vl = VipLab::start(LabSpec::new(3, mode), |lab| {
        vec![
            lab.vip_config(false, "tcp", &[0, 1, 2], HealthConfig::none()),
            lab.vip_config(true, "tcp", &[0, 1, 2], HealthConfig::none()),
        ]
    })
    .unwrap_or_else(|e| panic!("{scenario}: building the lab: {e}"));
    let lab = &vl.lab;
    let before = vl.vipds[0]
        .reason_counts()
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let pause = Duration::from_millis(50);
    let limit = Duration::from_secs(60);
    let ns = lab.client_netns(0);
    let long4 = LongLived::start(ns, lab.vip4(), 50, 1, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let long6 = LongLived::start(ns, lab.vip6(), 50, 1, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let router_mac = inject::mac_of(lab.router_netns(), "eth0").expect("router MAC");
    let lb_mac = inject::mac_of(lab.lb_nodes[0].netns(), LbNode::IFACE).expect("LB MAC");
    let frames = burst(router_mac, lb_mac, lab.vip4(), lab.vip6(), 200);
    let total = frames.len();
    let sent = inject::send_frames(lab.router_netns(), "eth0", frames).expect("sending the burst");
    assert_eq!(
        sent, total,
        "{scenario}: every frame of the burst must be sent"
    );
    std::thread::sleep(Duration::from_millis(500));
    let after = vl.vipds[0]
        .reason_counts()
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let delta = |r: &str| after.get(r).copied().unwrap_or(0) - before.get(r).copied().unwrap_or(0);
    eprintln!(
        "{scenario}: sent {sent} bad frames; counted drop_malformed +{}, drop_fragment +{}, pass_malformed +{}, pass_not_vip +{}",
        delta("drop_malformed"),
        delta("drop_fragment"),
        delta("pass_malformed"),
        delta("pass_not_vip")
    );
    for (reason, at_least) in [
        ("drop_malformed", 600),
        ("drop_fragment", 200),
        ("pass_not_vip", 400),
    ] {
        assert!(
            delta(reason) >= at_least,
            "{scenario}: expected reason {reason} to count at least {at_least} of the burst, got {} (all: {after:?})",
            delta(reason)
        );
    }
    for (family, long) in [("IPv4", long4), ("IPv6", long6)] {
        let report = long.finish();
        assert!(
            report.broken().is_empty(),
            "{scenario}, {family}: no connection may break during the burst: {}",
            report.describe_broken()
        );
    }
}

#[test]
#[ignore = "needs `vipd run` and `vipctl` from the control plane (branch cp), not merged yet"]
fn lab_bad_traffic_tunnel() {
    if !vip_tests::privileged::require_root("lab_bad_traffic_tunnel") {
        return;
    }
    bad_traffic(Mode::Tunnel);
}

#[test]
#[ignore = "needs `vipd run` and `vipctl` from the control plane (branch cp), not merged yet"]
fn lab_bad_traffic_dsr_l2() {
    if !vip_tests::privileged::require_root("lab_bad_traffic_dsr_l2") {
        return;
    }
    bad_traffic(Mode::DsrL2);
}
