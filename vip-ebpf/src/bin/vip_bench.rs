//! `vip_bench`: bench-only XDP programs, never deployed.
//!
//! `BPF_PROG_TEST_RUN` with `repeat > 1` runs every iteration on the same buffer, so a
//! program that rewrites or encapsulates the packet would see its own output from the
//! second iteration on and measure the wrong path. Every program here therefore runs its
//! body inside [`restoring`]: save the first [`SAVE_LEN`] bytes, run the body, undo any
//! head adjustment, copy the saved bytes back. The floors and the load balancer pay the
//! same wrapper, so it cancels when they are compared. (`freplace` is refused on the
//! kernel this was written for, so the wrapper is compiled in.)
//!
//! Floors:
//! - `bench_pass`: `XDP_PASS` at once.
//! - `bench_swap`: parse Ethernet + IPv4/IPv6, swap the MACs, `XDP_TX`.
//! - `bench_encap`: parse Ethernet + IPv4, prepend a minimal IPIP header (with its
//!   checksum), `XDP_TX`: the least any tunnelling load balancer must do.
//!
//! And `bench_lb`: the datapath's own entry function `vip_ebpf::lb::process`, the very
//! code `vip_lb` runs; `bench_lb_new` gives every iteration a new flow (the
//! connection-table miss path), `bench_pass_vary` is the pass floor with that same flow
//! change, and `bench_lb_once` is the unwrapped datapath for checking outputs.
#![no_std]
#![no_main]
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "keys by reference, as in the datapath (see its lib.rs): a key passed by value \
              is copied once more on the BPF stack, which would change what is measured"
)]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use vip_common::{
    ConnState, DEFAULT_TTL, ETH_P_IP, ETH_P_IPV6, FlowKey, FlowSet, IPV4_DF, PROTO_IPIP, VipKey,
    flow_set_index, flow_table_hash, tunnel_hash,
};
use vip_ebpf::{conntrack, lb, maps::VIPS, parse::parse, ptr::ptr_at, vip};

/// Bytes saved and restored around each run. Covers every header the datapath reads or
/// writes in the benchmark packets (the longest: Ethernet + IPv6 + ICMPv6 + the quoted
/// IPv6 header + 8 bytes = 110). The harness pads every packet to at least this size.
const SAVE_LEN: u32 = 128;
const WORDS: usize = SAVE_LEN as usize / 8;

/// Scratch space for the saved bytes (the BPF stack is too small to share with the
/// datapath).
#[repr(C)]
#[derive(Debug)]
pub struct Saved {
    /// Packet length before the body ran.
    len: u64,
    /// Packet length after it ran.
    len_after: u64,
    /// The first SAVE_LEN bytes.
    words: [u64; WORDS],
}

#[map(name = "BENCH_SAVED")]
static BENCH_SAVED: PerCpuArray<Saved> = PerCpuArray::with_max_entries(1, 0);

const IPIP_LEN: usize = Ipv4Hdr::LEN;

/// Runs `body` on the packet and puts the packet back as it was, so the next iteration
/// of a `repeat` run sees the same input. Returns `body`'s verdict, or `XDP_ABORTED`
/// when the packet could not be saved or restored (the harness treats that as a failed
/// run).
///
/// The load balancer's programs call [`save`] and [`restore`] themselves around
/// `lb::process`: the same two steps, without a closure that the compiler might leave as a
/// function of its own once the datapath is large (a BPF-to-BPF call the floors do not
/// pay).
#[inline(always)]
fn restoring(ctx: &XdpContext, body: impl FnOnce(&XdpContext) -> u32) -> u32 {
    if save(ctx).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    let verdict = body(ctx);
    restore(ctx, verdict)
}

