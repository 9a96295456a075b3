//! Loads the datapath inside `vip_bench` and fills its maps the way `vipd` would: VIPs,
//! the VIP-address filter, backends with resolved next hops, Maglev tables, global
//! settings (with the connection table's seed and size), and (for the scaling section)
//! many more VIPs and a full connection table.
//!
//! The maps are written directly with aya rather than through `vip_user::datapath`,
//! because that type owns the `vip_lb` object and the benchmark needs the same code
//! compiled into `vip_bench` (inside the restoring wrapper).
//!
//! As in vipd, each main VIP has backend ids of its own ([`backend_id`]), carrying the
//! VIP's id and flags. The extra VIPs of the scaling section share the main IPv4 VIP's
//! backends (one table for all of them); their pinned flows would be counted under that
//! VIP, which the benchmark does not look at.

use std::{
    collections::HashMap as StdHashMap,
    net::{IpAddr, SocketAddr},
};

use anyhow::{Context, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, MapData,
        lpm_trie::{Key, LpmTrie},
    },
};
use vip_common::{
    ACL_ALLOW, ACL_DENY, ACL_ID_BITS, AclKeyV4, BACKEND_UP, Backend, ConnState, FlowSet,
    GlobalConfig, MAGLEV_LANES, MAP_ACL_V4, MAP_BACKENDS, MAP_CONFIG, MAP_CONNS, MAP_MAGLEV,
    MAP_NEXTHOPS, MAP_VIP_FILTER, MAP_VIP_SLOTS, MAP_VIPS, MaglevElem, NEXTHOP_F_VALID, NextHop,
    PROTO_TCP, PROTO_UDP, VIP_F_ACL, VIP_F_DSR_L2, VIP_FILTER_WORDS, VipKey, VipMeta, VipSlot,
    acl_id, flow_set_index, flow_sets, flow_table_hash, maglev_elements, vip_filter_slot,
    vip_slot_hash, vip_slot_index, vip_slots,
};
use vip_user::control::maglev::{self, MaglevBackend};

use super::{VIP_BENCH, packets, testrun::load_all};

/// Programs of `vip_bench` that run the datapath.
pub const LB_PROGS: [&str; 24] = [
    "bench_map_lru_insert",
    "bench_map_lru_insert_pcpu",
    "bench_map_hash4",
    "bench_map_hash20",
    "bench_map_hash40",
    "bench_map_lru40",
    "bench_map_flows_lookup",
    "bench_map_flows_insert",
    "bench_map_percpu",
    "bench_stage_parse",
    "bench_stage_filter",
    "bench_stage_vip",
    "bench_stage_vip_map",
    "bench_stage_backend",
    "bench_stage_forward",
    "bench_pass_bare",
    "bench_pass",
    "bench_swap",
    "bench_encap",
    "bench_pass_vary",
    "bench_lb",
    "bench_lb_untraced",
    "bench_lb_new",
    "bench_lb_once",
];

/// Backends per family (Katran's published figure used 16); each main VIP has this many.
pub const BACKENDS_PER_FAMILY: u32 = 16;

/// Seed of the connection table's hash (vipd picks a random one per node; a fixed one
/// keeps the benchmark's sets the same from run to run).
pub const FLOW_SEED: u32 = 0x5eed_0001;

/// The backend id of backend `i` of main VIP `vip` (its index in [`main_vips`]).
pub fn backend_id(vip: u32, i: u32) -> u32 {
    vip * BACKENDS_PER_FAMILY + i
}

/// Prefixes in the access list of the VIP at [`packets::vip_acl_v4`]: 999 denied /28s
/// of 198.19.0.0/16 and the client's 198.18.0.0/16 allowed, plus the allow list's
/// default (a zero-length deny), as vipd writes it.
pub const ACL_PREFIXES: u32 = 1_000;

/// Sizes of one benchmark setup.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Maglev table size of the four main VIPs.
    pub table_size: u32,
    /// Extra TCP VIPs beyond the four main ones (scaling section).
    pub extra_vips: u32,
    /// Maglev table size of the extra VIPs. They share one table: they are there to
    /// grow the VIP map, and 100,000 tables would take millions of map writes to fill.
    pub extra_table_size: u32,
    /// Connection-table capacity.
    pub max_conns: u32,
    /// Fill the per-backend next-hop cache (as vipd would from the kernel's routes and
    /// neighbours); without it the datapath asks `bpf_fib_lookup` for every packet.
    pub resolved_nexthops: bool,
}

