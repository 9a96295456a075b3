//! The load balancer's packet path, step by step in [`decide`]. [`process`] is the whole
//! program; the XDP entry point only calls it, so a benchmark can wrap the same code.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use vip_common::{
    Anomaly, Backend, ConnState, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, FAMILY_V6, FlowKey, GlobalConfig,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Reason, VIP_F_ACL, VIP_F_DSR_L2,
    VIP_F_HASH_SRC_ONLY, VIP_F_NO_CONNTRACK, VipKey, VipMeta, flow_hash, maglev_lane, tunnel_hash,
};

use crate::{
    acl, conntrack, encap, icmp,
    maps::{BACKENDS, CONFIG, MAGLEV, VIPS},
    neigh, nexthop,
    parse::{Parsed, parse_ipv4, parse_ipv6, parse_l2},
    stats, trace,
    verdict::Verdict,
    vip,
};

/// Settings used before user space writes the CONFIG map (it always has one entry, zeroed).
static NO_CONFIG: GlobalConfig = GlobalConfig {
    flags: 0,
    mtu: 0,
    tunnel_src_v4_be: 0,
    tunnel_src_v4_hash_bits: 0,
    tunnel_src_v6: [0; 4],
    flow_sets_mask: 0,
    flow_seed: 0,
    vip_slots_mask: 0,
};

/// Runs the packet path on one frame and counts its reason; returns the XDP action.
/// The live trace sees the frame before the path and its verdict where the reason is
/// counted (one branch each while no trace is armed).
#[inline(always)]
pub fn process(ctx: &XdpContext) -> u32 {
    let traced = trace::begin(ctx);
    let v = decide(ctx);
    stats::count(v.reason);
    trace::end(traced, &v);
    v.action
}

/// The settings user space wrote (zeroed ones before it did).
#[inline(always)]
pub fn config() -> &'static GlobalConfig {
    CONFIG.get(0).unwrap_or(&NO_CONFIG)
}

/// The VIP a packet is forwarded for: its counter id and `VIP_F_*` flags.
#[derive(Debug, Clone, Copy)]
pub struct VipRef {
    /// `VipMeta::id`.
    pub id: u32,
    /// `VIP_F_*`.
    pub flags: u32,
}

/// The packet path without the reason counter:
/// 1. parse, with the VIP-address filter applied to the destination as soon as it is
///    read: traffic for other addresses is passed after one array read, whatever follows
///    its IP header; ICMP errors are handled as their inner flow;
/// 2. for an ICMP error, the filter again on its inner flow's VIP address;
/// 3. the connection table: a pinned flow goes to its backend without a VIP lookup;
/// 4. otherwise the VIP lookup and its Maglev table, and the flow is pinned.
///
/// ARP, and neighbour solicitations among the ICMPv6 packets, go to `neigh` (proxy
/// ARP/NDP for announced VIPs).
#[inline(always)]
pub fn decide(ctx: &XdpContext) -> Verdict {
    let l2 = match parse_l2(ctx) {
        Ok(l2) => l2,
        Err(reason) => return Verdict::pass(reason),
    };
    // The rest of the path is compiled once per family, both copies inlined (a
    // BPF-to-BPF call would cost every packet more than it saves): the IPv4 copy knows
    // that six of its key's ten words are zero and never loads, compares or spills them.
    match l2.ether_type {
        ETH_P_IP => after_parse(ctx, parse_ipv4(ctx, &l2, vip::maybe_vip)),
        ETH_P_IPV6 => after_parse(ctx, parse_ipv6(ctx, &l2, vip::maybe_vip)),
        ETH_P_ARP => neigh::arp(ctx, &l2),
        _ => Verdict::pass(Reason::PassNotVip),
    }
}