/// The first half of [`restoring`]: saves the packet's length and first [`SAVE_LEN`]
/// bytes.
///
/// The copies use direct packet access, 8 bytes at a time (a first version with
/// `bpf_xdp_load_bytes`/`bpf_xdp_store_bytes` cost ~100 ns, drowning what it measures).
#[inline(always)]
fn save(ctx: &XdpContext) -> Result<(), ()> {
    // Nothing of the wrapper's lives on the stack across the body except `ctx`: the
    // datapath needs nearly all of the 512-byte BPF stack, so the saved bytes and length
    // live in a per-CPU map value that is looked up again afterwards (an inlined array
    // lookup: a few instructions).
    let saved = BENCH_SAVED.get_ptr_mut(0).ok_or(())?;
    let head = ptr_at::<[u64; WORDS]>(ctx, 0).ok_or(())?;
    // SAFETY: `saved` is a map value.
    unsafe {
        (*saved).len = (ctx.data_end() - ctx.data()) as u64;
        for i in 0..WORDS {
            (*saved).words[i] = head.get(i);
        }
    }
    Ok(())
}

/// The second half of [`restoring`]: undoes the body's head adjustment, copies the saved
/// bytes back and returns `verdict` (`XDP_ABORTED` when that fails).
#[inline(always)]
fn restore(ctx: &XdpContext, verdict: u32) -> u32 {
    let Some(saved) = BENCH_SAVED.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // Both lengths go through the map with volatile accesses, so the compiler cannot
    // fold them into pointer arithmetic on the packet that the verifier refuses.
    // SAFETY: a map value.
    let grown = unsafe {
        core::ptr::write_volatile(
            &raw mut (*saved).len_after,
            (ctx.data_end() - ctx.data()) as u64,
        );
        core::ptr::read_volatile(&raw const (*saved).len_after) as i64
            - core::ptr::read_volatile(&raw const (*saved).len) as i64
    };
    // SAFETY: undoes the body's own head adjustment, within the same headroom.
    if grown != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, grown as i32) } != 0 {
        return xdp_action::XDP_ABORTED;
    }
    let Some(head) = ptr_at::<[u64; WORDS]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    for i in 0..WORDS {
        // SAFETY: a map value.
        head.set(i, unsafe { (*saved).words[i] });
    }
    verdict
}

/// Floor 1: the cheapest possible verdict.
#[xdp]
pub fn bench_pass(ctx: XdpContext) -> u32 {
    restoring(&ctx, |_| xdp_action::XDP_PASS)
}

/// Floor 2: parse Ethernet + IP, swap MACs, `XDP_TX`.
#[xdp]
pub fn bench_swap(ctx: XdpContext) -> u32 {
    restoring(&ctx, swap_macs)
}

/// Floor 3: parse, minimal IPIP encapsulation, `XDP_TX`.
#[xdp]
pub fn bench_encap(ctx: XdpContext) -> u32 {
    restoring(&ctx, encap_ipip)
}

/// Floor 1 plus the per-iteration flow change of `bench_lb_new`, so that its cost is
/// known (and can be taken out of the new-flow figure).
#[xdp]
pub fn bench_pass_vary(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        vary_flow(c);
        xdp_action::XDP_PASS
    })
}

/// The datapath, exactly as `vip_lb` runs it.
#[xdp]
#[inline(always)]
pub fn bench_lb(ctx: XdpContext) -> u32 {
    if save(&ctx).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    let verdict = lb::process(&ctx);
    restore(&ctx, verdict)
}

/// The datapath without the live-trace hook (`lb::process` less `trace::begin` and
/// `trace::end`): `bench_lb` against this is what having the trace costs while it is off.
#[xdp]
#[inline(always)]
pub fn bench_lb_untraced(ctx: XdpContext) -> u32 {
    if save(&ctx).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    let v = lb::decide(&ctx);
    vip_ebpf::stats::count(v.reason);
    restore(&ctx, v.action)
}

