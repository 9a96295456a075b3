//! Spread: 3,000 new TCP connections over 5 backends land within ±15 % of the fair share,
//! and weights are respected; UDP flows reach every backend. Both modes, both families.

use std::time::Duration;

use vip_tests::lab::{
    LabSpec, Mode,
    client::{self, Proto},
    vipd::HealthConfig,
    viplab::{VipLab, assert_spread},
};

const NAMES: [&str; 5] = ["b1", "b2", "b3", "b4", "b5"];
/// New connections come from several clients, as they do in production: one client's
/// kernel hands out ephemeral ports in a near-sequential run, and a single (client, VIP)
/// pair's run of ports is a correlated sample of the hash, not a spread of flows.
const CLIENTS: usize = 3;

/// `n` new flows to `vip`, split over the lab's clients, answers summed.
fn spread_from_clients(
    lab: &vip_tests::lab::Lab,
    vip: std::net::SocketAddr,
    proto: Proto,
    n: usize,
) -> client::Spread {
    let mut total = client::Spread::default();
    for k in 0..CLIENTS {
        let share = n / CLIENTS + usize::from(k < n % CLIENTS);
        let s = client::spread(
            lab.client_netns(k),
            vip,
            proto,
            share,
            4,
            Duration::from_secs(60),
        )
        .expect("client");
        for (name, v) in s.counts {
            *total.counts.entry(name).or_default() += v;
        }
        total.failures.extend(s.failures);
    }
    if !total.failures.is_empty() {
        eprintln!(
            "{} requests to {vip} failed; TCP counters:\n{}",
            total.failures.len(),
            lab.tcp_reset_counters()
        );
    }
    total
}
const WEIGHTS: [u32; 5] = [1, 1, 1, 1, 2];

/// One lab per mode: the `equal_v6` family gets equal weights, the other one
/// [`WEIGHTS`]; the UDP VIP is IPv4.
fn spread(mode: Mode, equal_v6: bool) {
    let scenario = format!("spread, {}", mode.config_name());
    let _serial = vip_tests::lab::serial();
    let mut spec = LabSpec::new(5, mode);
    spec.clients = CLIENTS;
    let vl = VipLab::start(spec, |lab| {
        let all = [0, 1, 2, 3, 4];
        let mut equal = lab.vip_config(equal_v6, "tcp", &all, HealthConfig::none());
        equal.table_size = 65537;
        let mut weighted = lab.vip_config(!equal_v6, "tcp", &all, HealthConfig::none());
        for (b, w) in weighted.backends.iter_mut().zip(WEIGHTS) {
            b.weight = w;
        }
        let udp = lab.vip_config(false, "udp", &all, HealthConfig::none());
        vec![equal, weighted, udp]
    })
    .unwrap_or_else(|e| panic!("{scenario}: building the lab: {e}"));
    let lab = &vl.lab;
    let (equal_vip, weighted_vip) = if equal_v6 {
        (lab.vip6(), lab.vip4())
    } else {
        (lab.vip4(), lab.vip6())
    };
    let s = spread_from_clients(lab, equal_vip, Proto::Tcp, 3000);
    eprintln!("{scenario}: {equal_vip} equal weights: {s}");
    let equal: Vec<(&str, u32)> = NAMES.iter().map(|n| (*n, 1)).collect();
    assert_spread(
        &format!("{scenario}, {equal_vip} equal weights"),
        &s,
        &equal,
        0.15,
    );

    let s = spread_from_clients(lab, weighted_vip, Proto::Tcp, 3000);
    eprintln!("{scenario}: {weighted_vip} weights {WEIGHTS:?}: {s}");
    let weighted: Vec<(&str, u32)> = NAMES.iter().copied().zip(WEIGHTS).collect();
    assert_spread(
        &format!("{scenario}, {weighted_vip} weights {WEIGHTS:?}"),
        &s,
        &weighted,
        0.15,
    );

    // UDP: every flow answered (replies leave from the VIP), every backend reached.
    let s = spread_from_clients(lab, lab.vip4(), Proto::Udp, 500);
    eprintln!("{scenario}: {} udp: {s}", lab.vip4());
    assert_spread(&format!("{scenario}, {} udp", lab.vip4()), &s, &equal, 0.5);
}

#[test]
fn lab_spread_tunnel_v4_equal_v6_weighted() {
    if !vip_tests::privileged::require_root("lab_spread_tunnel_v4_equal_v6_weighted") {
        return;
    }
    spread(Mode::Tunnel, false);
}

#[test]
fn lab_spread_dsr_l2_v6_equal_v4_weighted() {
    if !vip_tests::privileged::require_root("lab_spread_dsr_l2_v6_equal_v4_weighted") {
        return;
    }
    spread(Mode::DsrL2, true);
}
