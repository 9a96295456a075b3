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
//! pcap needs. (Not measured against aya-log: see docs/architecture.md.)
//!
//! The record is built in a per-CPU scratch entry (`TRACE_SCRATCH`) and copied into the
//! ring by `bpf_ringbuf_output` once the verdict is known, its header and the frame's
//! captured bytes only. A ring reservation held across the packet path would be a
//! reference the verifier must see released on every path: verifiers before Linux 6.2
//! lose track of it (they do not know a reserved record is never null) and refuse the
//! program. The frame is copied with direct packet access, not `bpf_xdp_load_bytes`
//! (Linux 5.18), so `vip_lb` keeps loading on the kernels vip supports.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP, helpers::generated::bpf_ktime_get_ns, programs::XdpContext,
};
use vip_common::{
    FlowKey, MAGLEV_LANES, PROTO_TCP, PROTO_UDP, TRACE_NONE, TRACE_PICK_CONN, TRACE_PICK_MAGLEV,
    TRACE_PICK_NONE, TRACE_RECORD_HEADER, TRACE_SNAP_MAX, TraceCtl, TraceRecord,
    VIP_F_HASH_SRC_ONLY, flow_hash,
};

use crate::{
    conntrack,
    maps::{CONFIG, MAGLEV, TRACE_CTL, TRACE_LOST, TRACE_RING, TRACE_SCRATCH},
    parse::parse,
    ptr::ptr_at_apart,
    verdict::Verdict,
    vip,
};

/// The trace control when tracing is on.
#[inline(always)]
fn armed() -> Option<&'static TraceCtl> {
    let ctl = TRACE_CTL.get(0)?;
    if ctl.active == 0 { None } else { Some(ctl) }
}

/// Before the packet path: true when tracing is on, the packet matches and its record
/// (all but the verdict) is in this CPU's scratch entry.
#[inline(always)]
pub fn begin(ctx: &XdpContext) -> bool {
    match armed() {
        None => false,
        Some(ctl) => start(ctx, ctl),
    }
}

/// [`begin`] once tracing is known to be on. Inlined like the rest of the path: as a
/// BPF-to-BPF call its frame added to the path's exceeded the 512-byte stack.
#[inline(always)]
fn start(ctx: &XdpContext, ctl: &TraceCtl) -> bool {
    let Ok(p) = parse(ctx, |_, _| true) else {
        return false;
    };
    let k = &p.key;
    if !ctl.matches(
        k.family,
        k.proto,
        &k.src,
        &k.dst,
        k.src_port_be,
        k.dst_port_be,
    ) {
        return false;
    }
    let Some(rec) = TRACE_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // The frame's length: its one linear buffer (as in `icmp`; `black_box` keeps it a
    // plain number for the verifier).
    let frame_len = core::hint::black_box(ctx.data_end() - ctx.data()) as u32;
    // SAFETY: `rec` is this CPU's scratch record (plain integers); nothing else runs on
    // this CPU while the program does.
    unsafe {
        let rec = &mut *rec;
        rec.ktime_ns = bpf_ktime_get_ns();
        rec.ifindex = ctx.ingress_ifindex() as u32;
        rec.action = 0;
        rec.reason = 0;
        rec.frame_len = frame_len;
        rec._pad = 0;
        rec.vip_id = TRACE_NONE;
        rec.backend_id = TRACE_NONE;
        rec.pick = TRACE_PICK_NONE;
        rec.maglev_slot = 0;
        rec.snap_len = copy_frame(ctx, &mut rec.frame, ctl.snap_len, frame_len);
        if k.proto == PROTO_TCP || k.proto == PROTO_UDP {
            pick(rec, k);
        }
    }
    true
}

/// Copies the frame's first bytes (at most `snap`, the frame's length and the record's
/// room) into `out` by direct packet access, 8 bytes at a time; the last 1 to 7 come with
/// the 8 bytes that end where the copy ends, written over bytes already copied (the same
/// values). Returns how many bytes count. Byte-wise copies are refused by the verifier:
/// the compiler turns a byte's check into `data + i >= data_end`, which proves nothing
/// at `i`, and picking bytes out of a word on the stack by a variable index is refused
/// before Linux 6.2. Frames shorter than 8 bytes never get here: they do not parse.
#[inline(always)]
fn copy_frame(ctx: &XdpContext, out: &mut [u8; TRACE_SNAP_MAX], snap: u32, frame_len: u32) -> u32 {
    let want = (snap.min(frame_len) as usize).min(TRACE_SNAP_MAX);
    let mut i = 0;
    while i + 8 <= want {
        let Some(w) = ptr_at_apart::<[u8; 8]>(ctx, i) else {
            return i as u32;
        };
        out[i..i + 8].copy_from_slice(&w.read());
        i += 8;
    }
    if i < want {
        // The mask changes nothing (`want` is at most 256) but shows the verifier a bound
        // the compiler's `min` above does not leave it (`black_box`: kept, not folded).
        let at = core::hint::black_box(want.saturating_sub(8)) & (TRACE_SNAP_MAX - 1);
        let Some(w) = ptr_at_apart::<[u8; 8]>(ctx, at) else {
            return i as u32;
        };
        if let Some(o) = out.get_mut(at..at + 8) {
            o.copy_from_slice(&w.read());
            i = want;
        }
    }
    i as u32
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

/// Where the reason is counted: completes the record with the final verdict and copies
/// its header and captured bytes into the ring (or counts it lost when the ring is full).
#[inline(always)]
pub fn end(traced: bool, v: &Verdict) {
    if traced {
        finish(v.action, v.reason as u32);
    }
}

#[inline(always)]
fn finish(action: u32, reason: u32) {
    let Some(rec) = TRACE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch record, filled by `start` for this packet.
    let rec = unsafe { &mut *rec };
    rec.action = action;
    rec.reason = reason;
    let mut len = TRACE_RECORD_HEADER + rec.snap_len as usize;
    if len > core::mem::size_of::<TraceRecord>() {
        len = core::mem::size_of::<TraceRecord>();
    }
    // SAFETY: `len` bytes from the start of the record lie inside it (bounded above).
    let bytes =
        unsafe { core::slice::from_raw_parts((rec as *const TraceRecord).cast::<u8>(), len) };
    // No wakeup per record: user space polls the ring on a short interval, so a
    // matching flood does not cost an interrupt per packet.
    if TRACE_RING
        .output::<[u8]>(bytes, u64::from(BPF_RB_NO_WAKEUP))
        .is_err()
        && let Some(c) = TRACE_LOST.get_ptr_mut(0)
    {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
}
