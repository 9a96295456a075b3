//! Stickiness: 200 long-lived TCP connections keep working (0 resets, every byte echoed)
//! while other backends are added, removed, drained and re-weighted.

use std::time::Duration;

use vip_tests::lab::{
    LabSpec, Mode,
    client::LongLived,
    vipd::HealthConfig,
    viplab::{VipLab, vip_id},
};

fn sticky(mode: Mode, v6: bool) {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let scenario = format!("stickiness, {}, {family}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    // b1..b3 serve at first; b4 and b5 come and go.
    let vl = VipLab::start(LabSpec::new(5, mode), |lab| {
        vec![lab.vip_config(v6, "tcp", &[0, 1, 2], HealthConfig::none())]
    })
    .unwrap_or_else(|e| panic!("{scenario}: building the lab: {e}"));
    let vip = if v6 { vl.lab.vip6() } else { vl.lab.vip4() };
    let id = vip_id(vip, "tcp");
    let long = LongLived::start(
        vl.lab.client_netns(0),
        vip,
        200,
        4,
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let pause = || std::thread::sleep(Duration::from_millis(400));
    pause();
    vl.add_backend(&scenario, &id, 3, v6, 1);
    pause();
    vl.add_backend(&scenario, &id, 4, v6, 2);
    pause();
    vl.set_weight(&scenario, &id, 0, v6, 3);
    pause();
    vl.set_state(&scenario, &id, 1, v6, "drain");
    pause();
    vl.remove_backend(&scenario, &id, 3, v6);
    pause();
    vl.set_state(&scenario, &id, 1, v6, "ready");
    vl.set_weight(&scenario, &id, 4, v6, 5);
    pause();
    let report = long.finish();
    let (sent, echoed) = report.bytes();
    eprintln!(
        "{scenario}: {} connections per backend {:?}, {} broken, {sent} bytes sent, {echoed} echoed",
        report.conns.len(),
        report.per_backend(),
        report.broken().len()
    );
    assert!(
        report.broken().is_empty(),
        "{scenario}: expected 0 broken connections, got {}: {}",
        report.broken().len(),
        report.describe_broken()
    );
    assert_eq!(sent, echoed, "{scenario}: every byte sent must come back");
    assert!(
        report.conns.iter().all(|c| c.echoed > 64 * 5),
        "{scenario}: every connection must have echoed through all changes"
    );
}

#[test]
fn lab_stickiness_tunnel_v4() {
    if !vip_tests::privileged::require_root("lab_stickiness_tunnel_v4") {
        return;
    }
    sticky(Mode::Tunnel, false);
}

#[test]
fn lab_stickiness_dsr_l2_v6() {
    if !vip_tests::privileged::require_root("lab_stickiness_dsr_l2_v6") {
        return;
    }
    sticky(Mode::DsrL2, true);
}
