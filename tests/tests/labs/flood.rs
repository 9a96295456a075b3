//! Flood: established keep-alive connections through a real vipd with a small connection
//! table (`max_conns = 4096`) keep their backend while a flood of new flows from random
//! sources goes through the LB node, even when their backend is drained during the flood
//! (its flows no longer hash to it, so a flow the table lost would be reset). A lab test
//! found 17 of 40 such connections reset when a SYN flood could evict them; before flows
//! pinned by a packet that missed were put on probation, an ACK flood reset every
//! connection of the drained backend here.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use vip_tests::{
    lab::{
        LabSpec, LbNode, Mode,
        client::LongLived,
        inject,
        vipd::{HealthConfig, LimitsConfig},
        viplab::{VipLab, vip_id},
    },
    packet::{self, L4},
};

/// Keep-alive connections.
const CONNS: usize = 40;
/// Pause between two requests of a connection.
const PAUSE: Duration = Duration::from_millis(200);
/// The connection table's entries (as the lab test of the report).
const MAX_CONNS: u32 = 4096;
/// Flood frames: about 70 times the table's capacity.
const FLOOD: u32 = 300_000;

/// The `i`th flood source: 198.19.0.0/16 (no lab address) and a port, spread by a
/// multiplicative hash so every frame is a flow never seen.
fn flood_source(i: u32) -> SocketAddr {
    let x = i.wrapping_mul(2_654_435_761);
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(198, 19, (x >> 24) as u8, (x >> 16) as u8)),
        (x & 0xffff) as u16 | 1024,
    )
}

/// The flood: `FLOOD` frames of `l4` from distinct random sources to `vip`, addressed
/// from the router to LB node 0 on the shared segment.
fn flood_frames(vl: &VipLab, vip: SocketAddr, l4: L4) -> Vec<Vec<u8>> {
    let lab = &vl.lab;
    let router_mac = inject::mac_of(lab.router_netns(), "eth0").expect("router MAC");
    let lb_mac = inject::mac_of(lab.lb_nodes[0].netns(), LbNode::IFACE).expect("LB MAC");
    (0..FLOOD)
        .map(|i| {
            let mut f = packet::frame(flood_source(i), vip, l4, b"");
            f[..6].copy_from_slice(&lb_mac);
            f[6..12].copy_from_slice(&router_mac);
            f
        })
        .collect()
}

/// The VIP's new-flow count and the table's filled entries, from vipd.
fn counters(vl: &VipLab, scenario: &str) -> (u64, u64) {
    let s = vl.vipds[0]
        .status()
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let new_flows = s.vips.iter().map(|v| v.new_flows).sum();
    (new_flows, s.conns)
}

