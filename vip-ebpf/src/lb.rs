//! The load balancer's packet path (DESIGN.md, "Packet path"). [`process`] is the whole
//! program; the XDP entry point only calls it, so a benchmark can wrap the same code.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use vip_common::{
    BACKEND_DOWN, BACKEND_UNUSED, Backend, ConnState, FlowKey, GlobalConfig, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Reason, VIP_F_DSR_L2, VIP_F_HASH_SRC_ONLY,
    VIP_F_NO_CONNTRACK, VipKey, VipMeta, flow_hash, tunnel_hash,
};

use crate::{
    encap, icmp,
    maps::{BACKENDS, CONFIG, CONNS, MAGLEV, VIPS},
    nexthop,
    parse::{ANOMALY_FRAGMENT, ANOMALY_IPV6_EXT, ANOMALY_NONE, Parsed, parse},
    stats,
};

/// Settings used before user space writes the CONFIG map (it always has one entry, zeroed).
static NO_CONFIG: GlobalConfig = GlobalConfig {
    flags: 0,
    mtu: 0,
    tunnel_src_v4_be: 0,
    tunnel_src_v4_hash_bits: 0,
    tunnel_src_v6: [0; 4],
};

/// A verdict and the reason it is counted under.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    /// `XDP_*` action.
    pub action: u32,
    /// Why.
    pub reason: Reason,
}

#[inline(always)]
pub(crate) fn pass(reason: Reason) -> Verdict {
    Verdict {
        action: xdp_action::XDP_PASS,
        reason,
    }
}

#[inline(always)]
pub(crate) fn drop(reason: Reason) -> Verdict {
    Verdict {
        action: xdp_action::XDP_DROP,
        reason,
    }
}

/// Runs the packet path on one frame and counts its reason; returns the XDP action.
#[inline(always)]
pub fn process(ctx: &XdpContext) -> u32 {
    let v = decide(ctx);
    stats::count(v.reason);
    v.action
}

/// The packet path without the reason counter.
#[inline(always)]
pub fn decide(ctx: &XdpContext) -> Verdict {
    let p = match parse(ctx) {
        Ok(p) => p,
        Err(reason) => return pass(reason),
    };
    let icmp_error = p.key.proto == PROTO_ICMP || p.key.proto == PROTO_ICMPV6;
    let key = if icmp_error {
        match icmp::inner_flow(ctx, &p) {
            Ok(key) => key,
            Err(v) => return v,
        }
    } else {
        if p.anomaly != ANOMALY_NONE {
            return anomaly(&p);
        }
        if p.key.proto != PROTO_TCP && p.key.proto != PROTO_UDP {
            return pass(Reason::PassNotVip);
        }
        p.key
    };
    let Some(vip) = lookup_vip(&key) else {
        return pass(if icmp_error {
            Reason::PassIcmpNotVip
        } else {
            Reason::PassNotVip
        });
    };
    if p.ttl <= 1 {
        stats::vip_dropped(vip.id);
        return drop(Reason::DropTtl);
    }
    // An ICMP error never creates a connection-table entry, and is never answered with
    // another ICMP error (RFC 1122 3.2.2, RFC 4443 2.4).
    let v = match pick_backend(&vip, &key, !icmp_error) {
        Ok((id, backend, new_flow)) => {
            match forward(ctx, &p, &key, &vip, id, &backend, !icmp_error) {
                Ok(mut v) => {
                    stats::forwarded(vip.id, id, p.ip_len as u64, new_flow);
                    if icmp_error {
                        v.reason = Reason::IcmpSteered;
                    }
                    return v;
                }
                Err(v) => v,
            }
        }
        Err(reason) => drop(reason),
    };
    if v.action == xdp_action::XDP_DROP {
        stats::vip_dropped(vip.id);
    }
    v
}

