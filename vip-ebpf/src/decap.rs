//! The backend side (`vip_decap`): removes vip's tunnel header (IPIP, IPv6-in-IPv4,
//! IPv4-in-IPv6, IP6IP6) from packets whose outer destination is a local tunnel endpoint
//! (the `DECAP_ADDRS` map), and passes the inner packet to the kernel, where the socket
//! bound to the VIP (on `lo`) answers the client directly.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use vip_common::{Anomaly, ETH_P_IP, ETH_P_IPV6, PROTO_IPIP, PROTO_IPV6, Reason, VipKey};

use crate::{encap, maps::DECAP_ADDRS, parse::parse, ptr::ptr_at, verdict::Verdict};

/// Decapsulates one frame if it is a tunnel packet for this host; the action is always
/// `XDP_PASS` (the kernel takes the inner packet, or the untouched frame).
#[inline(always)]
pub fn process(ctx: &XdpContext) -> u32 {
    let v = decide(ctx);
    crate::stats::count(v.reason);
    v.action
}

/// The decapsulation path without the reason counter.
#[inline(always)]
pub fn decide(ctx: &XdpContext) -> Verdict {
    let p = match parse(ctx, |_, _| true) {
        Ok(p) => p,
        Err(reason) => return Verdict::pass(reason),
    };
    let inner_type = match p.key.proto {
        PROTO_IPIP => ETH_P_IP,
        PROTO_IPV6 => ETH_P_IPV6,
        _ => return Verdict::pass(Reason::PassNotVip),
    };
    let local = VipKey {
        addr: p.key.dst,
        port_be: 0,
        proto: 0,
        family: p.key.family,
    };
    // SAFETY: only presence is read.
    if unsafe { DECAP_ADDRS.get(&local) }.is_none() {
        return Verdict::pass(Reason::PassNotVip);
    }
    match p.anomaly {
        Anomaly::None => {}
        // The kernel has no tunnel device to reassemble for; it drops these itself.
        Anomaly::Fragment => return Verdict::pass(Reason::PassUnparsed),
        _ => return Verdict::pass(Reason::PassMalformed),
    }
    // The inner header must be what the outer one announces.
    // Two bytes, not one: with a one-byte read the compiler turns the bounds check into
    // `end > ptr`, which the verifier does not accept as proof of one readable byte.
    let Some(first) = ptr_at::<[u8; 2]>(ctx, p.l4_off) else {
        return Verdict::pass(Reason::PassMalformed);
    };
    let version = first.get(0) >> 4;
    if (inner_type == ETH_P_IP && version != 4) || (inner_type == ETH_P_IPV6 && version != 6) {
        return Verdict::pass(Reason::PassMalformed);
    }
    let Some(macs) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return Verdict::pass(Reason::PassMalformed);
    };
    let macs = macs.read();
    let mut nh = vip_common::NextHop::default();
    nh.dst_mac.copy_from_slice(&macs[..6]);
    nh.src_mac.copy_from_slice(&macs[6..]);
    let outer = p.l4_off - p.l3_off;
    // SAFETY: ctx.ctx is the program's context; a failure leaves the frame as it was.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer as i32) } != 0 {
        return Verdict::pass(Reason::DropInternal);
    }
    match encap::write_eth(ctx, &p, &nh, inner_type) {
        Ok(()) => Verdict::pass(Reason::Decapsulated),
        // Cannot happen (the frame only shrank at the front); drop rather than hand the
        // kernel a frame with a stale Ethernet header.
        Err(reason) => Verdict::drop(reason),
    }
}
