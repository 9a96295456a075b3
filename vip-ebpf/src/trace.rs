//! Live trace (`vipctl trace --live`): while user space has armed `TRACE_CTL`, each
//! packet matching its terms gets one [`TraceRecord`] in `TRACE_RING`: the verdict and
//! reason counted for it, the VIP, the backend and how it was found, and the first bytes
//! of the frame as it arrived.
//!
//! [`begin`] runs before the packet path (it must copy the frame before the path rewrites
//! it, and ask the connection table before the path pins a new flow); [`end`] runs where
//! the reason is counted, with the final verdict. Off, [`begin`] is one array read and a
//! branch, and [`end`] one more branch on the `None` it got.
//!
//! A BPF ring buffer rather than aya-log: aya-log writes formatted fields through a
//! per-CPU buffer and a perf event array, and has no way to carry the frame bytes the
//! pcap needs; a ring record is one reserve, plain stores and one submit, in order
//! across CPUs. (Not measured against aya-log: see docs/architecture.md.)

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::generated::{bpf_ktime_get_ns, bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    maps::ring_buf::RingBufEntry,
    programs::XdpContext,
};
use vip_common::{
    FlowKey, MAGLEV_LANES, PROTO_TCP, PROTO_UDP, TRACE_NONE, TRACE_PICK_CONN, TRACE_PICK_MAGLEV,
    TRACE_PICK_NONE, TRACE_SNAP_MAX, TraceCtl, TraceRecord, VIP_F_HASH_SRC_ONLY, flow_hash,
};

use crate::{
    conntrack,
    maps::{CONFIG, MAGLEV, TRACE_CTL, TRACE_LOST, TRACE_RING},
    parse::parse,
    verdict::Verdict,
    vip,
};

/// A record reserved in the ring for the packet being decided.
pub type Pending = RingBufEntry<TraceRecord>;

/// The trace control when tracing is on.
#[inline(always)]
fn armed() -> Option<&'static TraceCtl> {
    let ctl = TRACE_CTL.get(0)?;
    if ctl.active == 0 { None } else { Some(ctl) }
}

/// Before the packet path: `Some` record when tracing is on and the packet matches.
#[inline(always)]
pub fn begin(ctx: &XdpContext) -> Option<Pending> {
    let ctl = armed()?;
    start(ctx, ctl)
}

/// [`begin`] once tracing is known to be on. Inlined like the rest of the path: as a
/// BPF-to-BPF call its frame added to the path's exceeded the 512-byte stack.
#[inline(always)]
fn start(ctx: &XdpContext, ctl: &TraceCtl) -> Option<Pending> {
    let p = parse(ctx, |_, _| true).ok()?;
    let k = &p.key;
    if !ctl.matches(
        k.family,
        k.proto,
        &k.src,
        &k.dst,
        k.src_port_be,
        k.dst_port_be,
    ) {
        return None;
    }
    let Some(mut entry) = TRACE_RING.reserve::<TraceRecord>(0) else {
        if let Some(c) = TRACE_LOST.get_ptr_mut(0) {
            // SAFETY: per-CPU value, only this CPU writes it while the program runs.
            unsafe { *c += 1 };
        }
        return None;
    };
    // The helper rather than `data_end - data`: the compiler spills a 32-bit packet
    // pointer for that difference, which the verifier refuses.
    // SAFETY: `ctx.ctx` is the program's context.
    let frame_len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as u32;
    let mut snap = ctl.snap_len.min(frame_len);
    if snap > TRACE_SNAP_MAX as u32 {
        snap = TRACE_SNAP_MAX as u32;
    }
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is the reserved record, `TraceRecord` is plain integers; every field
    // is written before it is submitted.
    unsafe {
        (*rec).ktime_ns = bpf_ktime_get_ns();
        (*rec).ifindex = ctx.ingress_ifindex() as u32;
        (*rec).action = 0;
        (*rec).reason = 0;
        (*rec).frame_len = frame_len;
        (*rec)._pad = 0;
        (*rec).vip_id = TRACE_NONE;
        (*rec).backend_id = TRACE_NONE;
        (*rec).pick = TRACE_PICK_NONE;
        (*rec).maglev_slot = 0;
        let copied =
            snap > 0 && bpf_xdp_load_bytes(ctx.ctx, 0, (*rec).frame.as_mut_ptr().cast(), snap) == 0;
        (*rec).snap_len = if copied { snap } else { 0 };
        if k.proto == PROTO_TCP || k.proto == PROTO_UDP {
            pick(&mut *rec, k);
        }
    }
    Some(entry)
}

/// How the packet path will find the flow's backend, asked before it runs: the
/// connection table (a pinned flow), else the VIP's Maglev slot.
#[inline(always)]
fn pick(rec: &mut TraceRecord, key: &FlowKey) {
    // The array always holds its entry; read here rather than through `lb::config`,
    // which would make `lb` and this module use each other.
    let Some(cfg) = CONFIG.get(0) else {
        return;
    };
    let slot = conntrack::slot(conntrack::hash(key, cfg), cfg);
    if let Some((id, b)) = conntrack::lookup(&slot, key) {
        rec.pick = TRACE_PICK_CONN;
        rec.backend_id = id;
        rec.vip_id = b.vip_id;
        return;
    }
    let Some(meta) = vip::lookup_vip(key, cfg) else {
        return;
    };
    rec.vip_id = meta.id;
    if meta.table_size == 0 {
        return;
    }
    let s = flow_hash(key, meta.flags & VIP_F_HASH_SRC_ONLY != 0) % meta.table_size;
    let i = meta.table_base + s;
    rec.pick = TRACE_PICK_MAGLEV;
    rec.maglev_slot = s;
    if let Some(e) = MAGLEV.get(i / MAGLEV_LANES) {
        rec.backend_id = u32::from(e[(i % MAGLEV_LANES) as usize]);
    }
}

/// Where the reason is counted: completes the record with the final verdict and hands
/// it to user space.
#[inline(always)]
pub fn end(pending: Option<Pending>, v: &Verdict) {
    if let Some(entry) = pending {
        finish(entry, v.action, v.reason as u32);
    }
}

#[inline(always)]
fn finish(mut entry: Pending, action: u32, reason: u32) {
    let rec = entry.as_mut_ptr();
    // SAFETY: the record reserved in `start`.
    unsafe {
        (*rec).action = action;
        (*rec).reason = reason;
    }
    // No wakeup per record: user space polls the ring on a short interval, so a
    // matching flood does not cost an interrupt per packet.
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
}
