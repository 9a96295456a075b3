//! Section 1d: the price of each kind of map operation the datapath does, measured alone
//! in `vip_bench` (same wrapper), so the stages of section 1b can be explained.

use anyhow::{Context, Result};
use aya::maps::{HashMap, MapData};
use vip_common::{ConnState, FLOW_WAYS, FlowKey, FlowSet, flow_set_index, flow_table_hash};

use super::{
    datapath::DEFAULT_SETUP,
    lbsetup, packets,
    report::{NS_PER_PACKET, Report},
    testrun::{Case, Method, interleaved},
};
use crate::fixture::action;

/// Section title.
pub const SECTION: &str = "1d. single map operations (each over the pass floor)";

/// Key word the eBPF side looks up (`KEY_FILL` in vip_bench.rs).
const KEY_FILL: u32 = 0x0a0b_0c0d;
/// Seed of the micro connection table (`MICRO_SEED` in vip_bench.rs).
const MICRO_SEED: u32 = 0x5eed;

/// Measures one lookup in hash maps with 4-, 20- and 40-byte keys, an LRU with 40-byte
/// keys, one per-CPU counter increment, an LRU insert of a new key (65,536 entries,
/// full after the first trial, so inserts evict) with a shared and with per-CPU lists,
/// and the same two operations on vip's own connection table (65,536 sets of 4).
pub fn run(report: &mut Report, method: Method) -> Result<()> {
    let mut ebpf = lbsetup::load(DEFAULT_SETUP)?;
    fn fill<const N: usize>(ebpf: &mut aya::Ebpf, name: &str) -> Result<()> {
        let mut m: HashMap<&mut MapData, [u32; N], u64> =
            HashMap::try_from(ebpf.map_mut(name).with_context(|| format!("{name} map"))?)?;
        m.insert([KEY_FILL; N], 1, 0)?;
        Ok(())
    }
    fill::<1>(&mut ebpf, "MICRO_HASH4")?;
    fill::<5>(&mut ebpf, "MICRO_HASH20")?;
    fill::<10>(&mut ebpf, "MICRO_HASH40")?;
    fill::<10>(&mut ebpf, "MICRO_LRU40")?;
    {
        // The lookup's key in the last way of its set, so every way is compared.
        let mut flows: aya::maps::Array<&mut MapData, FlowSet> =
            aya::maps::Array::try_from(ebpf.map_mut("MICRO_FLOWS").context("MICRO_FLOWS map")?)?;
        // SAFETY: FlowKey is 40 bytes of integers.
        let key: FlowKey = unsafe { std::mem::transmute([KEY_FILL; 10]) };
        let h = flow_table_hash(&key, MICRO_SEED);
        let mut set = FlowSet::default();
        for n in 0..FLOW_WAYS as u32 - 1 {
            let other = FlowKey {
                src: [n + 1, 0, 0, 0],
                ..key
            };
            set.insert(
                &other,
                flow_table_hash(&other, MICRO_SEED),
                &ConnState::default(),
            );
        }
        set.insert(&key, h, &ConnState::default());
        flows.set(flow_set_index(h, 65_535), set, 0)?;
    }
    let pkt = packets::tcp_v4(packets::client_v4());
    let c = |name: &str, prog| Case {
        name: name.into(),
        prog,
        packet: pkt.clone(),
        verdict: action::PASS,
    };
    let cases = vec![
        c("floor: XDP_PASS", "bench_pass"),
        c("per-CPU array counter +1", "bench_map_percpu"),
        c("hash lookup, 4-byte key", "bench_map_hash4"),
        c("hash lookup, 20-byte key (VipKey)", "bench_map_hash20"),
        c("hash lookup, 40-byte key (FlowKey)", "bench_map_hash40"),
        c("LRU hash lookup, 40-byte key", "bench_map_lru40"),
        c(
            "connection table lookup (hash + 4-way set, key in the last way)",
            "bench_map_flows_lookup",
        ),
        c(
            "connection table insert of a new flow (replaces one at steady state)",
            "bench_map_flows_insert",
        ),
        c(
            "LRU insert of a new 40-byte key, shared LRU list",
            "bench_map_lru_insert",
        ),
        c(
            "LRU insert of a new 40-byte key, per-CPU LRU lists (BPF_F_NO_COMMON_LRU)",
            "bench_map_lru_insert_pcpu",
        ),
    ];
    let t = interleaved(&mut ebpf, &cases, method)?;
    for (c, tt) in cases.iter().zip(&t).skip(1) {
        report
            .push(SECTION, c.name.clone(), NS_PER_PACKET, *tt)
            .note = format!(
            "{:+.0} ns over the pass floor ({:.0})",
            tt.median - t[0].median,
            t[0].median
        );
    }
    Ok(())
}
