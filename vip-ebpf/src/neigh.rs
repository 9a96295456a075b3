//! Proxy ARP and NDP: a VIP announced on the segment (`announce = "arp"`) has its ARP
//! requests and IPv6 neighbour solicitations answered here, with the receiving
//! interface's MAC, while its HA group is active on this node; the VIP is configured on
//! no interface. Everything else about neighbours goes to the kernel untouched.
//!
//! Off the IP fast path: ARP is its own EtherType, and a solicitation is ICMPv6, which
//! reaches [`ndp`] only after the VIP-address filter let its destination through (vipd
//! puts the solicited-node address of every announced IPv6 VIP in the filter).

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};
use vip_common::{
    FAMILY_V4, FAMILY_V6, HA_ROLE_ACTIVE, NeighKey, PROTO_ICMPV6, Reason, solicited_node,
};

use crate::{
    maps::{HA_GROUPS, IF_MACS, NEIGH},
    parse::L2,
    ptr::ptr_at,
    verdict::Verdict,
};

/// ARP over Ethernet for IPv4: hardware type, protocol type, address lengths.
const ARP_HTYPE_ETHER: u16 = 1;
const ARP_PTYPE_IPV4: u16 = 0x0800;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;
/// An Ethernet/IPv4 ARP message.
const ARP_LEN: usize = 28;

const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// Fixed part of a solicitation or advertisement: type, code, checksum, flags or
/// reserved, target.
const ND_FIXED_LEN: usize = 24;
/// An advertisement with its target link-layer address option: all this module sends.
const NA_LEN: usize = ND_FIXED_LEN + 8;
const ND_OPT_SOURCE_LL: u8 = 1;
const ND_OPT_TARGET_LL: u8 = 2;
/// Options looked at in a solicitation (a source link-layer option and a DAD nonce are
/// the usual ones); more are left unchecked.
const ND_MAX_OPTS: usize = 4;
/// RFC 4861 4.4 flags.
const NA_F_SOLICITED: u32 = 0x4000_0000;
const NA_F_OVERRIDE: u32 = 0x2000_0000;
/// Hop limit of every ND message (RFC 4861 7.1.1: anything else is ignored).
const ND_HOP_LIMIT: u8 = 255;
/// `ff02::1` (all nodes), as network-order words, and its multicast MAC.
const ALL_NODES: [u32; 4] = [0xff02_0000u32.to_be(), 0, 0, 1u32.to_be()];
/// `33:33:00:00:00:01` as three 16-bit words in frame order.
const ALL_NODES_MAC_WORDS: [u16; 3] = [
    u16::from_ne_bytes([0x33, 0x33]),
    u16::from_ne_bytes([0, 0]),
    u16::from_ne_bytes([0, 1]),
];

/// The MAC to answer with for `address` of `family`, when it is announced here and its
/// group is active; otherwise the reason to pass the request on.
#[inline(always)]
fn answer_mac(
    ctx: &XdpContext,
    addr: [u32; 4],
    family: u8,
    not_ours: Reason,
) -> Result<[u8; 6], Reason> {
    let key = NeighKey {
        addr,
        family,
        _pad: [0; 3],
    };
    // SAFETY: the value is copied out at once; vipd replaces entries whole.
    let group = unsafe { NEIGH.get(&key) }.ok_or(not_ours)?.group;
    let active = HA_GROUPS
        .get(group)
        .is_some_and(|g| g.role == HA_ROLE_ACTIVE);
    if !active {
        return Err(Reason::PassNeighNotActive);
    }
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: as above.
    match unsafe { IF_MACS.get(&ifindex) } {
        Some(m) => Ok(m.mac),
        None => Err(Reason::PassNeighNotActive),
    }
}

/// An ARP frame (`l2` parsed, EtherType ARP): a request for an announced VIP address of
/// an active group becomes its reply in place (RFC 826: sender and target swapped, the
/// VIP's hardware address is the interface's MAC), sent back with `XDP_TX`.
#[inline(always)]
pub fn arp(ctx: &XdpContext, l2: &L2) -> Verdict {
    match arp_reply(ctx, l2) {
        Ok(()) => Verdict {
            action: xdp_action::XDP_TX,
            reason: Reason::ArpReplied,
        },
        Err(reason) => Verdict::pass(reason),
    }
}

