//! ICMP and ICMPv6: errors about a VIP flow are steered, by their inner header, to the
//! backend that owns the flow; and the "too big" answer to a client whose packet would
//! exceed the MTU once encapsulated.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use vip_common::{
    Backend, CONFIG_F_ICMP_TOO_BIG, DEFAULT_TTL, ETH_P_IP, ETH_P_IPV6, FAMILY_V4, FlowKey,
    GlobalConfig, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Reason,
};

use crate::{
    csum,
    parse::{Parsed, words},
    ptr::ptr_at,
    verdict::Verdict,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOO_BIG: u8 = 2;
const ICMPV6_TIME_EXCEED: u8 = 3;
const ICMP_HDR_LEN: usize = 8;

/// An ICMP/ICMPv6 frame: if it is an error about a possible VIP flow (its inner header is
/// a TCP/UDP packet the backend sent, VIP -> client), returns that flow's key as the
/// client sent it, so the caller forwards the error to the flow's backend; anything else
/// gets its verdict here (passed to the kernel).
///
/// Takes the frame's fields rather than its `Parsed` (the caller handles anomalies
/// first): a reference passed to an out-of-line function would make the caller keep
/// `Parsed` in stack memory for every packet, ICMP or not.
#[inline(never)]
pub fn inner_flow(
    ctx: &XdpContext,
    l4_off: usize,
    proto: u8,
    family: u8,
) -> Result<FlowKey, Verdict> {
    let not_ours = Err(Verdict::pass(Reason::PassIcmpNotVip));
    let Some(icmp) = ptr_at::<[u8; 2]>(ctx, l4_off) else {
        return not_ours;
    };
    let icmp_type = icmp.get(0);
    let inner_off = l4_off + ICMP_HDR_LEN;
    let mut key = FlowKey {
        family,
        ..FlowKey::default()
    };
    let inner_l4 = if proto == PROTO_ICMP {
        if icmp_type != ICMP_DEST_UNREACH && icmp_type != ICMP_TIME_EXCEEDED {
            return not_ours;
        }
        let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, inner_off) else {
            return not_ours;
        };
        let ip = ip.read();
        let ihl = usize::from(ip.vihl & 0x0f) * 4;
        if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
            return not_ours;
        }
        key.proto = ip.proto;
        // The inner packet went VIP -> client: the flow's client is its destination.
        key.src[0] = u32::from_ne_bytes(ip.dst_addr);
        key.dst[0] = u32::from_ne_bytes(ip.src_addr);
        inner_off + ihl
    } else {
        if icmp_type != ICMPV6_DEST_UNREACH
            && icmp_type != ICMPV6_PKT_TOO_BIG
            && icmp_type != ICMPV6_TIME_EXCEED
        {
            return not_ours;
        }
        let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, inner_off) else {
            return not_ours;
        };
        let ip = ip.read();
        key.proto = ip.next_hdr;
        key.src = words(&ip.dst_addr);
        key.dst = words(&ip.src_addr);
        inner_off + Ipv6Hdr::LEN
    };
    if key.proto != PROTO_TCP && key.proto != PROTO_UDP {
        return not_ours;
    }
    let Some(ports) = ptr_at::<[u16; 2]>(ctx, inner_l4) else {
        return not_ours;
    };
    let ports = ports.read();
    key.src_port_be = ports[1];
    key.dst_port_be = ports[0];
    Ok(key)
}

/// Sum of the big-endian 16-bit words of `N` words of packet at `off`, behind one bounds
/// check (a loop of `N` checks, unrolled, keeps `N` pointers live on the stack).
#[inline(always)]
fn sum_fixed<const N: usize>(ctx: &XdpContext, off: usize) -> Result<u32, Reason> {
    let w = ptr_at::<[u16; N]>(ctx, off).ok_or(Reason::DropInternal)?;
    let mut sum = 0u32;
    let mut i = 0;
    while i < N {
        sum += u32::from(u16::from_be(w.get(i)));
        i += 1;
    }
    Ok(sum)
}

/// Sum of the big-endian 16-bit words of `len` packet bytes at `off` (`len` even, at most
/// `2 * MAX_WORDS`).
#[inline(always)]
fn sum_words(ctx: &XdpContext, off: usize, len: usize) -> Result<u32, Reason> {
    const MAX_WORDS: usize = 34;
    let mut sum = 0u32;
    let mut i = 0;
    while i < MAX_WORDS {
        if i * 2 >= len {
            break;
        }
        let w = ptr_at::<u16>(ctx, off + i * 2).ok_or(Reason::DropInternal)?;
        sum += u32::from(u16::from_be(w.read()));
        i += 1;
    }
    Ok(sum)
}

/// A packet for `backend` would exceed `cfg.mtu` once encapsulated. With
/// `CONFIG_F_ICMP_TOO_BIG` and DF set (always for IPv6), the frame is turned into an
/// ICMP frag-needed / ICMPv6 packet-too-big to the client, from the VIP, quoting the
/// offending packet's IP header and 8 bytes of what follows, with the usable MTU
/// (`cfg.mtu` minus the tunnel header); it leaves by `XDP_TX`. Otherwise it is dropped
/// (`DropTooBig`): XDP cannot fragment, and an IPv4 packet without DF would have to be.
/// IPv6 packets with extension headers are also dropped rather than quoted.
#[inline(always)]
pub fn too_big(ctx: &XdpContext, p: &Parsed, cfg: &GlobalConfig, backend: &Backend) -> Verdict {
    if cfg.flags & CONFIG_F_ICMP_TOO_BIG == 0 || !p.df {
        return Verdict::drop(Reason::DropTooBig);
    }
    let mtu = cfg
        .mtu
        .saturating_sub(crate::encap::overhead(backend) as u32);
    match build_too_big(ctx, p, mtu) {
        Ok(()) => Verdict {
            action: xdp_action::XDP_TX,
            reason: Reason::IcmpTooBigSent,
        },
        Err(reason) => Verdict::drop(reason),
    }
}