/// The datapath on a new flow every iteration (the connection-table miss path: Maglev
/// lookup and connection-table insert; at steady state each insert replaces a flow).
#[xdp]
#[inline(always)]
pub fn bench_lb_new(ctx: XdpContext) -> u32 {
    if save(&ctx).is_err() {
        return xdp_action::XDP_ABORTED;
    }
    vary_flow(&ctx);
    let verdict = lb::process(&ctx);
    restore(&ctx, verdict)
}

/// The datapath without the wrapper: `vip_lb` itself, for checking that a benchmark
/// packet takes the path it is named after (the output is not restored).
#[xdp]
// Inlined into the entry point the macro generates: left out of line once the datapath
// is large, it would cost every packet a BPF-to-BPF call.
#[inline(always)]
pub fn bench_lb_once(ctx: XdpContext) -> u32 {
    lb::process(&ctx)
}

// Stages of the datapath, each the one before plus one step, so that the differences
// between their costs say where the time of `bench_lb` goes. Each returns XDP_PASS when
// its step succeeded and XDP_DROP otherwise (the harness checks which it gets), and
// uses what it computed in that verdict so the compiler cannot drop the work.

/// Every destination address, for the stages that parse without the VIP-address filter.
#[inline(always)]
fn any_address(_: &[u32; 4], _: u8) -> bool {
    true
}

/// Stage 1: parse Ethernet, IP and ports.
#[xdp]
pub fn bench_stage_parse(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| match parse(c, any_address) {
        Ok(p) if p.key.src[0] ^ p.key.dst[0] != 0 => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    })
}

/// Stage 2: + the VIP-address filter, as the datapath applies it inside `parse` (a hit:
/// the packet is for a VIP address; a miss stops parsing at the IP header).
#[xdp]
pub fn bench_stage_filter(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| match parse(c, vip::maybe_vip) {
        Ok(p) if p.key.src[0] ^ p.key.dst[0] != 0 => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    })
}

/// Stage 3: + the connection-table lookup (a hit: the backend the flow is pinned to).
#[xdp]
pub fn bench_stage_backend(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        let Ok(p) = parse(c, vip::maybe_vip) else {
            return xdp_action::XDP_DROP;
        };
        let cfg = lb::config();
        let slot = conntrack::slot(conntrack::hash(&p.key, cfg), cfg);
        match conntrack::lookup(&slot, &p.key) {
            Some((id, _)) if id != u32::MAX => xdp_action::XDP_PASS,
            _ => xdp_action::XDP_DROP,
        }
    })
}

/// Stage 4: + forwarding (next hop, encapsulation or MAC rewrite), no counters. Returns
/// the forwarding verdict.
#[xdp]
pub fn bench_stage_forward(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        let Ok(p) = parse(c, vip::maybe_vip) else {
            return xdp_action::XDP_DROP;
        };
        let cfg = lb::config();
        let h = conntrack::hash(&p.key, cfg);
        let slot = conntrack::slot(h, cfg);
        let Some((id, backend)) = conntrack::lookup(&slot, &p.key) else {
            return xdp_action::XDP_DROP;
        };
        match lb::forward(
            c,
            &p,
            tunnel_hash(h),
            cfg,
            backend.vip_flags,
            id,
            backend,
            true,
        ) {
            Ok(v) => v.action,
            Err(_) => xdp_action::XDP_DROP,
        }
    })
}

/// The VIP lookup alone after parsing, as a new flow makes it (its slot, a hit).
#[xdp]
pub fn bench_stage_vip(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| match parse(c, any_address) {
        Ok(p) if vip::lookup_vip(&p.key, lb::config()).is_some() => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    })
}

/// The same lookup in the VIP hash map, which the VIP slots spare new flows.
#[xdp]
pub fn bench_stage_vip_map(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        let Ok(p) = parse(c, any_address) else {
            return xdp_action::XDP_DROP;
        };
        let vk = VipKey {
            addr: p.key.dst,
            port_be: p.key.dst_port_be,
            proto: p.key.proto,
            family: p.key.family,
        };
        // SAFETY: the value is only tested for presence.
        match unsafe { VIPS.get(&vk) } {
            Some(_) => xdp_action::XDP_PASS,
            None => xdp_action::XDP_DROP,
        }
    })
}

