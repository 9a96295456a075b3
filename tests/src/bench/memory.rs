//! Kernel memory of the datapath's maps at the default sizes, as the kernel accounts it
//! (`memlock` in /proc/self/fdinfo), per map.

use std::{collections::HashMap, fs};

use anyhow::{Context, Result};
use vip_user::datapath::{Datapath, Limits};

use super::{report::Report, stats::Trials};

/// Section title.
pub const SECTION: &str = "3b. memory of the default map sizes";

/// Loads `vip_lb` with [`Limits::default`] and reports each map's kernel memory.
pub fn run(report: &mut Report) -> Result<()> {
    let limits = Limits::default();
    let before = map_fds()?;
    let dp = Datapath::load(&limits, None).context("loading vip_lb with the default limits")?;
    let mut per_map: Vec<(String, u64, u64)> = Vec::new();
    let names: HashMap<u32, String> = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .map(|m| (m.id(), m.name_as_str().unwrap_or("?").to_string()))
        .collect();
    for (id, (max_entries, memlock)) in map_fds()? {
        if before.contains_key(&id) {
            continue;
        }
        let name = names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("map {id}"));
        per_map.push((name, max_entries, memlock));
    }
    drop(dp);
    per_map.sort_by_key(|m| std::cmp::Reverse(m.2));
    let total: u64 = per_map.iter().map(|m| m.2).sum();
    for (name, entries, bytes) in &per_map {
        report
            .push(
                SECTION,
                format!("map {name}"),
                "MiB",
                Trials::exact(*bytes as f64 / 1048576.0),
            )
            .note = format!("{entries} entries");
    }
    let mut mib = |figure: &str, bytes: u64, note: String| {
        report
            .push(
                SECTION,
                figure,
                "MiB",
                Trials::exact(bytes as f64 / 1048576.0),
            )
            .note = note;
    };
    mib(
        "all maps (default limits)",
        total,
        format!(
            "max_vips {}, max_backends {}, table_size {} (2 halves per VIP), max_conns {} \
         ({} connection-table sets of {} flows)",
            limits.max_vips,
            limits.max_backends,
            limits.table_size,
            limits.max_conns,
            limits.conn_sets(),
            vip_common::FLOW_WAYS
        ),
    );
    // The figure `Limits::approx_bytes` gives (documentation, `vipd check`), against the
    // kernel's accounting above.
    let cpus =
        aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("reading {what}: {e}"))? as u64;
    let estimate = limits.approx_bytes(cpus);
    mib(
        "all maps, estimated by Limits::approx_bytes",
        estimate,
        format!(
            "{cpus} possible CPUs; {:+.1}% against the kernel's figure",
            100.0 * (estimate as f64 - total as f64) / total.max(1) as f64
        ),
    );
    Ok(())
}

/// Map id → (max_entries, memlock bytes) of every BPF map fd this process holds.
fn map_fds() -> Result<HashMap<u32, (u64, u64)>> {
    let mut out = HashMap::new();
    for entry in fs::read_dir("/proc/self/fdinfo").context("reading /proc/self/fdinfo")? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(max), Some(mem)) =
            (field("map_id:"), field("max_entries:"), field("memlock:"))
        {
            out.insert(id as u32, (max, mem));
        }
    }
    Ok(out)
}
