//! Rewriting a frame for its backend: the Ethernet header (both modes) and the tunnel's
//! outer IP header (`tunnel` mode: IPIP, IPv6-in-IPv4, IPv4-in-IPv6, IP6IP6).

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use vip_common::{
    Backend, DEFAULT_TTL, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, FAMILY_V4, GlobalConfig, IPV4_DF,
    NextHop, PROTO_IPIP, PROTO_IPV6, Reason,
};

use crate::{csum, parse::Parsed, ptr::ptr_at};

/// Bytes of outer header a tunnel to `backend` adds.
#[inline(always)]
pub fn overhead(backend: &Backend) -> usize {
    if backend.family == FAMILY_V4 {
        Ipv4Hdr::LEN
    } else {
        Ipv6Hdr::LEN
    }
}

/// Rewrites the MACs only (`dsr-l2`): destination the next hop's, source the egress
/// interface's.
#[inline(always)]
pub fn write_macs(ctx: &XdpContext, nh: &NextHop) -> Result<(), Reason> {
    ptr_at::<[u32; 3]>(ctx, 0)
        .ok_or(Reason::DropInternal)?
        .write(nh.mac_words());
    Ok(())
}

/// Writes the Ethernet header (MACs from `nh`, the ingress VLAN tag kept) at the start of
/// the frame, whose IP header starts at `p.l3_off`.
#[inline(always)]
pub fn write_eth(
    ctx: &XdpContext,
    p: &Parsed,
    nh: &NextHop,
    ether_type: u16,
) -> Result<(), Reason> {
    // One bounds check for the longest header (with a tag): every frame written here
    // holds an IP header after it.
    let eth = ptr_at::<[u16; 9]>(ctx, 0).ok_or(Reason::DropInternal)?;
    eth.part::<[u32; 3], 0>().write(nh.mac_words());
    if p.vlan {
        eth.set(6, ETH_P_8021Q.to_be());
        eth.set(7, p.vlan_tci_be);
        eth.set(8, ether_type.to_be());
    } else {
        eth.set(6, ether_type.to_be());
    }
    Ok(())
}

/// Puts the frame in a tunnel to `backend`: grows the head by the outer header, writes
/// Ethernet + outer IP. `th` is the flow's tunnel hash (outer source, flow label).
#[inline(always)]
pub fn tunnel(
    ctx: &XdpContext,
    p: &Parsed,
    backend: &Backend,
    nh: &NextHop,
    cfg: &GlobalConfig,
    th: u32,
) -> Result<(), Reason> {
    let inner_proto = if p.key.family == FAMILY_V4 {
        PROTO_IPIP
    } else {
        PROTO_IPV6
    };
    let outer = overhead(backend);
    // SAFETY: ctx.ctx is the program's context; a failed adjustment leaves the frame as it was.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
        return Err(Reason::DropInternal);
    }
    if backend.family == FAMILY_V4 {
        write_eth(ctx, p, nh, ETH_P_IP)?;
        let total = (p.ip_len + Ipv4Hdr::LEN) as u32;
        let low_bits = cfg.tunnel_src_v4_hash_bits.min(32);
        let low_mask = if low_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << low_bits) - 1
        };
        let src = (u32::from_be(cfg.tunnel_src_v4_be) & !low_mask) | (th & low_mask);
        let dst = u32::from_be(backend.addr[0]);
        // The header as five host-order words: version/IHL, TOS, total length; id 0,
        // DF; TTL, protocol, checksum; source; destination.
        let w0 = ((0x4500 | u32::from(p.tos)) << 16) | total;
        let w1 = u32::from(IPV4_DF);
        let w2 = ((u32::from(DEFAULT_TTL) << 8) | u32::from(inner_proto)) << 16;
        let check = csum::ipv4_header_words(&[w0, w1, w2, src, dst]);
        ptr_at::<[u32; 5]>(ctx, p.l3_off)
            .ok_or(Reason::DropInternal)?
            .write([
                w0.to_be(),
                w1.to_be(),
                (w2 | u32::from(check)).to_be(),
                src.to_be(),
                dst.to_be(),
            ]);
    } else {
        write_eth(ctx, p, nh, ETH_P_IPV6)?;
        let flow = th & 0x000f_ffff;
        let tc = u32::from(p.tos);
        let first = (6u32 << 28) | (tc << 20) | flow;
        let len_next_hop =
            ((p.ip_len as u32) << 16) | (u32::from(inner_proto) << 8) | u32::from(DEFAULT_TTL);
        let src = [
            cfg.tunnel_src_v6[0],
            cfg.tunnel_src_v6[1],
            cfg.tunnel_src_v6[2],
            th.to_be(),
        ];
        ptr_at::<[u32; 10]>(ctx, p.l3_off)
            .ok_or(Reason::DropInternal)?
            .write([
                first.to_be(),
                len_next_hop.to_be(),
                src[0],
                src[1],
                src[2],
                src[3],
                backend.addr[0],
                backend.addr[1],
                backend.addr[2],
                backend.addr[3],
            ]);
    }
    Ok(())
}
