//! Section 3d: what `vipctl stats` and the metrics cost the owner with a million flows
//! in the connection table. Both are answered from `Owner::status` (the metrics task
//! renders a status the owner hands it); the flows it reports come from the datapath's
//! per-CPU count of filled entries, not from a walk of the table, which is timed in the
//! same run as the baseline.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use vip_common::{NEXTHOP_F_VALID, NextHop};
use vip_user::{
    config::Config,
    control::owner::Owner,
    daemon::metrics::Metrics,
    datapath::{Datapath, tables},
};

use super::{packets, report::Report, stats::Trials};
use crate::{fixture::action, packet::L4};

/// Section title (shares section 3's table).
pub const SECTION: &str = super::control::SECTION;

/// Flows sent through the datapath, each a new one.
const FLOWS: u32 = 1_000_000;

fn config() -> Result<Config> {
    let pid = std::process::id();
    let mut s = format!(
        "instance = \"vipbench{pid}\"\n[datapath]\ninterfaces = []\nmtu = 1600\n\n\
         [limits]\nmax_vips = 4\nmax_backends = 64\ntable_size = 1021\nmax_conns = {FLOWS}\n\n\
         [api]\nsocket = \"/tmp/vipbench-{pid}.sock\"\n\n\
         [[vip]]\naddress = \"{}\"\ntable_size = 1021\n[vip.health]\ntype = \"none\"\n",
        packets::vip_v4()
    );
    for j in 1..=10 {
        s.push_str(&format!(
            "[[vip.backend]]\naddress = \"198.19.0.{j}:8080\"\n"
        ));
    }
    Config::parse(&s, "bench config (1 VIP)").map_err(|e| anyhow::anyhow!("{e}"))
}

/// Fills the connection table through the datapath itself (one new flow per
/// `BPF_PROG_TEST_RUN`), then times a status, a status with its metrics text, and a
/// walk of the table.
pub fn run(report: &mut Report, trials: usize) -> Result<()> {
    let cfg = config()?;
    let mut dp = Datapath::load(&tables::limits(&cfg.limits), None)
        .context("loading vip_lb for the status benchmark")?;
    let nh = NextHop {
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_mac: [2, 0, 0, 0, 0, 1],
        ifindex: 0,
        flags: NEXTHOP_F_VALID,
    };
    for id in 0..cfg.limits.max_backends {
        dp.set_nexthop(id, &nh)?;
    }
    let mut owner = Owner::start(&cfg, dp, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let fill = Instant::now();
    for i in 0..FLOWS {
        let src = std::net::SocketAddr::from((
            [198, 18, 128 | (i >> 16) as u8, (i >> 8) as u8],
            1024 + (i & 0xff) as u16,
        ));
        let pkt = packets::padded(src, packets::vip_v4(), L4::Tcp { syn: false });
        let (verdict, _) = crate::fixture::run_xdp(owner.tables_mut().program_mut(), &pkt);
        ensure!(verdict == action::TX, "flow {i} was not forwarded");
    }
    let fill_s = fill.elapsed().as_secs_f64();
    let walked = owner.tables().conn_count_by_walk()?;
    let counted = owner.tables().conn_count()?;
    ensure!(
        counted == walked,
        "the datapath's count says {counted} flows, the table holds {walked}"
    );
    let metrics = Metrics::default();
    let (mut status, mut scrape, mut walk) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..trials.max(9) {
        let start = Instant::now();
        let s = owner.status();
        let json = serde_json::to_string(&s).expect("a status serialises");
        status.push(start.elapsed().as_secs_f64() * 1e3);
        ensure!(s.conns == walked && !json.is_empty(), "status lost flows");
        let start = Instant::now();
        let text = metrics.render(&owner.status());
        scrape.push(start.elapsed().as_secs_f64() * 1e3);
        ensure!(text.contains("vip_"), "no metrics rendered");
        let start = Instant::now();
        let n = owner.tables().conn_count_by_walk()?;
        walk.push(start.elapsed().as_secs_f64() * 1e3);
        ensure!(n == walked, "the table changed while idle");
    }
    let (status, scrape, walk) = (Trials::of(&status), Trials::of(&scrape), Trials::of(&walk));
    let note = format!(
        "{walked} flows held after {FLOWS} new flows through vip_lb ({fill_s:.1} s to fill); \
         the count is the datapath's, equal to a walk of the table"
    );
    let row = report.push(
        SECTION,
        "vipctl stats: Owner::status + JSON, 1M flows",
        "ms",
        status,
    );
    row.ratios.push((
        "a walk of the table (the old count)".into(),
        status.median / walk.median,
    ));
    row.note = note;
    let row = report.push(
        SECTION,
        "metrics: Owner::status + render, 1M flows",
        "ms",
        scrape,
    );
    row.ratios.push((
        "a walk of the table (the old count)".into(),
        scrape.median / walk.median,
    ));
    report
        .push(
            SECTION,
            "walk of the table (the old count), 1M flows",
            "ms",
            walk,
        )
        .note = "Datapath::conn_count_by_walk: every set through the memory mapping; only \
                 done once, when vipd adopts pinned maps"
        .into();
    Ok(())
}