/// [`decide`] once the frame is parsed.
#[inline(always)]
fn after_parse(ctx: &XdpContext, parsed: Result<Parsed, Reason>) -> Verdict {
    let p = match parsed {
        Ok(p) => p,
        Err(reason) => return Verdict::pass(reason),
    };
    if p.anomaly != Anomaly::None {
        return anomaly(&p);
    }
    // Two calls of the rest of the path, each with a key of its own: with one call and a
    // reference chosen between `p.key` and the ICMP error's inner key, the compiler
    // must keep `p` in stack memory for every packet (measured: ~40 stores and reloads
    // on the non-VIP path).
    if p.key.proto == PROTO_TCP || p.key.proto == PROTO_UDP {
        return for_flow(ctx, &p, &p.key, false);
    }
    if p.key.proto != PROTO_ICMP && p.key.proto != PROTO_ICMPV6 {
        return Verdict::pass(Reason::PassNotVip);
    }
    // A neighbour solicitation for an announced VIP (its destination, the VIP's
    // solicited-node address or the VIP itself, passed the filter).
    if p.key.family == FAMILY_V6 {
        let outcome = neigh::ndp(ctx, p.vlan, p.l4_off);
        if outcome != neigh::ndp_outcome::NOT_NS {
            return neigh::ndp_verdict(outcome);
        }
    }
    match icmp::inner_flow(ctx, p.l4_off, p.key.proto, p.key.family) {
        Ok(inner) => for_flow(ctx, &p, &inner, true),
        Err(v) => v,
    }
}

/// The packet path after parsing, for the TCP/UDP flow `key` (the packet's own, whose
/// address passed the VIP-address filter in `parse`, or the one an ICMP error is about).
#[inline(always)]
fn for_flow(ctx: &XdpContext, p: &Parsed, key: &FlowKey, icmp_error: bool) -> Verdict {
    let not_vip = Verdict::pass(if icmp_error {
        Reason::PassIcmpNotVip
    } else {
        Reason::PassNotVip
    });
    if icmp_error && !vip::maybe_vip(&key.dst, key.family) {
        return not_vip;
    }
    let cfg = config();
    if p.ttl <= 1 {
        return match vip::lookup_vip(key, cfg) {
            Some(vip) => {
                stats::vip_dropped(vip.id);
                Verdict::drop(Reason::DropTtl)
            }
            None => not_vip,
        };
    }
    let h = conntrack::hash(key, cfg);
    let slot = conntrack::slot(h, cfg);
    let pinned = conntrack::lookup(&slot, key);
    let (vip, id, backend, new_flow) = match pinned {
        Some((id, backend)) => {
            let vip = VipRef {
                id: backend.vip_id,
                flags: backend.vip_flags,
            };
            (vip, id, backend, false)
        }
        None => {
            let Some(meta) = vip::lookup_vip(key, cfg) else {
                return not_vip;
            };
            // Only flows the connection table does not know are checked: a pinned flow
            // was admitted by its first packet (ACL changes apply to new flows).
            if meta.flags & VIP_F_ACL != 0 && acl::refused(key, &meta) {
                stats::vip_dropped(meta.id);
                return Verdict::drop(Reason::DropAcl);
            }
            let (id, backend) = match maglev_pick(&meta, key) {
                Ok(picked) => picked,
                Err(reason) => {
                    stats::vip_dropped(meta.id);
                    return Verdict::drop(reason);
                }
            };
            // An ICMP error never creates a connection-table entry, and neither does a
            // TCP SYN: a TCP flow is pinned by its first packet without SYN (the
            // client's ACK ending the handshake, which a spoofed SYN never sends), so a
            // flood of SYNs from random sources cannot evict established flows. Until
            // then Maglev gives the SYN the backend its ACK will get while the backend
            // set is stable. UDP and other flows are pinned by their first packet, on
            // probation until their second (`conntrack::remember`).
            if meta.flags & VIP_F_NO_CONNTRACK == 0 && !icmp_error && !p.syn {
                conntrack::remember(
                    &slot,
                    key,
                    &ConnState {
                        backend_id: id,
                        generation: backend.generation,
                    },
                );
            }
            let vip = VipRef {
                id: meta.id,
                flags: meta.flags,
            };
            (vip, id, backend, true)
        }
    };
    let th = tunnel_hash(h);
    finish(ctx, p, th, cfg, vip, id, backend, new_flow, icmp_error)
}