/// The main VIPs: (address:port, protocol, flags, IPv6 backends).
pub fn main_vips() -> [(SocketAddr, u8, u32, bool); 4] {
    [
        (packets::vip_v4(), PROTO_TCP, 0, false),
        (packets::vip_v4(), PROTO_UDP, 0, false),
        (packets::vip_v6(), PROTO_TCP, 0, true),
        (packets::vip_dsr_v4(), PROTO_TCP, VIP_F_DSR_L2, false),
    ]
}

/// Loads `vip_bench` with map sizes from `setup` and fills the maps.
pub fn load(setup: Setup) -> Result<Ebpf> {
    let vips = 4 + setup.extra_vips;
    let maglev_len = 4 * setup.table_size + setup.extra_table_size;
    let backends = backend_id(main_vips().len() as u32, 0);
    // The object is loaded with the sizes given here, as vipd does from its config.
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(MAP_VIPS, 2 * vips)
        .map_max_entries(MAP_MAGLEV, maglev_elements(maglev_len))
        .map_max_entries(MAP_BACKENDS, backends)
        .map_max_entries(MAP_NEXTHOPS, backends)
        .map_max_entries(MAP_CONNS, flow_sets(setup.max_conns))
        .map_max_entries(MAP_VIP_SLOTS, vip_slots(vips));
    let mut ebpf = load_all_with(&mut loader, &LB_PROGS)?;
    fill(&mut ebpf, setup)?;
    Ok(ebpf)
}

fn load_all_with(loader: &mut EbpfLoader<'_>, progs: &[&str]) -> Result<Ebpf> {
    let mut ebpf = loader
        .load(VIP_BENCH)
        .context("loading vip_bench with the datapath")?;
    for p in progs {
        let xdp: &mut aya::programs::Xdp = ebpf
            .program_mut(p)
            .with_context(|| format!("no program {p} in vip_bench"))?
            .try_into()?;
        xdp.load()
            .map_err(|e| anyhow::anyhow!("the verifier refused {p}: {e:#}"))?;
    }
    let _ = load_all;
    Ok(ebpf)
}

/// The shared conversions, re-exported so bench code names one place for them.
pub use vip_user::datapath::keys::{addr_words as words, flow_key, vip_key};

/// Backend `i`'s address (IPv4 in 198.19.0.0/24, IPv6 in 2001:db8:1::/64).
pub fn backend_addr(i: u32, v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::new(
            IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001,
                0xdb8,
                1,
                0,
                0,
                0,
                0,
                i as u16 + 1,
            )),
            80,
        )
    } else {
        SocketAddr::from(([198, 19, 0, i as u8 + 1], 80))
    }
}

/// The address of the `i`th extra VIP: within 198.19.128.0/17, port by thousands.
pub fn extra_vip(i: u32) -> SocketAddr {
    let host = i % 32_768;
    SocketAddr::from((
        [198, 19, 128 + (host >> 8) as u8, host as u8],
        1000 + (i / 32_768) as u16,
    ))
}

