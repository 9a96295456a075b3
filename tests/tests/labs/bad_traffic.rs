//! Bad traffic: a burst of malformed and non-VIP packets sent straight at the LB node's
//! interface breaks no connection, and each kind is counted under its reason.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use vip_tests::{
    lab::{LabSpec, LbNode, Mode, client::LongLived, inject, vipd::HealthConfig, viplab::VipLab},
    packet::{self, L4},
};

const ETH: usize = 14;
const REPEAT: usize = 200;

/// One kind of bad frame and the reason vip_lb must count it under.
struct Kind {
    what: &'static str,
    frame: Vec<u8>,
    reason: &'static str,
}

fn kinds(vip4: SocketAddr, vip6: SocketAddr) -> Vec<Kind> {
    let client: SocketAddr = "198.18.10.2:40000".parse().expect("literal");
    let client6: SocketAddr = "[2001:db8:10::2]:40000".parse().expect("literal");
    let mut not_ip = packet::frame(client, vip4, L4::Udp, b"not ip");
    not_ip[12..14].copy_from_slice(&[0x88, 0xb5]);
    vec![
        Kind {
            what: "non-first IPv4 fragment to the VIP",
            frame: packet::ipv4_fragment(
                &packet::frame(client, vip4, L4::Udp, b"fragment payload"),
                false,
                16,
            ),
            reason: "drop_fragment",
        },
        Kind {
            what: "IPv6 extension-header chain longer than the datapath walks",
            frame: packet::with_ipv6_ext(
                &packet::frame(client6, vip6, L4::Tcp { syn: true }, b""),
                &[0, 60, 60, 60, 60, 60, 60, 60, 60, 60],
            ),
            reason: "drop_ipv6_ext",
        },
        Kind {
            what: "UDP to the LB node's own address",
            frame: packet::frame(
                client,
                "198.18.1.10:9".parse().expect("literal"),
                L4::Udp,
                b"x",
            ),
            reason: "pass_not_vip",
        },
        Kind {
            what: "TCP SYN to the VIP address on a port with no VIP",
            frame: packet::frame(
                client,
                SocketAddr::new(vip4.ip(), 81),
                L4::Tcp { syn: true },
                b"",
            ),
            reason: "pass_not_vip",
        },
        Kind {
            what: "an experimental ethertype",
            frame: not_ip,
            reason: "pass_not_vip",
        },
        Kind {
            what: "a runt (Ethernet header only)",
            frame: vec![0u8; ETH],
            reason: "pass_not_vip",
        },
    ]
}

/// IP or transport headers that are malformed: every packet is counted under exactly one
/// reason, these under `pass_malformed` or `drop_malformed`; see
/// `lab_bad_traffic_malformed_headers_counted`.
fn malformed(vip4: SocketAddr, vip6: SocketAddr) -> Vec<Kind> {
    let client: SocketAddr = "198.18.10.2:40000".parse().expect("literal");
    let client6: SocketAddr = "[2001:db8:10::2]:40000".parse().expect("literal");
    let syn = packet::frame(client, vip4, L4::Tcp { syn: true }, b"");
    let mut ihl4 = packet::frame(client, vip4, L4::Udp, b"bad ihl");
    ihl4[ETH] = 0x44;
    let mut long = syn.clone();
    long[ETH + 2..ETH + 4].copy_from_slice(&1500u16.to_be_bytes());
    let mut doff4 = syn.clone();
    doff4[ETH + 20 + 12] = 0x40 | (doff4[ETH + 20 + 12] & 0x0f);
    vec![
        Kind {
            what: "TCP header cut short (IPv4)",
            frame: syn[..ETH + 20 + 8].to_vec(),
            reason: "drop_malformed",
        },
        Kind {
            what: "TCP header cut short (IPv6)",
            frame: packet::frame(client6, vip6, L4::Tcp { syn: true }, b"")[..ETH + 40 + 6]
                .to_vec(),
            reason: "drop_malformed",
        },
        Kind {
            what: "IPv4 header length 4 words",
            frame: ihl4,
            reason: "pass_malformed",
        },
        Kind {
            what: "IPv4 total length beyond the frame, to the VIP address",
            frame: long,
            reason: "drop_malformed",
        },
        Kind {
            what: "TCP data offset 4 words, to the VIP",
            frame: doff4,
            reason: "drop_malformed",
        },
    ]
}

/// Sends each kind `REPEAT` times while 100 long-lived connections echo; checks the
/// reasons and that no connection broke.
fn bad_traffic(mode: Mode, pick: fn(SocketAddr, SocketAddr) -> Vec<Kind>) {
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
    let pause = Duration::from_millis(50);
    let limit = Duration::from_secs(60);
    let ns = lab.client_netns(0);
    let long4 = LongLived::start(ns, lab.vip4(), 50, 1, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let long6 = LongLived::start(ns, lab.vip6(), 50, 1, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let router_mac = inject::mac_of(lab.router_netns(), "eth0").expect("router MAC");
    let lb_mac = inject::mac_of(lab.lb_nodes[0].netns(), LbNode::IFACE).expect("LB MAC");
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let mut problems = Vec::new();
    for kind in pick(lab.vip4(), lab.vip6()) {
        let mut f = kind.frame;
        f[..6].copy_from_slice(&lb_mac);
        f[6..12].copy_from_slice(&router_mac);
        let before = vl.vipds[0]
            .reason_counts()
            .unwrap_or_else(|e| panic!("{scenario}: {e}"));
        let sent = inject::send_frames(lab.router_netns(), "eth0", vec![f; REPEAT])
            .expect("sending a burst");
        assert_eq!(
            sent, REPEAT,
            "{scenario}: every frame of the burst must be sent"
        );
        std::thread::sleep(Duration::from_millis(200));
        let after = vl.vipds[0]
            .reason_counts()
            .unwrap_or_else(|e| panic!("{scenario}: {e}"));
        let delta = after.get(kind.reason).copied().unwrap_or(0)
            - before.get(kind.reason).copied().unwrap_or(0);
        *expected.entry(kind.reason).or_default() += delta;
        // At least the burst (other traffic, e.g. neighbour discovery, may add a few).
        if delta < REPEAT as u64 {
            problems.push(format!(
                "{}: expected {REPEAT} under {}, counted {delta}",
                kind.what, kind.reason
            ));
        }
    }
    eprintln!("{scenario}: {REPEAT} frames of each kind, counted {expected:?}");
    for (family, long) in [("IPv4", long4), ("IPv6", long6)] {
        let report = long.finish();
        eprintln!(
            "{scenario}, {family}: broken connections during the burst: {}",
            report.broken().len()
        );
        assert!(
            report.broken().is_empty(),
            "{scenario}, {family}: no connection may break during the burst: {}",
            report.describe_broken()
        );
    }
    assert!(
        problems.is_empty(),
        "{scenario}: reasons not counted as expected:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn lab_bad_traffic_tunnel() {
    if !vip_tests::privileged::require_root("lab_bad_traffic_tunnel") {
        return;
    }
    bad_traffic(Mode::Tunnel, kinds);
}

#[test]
fn lab_bad_traffic_dsr_l2() {
    if !vip_tests::privileged::require_root("lab_bad_traffic_dsr_l2") {
        return;
    }
    bad_traffic(Mode::DsrL2, kinds);
}

#[test]
fn lab_bad_traffic_malformed_headers_counted() {
    if !vip_tests::privileged::require_root("lab_bad_traffic_malformed_headers_counted") {
        return;
    }
    bad_traffic(Mode::Tunnel, malformed);
}
