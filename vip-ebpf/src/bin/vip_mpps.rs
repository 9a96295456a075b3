//! `vip_mpps`: the three bench-only programs of the packets-per-second section, never
//! deployed.
//!
//! - `mpps_gen`: the generator. `BPF_PROG_TEST_RUN` in live-frames mode runs it on a
//!   frame "received" on the generator's veth; it writes the frame from a template, gives
//!   it flow number `base + (n & mask)` (`n` counts the frames it made) as source address
//!   and port, fixes both checksums, and answers `XDP_TX`, which the kernel turns into a
//!   transmission out of that veth: the frame arrives at the peer, where the load
//!   balancer runs in native mode. Pages are recycled with whatever the receiving side
//!   left in them, so the whole header is rewritten every time.
//! - `mpps_tx`: the floor on the load balancer's veth: swap the MACs, `XDP_TX`.
//! - `mpps_sink`: on the generator's veth (where the balancer's `XDP_TX` lands): counts
//!   every frame, counts those that look like the row's expected output, keeps a copy of
//!   one frame in 65,536 for the harness to decode, and drops them all.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use vip_ebpf::{csum::fold, ptr::ptr_at};

/// Template frame length (a 64-byte TCP frame, the size packet rates are quoted for).
const FRAME_WORDS: usize = 8;

/// What the generator makes (written by the harness).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GenConfig {
    /// The frame of flow `0`, exactly as sent: Ethernet, IPv4, TCP.
    frame: [u64; FRAME_WORDS],
    /// First flow number.
    base: u32,
    /// Flow numbers cycle through `base + (n & mask)`.
    mask: u32,
    /// One's-complement sum of the IPv4 header without its checksum and source address.
    ip_rest: u32,
    /// One's-complement sum of the TCP checksum's input without the source address and
    /// port.
    l4_rest: u32,
}

#[map(name = "MPPS_GEN")]
static MPPS_GEN: Array<GenConfig> = Array::with_max_entries(1, 0);

/// Frames made by the generator (the `n` above).
#[map(name = "MPPS_GEN_COUNT")]
static MPPS_GEN_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Client addresses: 198.18.128.0/17.
const CLIENT_NET: u32 = 0xc612_8000;

/// The generator.
#[xdp]
pub fn mpps_gen(ctx: XdpContext) -> u32 {
    let (Some(cfg), Some(count)) = (MPPS_GEN.get(0), MPPS_GEN_COUNT.get_ptr_mut(0)) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(frame) = ptr_at::<[u64; FRAME_WORDS]>(&ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a per-CPU map value; this program is its only writer on this CPU.
    let n = unsafe {
        let n = *count;
        *count = n + 1;
        n
    };
    let flow = cfg.base.wrapping_add(n as u32 & cfg.mask);
    let src = CLIENT_NET | ((flow >> 15) & 0x7fff);
    let sport = 1024 + (flow & 0x7fff);
    for i in 0..FRAME_WORDS {
        frame.set(i, cfg.frame[i]);
    }
    let (hi, lo) = (src >> 16, src & 0xffff);
    frame.part::<u32, 26>().write(src.to_be());
    frame.part::<u16, 34>().write((sport as u16).to_be());
    frame
        .part::<u16, 24>()
        .write((!fold(cfg.ip_rest + hi + lo)).to_be());
    frame
        .part::<u16, 50>()
        .write((!fold(cfg.l4_rest + hi + lo + sport)).to_be());
    xdp_action::XDP_TX
}

/// The floor: swap the MACs and send the frame back.
#[xdp]
pub fn mpps_tx(ctx: XdpContext) -> u32 {
    let Some(macs) = ptr_at::<[u16; 6]>(&ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    let m = macs.read();
    macs.write([m[3], m[4], m[5], m[0], m[1], m[2]]);
    xdp_action::XDP_TX
}

/// What the sink counts as the row's output (written by the harness).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SinkConfig {
    /// First 8 bytes of the frame (destination MAC and the start of the source MAC), as
    /// read in native order, masked with `eth_mask`, must equal this.
    eth: u64,
    /// See `eth`.
    eth_mask: u64,
    /// The outer IPv4 header's protocol.
    proto: u32,
    /// The outer IPv4 destination, masked with `daddr_mask` (both as in the frame).
    daddr: u32,
    /// See `daddr`.
    daddr_mask: u32,
    /// When not 0: the destination of the IPv4 header inside the outer one (IPIP).
    inner_daddr: u32,
}

#[map(name = "MPPS_SINK")]
static MPPS_SINK: Array<SinkConfig> = Array::with_max_entries(1, 0);

/// Frames that arrived and those of them that matched the row's output (one value, so
/// that the harness reads both at the same moment).
#[map(name = "MPPS_SINK_COUNT")]
static MPPS_SINK_COUNT: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Words of a sampled frame (enough for an IPIP-encapsulated 64-byte frame).
const SAMPLE_WORDS: usize = 12;

/// One sampled frame.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Bytes copied (a multiple of 8).
    len: u64,
    /// The frame's first `len` bytes.
    words: [u64; SAMPLE_WORDS],
}

#[map(name = "MPPS_SAMPLE")]
static MPPS_SAMPLE: Array<Sample> = Array::with_max_entries(1, 0);

/// Whether the frame is the row's expected output.
#[inline(always)]
fn matches(ctx: &XdpContext, cfg: &SinkConfig) -> bool {
    let Some(head) = ptr_at::<[u32; 9]>(ctx, 0) else {
        return false;
    };
    // Bytes 0..8 (MACs), 12..14 ethertype, 23 protocol, 30..34 destination.
    let eth = u64::from(head.get(0)) | (u64::from(head.get(1)) << 32);
    let ethertype = head.part::<u16, 12>().read();
    let proto = head.part::<u8, 23>().read();
    let daddr = ptr_at::<u32>(ctx, 30).map_or(0, |p| p.read());
    if eth & cfg.eth_mask != cfg.eth
        || ethertype != 0x0800u16.to_be()
        || u32::from(proto) != cfg.proto
        || daddr & cfg.daddr_mask != cfg.daddr
    {
        return false;
    }
    cfg.inner_daddr == 0 || ptr_at::<u32>(ctx, 50).is_some_and(|p| p.read() == cfg.inner_daddr)
}

/// The sink.
#[xdp]
pub fn mpps_sink(ctx: XdpContext) -> u32 {
    let (Some(cfg), Some(counts)) = (MPPS_SINK.get(0), MPPS_SINK_COUNT.get_ptr_mut(0)) else {
        return xdp_action::XDP_DROP;
    };
    let matched = u64::from(matches(&ctx, cfg));
    // SAFETY: a per-CPU map value; this program is its only writer on this CPU.
    let n = unsafe {
        let n = (*counts)[0];
        (*counts)[0] = n + 1;
        (*counts)[1] += matched;
        n
    };
    if n & 0xffff == 0
        && let Some(s) = MPPS_SAMPLE.get_ptr_mut(0)
    {
        let mut len = 0u64;
        for i in 0..SAMPLE_WORDS {
            let Some(w) = ptr_at::<u64>(&ctx, i * 8) else {
                break;
            };
            // SAFETY: a map value; a concurrent copy on another CPU can only mix two
            // received frames, which the harness's check then refuses.
            unsafe { (*s).words[i] = w.read() };
            len += 8;
        }
        // SAFETY: as above.
        unsafe { (*s).len = len };
    }
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
