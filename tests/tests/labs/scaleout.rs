//! Scale-out: two LB nodes with the same config behind a router that spreads flows by
//! ECMP (multipath route, L4 hash: fib_multipath_hash_policy=1). When one node is taken
//! out of the route, its flows move to the other and keep working with 0 resets: the
//! other node has no connection-table entry for them, so this holds only because both
//! nodes' consistent hash picks the same backend for every flow.

use std::time::Duration;

use vip_tests::lab::{LabSpec, Mode, client::LongLived, vipd::HealthConfig, viplab::VipLab};

fn scale_out(mode: Mode) {
    let scenario = format!("scale-out, {}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let mut spec = LabSpec::new(4, mode);
    spec.lb_nodes = 2;
    let vl = VipLab::start(spec, |lab| {
        vec![
            lab.vip_config(false, "tcp", &[0, 1, 2, 3], HealthConfig::none()),
            lab.vip_config(true, "tcp", &[0, 1, 2, 3], HealthConfig::none()),
        ]
    })
    .unwrap_or_else(|e| panic!("{scenario}: building the lab: {e}"));
    let lab = &vl.lab;
    let ns = lab.client_netns(0);
    let pause = Duration::from_millis(50);
    let limit = Duration::from_secs(60);
    let long4 = LongLived::start(ns, lab.vip4(), 100, 2, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let long6 = LongLived::start(ns, lab.vip6(), 100, 2, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let rx = |i| lab.lb_rx_packets(i).expect("reading LB rx counters");
    let before = (rx(0), rx(1));
    std::thread::sleep(Duration::from_secs(1));
    let during = (rx(0) - before.0, rx(1) - before.1);
    eprintln!(
        "{scenario}: packets in 1 s with both nodes: node0 {}, node1 {}",
        during.0, during.1
    );
    assert!(
        during.0 > 200 && during.1 > 200,
        "{scenario}: ECMP must send flows to both LB nodes (node0 {}, node1 {} packets)",
        during.0,
        during.1
    );
    lab.withdraw_lb_node(1)
        .expect("withdrawing LB node 1 from the router");
    std::thread::sleep(Duration::from_millis(300));
    let before = (rx(0), rx(1));
    std::thread::sleep(Duration::from_secs(1));
    let after = (rx(0) - before.0, rx(1) - before.1);
    eprintln!(
        "{scenario}: packets in 1 s after withdrawing node1: node0 {}, node1 {}",
        after.0, after.1
    );
    assert!(
        after.1 < 20,
        "{scenario}: node1 must get no traffic once withdrawn ({} packets)",
        after.1
    );
    for (family, long) in [("IPv4", long4), ("IPv6", long6)] {
        let report = long.finish();
        eprintln!(
            "{scenario}, {family}: {} connections {:?}, broken after the move: {}",
            report.conns.len(),
            report.per_backend(),
            report.broken().len()
        );
        assert!(
            report.broken().is_empty(),
            "{scenario}, {family}: flows moved from node1 to node0 must keep their backend (0 broken): {}",
            report.describe_broken()
        );
    }
}

#[test]
fn lab_scale_out_tunnel() {
    if !vip_tests::privileged::require_root("lab_scale_out_tunnel") {
        return;
    }
    scale_out(Mode::Tunnel);
}

#[test]
fn lab_scale_out_dsr_l2() {
    if !vip_tests::privileged::require_root("lab_scale_out_dsr_l2") {
        return;
    }
    scale_out(Mode::DsrL2);
}
