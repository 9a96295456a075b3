//! Drain: a drained backend gets no new connections, and its existing connections
//! complete (keep echoing to the end).

use std::time::Duration;

use vip_tests::lab::{
    LabSpec, Mode,
    client::{self, LongLived, Proto},
    vipd::HealthConfig,
    viplab::{VipLab, vip_id},
};

fn drain(mode: Mode, v6: bool) {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let scenario = format!("drain, {}, {family}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let vl = VipLab::start(LabSpec::new(3, mode), |lab| {
        vec![lab.vip_config(v6, "tcp", &[0, 1, 2], HealthConfig::none())]
    })
    .unwrap_or_else(|e| panic!("{scenario}: building the lab: {e}"));
    let vip = if v6 { vl.lab.vip6() } else { vl.lab.vip4() };
    let ns = vl.lab.client_netns(0).to_string();
    let long = LongLived::start(
        &ns,
        vip,
        60,
        2,
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let on_b1 = long.backends.iter().filter(|b| *b == "b1").count();
    assert!(
        on_b1 > 0,
        "{scenario}: expected some long-lived connections on b1 before the drain"
    );
    vl.set_state(&scenario, &vip_id(vip, "tcp"), 0, v6, "drain");
    let s = client::spread(&ns, vip, Proto::Tcp, 300, 2, Duration::from_secs(60)).expect("client");
    eprintln!("{scenario}: after draining b1: {s}");
    assert!(
        s.failures.is_empty(),
        "{scenario}: new connections must all be answered: {:?}",
        &s.failures[..s.failures.len().min(3)]
    );
    assert_eq!(
        s.count("b1"),
        0,
        "{scenario}: drained backend b1 must get no new connection ({s})"
    );
    std::thread::sleep(Duration::from_millis(500));
    let report = long.finish();
    eprintln!(
        "{scenario}: {on_b1} connections on b1 kept through the drain; broken: {}",
        report.broken().len()
    );
    assert!(
        report.broken().is_empty(),
        "{scenario}: existing connections (incl. {on_b1} on drained b1) must complete: {}",
        report.describe_broken()
    );
}

#[test]
fn lab_drain_tunnel_v6() {
    if !vip_tests::privileged::require_root("lab_drain_tunnel_v6") {
        return;
    }
    drain(Mode::Tunnel, true);
}

#[test]
fn lab_drain_dsr_l2_v4() {
    if !vip_tests::privileged::require_root("lab_drain_dsr_l2_v4") {
        return;
    }
    drain(Mode::DsrL2, false);
}
