//! Live trace: the control map that arms it and the record the datapath emits for each
//! matching packet (see `docs/architecture.md`, "Live trace").
//!
//! `vipd`'s trace session is the only writer of [`MAP_TRACE_CTL`]. While
//! [`TraceCtl::active`] is zero the datapath reads that one word and goes on: the cost of
//! having the feature. While it is set, every packet is parsed once more for the match;
//! a matching packet's decision goes into [`MAP_TRACE_RING`] as one [`TraceRecord`]
//! (or, when the ring is full, is counted in [`MAP_TRACE_LOST`]).

use core::mem::size_of;

/// Trace control: index 0 → [`TraceCtl`] (array of one). Not pinned: a session lives and
/// dies with its vipd, and a restarted vipd's program starts with tracing off.
pub const MAP_TRACE_CTL: &str = "TRACE_CTL";
/// Trace records: a BPF ring buffer of [`TraceRecord`]s (kernel 5.8+).
pub const MAP_TRACE_RING: &str = "TRACE_RING";
/// Records that did not fit in the ring: index 0 → `u64` (per-CPU array of one).
pub const MAP_TRACE_LOST: &str = "TRACE_LOST";

/// Bytes of the ring buffer: 256 KiB holds 512 records of [`TRACE_SNAP_MAX`] bytes.
pub const TRACE_RING_BYTES: u32 = 256 * 1024;

/// Most frame bytes a record carries (the match's snap length is at most this).
pub const TRACE_SNAP_MAX: usize = 256;

/// [`TraceCtl::fields`]: the source address must be in `src/src_mask`.
pub const TRACE_M_SRC: u32 = 1 << 0;
/// The destination address must be in `dst/dst_mask`.
pub const TRACE_M_DST: u32 = 1 << 1;
/// Either address must be in `src/src_mask` (`host`, `net` without a direction).
pub const TRACE_M_HOST: u32 = 1 << 2;
/// The IP protocol must be `proto`.
pub const TRACE_M_PROTO: u32 = 1 << 3;
/// The source port must be `src_port_be`.
pub const TRACE_M_SPORT: u32 = 1 << 4;
/// The destination port must be `dst_port_be`.
pub const TRACE_M_DPORT: u32 = 1 << 5;
/// Either port must be `src_port_be` (`port` without a direction).
pub const TRACE_M_PORT: u32 = 1 << 6;
/// The address family must be `family` (set with any address term).
pub const TRACE_M_FAMILY: u32 = 1 << 7;

