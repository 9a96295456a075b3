//! The lab itself, checked with a balancer that needs none of vip: an nftables DNAT
//! baseline (the one the benchmarks compare against). Proves the topology, the backend
//! server and the clients before any vip test depends on them.

use std::time::Duration;

use vip_tests::lab::{
    Balancer, Lab, LabSpec, Mode,
    client::{self, LongLived, Proto},
};

#[test]
fn lab_nftables_dnat_round_robin_over_three_backends() {
    if !vip_tests::privileged::require_root("lab_nftables_dnat_round_robin_over_three_backends") {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut spec = LabSpec::new(3, Mode::DsrL2);
    spec.balancer = Balancer::NftDnat;
    let lab = Lab::build(spec).expect("building the nftables lab");
    let ns = lab.client_netns(0).to_string();
    for (vip, proto) in [
        (lab.vip4(), Proto::Tcp),
        (lab.vip6(), Proto::Tcp),
        (lab.vip4(), Proto::Udp),
        (lab.vip6(), Proto::Udp),
    ] {
        let s = client::spread(&ns, vip, proto, 30, 1, Duration::from_secs(30)).expect("spread");
        assert!(
            s.failures.is_empty(),
            "nftables lab, {proto:?} {vip}: expected every request answered, got failures {:?}",
            s.failures
        );
        for b in &lab.backends {
            // numgen inc: exact round robin (UDP retries could shift one).
            let got = s.count(&b.name);
            assert!(
                (9..=11).contains(&got),
                "nftables lab, {proto:?} {vip}: backend {} expected 10 of 30, got {got} ({s})",
                b.name
            );
        }
    }
    let long = LongLived::start(
        &ns,
        lab.vip4(),
        20,
        2,
        Duration::from_millis(20),
        Duration::from_secs(20),
    )
    .expect("opening long-lived connections");
    std::thread::sleep(Duration::from_millis(500));
    let report = long.finish();
    assert!(
        report.broken().is_empty(),
        "nftables lab: expected no broken long-lived connection: {}",
        report.describe_broken()
    );
    let (sent, echoed) = report.bytes();
    assert!(
        sent > 0 && sent == echoed,
        "every byte echoed: sent {sent}, echoed {echoed}"
    );
}

#[test]
fn lab_nftables_direct_routing_keeps_flows_and_answers_directly() {
    if !vip_tests::privileged::require_root(
        "lab_nftables_direct_routing_keeps_flows_and_answers_directly",
    ) {
        return;
    }
    let _serial = vip_tests::lab::serial();
    let mut spec = LabSpec::new(3, Mode::DsrL2);
    spec.balancer = Balancer::NftDsrL2;
    let lab = Lab::build(spec).expect("building the nftables direct-routing lab");
    let ns = lab.client_netns(0).to_string();
    for (vip, proto) in [
        (lab.vip4(), Proto::Tcp),
        (lab.vip6(), Proto::Tcp),
        (lab.vip4(), Proto::Udp),
        (lab.vip6(), Proto::Udp),
    ] {
        let s = client::spread(&ns, vip, proto, 150, 2, Duration::from_secs(30)).expect("spread");
        assert!(
            s.failures.is_empty(),
            "nftables direct routing, {proto:?} {vip}: expected every request answered (replies return from the backends through the router), got failures {:?}",
            &s.failures[..s.failures.len().min(5)]
        );
        for b in &lab.backends {
            assert!(
                s.count(&b.name) > 10,
                "nftables direct routing, {proto:?} {vip}: backend {} expected a share of 150 flows, got {} ({s})",
                b.name,
                s.count(&b.name)
            );
        }
    }
    // A flow hash keeps each connection on its backend for its whole life.
    let long = LongLived::start(
        &ns,
        lab.vip6(),
        30,
        2,
        Duration::from_millis(20),
        Duration::from_secs(20),
    )
    .expect("opening long-lived connections");
    std::thread::sleep(Duration::from_millis(500));
    let report = long.finish();
    assert!(
        report.broken().is_empty(),
        "nftables direct routing: expected no broken long-lived connection: {}",
        report.describe_broken()
    );
}
