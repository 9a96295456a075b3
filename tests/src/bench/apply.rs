//! Section 3c: `apply` of a 1,000-VIP config through the control plane's owner (the
//! code vipd runs for its config file and `vipctl apply`), into a loaded `vip_lb`:
//! validation, id allocation, 1,000 Maglev builds and every map write.

use std::{fmt::Write as _, time::Instant};

use anyhow::{Context, Result};
use vip_user::{
    config::Config,
    control::owner::Owner,
    datapath::{Datapath, tables},
};

use super::{report::Report, stats::Trials};

/// Section title (shares section 3's table).
pub const SECTION: &str = super::control::SECTION;

const VIPS: u32 = 1000;
const BACKENDS_PER_VIP: u32 = 10;
/// Small Maglev tables (prime): 1,000 VIPs × 2 halves × 65537 entries would need 1 GiB
/// of kernel memory (array values take 8 bytes).
const TABLE_SIZE: u32 = 1021;

fn config_text(vips: u32) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "instance = \"vipbench{}\"", std::process::id());
    let _ = writeln!(
        s,
        "state_file = \"/tmp/vipbench-{}-state.json\"\n",
        std::process::id()
    );
    let _ = writeln!(s, "[datapath]\ninterfaces = []\nmtu = 1600\n");
    let _ = writeln!(
        s,
        "[limits]\nmax_vips = {}\nmax_backends = {}\ntable_size = {TABLE_SIZE}\nmax_conns = 65536\n",
        VIPS + 24,
        (VIPS + 24) * BACKENDS_PER_VIP
    );
    let _ = writeln!(
        s,
        "[api]\nsocket = \"/tmp/vipbench-{}.sock\"\n",
        std::process::id()
    );
    for i in 0..vips {
        let host = i % 32_768;
        let _ = writeln!(
            s,
            "[[vip]]\naddress = \"198.19.{}.{}:80\"\nprotocol = \"tcp\"\nmode = \"tunnel\"\ntable_size = {TABLE_SIZE}\n",
            128 + (host >> 8),
            host & 0xff
        );
        let _ = writeln!(s, "[vip.health]\ntype = \"none\"\n");
        for j in 0..BACKENDS_PER_VIP {
            let _ = writeln!(
                s,
                "[[vip.backend]]\naddress = \"198.19.{}.{}:8080\"\nweight = 1\nstate = \"ready\"\n",
                j / 250,
                j % 250 + 1
            );
        }
    }
    s
}

/// Times `Owner::set_vips` with 1,000 VIPs on a fresh datapath, `trials` times.
pub fn run(report: &mut Report, trials: usize) -> Result<()> {
    let full = Config::parse(&config_text(VIPS), "bench config (1,000 VIPs)")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let empty = Config::parse(&config_text(0), "bench config (no VIPs)")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut writes = 0;
    let mut samples = Vec::new();
    for _ in 0..trials {
        let dp = Datapath::load(&tables::limits(&full.limits), None)
            .context("loading vip_lb for the apply benchmark")?;
        let mut owner = Owner::start(&empty, dp, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let start = Instant::now();
        let stats = owner
            .set_vips(full.vips.clone())
            .map_err(|e| anyhow::anyhow!("applying 1,000 VIPs: {e}"))?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
        writes = stats.map_writes();
    }
    report
        .push(
            SECTION,
            format!("apply a {VIPS}-VIP config ({BACKENDS_PER_VIP} backends each, M={TABLE_SIZE})"),
            "ms",
            Trials::of(&samples),
        )
        .note = format!(
        "vip_user::control::owner::Owner::set_vips into a loaded vip_lb (what vipd does for its \
         config / vipctl apply): validation, ids, {VIPS} Maglev builds, {writes} map writes"
    );
    Ok(())
}