fn fill(ebpf: &mut Ebpf, setup: Setup) -> Result<()> {
    // Each main VIP's backends (its own ids) and Maglev input.
    let mut values: Vec<(u32, Backend, NextHop)> = Vec::new();
    let mut tables: Vec<Vec<MaglevBackend>> = Vec::new();
    for (n, (_, _, flags, v6)) in main_vips().into_iter().enumerate() {
        let mut table = Vec::new();
        for i in 0..BACKENDS_PER_FAMILY {
            let id = backend_id(n as u32, i);
            let identity = backend_addr(i, v6);
            let (addr, family) = words(identity.ip());
            let backend = Backend {
                addr,
                generation: 1,
                family,
                state: BACKEND_UP,
                _pad: [0; 2],
                vip_id: n as u32,
                vip_flags: flags,
            };
            let nexthop = NextHop {
                // The neighbour's MAC (section 1c's namespace uses the same).
                dst_mac: [0x02, 0, 0, 0, 1, i as u8],
                src_mac: crate::packet::LB_MAC,
                ifindex: 0,
                flags: NEXTHOP_F_VALID,
            };
            values.push((id, backend, nexthop));
            table.push(MaglevBackend {
                id,
                identity,
                weight: 1,
            });
        }
        tables.push(table);
    }
    let mut backends: Array<&mut MapData, Backend> =
        Array::try_from(ebpf.map_mut(MAP_BACKENDS).context("BACKENDS map")?)?;
    for (id, b, _) in &values {
        backends.set(*id, b, 0)?;
    }
    let mut nexthops: Array<&mut MapData, NextHop> =
        Array::try_from(ebpf.map_mut(MAP_NEXTHOPS).context("NEXTHOPS map")?)?;
    for (id, _, nh) in values.iter().filter(|_| setup.resolved_nexthops) {
        nexthops.set(*id, nh, 0)?;
    }
    let mut config: Array<&mut MapData, GlobalConfig> =
        Array::try_from(ebpf.map_mut(MAP_CONFIG).context("CONFIG map")?)?;
    config.set(
        0,
        GlobalConfig {
            flags: 0,
            mtu: 1500,
            tunnel_src_v4_be: u32::from_ne_bytes([198, 18, 255, 0]),
            tunnel_src_v4_hash_bits: 8,
            tunnel_src_v6: words("2001:db8:ffff::".parse().expect("literal")).0,
            flow_sets_mask: flow_sets(setup.max_conns) - 1,
            flow_seed: FLOW_SEED,
            vip_slots_mask: vip_slots(4 + setup.extra_vips) - 1,
        },
        0,
    )?;

    // All tables in memory first, packed as the map holds them, then one write per
    // element.
    let mut entries = vec![0u16; (4 * setup.table_size + setup.extra_table_size) as usize];
    let mut write_table = |base: u32, table: &[u32]| -> Result<()> {
        for (i, id) in table.iter().enumerate() {
            entries[(base as usize) + i] = u16::try_from(*id).context("backend id")?;
        }
        Ok(())
    };
    let mut metas = Vec::new();
    for (n, (addr, proto, flags, _)) in main_vips().into_iter().enumerate() {
        let base = n as u32 * setup.table_size;
        write_table(base, &maglev::build(&tables[n], setup.table_size))?;
        metas.push((
            vip_key(addr, proto),
            VipMeta {
                id: n as u32,
                flags,
                table_base: base,
                table_size: setup.table_size,
            },
        ));
    }
    let acl_vip = VipMeta {
        flags: VIP_F_ACL,
        ..metas[0].1
    };
    if setup.extra_vips > 0 {
        let small = maglev::build(&tables[0], setup.extra_table_size);
        let base = 4 * setup.table_size;
        write_table(base, &small)?;
        for i in 0..setup.extra_vips {
            metas.push((
                vip_key(extra_vip(i), PROTO_TCP),
                VipMeta {
                    id: 4 + i,
                    flags: 0,
                    table_base: base,
                    table_size: setup.extra_table_size,
                },
            ));
        }
    }
    // The VIP with an access list: port 81 of the IPv4 VIP, with port 80's id and table
    // (its flows count as port 80's), so the two differ only in the list. It comes last,
    // so it takes no VIP slot another VIP wanted (and it gets one of its own here), and
    // it shares the IPv4 VIP's filter bit and address marker.
    metas.push((vip_key(packets::vip_acl_v4(), PROTO_TCP), acl_vip));
    let mut maglev_map: Array<&mut MapData, MaglevElem> =
        Array::try_from(ebpf.map_mut(MAP_MAGLEV).context("MAGLEV map")?)?;
    for (i, chunk) in entries.chunks(MAGLEV_LANES as usize).enumerate() {
        let mut e = MaglevElem::default();
        e[..chunk.len()].copy_from_slice(chunk);
        maglev_map.set(i as u32, e, 0)?;
    }
    // The filter bits first, as vipd sets them before it publishes a VIP.
    let mut filter = vec![0u64; VIP_FILTER_WORDS as usize];
    for (k, _) in &metas {
        let (word, mask) = vip_filter_slot(&k.addr, k.family);
        filter[word as usize] |= mask;
    }
    let mut filter_map: Array<&mut MapData, u64> =
        Array::try_from(ebpf.map_mut(MAP_VIP_FILTER).context("VIP_FILTER map")?)?;
    for (i, w) in filter.iter().enumerate().filter(|(_, w)| **w != 0) {
        filter_map.set(i as u32, w, 0)?;
    }
    // The VIP slots: the first VIP to want a slot gets it, as with vipd.
    let mask = vip_slots(4 + setup.extra_vips) - 1;
    let mut slots: std::collections::HashMap<u32, VipSlot> = std::collections::HashMap::new();
    for (k, m) in &metas {
        let h = vip_slot_hash(k);
        slots
            .entry(vip_slot_index(h, mask))
            .or_insert_with(|| VipSlot::new(k, h, m));
    }
    let mut slot_map: Array<&mut MapData, VipSlot> =
        Array::try_from(ebpf.map_mut(MAP_VIP_SLOTS).context("VIP_SLOTS map")?)?;
    for (i, slot) in &slots {
        slot_map.set(*i, slot, 0)?;
    }
    let mut acl: LpmTrie<&mut MapData, AclKeyV4, u32> =
        LpmTrie::try_from(ebpf.map_mut(MAP_ACL_V4).context("ACL_V4 map")?)?;
    let id_be = acl_id(acl_vip.id, acl_vip.flags).to_be();
    let entry = |addr: [u8; 4], len: u32| {
        Key::new(
            ACL_ID_BITS + len,
            AclKeyV4 {
                acl_id_be: id_be,
                addr: u32::from_ne_bytes(addr),
            },
        )
    };
    for i in 0..ACL_PREFIXES - 1 {
        acl.insert(
            &entry([198, 19, (i >> 4) as u8, (i as u8 & 15) << 4], 28),
            ACL_DENY,
            0,
        )?;
    }
    acl.insert(&entry([198, 18, 0, 0], 16), ACL_ALLOW, 0)?;
    acl.insert(&entry([0, 0, 0, 0], 0), ACL_DENY, 0)?;
    let mut vips: HashMap<&mut MapData, VipKey, VipMeta> =
        HashMap::try_from(ebpf.map_mut(MAP_VIPS).context("VIPS map")?)?;

    for (k, m) in metas {
        // The address marker, as vipd publishes with every VIP (fragments are ours).
        let marker = VipKey {
            port_be: 0,
            proto: 0,
            ..k
        };
        let marker_meta = VipMeta {
            flags: vip_common::VIP_F_ADDR_MARKER,
            ..VipMeta::default()
        };
        vips.insert(marker, marker_meta, 0)?;
        vips.insert(k, m, 0)?;
    }
    Ok(())
}