/// What the live trace looks for (index 0 of [`MAP_TRACE_CTL`]). All the terms named in
/// `fields` must hold (`and`); addresses as in [`crate::FlowKey`] (network-order words),
/// compared under their masks. A packet matches against the flow the datapath parses
/// from it: for an ICMP error, its own addresses and no ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCtl {
    /// Non-zero: tracing. Written last when arming and first when disarming.
    pub active: u32,
    /// `TRACE_M_*` terms that must hold.
    pub fields: u32,
    /// Frame bytes to copy into each record (at most [`TRACE_SNAP_MAX`]).
    pub snap_len: u32,
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`] for [`TRACE_M_FAMILY`].
    pub family: u8,
    /// IP protocol for [`TRACE_M_PROTO`].
    pub proto: u8,
    /// Explicit padding, zero.
    pub _pad: [u8; 2],
    /// Source (or either, [`TRACE_M_HOST`]) prefix, masked.
    pub src: [u32; 4],
    /// Its mask.
    pub src_mask: [u32; 4],
    /// Destination prefix, masked.
    pub dst: [u32; 4],
    /// Its mask.
    pub dst_mask: [u32; 4],
    /// Source (or either, [`TRACE_M_PORT`]) port, network order.
    pub src_port_be: u16,
    /// Destination port, network order.
    pub dst_port_be: u16,
}
const _: () = assert!(size_of::<TraceCtl>() == 84);

/// [`TraceRecord::pick`]: the packet did not reach the backend choice.
pub const TRACE_PICK_NONE: u32 = 0;
/// The connection table held the flow.
pub const TRACE_PICK_CONN: u32 = 1;
/// The VIP's Maglev table chose (slot in [`TraceRecord::maglev_slot`]).
pub const TRACE_PICK_MAGLEV: u32 = 2;

/// [`TraceRecord::vip_id`] and `backend_id` when there is none.
pub const TRACE_NONE: u32 = u32::MAX;

/// One traced decision, as the ring carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRecord {
    /// `bpf_ktime_get_ns` (monotonic clock) when the packet was seen.
    pub ktime_ns: u64,
    /// Interface the frame arrived on.
    pub ifindex: u32,
    /// `XDP_*` action returned.
    pub action: u32,
    /// [`crate::Reason`] index counted.
    pub reason: u32,
    /// `VipMeta::id` of the VIP, or [`TRACE_NONE`].
    pub vip_id: u32,
    /// Backend id chosen, or [`TRACE_NONE`].
    pub backend_id: u32,
    /// `TRACE_PICK_*`.
    pub pick: u32,
    /// Slot within the VIP's Maglev table (for [`TRACE_PICK_MAGLEV`]).
    pub maglev_slot: u32,
    /// Length of the frame on the wire.
    pub frame_len: u32,
    /// Bytes of it in `frame`.
    pub snap_len: u32,
    /// Explicit padding, zero.
    pub _pad: u32,
    /// The frame as received (before any rewrite), its first `snap_len` bytes.
    pub frame: [u8; TRACE_SNAP_MAX],
}
const _: () = assert!(size_of::<TraceRecord>() == TRACE_RECORD_HEADER + TRACE_SNAP_MAX);

/// Bytes of a [`TraceRecord`] before its frame: a ring item is these and then
/// `snap_len` frame bytes (the datapath copies no more than it captured).
pub const TRACE_RECORD_HEADER: usize = 48;

impl TraceRecord {
    /// The record of one ring item: its header, then its captured frame bytes (the rest
    /// of `frame` zero). `None` for an item shorter than a header or whose `snap_len`
    /// says more bytes than it carries.
    pub fn from_ring(item: &[u8]) -> Option<TraceRecord> {
        if item.len() < TRACE_RECORD_HEADER || item.len() > size_of::<TraceRecord>() {
            return None;
        }
        let mut whole = [0u8; size_of::<TraceRecord>()];
        whole[..item.len()].copy_from_slice(item);
        // SAFETY: `whole` is exactly a `TraceRecord`'s size; every field is a plain
        // integer (any bit pattern valid); the read is unaligned-safe.
        let rec = unsafe { core::ptr::read_unaligned(whole.as_ptr().cast::<TraceRecord>()) };
        (rec.snap_len as usize == item.len() - TRACE_RECORD_HEADER).then_some(rec)
    }
}

impl TraceCtl {
    /// True when the flow of a packet (`src`, `dst` as network-order words, ports in
    /// network order) meets every term. The datapath runs this very function.
    #[inline(always)]
    pub fn matches(
        &self,
        family: u8,
        proto: u8,
        src: &[u32; 4],
        dst: &[u32; 4],
        src_port_be: u16,
        dst_port_be: u16,
    ) -> bool {
        let f = self.fields;
        if f & TRACE_M_FAMILY != 0 && family != self.family {
            return false;
        }
        if f & TRACE_M_PROTO != 0 && proto != self.proto {
            return false;
        }
        if f & TRACE_M_SPORT != 0 && src_port_be != self.src_port_be {
            return false;
        }
        if f & TRACE_M_DPORT != 0 && dst_port_be != self.dst_port_be {
            return false;
        }
        if f & TRACE_M_PORT != 0
            && src_port_be != self.src_port_be
            && dst_port_be != self.src_port_be
        {
            return false;
        }
        if f & (TRACE_M_SRC | TRACE_M_HOST) != 0 {
            let src_in = in_prefix(src, &self.src, &self.src_mask);
            if f & TRACE_M_SRC != 0 && !src_in {
                return false;
            }
            if f & TRACE_M_HOST != 0 && !src_in && !in_prefix(dst, &self.src, &self.src_mask) {
                return false;
            }
        }
        if f & TRACE_M_DST != 0 && !in_prefix(dst, &self.dst, &self.dst_mask) {
            return false;
        }
        true
    }
}

/// `addr` under `mask` is `prefix`.
#[inline(always)]
fn in_prefix(addr: &[u32; 4], prefix: &[u32; 4], mask: &[u32; 4]) -> bool {
    (addr[0] & mask[0]) == prefix[0]
        && (addr[1] & mask[1]) == prefix[1]
        && (addr[2] & mask[2]) == prefix[2]
        && (addr[3] & mask[3]) == prefix[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_anded_and_host_and_port_take_either_side() {
        let a = [u32::from_be_bytes([198, 18, 0, 1]), 0, 0, 0];
        let b = [u32::from_be_bytes([198, 19, 0, 10]), 0, 0, 0];
        let mask16 = [u32::from_be_bytes([255, 255, 0, 0]), 0, 0, 0];
        let ctl = TraceCtl {
            active: 1,
            fields: TRACE_M_FAMILY | TRACE_M_HOST | TRACE_M_PORT,
            family: crate::FAMILY_V4,
            src: [u32::from_be_bytes([198, 19, 0, 0]), 0, 0, 0],
            src_mask: mask16,
            src_port_be: 443u16.to_be(),
            ..TraceCtl::default()
        };
        let p = |x: u16| x.to_be();
        assert!(ctl.matches(4, 6, &a, &b, p(40000), p(443)));
        assert!(ctl.matches(4, 6, &b, &a, p(443), p(40000)));
        assert!(!ctl.matches(4, 6, &a, &b, p(40000), p(80)));
        assert!(!ctl.matches(4, 6, &a, &a, p(40000), p(443)));
        assert!(!ctl.matches(6, 6, &a, &b, p(40000), p(443)));
    }

    #[test]
    fn a_ring_item_is_a_header_and_the_bytes_it_captured() {
        let mut rec = TraceRecord {
            ktime_ns: 7,
            ifindex: 3,
            action: 3,
            reason: 2,
            vip_id: 1,
            backend_id: 4,
            pick: TRACE_PICK_MAGLEV,
            maglev_slot: 9,
            frame_len: 60,
            snap_len: 5,
            _pad: 0,
            frame: [0; TRACE_SNAP_MAX],
        };
        rec.frame[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
        // SAFETY: plain integers; the slice covers the record.
        let whole = unsafe {
            core::slice::from_raw_parts(
                (&rec as *const TraceRecord).cast::<u8>(),
                size_of::<TraceRecord>(),
            )
        };
        let item = &whole[..TRACE_RECORD_HEADER + 5];
        assert_eq!(TraceRecord::from_ring(item), Some(rec));
        // Short of its header, longer than a record, or carrying other than `snap_len`
        // bytes: not a record.
        assert_eq!(
            TraceRecord::from_ring(&whole[..TRACE_RECORD_HEADER - 1]),
            None
        );
        assert_eq!(
            TraceRecord::from_ring(&whole[..TRACE_RECORD_HEADER + 4]),
            None
        );
        assert_eq!(
            TraceRecord::from_ring(&[0u8; size_of::<TraceRecord>() + 1]),
            None
        );
    }
}
