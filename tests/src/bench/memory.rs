//! Kernel memory of the datapath's maps, as the kernel accounts it (`memlock` in
//! /proc/self/fdinfo), per map: at the default sizes, and with 10,010 VIPs of two table
//! sizes in a Maglev pool sized for them.

use std::{collections::HashMap, fs};

use anyhow::{Context, Result};
use vip_user::datapath::{Datapath, Limits};

use super::{report::Report, stats::Trials};

/// Section title.
pub const SECTION: &str = "3b. memory of the default map sizes";

/// Section title of the Maglev pool's figures.
pub const POOL_SECTION: &str = "3c. memory of the Maglev pool at 10,010 VIPs";

/// Loads `vip_lb` with [`Limits::default`] and reports each map's kernel memory; then
/// the pool's figures ([`pool`]).
pub fn run(report: &mut Report) -> Result<()> {
    defaults(report)?;
    pool(report)
}

/// One map: name, max_entries, memlock bytes.
type MapMemory = (String, u64, u64);

/// The maps `load` creates, largest first, with the datapath they belong to (dropped by
/// the caller).
fn measured(load: impl FnOnce() -> Result<Datapath>) -> Result<(Datapath, Vec<MapMemory>)> {
    let before = map_fds()?;
    let dp = load()?;
    let mut per_map: Vec<MapMemory> = Vec::new();
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
    per_map.sort_by_key(|m| std::cmp::Reverse(m.2));
    Ok((dp, per_map))
}

/// 10,000 VIPs with M = 1,021 and 10 with M = 65,537 in a pool sized for exactly them
/// (`[limits] maglev_pool` = what `vipd check` asks for), every table published: each
/// map's kernel memory, the pool's use, and what the same VIPs took when every VIP had
/// room for two tables of the largest M (computed: 2.6 GB is not loaded here).
pub fn pool(report: &mut Report) -> Result<()> {
    use vip_common::{PROTO_TCP, maglev_region_entries};
    use vip_user::datapath::keys::vip_key;

    const SMALL: (u32, u32) = (10_000, 1021);
    const BIG: (u32, u32) = (10, 65_537);
    let vips = SMALL.0 + BIG.0;
    let regions = u64::from(SMALL.0) * maglev_region_entries(SMALL.1)
        + u64::from(BIG.0) * maglev_region_entries(BIG.1);
    // What `[limits] maglev_pool` must hold (`config::maglev_pool_need`): the regions
    // and the largest once more.
    let need = regions + maglev_region_entries(BIG.1);
    let limits = Limits {
        max_vips: vips,
        table_size: BIG.1,
        maglev_pool: u32::try_from(need).context("pool size")?,
        ..Limits::default()
    };
    let (mut dp, per_map) = measured(|| {
        Datapath::load(&limits, None).context("loading vip_lb with room for 10,010 VIPs")
    })?;
    let start = std::time::Instant::now();
    for i in 0..vips {
        let m = if i < BIG.0 { BIG.1 } else { SMALL.1 };
        let key = vip_key(
            std::net::SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 80)),
            PROTO_TCP,
        );
        let backend = i % limits.max_backends;
        dp.publish_vip(&key, i, 0, m, &vec![backend; m as usize], &[])
            .with_context(|| format!("publishing VIP {i} of {vips} (M = {m})"))?;
    }
    let publish_s = start.elapsed().as_secs_f64();
    let usage = dp.maglev_pool_usage();
    anyhow::ensure!(
        usage.used == regions,
        "the pool holds {} entries in regions, the VIPs need {regions}",
        usage.used
    );
    drop(dp);
    let total: u64 = per_map.iter().map(|m| m.2).sum();
    let mib = |b: u64| Trials::exact(b as f64 / 1048576.0);
    let setting = format!(
        "{} VIPs with M = {} and {} with M = {}; maglev_pool = {need} entries",
        SMALL.0, SMALL.1, BIG.0, BIG.1
    );
    report
        .push(POOL_SECTION, "all maps", "MiB", mib(total))
        .note = format!(
        "{setting}; max_backends {}, max_conns {} as by default",
        limits.max_backends, limits.max_conns
    );
    for (name, entries, bytes) in &per_map {
        let grows = match name.as_str() {
            "MAGLEV" => "grows with the VIPs' M",
            "VIPS" | "VIP_SLOTS" | "VIP_STATS" => "grows with max_vips",
            "CONNS" | "CONN_FILLS" => "grows with max_conns",
            "BACKENDS" | "NEXTHOPS" | "BACKEND_STATS" => "grows with max_backends",
            _ => "fixed size",
        };
        report
            .push(POOL_SECTION, format!("map {name}"), "MiB", mib(*bytes))
            .note = format!("{entries} entries; {grows}");
    }
    report
        .push(
            POOL_SECTION,
            "Maglev pool in VIPs' regions",
            "MiB",
            mib(usage.used / u64::from(vip_common::MAGLEV_LANES) * 8),
        )
        .note = format!(
        "{} of {} entries; largest free region {} entries; all {vips} tables published in {publish_s:.2} s",
        usage.used, usage.entries, usage.largest_free
    );
    // Before the pool: two tables of the largest M for every VIP slot.
    let before = (u64::from(vips) * 2 * u64::from(BIG.1)).div_ceil(4) * 8;
    report
        .push(
            POOL_SECTION,
            "MAGLEV before the pool (max_vips x 2 x table_size)",
            "MiB",
            mib(before),
        )
        .note = format!(
        "computed, not loaded: {vips} x 2 x {} entries, 2 bytes each",
        BIG.1
    );
    Ok(())
}

/// The maps at [`Limits::default`].
fn defaults(report: &mut Report) -> Result<()> {
    let limits = Limits::default();
    let (dp, per_map) = measured(|| {
        Datapath::load(&limits, None).context("loading vip_lb with the default limits")
    })?;
    drop(dp);
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
            "max_vips {}, max_backends {}, table_size {}, maglev_pool {} (room for max_vips + 1 \
         VIPs of the largest M), max_conns {} ({} connection-table sets of {} flows)",
            limits.max_vips,
            limits.max_backends,
            limits.table_size,
            limits.maglev_pool,
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