/// Fate of a frame whose ports are not usable: dropped when it is addressed to a VIP
/// address (it cannot be load-balanced consistently), passed untouched otherwise.
#[inline(always)]
pub fn anomaly(p: &Parsed) -> Verdict {
    let marker = VipKey {
        addr: p.key.dst,
        port_be: 0,
        proto: 0,
        family: p.key.family,
    };
    // SAFETY: the value is copied out at once; user space replaces entries whole.
    let ours = unsafe { VIPS.get(&marker) }.is_some();
    match (p.anomaly, ours) {
        (ANOMALY_FRAGMENT, true) => drop(Reason::DropFragment),
        (ANOMALY_FRAGMENT, false) => pass(Reason::PassNotVip),
        (ANOMALY_IPV6_EXT, true) => drop(Reason::DropIpv6Ext),
        (ANOMALY_IPV6_EXT, false) => pass(Reason::PassUnparsed),
        (_, true) => drop(Reason::DropMalformed),
        (_, false) => pass(Reason::PassMalformed),
    }
}

/// The VIP of a flow: exact (address, port, protocol), else the all-ports VIP.
#[inline(always)]
pub fn lookup_vip(key: &FlowKey) -> Option<VipMeta> {
    let mut vk = VipKey {
        addr: key.dst,
        port_be: key.dst_port_be,
        proto: key.proto,
        family: key.family,
    };
    // SAFETY: values are copied out at once; user space replaces entries whole.
    if let Some(m) = unsafe { VIPS.get(&vk) } {
        return Some(*m);
    }
    vk.port_be = 0;
    // SAFETY: as above.
    unsafe { VIPS.get(&vk) }.copied()
}

#[inline(always)]
fn usable(b: &Backend) -> bool {
    b.state != BACKEND_UNUSED && b.state != BACKEND_DOWN
}

/// The backend of a flow: the connection table's if it is still usable (same generation,
/// not down), else the VIP's Maglev table's (remembered when `remember`).
/// Returns (backend id, backend, new flow).
#[inline(always)]
pub fn pick_backend(
    vip: &VipMeta,
    key: &FlowKey,
    remember: bool,
) -> Result<(u32, Backend, bool), Reason> {
    let conntrack = vip.flags & VIP_F_NO_CONNTRACK == 0;
    if conntrack {
        // SAFETY: the value is copied out at once.
        if let Some(c) = unsafe { CONNS.get(key) } {
            let c = *c;
            if let Some(b) = BACKENDS.get(c.backend_id)
                && b.generation == c.generation
                && usable(b)
            {
                return Ok((c.backend_id, *b, false));
            }
        }
    }
    if vip.table_size == 0 {
        return Err(Reason::DropNoBackend);
    }
    let h = flow_hash(key, vip.flags & VIP_F_HASH_SRC_ONLY != 0);
    let slot = vip.table_base + h % vip.table_size;
    let id = *MAGLEV.get(slot).ok_or(Reason::DropNoBackend)?;
    let b = *BACKENDS.get(id).ok_or(Reason::DropNoBackend)?;
    if !usable(&b) {
        return Err(Reason::DropNoBackend);
    }
    if conntrack && remember {
        let c = ConnState {
            backend_id: id,
            generation: b.generation,
        };
        // An LRU insert only fails when the kernel cannot allocate; the flow is then
        // hashed again on its next packet, which picks the same backend.
        let _ = CONNS.insert(key, &c, 0);
    }
    Ok((id, b, true))
}

/// Sends the frame to backend `id` in the VIP's mode; `key` is the flow (for the tunnel
/// hash). `Err` carries a drop verdict (or, with `answer_too_big`, the ICMP answer sent
/// instead).
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    p: &Parsed,
    key: &FlowKey,
    vip: &VipMeta,
    id: u32,
    backend: &Backend,
    answer_too_big: bool,
) -> Result<Verdict, Verdict> {
    let nh = nexthop::resolve(ctx, id, backend).map_err(drop)?;
    if vip.flags & VIP_F_DSR_L2 != 0 {
        encap::write_macs(ctx, &nh).map_err(drop)?;
    } else {
        let cfg = CONFIG.get(0).unwrap_or(&NO_CONFIG);
        if cfg.mtu != 0 && p.ip_len + encap::overhead(backend) > cfg.mtu as usize {
            return Err(if answer_too_big {
                icmp::too_big(ctx, p, cfg, backend)
            } else {
                drop(Reason::DropTooBig)
            });
        }
        encap::tunnel(ctx, p, backend, &nh, cfg, tunnel_hash(key)).map_err(drop)?;
    }
    let action = nexthop::transmit(ctx, &nh).map_err(drop)?;
    Ok(Verdict {
        action,
        reason: Reason::Forwarded,
    })
}