#[inline(always)]
fn build_too_big(ctx: &XdpContext, p: &Parsed, mtu: u32) -> Result<(), Reason> {
    let macs = ptr_at::<[u8; 12]>(ctx, 0)
        .ok_or(Reason::DropInternal)?
        .read();
    let mut back = vip_common::NextHop::default();
    back.dst_mac.copy_from_slice(&macs[6..]);
    back.src_mac.copy_from_slice(&macs[..6]);
    let v4 = p.key.family == FAMILY_V4;
    let hdr_len = p.l4_off - p.l3_off;
    if !v4 && hdr_len != Ipv6Hdr::LEN {
        return Err(Reason::DropTooBig);
    }
    let ip_hdr = if v4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
    let quote = hdr_len + 8;
    let grow = ip_hdr + ICMP_HDR_LEN;
    // SAFETY: ctx.ctx is the program's context; failures leave the frame as it was.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return Err(Reason::DropInternal);
    }
    let new_len = p.l3_off + grow + quote;
    // The frame's length: vip_lb is not loaded for multi-buffer frames, so the frame is
    // its one linear buffer (`bpf_xdp_get_buff_len` would say the same, but kernels
    // before 5.18 do not have it). `black_box` keeps the subtraction a plain number:
    // folded into `new_len - end + data` it would be arithmetic on the end pointer, which
    // the verifier refuses.
    let cur_len = core::hint::black_box(ctx.data_end() - ctx.data());
    // SAFETY: as above; the frame holds at least `new_len` bytes (the quote was parsed).
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, new_len as i32 - cur_len as i32) } != 0 {
        return Err(Reason::DropInternal);
    }
    let icmp_off = p.l3_off + ip_hdr;
    if v4 {
        let quoted = sum_words(ctx, icmp_off + ICMP_HDR_LEN, quote)?;
        crate::encap::write_eth(ctx, p, &back, ETH_P_IP)?;
        let src = u32::from_be(p.key.dst[0]);
        let dst = u32::from_be(p.key.src[0]);
        let mut w = [
            0x4500,
            (grow + quote) as u16,
            0,
            0,
            (u16::from(DEFAULT_TTL) << 8) | u16::from(PROTO_ICMP),
            0,
            (src >> 16) as u16,
            src as u16,
            (dst >> 16) as u16,
            dst as u16,
        ];
        w[5] = csum::ipv4_header(&w);
        let mut icmp = [
            (u16::from(ICMP_DEST_UNREACH) << 8) | u16::from(ICMP_FRAG_NEEDED),
            0,
            0,
            mtu as u16,
        ];
        icmp[1] = !csum::fold(quoted + icmp.iter().map(|x| u32::from(*x)).sum::<u32>());
        let hdr = ptr_at::<[u16; 14]>(ctx, p.l3_off).ok_or(Reason::DropInternal)?;
        // Written in place, word by word, to keep the stack small (it shares the
        // verifier's 512-byte budget with the caller).
        let mut i = 0;
        while i < 14 {
            let word = if i < 10 { w[i] } else { icmp[i - 10] };
            hdr.set(i, word.to_be());
            i += 1;
        }
    } else {
        // The quote of an IPv6 packet is always its fixed header and 8 bytes.
        let quoted = sum_fixed::<{ (Ipv6Hdr::LEN + 8) / 2 }>(ctx, icmp_off + ICMP_HDR_LEN)?;
        crate::encap::write_eth(ctx, p, &back, ETH_P_IPV6)?;
        let payload = (ICMP_HDR_LEN + quote) as u32;
        let mut pseudo = payload + u32::from(PROTO_ICMPV6);
        let mut i = 0;
        while i < 4 {
            let a = u32::from_be(p.key.src[i]);
            let b = u32::from_be(p.key.dst[i]);
            pseudo += (a >> 16) + (a & 0xffff) + (b >> 16) + (b & 0xffff);
            i += 1;
        }
        let icmp_words = (u32::from(ICMPV6_PKT_TOO_BIG) << 8) + (mtu >> 16) + (mtu & 0xffff);
        let check =
            !csum::fold(u32::from(csum::fold(pseudo)) + u32::from(csum::fold(quoted)) + icmp_words);
        let hdr = ptr_at::<[u32; 12]>(ctx, p.l3_off).ok_or(Reason::DropInternal)?;
        // Written field by field to keep the stack small.
        hdr.set(0, (6u32 << 28).to_be());
        hdr.set(
            1,
            ((payload << 16) | (u32::from(PROTO_ICMPV6) << 8) | u32::from(DEFAULT_TTL)).to_be(),
        );
        let mut i = 0;
        while i < 4 {
            hdr.set(2 + i, p.key.dst[i]);
            hdr.set(6 + i, p.key.src[i]);
            i += 1;
        }
        hdr.set(
            10,
            ((u32::from(ICMPV6_PKT_TOO_BIG) << 24) | u32::from(check)).to_be(),
        );
        hdr.set(11, mtu.to_be());
    }
    Ok(())
}