/// `CONNS` keep-alive connections; the backend of the first is drained (`vipctl backend
/// set --state drain`) while `flood` (if any) goes through; every connection must keep
/// working, on its backend, to the end.
fn flood_drain(flood: Option<L4>) {
    let what = match flood {
        None => "no flood",
        Some(L4::Tcp { syn: true }) => "SYN flood",
        Some(L4::Tcp { syn: false }) => "ACK flood",
        Some(L4::Udp) => "UDP flood",
    };
    let scenario = format!("flood, {what}, drain during it");
    let _serial = vip_tests::lab::serial();
    let limits = LimitsConfig {
        max_conns: MAX_CONNS,
        ..LimitsConfig::default()
    };
    let vl = VipLab::start_with_limits(LabSpec::new(3, Mode::Tunnel), limits, |lab| {
        vec![lab.vip_config(false, "tcp", &[0, 1, 2], HealthConfig::none())]
    })
    .unwrap_or_else(|e| panic!("{scenario}: building the lab: {e}"));
    let vip = vl.lab.vip4();
    let frames = flood.map(|l4| flood_frames(&vl, vip, l4));
    let ns = vl.lab.client_netns(0).to_string();
    let long = LongLived::start(&ns, vip, CONNS, 2, PAUSE, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let drained = long.backends[0].clone();
    let on_drained = long.backends.iter().filter(|b| **b == drained).count();
    let j = vl
        .lab
        .backend_index(&drained)
        .unwrap_or_else(|| panic!("{scenario}: unknown backend {drained}"));
    let capacity = vl.vipds[0]
        .status()
        .unwrap_or_else(|e| panic!("{scenario}: {e}"))
        .conn_capacity;
    let (flows0, fills0) = counters(&vl, &scenario);
    let router = vl.lab.router_netns().to_string();
    let start = Instant::now();
    let sender = frames.map(|frames| {
        std::thread::spawn(move || {
            let sent = inject::send_frames(&router, "eth0", frames);
            (sent, start.elapsed())
        })
    });
    // Drain while the flood goes through (it lasts a few seconds).
    std::thread::sleep(Duration::from_millis(300));
    vl.set_state(&scenario, &vip_id(vip, "tcp"), j, false, "drain");
    let flood_took = sender.map(|s| {
        let (sent, took) = s.join().expect("flood thread");
        let sent = sent.unwrap_or_else(|e| panic!("{scenario}: sending the flood: {e}"));
        assert_eq!(sent, FLOOD as usize, "{scenario}: flood frames sent");
        took
    });
    // A few more rounds of every connection after the flood.
    std::thread::sleep(Duration::from_secs(1));
    let report = long.finish();
    let (flows1, fills1) = counters(&vl, &scenario);
    let flood_flows = flows1 - flows0;
    eprintln!(
        "{scenario}: {on_drained} of {CONNS} connections on drained {drained}; flood of \
         {flood_flows} new flows in {flood_took:?} (table capacity {capacity}); table \
         fills {fills0} -> {fills1}; broken: {}; per backend {:?}",
        report.broken().len(),
        report.per_backend()
    );
    if let Some(took) = flood_took {
        // The flood really went through vip_lb as new flows, fast enough to cycle a table
        // that pinned them between two requests of a connection: this test fails if
        // the flood's flows could evict established ones.
        assert!(
            flood_flows >= 10 * capacity,
            "{scenario}: only {flood_flows} flood flows reached vip_lb (capacity {capacity})"
        );
        let per_pause = flood_flows as f64 * PAUSE.as_secs_f64() / took.as_secs_f64();
        assert!(
            per_pause >= capacity as f64,
            "{scenario}: the flood ({flood_flows} in {took:?}) is too slow to cycle the \
             table between two requests"
        );
    }
    if flood == Some(L4::Tcp { syn: true }) {
        // A SYN pins nothing: the flood took no entry of the table.
        assert!(
            fills1 - fills0 < capacity / 8,
            "{scenario}: the SYN flood filled {} entries",
            fills1 - fills0
        );
    }
    if flood == Some(L4::Tcp { syn: false }) {
        // A packet without SYN that misses is pinned (on probation): the flood did go
        // into the table, filling it, and still replaced no established flow.
        assert!(
            fills1 - fills0 > capacity / 2,
            "{scenario}: the ACK flood filled only {} entries",
            fills1 - fills0
        );
    }
    assert!(on_drained > 0, "{scenario}: no connection on {drained}");
    assert_eq!(
        report.resets(),
        0,
        "{scenario}: resets: {}",
        report.describe_broken()
    );
    assert!(
        report.broken().is_empty(),
        "{scenario}: every connection (incl. {on_drained} on drained {drained}) must keep \
         working on its backend: {}",
        report.describe_broken()
    );
    assert_eq!(
        report.conns.len(),
        CONNS,
        "{scenario}: connections reported"
    );
}

#[test]
fn lab_flood_syn_keeps_established_flows_through_a_drain() {
    if !vip_tests::privileged::require_root("lab_flood_syn_keeps_established_flows_through_a_drain")
    {
        return;
    }
    flood_drain(Some(L4::Tcp { syn: true }));
}

#[test]
fn lab_flood_control_drain_without_flood() {
    if !vip_tests::privileged::require_root("lab_flood_control_drain_without_flood") {
        return;
    }
    flood_drain(None);
}

#[test]
fn lab_flood_ack_keeps_established_flows_through_a_drain() {
    if !vip_tests::privileged::require_root("lab_flood_ack_keeps_established_flows_through_a_drain")
    {
        return;
    }
    flood_drain(Some(L4::Tcp { syn: false }));
}