#[inline(always)]
fn arp_reply(ctx: &XdpContext, l2: &L2) -> Result<(), Reason> {
    let l3 = l2.l3_off();
    let a = ptr_at::<[u8; ARP_LEN]>(ctx, l3)
        .ok_or(Reason::PassArpMalformed)?
        .read();
    let htype = u16::from_be_bytes([a[0], a[1]]);
    let ptype = u16::from_be_bytes([a[2], a[3]]);
    if htype != ARP_HTYPE_ETHER || ptype != ARP_PTYPE_IPV4 || a[4] != 6 || a[5] != 4 {
        return Err(Reason::PassArpMalformed);
    }
    if u16::from_be_bytes([a[6], a[7]]) != ARP_OP_REQUEST {
        return Err(Reason::PassArpNotVip);
    }
    let sha = [a[8], a[9], a[10], a[11], a[12], a[13]];
    let spa = [a[14], a[15], a[16], a[17]];
    let tpa = [a[24], a[25], a[26], a[27]];
    // A request whose sender is its target announces the sender (gratuitous ARP, e.g.
    // another node taking the VIP over): nothing to answer.
    if spa == tpa {
        return Err(Reason::PassArpNotVip);
    }
    let mac = answer_mac(
        ctx,
        [u32::from_ne_bytes(tpa), 0, 0, 0],
        FAMILY_V4,
        Reason::PassArpNotVip,
    )?;
    let eth = ptr_at::<[u8; 12]>(ctx, 0).ok_or(Reason::PassArpMalformed)?;
    eth.write([
        sha[0], sha[1], sha[2], sha[3], sha[4], sha[5], mac[0], mac[1], mac[2], mac[3], mac[4],
        mac[5],
    ]);
    // Operation, sender (the VIP at this MAC), target (the asker).
    let body = ptr_at::<[u8; 22]>(ctx, l3 + 6).ok_or(Reason::PassArpMalformed)?;
    let op = ARP_OP_REPLY.to_be_bytes();
    body.write([
        op[0], op[1], mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], tpa[0], tpa[1], tpa[2],
        tpa[3], sha[0], sha[1], sha[2], sha[3], sha[4], sha[5], spa[0], spa[1], spa[2], spa[3],
    ]);
    Ok(())
}

/// What [`ndp`] did with an ICMPv6 packet (a call cannot return a struct).
pub mod ndp_outcome {
    /// Not a neighbour solicitation: the caller goes on.
    pub const NOT_NS: u32 = 0;
    /// Turned into an advertisement: `XDP_TX`.
    pub const ADVERTISED: u32 = 1;
    /// A solicitation to ignore or not for an announced address: pass.
    pub const IGNORED: u32 = 2;
    /// For an announced address of a group not active here: pass.
    pub const NOT_ACTIVE: u32 = 3;
    /// Resizing or writing the frame failed: drop.
    pub const FAILED: u32 = 4;
}

/// An ICMPv6 packet that passed the VIP-address filter: a valid neighbour solicitation
/// (RFC 4861 7.1.1) for an announced VIP address of an active group becomes, in place, a
/// neighbour advertisement from the VIP with the Override flag and a target link-layer
/// address option: Solicited and back to the asker, or, for a duplicate address
/// detection probe (unspecified source), unsolicited to all nodes (RFC 4861 7.2.4).
/// Returns an [`ndp_outcome`].
///
/// Out of line, taking two scalars and reading the rest from the frame again: inlined
/// into the IPv6 copy of the packet path it changed that copy's register allocation and
/// cost the established IPv6 flow 14 more instructions (bench section 1e).
#[inline(never)]
pub fn ndp(ctx: &XdpContext, vlan: bool, l4_off: usize) -> u32 {
    // Fixed IPv6 header only: the offset is one of two constants for the verifier.
    let l3 = if vlan { EthHdr::LEN + 4 } else { EthHdr::LEN };
    let l4 = l3 + Ipv6Hdr::LEN;
    if l4_off != l4 {
        return ndp_outcome::NOT_NS;
    }
    let Some(ip) = ptr_at::<[u32; 10]>(ctx, l3) else {
        return ndp_outcome::NOT_NS;
    };
    let w1 = u32::from_be(ip.get(1));
    if (w1 >> 8) as u8 != PROTO_ICMPV6 {
        return ndp_outcome::NOT_NS;
    }
    let Some(icmp) = ptr_at::<[u8; 2]>(ctx, l4) else {
        return ndp_outcome::NOT_NS;
    };
    let icmp = icmp.read();
    if icmp[0] != ND_NEIGHBOR_SOLICIT {
        return ndp_outcome::NOT_NS;
    }
    let ns = NsFields {
        hop_limit: w1 as u8,
        icmp_len: (w1 >> 16) as usize,
        code: icmp[1],
    };
    match advertise(ctx, &ns, l3, l4) {
        Ok(()) => ndp_outcome::ADVERTISED,
        Err(Reason::PassNeighNotActive) => ndp_outcome::NOT_ACTIVE,
        Err(Reason::DropInternal) => ndp_outcome::FAILED,
        Err(_) => ndp_outcome::IGNORED,
    }
}

/// The verdict of an [`ndp_outcome`] other than `NOT_NS`.
#[inline(always)]
pub fn ndp_verdict(outcome: u32) -> Verdict {
    match outcome {
        ndp_outcome::ADVERTISED => Verdict {
            action: xdp_action::XDP_TX,
            reason: Reason::NdpAdvertised,
        },
        ndp_outcome::NOT_ACTIVE => Verdict::pass(Reason::PassNeighNotActive),
        ndp_outcome::FAILED => Verdict::drop(Reason::DropInternal),
        _ => Verdict::pass(Reason::PassNdpIgnored),
    }
}

/// The fields of a solicitation's IPv6 header that matter.
struct NsFields {
    hop_limit: u8,
    /// The IPv6 payload length: the ICMPv6 message (no extension headers here).
    icmp_len: usize,
    code: u8,
}

