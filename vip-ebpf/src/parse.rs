//! Header parsing: Ethernet (one 802.1Q/802.1ad tag), IPv4 (honouring IHL), IPv6 (a bounded
//! walk of extension headers), TCP/UDP ports.
//!
//! `Err` means the frame cannot be shown to be ours at all (not IP, stacked tags, IP
//! header cut short, or a destination address the caller does not want): the caller
//! passes it untouched. Once the destination address is known and wanted, oddities are
//! reported in [`Parsed::anomaly`] instead, because their fate depends on whether that
//! address is a VIP.

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use vip_common::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP, Reason};

use crate::ptr::ptr_at;

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HDR_LEN: usize = 4;
const TCP_MIN_LEN: usize = 20;
/// Offset of the TCP data offset (high nibble, in 4-byte words) in the TCP header.
const TCP_DOFF_BYTE: usize = 12;
const UDP_LEN: usize = 8;

/// IPv6 extension headers walked before giving up (`DropIpv6Ext` for a VIP).
pub const MAX_IPV6_EXT: usize = 4;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;

/// Nothing odd.
pub const ANOMALY_NONE: u8 = 0;
/// IPv4 MF/offset set, or an IPv6 fragment header: the flow's ports are not usable.
pub const ANOMALY_FRAGMENT: u8 = 1;
/// More IPv6 extension headers than [`MAX_IPV6_EXT`].
pub const ANOMALY_IPV6_EXT: u8 = 2;
/// IP length fields inconsistent with the frame, or an extension / transport header cut
/// short.
pub const ANOMALY_MALFORMED: u8 = 3;

/// Where the headers of a parsed frame start, and its 5-tuple.
#[derive(Debug, Clone, Copy)]
pub struct Parsed {
    /// Offset of the IP header (14, or 18 with a VLAN tag).
    pub l3_off: usize,
    /// Offset of the transport header (after IPv4 options / IPv6 extension headers).
    pub l4_off: usize,
    /// Length of the IP packet (header included) from its length field.
    pub ip_len: usize,
    /// The 5-tuple (ports zero for other protocols and for anomalies).
    pub key: FlowKey,
    /// The VLAN tag's TCI as on the wire, when `vlan` is set.
    pub vlan_tci_be: u16,
    /// The frame carried one VLAN tag.
    pub vlan: bool,
    /// IPv4 don't-fragment bit (always true for IPv6: routers never fragment it).
    pub df: bool,
    /// TTL / hop limit.
    pub ttl: u8,
    /// IPv4 TOS / IPv6 traffic class (copied to the tunnel's outer header).
    pub tos: u8,
    /// `ANOMALY_*`.
    pub anomaly: u8,
}