/// Fills the connection table with `n` flows to the main IPv4 VIP (clients in
/// 198.18.0.0/16 × ports), as `n` established connections would, placed as the datapath
/// places them: the sets are built in memory with the shared `FlowSet::insert` (with the
/// seed and size [`load`] wrote to `CONFIG`) and each is written once. For a table just
/// loaded (the sets it writes replace what they held). Returns the entries the table
/// holds afterwards: fewer than `n` near capacity, where full sets replace flows.
pub fn fill_conns(ebpf: &mut Ebpf, n: u32) -> Result<u64> {
    let config: Array<&MapData, GlobalConfig> =
        Array::try_from(ebpf.map(MAP_CONFIG).context("CONFIG map")?)?;
    let cfg = config.get(&0, 0)?;
    let mut sets: StdHashMap<u32, FlowSet> = StdHashMap::new();
    for i in 0..n {
        let src = SocketAddr::from((
            [198, 18, (i >> 16) as u8 | 0x80, (i >> 8) as u8],
            1024 + (i & 0xff) as u16,
        ));
        let key = flow_key(src, packets::vip_v4(), PROTO_TCP);
        let h = flow_table_hash(&key, cfg.flow_seed);
        sets.entry(flow_set_index(h, cfg.flow_sets_mask))
            .or_default()
            .insert(
                &key,
                h,
                &ConnState {
                    backend_id: backend_id(0, i % BACKENDS_PER_FAMILY),
                    generation: 1,
                },
            );
    }
    let mut conns: Array<&mut MapData, FlowSet> =
        Array::try_from(ebpf.map_mut(MAP_CONNS).context("CONNS map")?)?;
    for (index, set) in &sets {
        conns.set(*index, set, 0)?;
    }
    Ok(sets.values().map(|s| s.len() as u64).sum())
}