// Single map operations, to put a price on each kind the datapath uses: the key of a
// hash map is what the kernel hashes (jhash over its bytes), so three key sizes are
// measured: 4 bytes, 20 (VipKey) and 40 (FlowKey). The harness stores key `KEY_FILL`
// in every map; each program returns XDP_PASS on a hit.

/// Every word of the keys the harness stores.
const KEY_FILL: u32 = 0x0a0b_0c0d;

#[map(name = "MICRO_HASH4")]
static MICRO_HASH4: HashMap<[u32; 1], u64> = HashMap::with_max_entries(1024, 0);
#[map(name = "MICRO_HASH20")]
static MICRO_HASH20: HashMap<[u32; 5], u64> = HashMap::with_max_entries(1024, 0);
#[map(name = "MICRO_HASH40")]
static MICRO_HASH40: HashMap<[u32; 10], u64> = HashMap::with_max_entries(1024, 0);
#[map(name = "MICRO_LRU40")]
static MICRO_LRU40: LruHashMap<[u32; 10], u64> = LruHashMap::with_max_entries(1024, 0);
#[map(name = "MICRO_PERCPU")]
static MICRO_PERCPU: PerCpuArray<u64> = PerCpuArray::with_max_entries(16, 0);

/// The key word. A constant is fine: a map lookup is a helper call the compiler cannot
/// fold, and the kernel hashes the key at run time.
#[inline(always)]
fn micro_key(_ctx: &XdpContext) -> u32 {
    KEY_FILL
}

#[inline(always)]
fn hit(found: bool) -> u32 {
    if found {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// One hash lookup, 4-byte key.
#[xdp]
pub fn bench_map_hash4(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        let k = [micro_key(c)];
        // SAFETY: only tested for presence.
        hit(unsafe { MICRO_HASH4.get(&k) }.is_some())
    })
}

/// One hash lookup, 20-byte key (the size of VipKey).
#[xdp]
pub fn bench_map_hash20(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        let k = [micro_key(c); 5];
        // SAFETY: only tested for presence.
        hit(unsafe { MICRO_HASH20.get(&k) }.is_some())
    })
}

/// One hash lookup, 40-byte key (the size of FlowKey).
#[xdp]
pub fn bench_map_hash40(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        let k = [micro_key(c); 10];
        // SAFETY: only tested for presence.
        hit(unsafe { MICRO_HASH40.get(&k) }.is_some())
    })
}

/// One LRU hash lookup, 40-byte key (the connection table's kind).
#[xdp]
pub fn bench_map_lru40(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        let k = [micro_key(c); 10];
        // SAFETY: only tested for presence.
        hit(unsafe { MICRO_LRU40.get(&k) }.is_some())
    })
}

#[map(name = "MICRO_LRU_INS")]
static MICRO_LRU_INS: LruHashMap<[u32; 10], u64> = LruHashMap::with_max_entries(65_536, 0);
/// `BPF_F_NO_COMMON_LRU`: one LRU list per CPU, no shared list lock on insert.
#[map(name = "MICRO_LRU_INS_PCPU")]
static MICRO_LRU_INS_PCPU: LruHashMap<[u32; 10], u64> =
    LruHashMap::with_max_entries(65_536, BPF_F_NO_COMMON_LRU);
const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// A new 40-byte key every iteration (from the BENCH_FLOWS counter).
#[inline(always)]
fn next_flow_key() -> [u32; 10] {
    let n = match BENCH_FLOWS.get_ptr_mut(0) {
        // SAFETY: per-CPU value.
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    };
    let mut k = [KEY_FILL; 10];
    k[0] = n as u32;
    k
}