/// Parses a frame up to the transport ports. `wanted` sees the destination address as
/// soon as it is read: a frame for an address it refuses is `Err(PassNotVip)` before its
/// fragment bits, options, extension headers or transport header are looked at (the
/// load balancer passes traffic for other addresses at the least cost).
#[inline(always)]
pub fn parse(ctx: &XdpContext, wanted: impl Fn(&[u32; 4], u8) -> bool) -> Result<Parsed, Reason> {
    let eth = ptr_at::<EthHdr>(ctx, 0).map_err(|()| Reason::PassUnparsed)?;
    // SAFETY: ptr_at checked the bounds.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3_off = EthHdr::LEN;
    let mut vlan = false;
    let mut vlan_tci_be = 0;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let tag = ptr_at::<[u16; 2]>(ctx, l3_off).map_err(|()| Reason::PassUnparsed)?;
        // SAFETY: ptr_at checked the bounds.
        let tag = unsafe { *tag };
        vlan = true;
        vlan_tci_be = tag[0];
        ether_type = u16::from_be(tag[1]);
        l3_off += VLAN_HDR_LEN;
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            // One tag is all the datapath parses (see DESIGN.md); stacked tags go to
            // the kernel.
            return Err(Reason::PassUnparsed);
        }
    }
    let frame_len = ctx.data_end() - ctx.data();
    let mut p = Parsed {
        l3_off,
        l4_off: 0,
        ip_len: 0,
        key: FlowKey::default(),
        vlan_tci_be,
        vlan,
        df: true,
        ttl: 0,
        tos: 0,
        anomaly: ANOMALY_NONE,
    };
    match ether_type {
        ETH_P_IP => {
            let ip = ptr_at::<Ipv4Hdr>(ctx, l3_off).map_err(|()| Reason::PassMalformed)?;
            // SAFETY: ptr_at checked the bounds.
            let ip = unsafe { &*ip };
            let ihl = usize::from(ip.vihl & 0x0f) * 4;
            if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
                return Err(Reason::PassMalformed);
            }
            p.key.family = FAMILY_V4;
            p.key.proto = ip.proto;
            p.key.src[0] = u32::from_ne_bytes(ip.src_addr);
            p.key.dst[0] = u32::from_ne_bytes(ip.dst_addr);
            if !wanted(&p.key.dst, FAMILY_V4) {
                return Err(Reason::PassNotVip);
            }
            p.ttl = ip.ttl;
            p.tos = ip.tos;
            let frag = u16::from_be_bytes(ip.frags);
            p.df = frag & 0x4000 != 0;
            p.ip_len = usize::from(u16::from_be_bytes(ip.tot_len));
            p.l4_off = l3_off + ihl;
            if p.ip_len < ihl || l3_off + p.ip_len > frame_len {
                p.anomaly = ANOMALY_MALFORMED;
            } else if frag & 0x3fff != 0 {
                p.anomaly = ANOMALY_FRAGMENT;
            }
        }
        ETH_P_IPV6 => {
            let ip = ptr_at::<Ipv6Hdr>(ctx, l3_off).map_err(|()| Reason::PassMalformed)?;
            // SAFETY: ptr_at checked the bounds.
            let ip = unsafe { &*ip };
            if ip.vcf[0] >> 4 != 6 {
                return Err(Reason::PassMalformed);
            }
            p.key.family = FAMILY_V6;
            p.key.src = words(&ip.src_addr);
            p.key.dst = words(&ip.dst_addr);
            if !wanted(&p.key.dst, FAMILY_V6) {
                return Err(Reason::PassNotVip);
            }
            p.ttl = ip.hop_limit;
            p.tos = (ip.vcf[0] << 4) | (ip.vcf[1] >> 4);
            p.ip_len = usize::from(u16::from_be_bytes(ip.payload_len)) + Ipv6Hdr::LEN;
            if l3_off + p.ip_len > frame_len {
                p.anomaly = ANOMALY_MALFORMED;
            }
            let mut next = ip.next_hdr;
            let mut off = l3_off + Ipv6Hdr::LEN;
            let mut walked = 0;
            while walked < MAX_IPV6_EXT && p.anomaly == ANOMALY_NONE {
                let len = match next {
                    IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT => {
                        let Ok(h) = ptr_at::<[u8; 2]>(ctx, off) else {
                            p.anomaly = ANOMALY_MALFORMED;
                            break;
                        };
                        // SAFETY: ptr_at checked the bounds.
                        let h = unsafe { *h };
                        let len = match next {
                            IPV6_FRAGMENT => {
                                p.anomaly = ANOMALY_FRAGMENT;
                                8
                            }
                            IPV6_AH => (usize::from(h[1]) + 2) * 4,
                            _ => (usize::from(h[1]) + 1) * 8,
                        };
                        next = h[0];
                        len
                    }
                    _ => break,
                };
                off += len;
                walked += 1;
            }
            if p.anomaly == ANOMALY_NONE
                && matches!(
                    next,
                    IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT
                )
            {
                p.anomaly = ANOMALY_IPV6_EXT;
            }
            if p.anomaly == ANOMALY_NONE && off > l3_off + p.ip_len {
                p.anomaly = ANOMALY_MALFORMED;
            }
            p.key.proto = next;
            p.l4_off = off;
        }
        _ => return Err(Reason::PassNotVip),
    }
    if p.anomaly == ANOMALY_NONE && (p.key.proto == PROTO_TCP || p.key.proto == PROTO_UDP) {
        let min = if p.key.proto == PROTO_TCP {
            TCP_MIN_LEN
        } else {
            UDP_LEN
        };
        let ip_end = l3_off + p.ip_len;
        match ptr_at::<[u16; 2]>(ctx, p.l4_off) {
            Ok(ports) if p.l4_off + min <= ip_end => {
                // SAFETY: ptr_at checked the bounds.
                let ports = unsafe { *ports };
                p.key.src_port_be = ports[0];
                p.key.dst_port_be = ports[1];
            }
            _ => p.anomaly = ANOMALY_MALFORMED,
        }
        // A TCP data offset below 5 words, or past the IP packet, is a header no TCP
        // stack accepts: forwarding it would only hand the backend garbage.
        if p.anomaly == ANOMALY_NONE && p.key.proto == PROTO_TCP {
            match ptr_at::<u8>(ctx, p.l4_off + TCP_DOFF_BYTE) {
                Ok(b) => {
                    // SAFETY: ptr_at checked the bounds.
                    let doff = usize::from(unsafe { *b } >> 4) * 4;
                    if doff < TCP_MIN_LEN || p.l4_off + doff > ip_end {
                        p.anomaly = ANOMALY_MALFORMED;
                    }
                }
                Err(()) => p.anomaly = ANOMALY_MALFORMED,
            }
        }
    }
    Ok(p)
}

/// An IPv6 address as four network-order words (the layout of the shared keys).
#[inline(always)]
pub fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}
