//! A lab with vip on its LB node(s): the topology, `vip_decap` on tunnel-mode backends,
//! and one `vipd` per LB node with the same config (so scale-out nodes agree).

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    Lab, LabError, LabSpec, Mode,
    client::Spread,
    vipd::{LimitsConfig, VipConfig, Vipd},
};

/// A lab with vipd running. Dropping it stops vipd (removing its pins) and then the lab.
#[derive(Debug)]
pub struct VipLab {
    /// One vipd per LB node (dropped before the lab).
    pub vipds: Vec<Vipd>,
    /// The topology.
    pub lab: Lab,
}

impl VipLab {
    /// Builds `spec`, prepares the backends for its mode and starts vipd on every LB node
    /// with the VIPs `vips` returns.
    pub fn start(spec: LabSpec, vips: impl Fn(&Lab) -> Vec<VipConfig>) -> Result<VipLab, LabError> {
        Self::start_with_limits(spec, LimitsConfig::default(), vips)
    }

    /// [`VipLab::start`] with map sizes `limits` (a small connection table, say).
    pub fn start_with_limits(
        spec: LabSpec,
        limits: LimitsConfig,
        vips: impl Fn(&Lab) -> Vec<VipConfig>,
    ) -> Result<VipLab, LabError> {
        let mut lab = Lab::build(spec)?;
        if lab.spec.mode == Mode::Tunnel {
            lab.attach_decap()?;
        }
        let mut vipds = Vec::new();
        for i in 0..lab.lb_nodes.len() {
            let mut config = lab.vipd_config(i, vips(&lab));
            config.limits = limits;
            vipds.push(Vipd::start(&lab, i, config)?);
        }
        Ok(VipLab { vipds, lab })
    }

    /// The first LB node's vipd.
    pub fn vipd(&mut self) -> &mut Vipd {
        &mut self.vipds[0]
    }

    /// Runs `vipctl args` against every LB node (the same change everywhere, as an
    /// operator's automation would); panics with the scenario and vipd's log if it fails.
    pub fn vipctl_all(&self, scenario: &str, args: &[&str]) {
        for v in &self.vipds {
            if let Err(e) = v.vipctl(args) {
                panic!(
                    "{scenario}: `vipctl {}` failed: {e}\nvipd log:\n{}",
                    args.join(" "),
                    v.log_tail()
                );
            }
        }
    }
}

/// Standard deviations of a binomial count that [`assert_spread`] allows at least.
pub const SIGMAS: f64 = 6.0;

/// Checks that `spread` gives each backend its weighted share within `tolerance` (0.15 =
/// ±15 %) or [`SIGMAS`] standard deviations of a binomial count, whichever is wider, that
/// every request was answered and no other backend answered. Panics naming the scenario,
/// the backend and the expectation.
pub fn assert_spread(scenario: &str, spread: &Spread, weights: &[(&str, u32)], tolerance: f64) {
    assert!(
        spread.failures.is_empty(),
        "{scenario}: expected every request answered, {} failed (first: {})",
        spread.failures.len(),
        spread.failures[0]
    );
    let total = spread.answered() as f64;
    let weight_sum: u32 = weights.iter().map(|(_, w)| w).sum();
    let mut problems = String::new();
    for (name, w) in weights {
        let share = f64::from(*w) / f64::from(weight_sum);
        let fair = total * share;
        // A backend's count over `total` flows is binomial(total, share), and measured
        // spreads vary more than that (clients' ephemeral ports come in runs): ±15 % of
        // 500 flows is 3.7 binomial standard deviations, and a correct spread crossed it
        // in about one run in nine. Six standard deviations keep a correct spread inside
        // with room for that, while a missing backend or an ignored weight (a weight-2
        // backend at 3,000 flows loses 400 of its 1,000) still fails.
        let allowed = (fair * tolerance).max(SIGMAS * (total * share * (1.0 - share)).sqrt());
        let got = spread.count(name) as f64;
        if (got - fair).abs() > allowed {
            let _ = write!(
                problems,
                "\n  backend {name} (weight {w}): expected {fair:.0} ±{allowed:.0}, got {got}"
            );
        }
    }
    let known: BTreeMap<&str, ()> = weights.iter().map(|(n, _)| (*n, ())).collect();
    for (name, n) in &spread.counts {
        if !known.contains_key(name.as_str()) {
            let _ = write!(
                problems,
                "\n  backend {name} is not in the VIP but answered {n}"
            );
        }
    }
    assert!(
        problems.is_empty(),
        "{scenario}: spread out of bounds ({spread}):{problems}"
    );
}

/// How `vipctl` names a VIP: `ADDR:PORT/PROTO`, IPv6 in brackets.
pub fn vip_id(addr: std::net::SocketAddr, protocol: &str) -> String {
    format!("{addr}/{protocol}")
}

impl VipLab {
    /// Adds backend `j` to the VIP on every LB node.
    pub fn add_backend(&self, scenario: &str, vip: &str, j: usize, v6: bool, weight: u32) {
        let b = self.lab.backend_addr(j, v6).to_string();
        let w = weight.to_string();
        self.vipctl_all(scenario, &["backend", "add", vip, &b, "--weight", &w]);
    }
    /// Removes backend `j` from the VIP on every LB node.
    pub fn remove_backend(&self, scenario: &str, vip: &str, j: usize, v6: bool) {
        let b = self.lab.backend_addr(j, v6).to_string();
        self.vipctl_all(scenario, &["backend", "del", vip, &b]);
    }
    /// Sets backend `j`'s admin state (`ready`, `drain`, `maint`) on every LB node.
    pub fn set_state(&self, scenario: &str, vip: &str, j: usize, v6: bool, state: &str) {
        let b = self.lab.backend_addr(j, v6).to_string();
        self.vipctl_all(scenario, &["backend", "set", vip, &b, "--state", state]);
    }
    /// Sets backend `j`'s weight on every LB node.
    pub fn set_weight(&self, scenario: &str, vip: &str, j: usize, v6: bool, weight: u32) {
        let b = self.lab.backend_addr(j, v6).to_string();
        let w = weight.to_string();
        self.vipctl_all(scenario, &["backend", "set", vip, &b, "--weight", &w]);
    }
}