/// One LRU insert of a new key (a shared LRU list, as CONNS has now); at steady state
/// every insert evicts.
#[xdp]
pub fn bench_map_lru_insert(ctx: XdpContext) -> u32 {
    restoring(&ctx, |_| {
        let k = next_flow_key();
        hit(MICRO_LRU_INS.insert(&k, &1, 0).is_ok())
    })
}

/// One LRU insert of a new key into a per-CPU-list LRU (`BPF_F_NO_COMMON_LRU`).
#[xdp]
pub fn bench_map_lru_insert_pcpu(ctx: XdpContext) -> u32 {
    restoring(&ctx, |_| {
        let k = next_flow_key();
        hit(MICRO_LRU_INS_PCPU.insert(&k, &1, 0).is_ok())
    })
}

#[map(name = "MICRO_FLOWS")]
static MICRO_FLOWS: Array<FlowSet> = Array::with_max_entries(65_536, 0);
/// The insert benchmark's own table (its inserts would replace the lookup's key).
#[map(name = "MICRO_FLOWS_INS")]
static MICRO_FLOWS_INS: Array<FlowSet> = Array::with_max_entries(65_536, 0);
/// Seed of the micro connection table (any value: the table is the bench's own).
const MICRO_SEED: u32 = 0x5eed;

/// The micro-benchmark flow key: every word `KEY_FILL`, loaded through a volatile read so
/// the compiler cannot hash it at build time.
#[inline(always)]
fn micro_flow_key(ctx: &XdpContext) -> FlowKey {
    let w = micro_key(ctx);
    // SAFETY: a local.
    let w = unsafe { core::ptr::read_volatile(&w) };
    // SAFETY: FlowKey is 40 bytes of integers, any bit pattern is valid.
    unsafe { core::mem::transmute::<[u32; 10], FlowKey>([w; 10]) }
}

/// One connection-table lookup as the datapath does it: hash, set, compare the ways (the
/// harness stores the key in the last way, so all four are compared).
#[xdp]
pub fn bench_map_flows_lookup(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        let k = micro_flow_key(c);
        let h = flow_table_hash(&k, MICRO_SEED);
        let Some(set) = MICRO_FLOWS.get(flow_set_index(h, 65_535)) else {
            return xdp_action::XDP_DROP;
        };
        hit(set.find(&k, h).is_some())
    })
}

/// One connection-table insert of a new flow (at steady state it replaces one).
#[xdp]
pub fn bench_map_flows_insert(ctx: XdpContext) -> u32 {
    restoring(&ctx, |_| {
        // SAFETY: as in micro_flow_key.
        let k = unsafe { core::mem::transmute::<[u32; 10], FlowKey>(next_flow_key()) };
        let h = flow_table_hash(&k, MICRO_SEED);
        let Some(set) = MICRO_FLOWS_INS.get_ptr_mut(flow_set_index(h, 65_535)) else {
            return xdp_action::XDP_DROP;
        };
        let conn = ConnState {
            backend_id: 1,
            generation: 1,
        };
        // SAFETY: a map value; the benchmark runs on one CPU.
        hit(unsafe { (*set).insert(&k, h, &conn) } < vip_common::FLOW_WAYS)
    })
}

/// One per-CPU array counter increment (what each stats counter costs).
#[xdp]
pub fn bench_map_percpu(ctx: XdpContext) -> u32 {
    restoring(&ctx, |c| {
        let i = micro_key(c) & 7;
        match MICRO_PERCPU.get_ptr_mut(i) {
            Some(p) => {
                // SAFETY: per-CPU value.
                unsafe { *p += 1 };
                xdp_action::XDP_PASS
            }
            None => xdp_action::XDP_DROP,
        }
    })
}