#[inline(always)]
fn advertise(ctx: &XdpContext, p: &NsFields, l3: usize, l4: usize) -> Result<(), Reason> {
    let ignored = Reason::PassNdpIgnored;
    let icmp_len = p.icmp_len;
    if p.hop_limit != ND_HOP_LIMIT || p.code != 0 || icmp_len < ND_FIXED_LEN {
        return Err(ignored);
    }
    let ns = ptr_at::<[u32; 6]>(ctx, l4).ok_or(ignored)?;
    let target = [ns.get(2), ns.get(3), ns.get(4), ns.get(5)];
    if target[0].to_ne_bytes()[0] == 0xff {
        return Err(ignored);
    }
    // Options: none may have length zero; note a source link-layer address.
    let mut off = l4 + ND_FIXED_LEN;
    let end = l4 + icmp_len;
    let mut source_ll = false;
    let mut i = 0;
    while i < ND_MAX_OPTS && off < end {
        let opt = ptr_at::<[u8; 2]>(ctx, off).ok_or(ignored)?.read();
        if opt[1] == 0 {
            return Err(ignored);
        }
        source_ll |= opt[0] == ND_OPT_SOURCE_LL;
        off += usize::from(opt[1]) * 8;
        i += 1;
    }
    if off > end {
        return Err(ignored);
    }
    // The addresses are compared in the frame, not copied out (stack, as below).
    let ip = ptr_at::<[u32; 10]>(ctx, l3).ok_or(ignored)?;
    let dad = ip.get(2) | ip.get(3) | ip.get(4) | ip.get(5) == 0;
    let sn = solicited_node(&target);
    if dad
        && (source_ll
            || ip.get(6) != sn[0]
            || ip.get(7) != sn[1]
            || ip.get(8) != sn[2]
            || ip.get(9) != sn[3])
    {
        return Err(ignored);
    }
    let mac = answer_mac(ctx, target, FAMILY_V6, ignored)?;
    let flags = if dad {
        NA_F_OVERRIDE
    } else {
        NA_F_SOLICITED | NA_F_OVERRIDE
    };
    let want_len = l4 + NA_LEN;
    // The frame's length: its one linear buffer (as in `icmp`: `bpf_xdp_get_buff_len`
    // is missing before Linux 5.18; `black_box` keeps it a plain number for the
    // verifier).
    let cur_len = core::hint::black_box(ctx.data_end() - ctx.data());
    if cur_len != want_len {
        // SAFETY: plain helper call on the program's context; a failure leaves the frame
        // as it was.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, want_len as i32 - cur_len as i32) } != 0 {
            return Err(Reason::DropInternal);
        }
    }
    // Written word by word, moving the asker's addresses to the destination fields in
    // place: few values on the stack (this function's frame adds to the packet path's
    // within the verifier's 512 bytes).
    let eth = ptr_at::<[u16; 6]>(ctx, 0).ok_or(Reason::DropInternal)?;
    let ip = ptr_at::<[u32; 10]>(ctx, l3).ok_or(Reason::DropInternal)?;
    let na = ptr_at::<[u32; 8]>(ctx, l4).ok_or(Reason::DropInternal)?;
    let mut j = 0;
    while j < 3 {
        let asker = eth.get(3 + j);
        eth.set(j, if dad { ALL_NODES_MAC_WORDS[j] } else { asker });
        eth.set(3 + j, u16::from_ne_bytes([mac[2 * j], mac[2 * j + 1]]));
        j += 1;
    }
    let opt_hi = (u32::from(ND_OPT_TARGET_LL) << 24)
        | (1 << 16)
        | (u32::from(mac[0]) << 8)
        | u32::from(mac[1]);
    let opt_lo = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    let type_code = u32::from(ND_NEIGHBOR_ADVERT) << 24;
    // The checksum over the pseudo-header (source, destination, length, next header)
    // and the message, summed as host-order 32-bit words; the addresses are added as
    // they are moved.
    let mut sum = NA_LEN as u64 + u64::from(PROTO_ICMPV6) + u64::from(type_code);
    sum += u64::from(flags) + u64::from(opt_hi) + u64::from(opt_lo);
    let mut j = 0;
    while j < 4 {
        let dst = if dad { ALL_NODES[j] } else { ip.get(2 + j) };
        let t = na.get(2 + j);
        ip.set(6 + j, dst);
        ip.set(2 + j, t);
        sum += 2 * u64::from(u32::from_be(t)) + u64::from(u32::from_be(dst));
        j += 1;
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    let csum = !crate::csum::fold(sum as u32);
    let hdr = (NA_LEN as u32) << 16 | u32::from(PROTO_ICMPV6) << 8 | u32::from(ND_HOP_LIMIT);
    ip.set(0, 0x6000_0000u32.to_be());
    ip.set(1, hdr.to_be());
    na.set(0, (type_code | u32::from(csum)).to_be());
    na.set(1, flags.to_be());
    na.set(6, opt_hi.to_be());
    na.set(7, opt_lo.to_be());
    Ok(())
}
