//! The Grafana dashboard in `examples/grafana/` queries only metrics vipd exports, and is
//! a well-formed dashboard: every panel has a query, no two panels share an id, and the
//! layout fits Grafana's 24-column grid.

use std::{collections::BTreeSet, time::Duration};

use super::metrics::Metrics;
use crate::{config::Config, control::owner::Owner, datapath::fake::FakeMaps};

const DASHBOARD: &str = include_str!("../../../examples/grafana/vip-dashboard.json");

/// Every string under a key named `key`, anywhere in `v`.
fn strings_under<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match x {
                    serde_json::Value::String(s) if k == key => out.push(s),
                    _ => strings_under(x, key, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings_under(x, key, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression mentions (vipd's all start with `vip_`; label
/// names such as `vip` have no underscore after it).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = expr.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"vip_") && (i == 0 || !word(b[i - 1])) {
            let end = (i..b.len()).find(|&j| !word(b[j])).unwrap_or(b.len());
            names.insert(expr[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// What a scrape of a vipd with one VIP, two backends, health-check results and packets
/// of several fates returns.
fn scrape() -> String {
    let cfg = Config::parse(
        "[[vip]]\naddress = \"198.18.1.10:80\"\ntable_size = 251\n[vip.health]\ntype = \"tcp\"\n[[vip.backend]]\naddress = \"198.18.2.1\"\n[[vip.backend]]\naddress = \"198.18.2.2\"\n",
        "t",
    )
    .unwrap();
    let owner = Owner::start(&cfg, FakeMaps::default(), None).unwrap();
    let mut status = owner.status();
    status.reasons = vec![
        ("forwarded".into(), 7),
        ("pass_not_vip".into(), 5),
        ("drop_no_backend".into(), 3),
    ];
    let m = Metrics::default();
    let ident = (cfg.vips[0].id, cfg.vips[0].backends[0].addr);
    m.observe_check(&ident, Duration::from_millis(2), true);
    m.observe_check(&ident, Duration::from_millis(900), false);
    m.render(&status)
}

#[test]
fn every_metric_the_dashboard_queries_is_one_vipd_exports() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    strings_under(&dash, "expr", &mut exprs);
    strings_under(&dash["templating"], "query", &mut exprs);
    assert!(exprs.len() > 10, "found only {} queries", exprs.len());
    let text = scrape();
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut missing = Vec::new();
    for e in &exprs {
        for name in metric_names(e) {
            if !exported.contains(name.as_str()) {
                missing.push(format!("{name} (in {e})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics vipd does not export:\n  {}\nexported: {exported:?}",
        missing.join("\n  ")
    );
}

#[test]
fn the_dashboard_is_well_formed() {
    let dash: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{title}: wider than the grid");
        if p["type"] != "row" {
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title}: no query");
            assert!(
                p["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{title}: no description"
            );
        }
    }
    assert_eq!(
        dash["__inputs"][0]["name"], "DS_PROMETHEUS",
        "importable with a datasource chosen at import"
    );
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names("sum by (vip) (rate(vip_packets_total{vip=~\"$vip\"}[5m])) / vip_x"),
        BTreeSet::from(["vip_packets_total".to_string(), "vip_x".to_string()])
    );
    assert!(metric_names("label_values(up, vip)").is_empty());
}