/// Floor 1 without the wrapper, for the `repeat = 1` many-calls cross-check.
#[xdp]
pub fn bench_pass_bare(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Iterations of `bench_*_vary`/`bench_lb_new` so far; each one gets its own flow.
#[map(name = "BENCH_FLOWS")]
static BENCH_FLOWS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Offsets in the bench's IPv4/TCP frame (no VLAN, no IP options): the low half of the
/// source address and the source port. 2^32 distinct flows before one repeats.
const SRC_ADDR_LOW_OFF: usize = EthHdr::LEN + 14;
const SRC_PORT_OFF: usize = EthHdr::LEN + Ipv4Hdr::LEN;

/// Gives the packet the next flow of the sequence (source port and address low bits).
/// The TCP checksum is left stale: the datapath does not verify it.
#[inline(always)]
fn vary_flow(ctx: &XdpContext) {
    let Some(n) = BENCH_FLOWS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU value; the benchmark is pinned to one CPU.
    let n = unsafe {
        *n += 1;
        *n
    };
    if let (Some(addr), Some(port)) = (
        ptr_at::<[u8; 2]>(ctx, SRC_ADDR_LOW_OFF),
        ptr_at::<[u8; 2]>(ctx, SRC_PORT_OFF),
    ) {
        port.write((n as u16).to_be_bytes());
        addr.write(((n >> 16) as u16).to_be_bytes());
    }
}

#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    let ok = match u16::from_be(eth.read().ether_type) {
        ETH_P_IP => ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN).is_some_and(|ip| ip.read().vihl >> 4 == 4),
        ETH_P_IPV6 => {
            ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN).is_some_and(|ip| ip.read().vcf[0] >> 4 == 6)
        }
        _ => false,
    };
    if !ok {
        return xdp_action::XDP_PASS;
    }
    let macs = eth.part::<[u8; 12], 0>();
    for i in 0..6 {
        let dst = macs.get(i);
        macs.set(i, macs.get(6 + i));
        macs.set(6 + i, dst);
    }
    xdp_action::XDP_TX
}

#[inline(always)]
fn encap_ipip(ctx: &XdpContext) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    let eth = eth.read();
    if u16::from_be(eth.ether_type) != ETH_P_IP {
        return xdp_action::XDP_PASS;
    }
    let Some(inner) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return xdp_action::XDP_PASS;
    };
    let inner = inner.read();
    if inner.vihl >> 4 != 4 {
        return xdp_action::XDP_PASS;
    }
    // SAFETY: grows the head by one IPv4 header; the kernel checks the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IPIP_LEN as i32)) } != 0 {
        return xdp_action::XDP_ABORTED;
    }
    let (Some(new_eth), Some(outer)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<[u16; 10]>(ctx, EthHdr::LEN),
    ) else {
        return xdp_action::XDP_ABORTED;
    };
    let tot_len = u16::from_be_bytes(inner.tot_len) + IPIP_LEN as u16;
    let src = inner.dst_addr; // the LB sends from the VIP's side
    let dst = [198, 18, 255, 1]; // a fixed backend: the floor has no lookup
    let mut hdr: [u16; 10] = [
        u16::from_be_bytes([0x45, 0]).to_be(),
        tot_len.to_be(),
        0,
        IPV4_DF.to_be(),
        u16::from_be_bytes([DEFAULT_TTL, PROTO_IPIP]).to_be(),
        0,
        u16::from_ne_bytes([src[0], src[1]]),
        u16::from_ne_bytes([src[2], src[3]]),
        u16::from_ne_bytes([dst[0], dst[1]]),
        u16::from_ne_bytes([dst[2], dst[3]]),
    ];
    hdr[5] = ipv4_checksum(&hdr);
    new_eth.part::<[u8; 6], 0>().write(eth.src_addr);
    new_eth.part::<[u8; 6], 6>().write(eth.dst_addr);
    new_eth.part::<u16, 12>().write(eth.ether_type);
    outer.write(hdr);
    xdp_action::XDP_TX
}

/// RFC 1071 checksum of a 20-byte header given as native-order loads of its words.
#[inline(always)]
fn ipv4_checksum(words: &[u16; 10]) -> u16 {
    let mut sum: u32 = 0;
    for w in words {
        sum += u32::from(*w);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