/// Forwards a VIP packet to backend `id` and counts it (an ICMP error is steered, and is
/// never answered with another ICMP error: RFC 1122 3.2.2, RFC 4443 2.4).
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "BPF has no struct returns; these are the packet path's state"
)]
fn finish(
    ctx: &XdpContext,
    p: &Parsed,
    th: u32,
    cfg: &GlobalConfig,
    vip: VipRef,
    id: u32,
    backend: &Backend,
    new_flow: bool,
    icmp_error: bool,
) -> Verdict {
    match forward(ctx, p, th, cfg, vip.flags, id, backend, !icmp_error) {
        Ok(mut v) => {
            stats::forwarded(vip.id, id, p.ip_len as u64, new_flow);
            if icmp_error {
                v.reason = Reason::IcmpSteered;
            }
            v
        }
        Err(v) => {
            if v.action == xdp_action::XDP_DROP {
                stats::vip_dropped(vip.id);
            }
            v
        }
    }
}

/// Fate of a frame whose ports are not usable: dropped when it is addressed to a VIP
/// address (it cannot be load-balanced consistently), passed untouched otherwise (its
/// address passed the VIP-address filter; another address may share the bit).
#[inline(always)]
pub fn anomaly(p: &Parsed) -> Verdict {
    // The VIP map holds a marker entry (port and protocol zero) for every VIP address.
    let marker = VipKey {
        addr: p.key.dst,
        port_be: 0,
        proto: 0,
        family: p.key.family,
    };
    // SAFETY: only presence is read.
    let ours = unsafe { VIPS.get(&marker) }.is_some();
    match (p.anomaly, ours) {
        (Anomaly::Fragment, true) => Verdict::drop(Reason::DropFragment),
        (Anomaly::Fragment, false) => Verdict::pass(Reason::PassNotVip),
        (Anomaly::Ipv6Ext, true) => Verdict::drop(Reason::DropIpv6Ext),
        (Anomaly::Ipv6Ext, false) => Verdict::pass(Reason::PassUnparsed),
        (_, true) => Verdict::drop(Reason::DropMalformed),
        (_, false) => Verdict::pass(Reason::PassMalformed),
    }
}

/// The backend the VIP's Maglev table gives a flow (id, backend).
#[inline(always)]
pub fn maglev_pick(vip: &VipMeta, key: &FlowKey) -> Result<(u32, &'static Backend), Reason> {
    if vip.table_size == 0 {
        return Err(Reason::DropNoBackend);
    }
    let h = flow_hash(key, vip.flags & VIP_F_HASH_SRC_ONLY != 0);
    let slot = vip.table_base + h % vip.table_size;
    let (elem, lane) = maglev_lane(slot);
    let id = u32::from(MAGLEV.get(elem).ok_or(Reason::DropNoBackend)?[lane]);
    let b = BACKENDS.get(id).ok_or(Reason::DropNoBackend)?;
    if !b.usable() {
        return Err(Reason::DropNoBackend);
    }
    Ok((id, b))
}

/// Sends the frame to backend `id` in the VIP's mode (`vip_flags`); `th` is the flow's
/// tunnel hash (outer source, flow label). `Err` carries a drop verdict (or, with `answer_too_big`, the ICMP answer sent
/// instead).
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "BPF has no struct returns; these are the packet path's state"
)]
pub fn forward(
    ctx: &XdpContext,
    p: &Parsed,
    th: u32,
    cfg: &GlobalConfig,
    vip_flags: u32,
    id: u32,
    backend: &Backend,
    answer_too_big: bool,
) -> Result<Verdict, Verdict> {
    let nh = nexthop::resolve(ctx, id, backend).map_err(Verdict::drop)?;
    if vip_flags & VIP_F_DSR_L2 != 0 {
        encap::write_macs(ctx, &nh).map_err(Verdict::drop)?;
    } else {
        if cfg.mtu != 0 && p.ip_len + encap::overhead(backend) > cfg.mtu as usize {
            return Err(if answer_too_big {
                icmp::too_big(ctx, p, cfg, backend)
            } else {
                Verdict::drop(Reason::DropTooBig)
            });
        }
        encap::tunnel(ctx, p, backend, &nh, cfg, th).map_err(Verdict::drop)?;
    }
    let action = nexthop::transmit(ctx, &nh).map_err(Verdict::drop)?;
    Ok(Verdict {
        action,
        reason: Reason::Forwarded,
    })
}
