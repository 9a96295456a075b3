//! Health: a backend's server is killed; once the checks have failed no new connection
//! reaches it (the time is measured and printed); connections to the others never break;
//! it returns after `rise` passed checks.

use std::time::{Duration, Instant};

use vip_tests::lab::{
    LabSpec, Mode,
    client::{self, LongLived, Proto},
    vipd::HealthConfig,
    viplab::VipLab,
};

/// Rounds of 20 new connections until `done` holds for 3 rounds in a row; returns the
/// time of the first of them, or None at `limit`.
fn until(
    ns: &str,
    vip: std::net::SocketAddr,
    limit: Duration,
    done: impl Fn(&client::Spread) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    let mut first_good: Option<Duration> = None;
    let mut good_rounds = 0;
    while start.elapsed() < limit {
        let s =
            client::spread(ns, vip, Proto::Tcp, 20, 2, Duration::from_secs(10)).expect("client");
        if done(&s) {
            first_good.get_or_insert(start.elapsed());
            good_rounds += 1;
            if good_rounds == 3 {
                return first_good;
            }
        } else {
            first_good = None;
            good_rounds = 0;
        }
    }
    None
}

fn health(mode: Mode, v6: bool) {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let scenario = format!("health, {}, {family}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let health = HealthConfig::fast_http();
    let (interval, fall, rise) = (health.interval_ms, health.fall, health.rise);
    let mut vl = VipLab::start(LabSpec::new(3, mode), |lab| {
        vec![lab.vip_config(v6, "tcp", &[0, 1, 2], health.clone())]
    })
    .unwrap_or_else(|e| panic!("{scenario}: building the lab: {e}"));
    let vip = if v6 { vl.lab.vip6() } else { vl.lab.vip4() };
    let ns = vl.lab.client_netns(0).to_string();
    // Let the first checks pass (rise) before judging.
    let up = until(&ns, vip, Duration::from_secs(15), |s| {
        s.failures.is_empty() && s.counts.len() == 3
    });
    assert!(
        up.is_some(),
        "{scenario}: expected all 3 backends to answer after start"
    );

    let long = LongLived::start(
        &ns,
        vip,
        60,
        2,
        Duration::from_millis(50),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{scenario}: {e}"));
    vl.lab.kill_server(1);
    let out = until(&ns, vip, Duration::from_secs(20), |s| {
        s.count("b2") == 0 && s.failures.is_empty()
    });
    let out = out.unwrap_or_else(|| {
        panic!("{scenario}: backend b2 (server killed) still got new connections 20 s later")
    });
    eprintln!(
        "{scenario}: b2 out of rotation {} ms after its server was killed (interval {interval} ms, fall {fall})",
        out.as_millis()
    );
    vl.lab.start_server(1).expect("restarting b2's server");
    let back = until(&ns, vip, Duration::from_secs(20), |s| {
        s.count("b2") > 0 && s.failures.is_empty()
    });
    let back = back.unwrap_or_else(|| {
        panic!("{scenario}: backend b2 (server restarted) got no new connection within 20 s")
    });
    eprintln!(
        "{scenario}: b2 back in rotation {} ms after its server restarted (rise {rise})",
        back.as_millis()
    );

    let report = long.finish();
    let others_broken: Vec<_> = report
        .conns
        .iter()
        .filter(|c| c.backend != "b2" && c.broken.is_some())
        .collect();
    let b2_conns = report.conns.iter().filter(|c| c.backend == "b2").count();
    eprintln!(
        "{scenario}: long-lived connections {:?}; broken on b1/b3: {}; on b2 (its server died): {}",
        report.per_backend(),
        others_broken.len(),
        report.broken().len() - others_broken.len()
    );
    assert!(
        others_broken.is_empty(),
        "{scenario}: connections to the healthy backends b1/b3 must never break: {}",
        report.describe_broken()
    );
    assert!(
        b2_conns > 0,
        "{scenario}: expected some long-lived connections on b2 (spread)"
    );
}

#[test]
fn lab_health_tunnel_v4() {
    if !vip_tests::privileged::require_root("lab_health_tunnel_v4") {
        return;
    }
    health(Mode::Tunnel, false);
}

#[test]
fn lab_health_dsr_l2_v6() {
    if !vip_tests::privileged::require_root("lab_health_dsr_l2_v6") {
        return;
    }
    health(Mode::DsrL2, true);
}
