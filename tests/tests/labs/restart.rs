//! Restart: vipd is SIGKILLed during traffic and restarted; no connection breaks (the
//! program and maps stay pinned, the new vipd adopts them).

use std::time::Duration;

use vip_tests::lab::{
    LabSpec, Mode,
    client::{self, LongLived, Proto},
    vipd::HealthConfig,
    viplab::VipLab,
};

fn restart(mode: Mode) {
    let scenario = format!("restart, {}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let mut vl = VipLab::start(LabSpec::new(3, mode), |lab| {
        vec![
            lab.vip_config(false, "tcp", &[0, 1, 2], HealthConfig::fast_http()),
            lab.vip_config(true, "tcp", &[0, 1, 2], HealthConfig::fast_http()),
        ]
    })
    .unwrap_or_else(|e| panic!("{scenario}: building the lab: {e}"));
    let ns = vl.lab.client_netns(0).to_string();
    let (vip4, vip6) = (vl.lab.vip4(), vl.lab.vip6());
    let pause = Duration::from_millis(50);
    let limit = Duration::from_secs(60);
    let long4 = LongLived::start(&ns, vip4, 50, 1, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    let long6 = LongLived::start(&ns, vip6, 50, 1, pause, limit)
        .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    vl.vipd().kill();
    // Traffic keeps flowing with no daemon: new connections too.
    let during = client::spread(&ns, vip4, Proto::Tcp, 100, 2, limit).expect("client");
    eprintln!("{scenario}: while vipd is dead: {during}");
    assert!(
        during.failures.is_empty(),
        "{scenario}: new connections while vipd is dead must work: {:?}",
        &during.failures[..during.failures.len().min(3)]
    );
    vl.vipd()
        .restart()
        .unwrap_or_else(|e| panic!("{scenario}: restarting vipd: {e}"));
    let after = client::spread(&ns, vip6, Proto::Tcp, 100, 2, limit).expect("client");
    eprintln!("{scenario}: after the restart: {after}");
    assert!(
        after.failures.is_empty(),
        "{scenario}: new connections after the restart must work"
    );
    assert_eq!(
        after.counts.len(),
        3,
        "{scenario}: all 3 backends in rotation after the restart ({after})"
    );
    std::thread::sleep(Duration::from_millis(500));
    for (family, long) in [("IPv4", long4), ("IPv6", long6)] {
        let report = long.finish();
        eprintln!(
            "{scenario}, {family}: broken connections: {}",
            report.broken().len()
        );
        assert!(
            report.broken().is_empty(),
            "{scenario}, {family}: expected 0 broken connections across the vipd restart: {}",
            report.describe_broken()
        );
    }
}

#[test]
fn lab_restart_tunnel() {
    if !vip_tests::privileged::require_root("lab_restart_tunnel") {
        return;
    }
    restart(Mode::Tunnel);
}

#[test]
fn lab_restart_dsr_l2() {
    if !vip_tests::privileged::require_root("lab_restart_dsr_l2") {
        return;
    }
    restart(Mode::DsrL2);
}
