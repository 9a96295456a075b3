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
use vip_common::{
    Anomaly, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, FAMILY_V4, FAMILY_V6, FlowKey,
    IPV4_DF, IPV4_MF_OFFSET, PROTO_TCP, PROTO_UDP, Reason,
};

use crate::ptr::{InPacket, ptr_at};

const VLAN_HDR_LEN: usize = 4;
const TCP_MIN_LEN: usize = 20;
const UDP_LEN: usize = 8;

/// IPv6 extension headers walked before giving up ([`Anomaly::Ipv6Ext`]).
pub const MAX_IPV6_EXT: usize = 4;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
/// TCP flags (low byte of the header's 13th-14th bytes): SYN.
const TCP_SYN: u16 = 0x0002;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;

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
    /// What makes the ports unusable, if anything.
    pub anomaly: Anomaly,
    /// TCP with SYN set (read with the ports; a SYN never pins a flow).
    pub syn: bool,
}

/// Parses a frame up to the transport ports. `wanted` sees the destination address as
/// soon as it is read: a frame for an address it refuses is `Err(PassNotVip)` before its
/// fragment bits, options, extension headers or transport header are looked at (the
/// load balancer passes traffic for other addresses at the least cost).
#[inline(always)]
pub fn parse(ctx: &XdpContext, wanted: impl Fn(&[u32; 4], u8) -> bool) -> Result<Parsed, Reason> {
    let l2 = parse_l2(ctx)?;
    match l2.ether_type {
        ETH_P_IP => parse_ipv4(ctx, &l2, wanted),
        ETH_P_IPV6 => parse_ipv6(ctx, &l2, wanted),
        _ => Err(Reason::PassNotVip),
    }
}

/// The Ethernet header of a frame: where its IP header starts and what it is.
#[derive(Debug, Clone, Copy)]
pub struct L2 {
    /// EtherType after the VLAN tag, if any.
    pub ether_type: u16,
    /// The frame carried one VLAN tag.
    pub vlan: bool,
    /// The VLAN tag's TCI as on the wire, when `vlan` is set.
    pub vlan_tci_be: u16,
}

/// Parses the Ethernet header and one VLAN tag. A caller that matches on
/// [`L2::ether_type`] and then calls [`parse_ipv4`] or [`parse_ipv6`] gets the rest of
/// its path compiled once per family, each copy knowing its family's key layout.
#[inline(always)]
pub fn parse_l2(ctx: &XdpContext) -> Result<L2, Reason> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok_or(Reason::PassUnparsed)?;
    let mut ether_type = u16::from_be(eth.read().ether_type);
    let l3_off = EthHdr::LEN;
    let mut vlan = false;
    let mut vlan_tci_be = 0;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let tag = ptr_at::<[u16; 2]>(ctx, l3_off)
            .ok_or(Reason::PassUnparsed)?
            .read();
        vlan = true;
        vlan_tci_be = tag[0];
        ether_type = u16::from_be(tag[1]);
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            // One tag is all the datapath parses, and all `encap::write_eth` writes
            // back: stacked tags go to the kernel.
            return Err(Reason::PassUnparsed);
        }
    }
    Ok(L2 {
        ether_type,
        vlan,
        vlan_tci_be,
    })
}

impl L2 {
    /// Offset of the IP header: 14, or 18 with a VLAN tag. Computed from `vlan` rather
    /// than stored, so the verifier always sees one of two constants (a stored offset
    /// can come back from the stack as an unbounded scalar).
    #[inline(always)]
    pub fn l3_off(&self) -> usize {
        if self.vlan {
            EthHdr::LEN + VLAN_HDR_LEN
        } else {
            EthHdr::LEN
        }
    }
}

#[inline(always)]
fn start(l2: &L2) -> Parsed {
    Parsed {
        l3_off: l2.l3_off(),
        l4_off: 0,
        ip_len: 0,
        key: FlowKey::default(),
        vlan_tci_be: l2.vlan_tci_be,
        vlan: l2.vlan,
        df: true,
        ttl: 0,
        tos: 0,
        anomaly: Anomaly::None,
        syn: false,
    }
}

/// [`parse`] after [`parse_l2`] for an IPv4 frame.
#[inline(always)]
pub fn parse_ipv4(
    ctx: &XdpContext,
    l2: &L2,
    wanted: impl Fn(&[u32; 4], u8) -> bool,
) -> Result<Parsed, Reason> {
    let l3_off = l2.l3_off();
    let frame_len = ctx.data_end() - ctx.data();
    let mut p = start(l2);
    let ip = ptr_at::<[u32; 5]>(ctx, l3_off).ok_or(Reason::PassMalformed)?;
    // Only the first word and the destination are read before the VIP-address filter:
    // whatever is read before its map lookup (a helper call) has to be kept on the stack
    // across it.
    let first = Ipv4Words::first(ip.get(0));
    let ihl = first.ihl();
    if first.version() != 4 || ihl < Ipv4Hdr::LEN {
        return Err(Reason::PassMalformed);
    }
    p.key.family = FAMILY_V4;
    p.key.dst[0] = ip.get(4);
    if !wanted(&p.key.dst, FAMILY_V4) {
        return Err(Reason::PassNotVip);
    }
    let h = Ipv4Words::new(ip);
    p.key.proto = h.proto();
    p.key.src[0] = ip.get(3);
    p.ttl = h.ttl();
    p.tos = h.tos();
    let frag = h.frag();
    p.df = frag & IPV4_DF != 0;
    p.ip_len = h.tot_len();
    p.l4_off = l3_off + ihl;
    if p.ip_len < ihl || l3_off + p.ip_len > frame_len {
        p.anomaly = Anomaly::Malformed;
    } else if frag & IPV4_MF_OFFSET != 0 {
        p.anomaly = Anomaly::Fragment;
    }
    ports(ctx, &mut p);
    Ok(p)
}

/// [`parse`] after [`parse_l2`] for an IPv6 frame.
#[inline(always)]
pub fn parse_ipv6(
    ctx: &XdpContext,
    l2: &L2,
    wanted: impl Fn(&[u32; 4], u8) -> bool,
) -> Result<Parsed, Reason> {
    let l3_off = l2.l3_off();
    let frame_len = ctx.data_end() - ctx.data();
    let mut p = start(l2);
    // The fixed header as ten words: version, traffic class, flow label; payload length,
    // next header, hop limit; source; destination. As for IPv4, only what the
    // VIP-address filter needs is read before its map lookup.
    let ip = ptr_at::<[u32; 10]>(ctx, l3_off).ok_or(Reason::PassMalformed)?;
    let w0 = u32::from_be(ip.get(0));
    if w0 >> 28 != 6 {
        return Err(Reason::PassMalformed);
    }
    p.key.family = FAMILY_V6;
    p.key.dst = [ip.get(6), ip.get(7), ip.get(8), ip.get(9)];
    if !wanted(&p.key.dst, FAMILY_V6) {
        return Err(Reason::PassNotVip);
    }
    p.key.src = [ip.get(2), ip.get(3), ip.get(4), ip.get(5)];
    let w1 = u32::from_be(ip.get(1));
    p.ttl = w1 as u8;
    p.tos = (w0 >> 20) as u8;
    p.ip_len = (w1 >> 16) as usize + Ipv6Hdr::LEN;
    if l3_off + p.ip_len > frame_len {
        p.anomaly = Anomaly::Malformed;
    }
    let mut next = (w1 >> 8) as u8;
    let mut off = l3_off + Ipv6Hdr::LEN;
    let mut walked = 0;
    while walked < MAX_IPV6_EXT && p.anomaly == Anomaly::None {
        let len = match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT => {
                let Some(h) = ptr_at::<[u8; 2]>(ctx, off) else {
                    p.anomaly = Anomaly::Malformed;
                    break;
                };
                let h = h.read();
                let len = match next {
                    IPV6_FRAGMENT => {
                        p.anomaly = Anomaly::Fragment;
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
    if p.anomaly == Anomaly::None
        && matches!(
            next,
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT
        )
    {
        p.anomaly = Anomaly::Ipv6Ext;
    }
    if p.anomaly == Anomaly::None && off > l3_off + p.ip_len {
        p.anomaly = Anomaly::Malformed;
    }
    p.key.proto = next;
    p.l4_off = off;
    ports(ctx, &mut p);
    Ok(p)
}

/// The transport ports of a TCP or UDP packet, or an anomaly when its header is cut short
/// or impossible.
#[inline(always)]
fn ports(ctx: &XdpContext, p: &mut Parsed) {
    let l3_off = p.l3_off;
    if p.anomaly == Anomaly::None && (p.key.proto == PROTO_TCP || p.key.proto == PROTO_UDP) {
        let min = if p.key.proto == PROTO_TCP {
            TCP_MIN_LEN
        } else {
            UDP_LEN
        };
        let ip_end = l3_off + p.ip_len;
        if p.l4_off + min > ip_end {
            p.anomaly = Anomaly::Malformed;
        } else if p.key.proto == PROTO_TCP {
            // Ports and data offset behind one bounds check.
            match ptr_at::<[u16; 7]>(ctx, p.l4_off) {
                Some(tcp) => {
                    let tcp = tcp.read();
                    p.key.src_port_be = tcp[0];
                    p.key.dst_port_be = tcp[1];
                    // A TCP data offset below 5 words, or past the IP packet, is a header
                    // no TCP stack accepts: forwarding it would only hand the backend
                    // garbage.
                    let doff = usize::from(u16::from_be(tcp[6]) >> 12) * 4;
                    p.syn = u16::from_be(tcp[6]) & TCP_SYN != 0;
                    if doff < TCP_MIN_LEN || p.l4_off + doff > ip_end {
                        p.anomaly = Anomaly::Malformed;
                    }
                }
                None => p.anomaly = Anomaly::Malformed,
            }
        } else {
            match ptr_at::<[u16; 2]>(ctx, p.l4_off) {
                Some(ports) => {
                    let ports = ports.read();
                    p.key.src_port_be = ports[0];
                    p.key.dst_port_be = ports[1];
                }
                None => p.anomaly = Anomaly::Malformed,
            }
        }
    }
}

/// The fixed 20 bytes of an IPv4 header read as five words (five loads; the byte fields
/// of `network_types::ip::Ipv4Hdr` cost a load each and shifts to put them together).
/// A packet load needs no alignment where the CPU needs none, which is where the
/// verifier allows it.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Words {
    /// Words 0-2 in host order: version/IHL, TOS, total length; id, flags/fragment
    /// offset; TTL, protocol, checksum.
    w: [u32; 3],
}

impl Ipv4Words {
    /// The header words as loaded from the packet.
    #[inline(always)]
    pub fn new(ip: InPacket<[u32; 5]>) -> Self {
        Self {
            w: [
                u32::from_be(ip.get(0)),
                u32::from_be(ip.get(1)),
                u32::from_be(ip.get(2)),
            ],
        }
    }

    /// The first word alone, as loaded from the packet: enough for [`Self::version`]
    /// and [`Self::ihl`].
    #[inline(always)]
    pub fn first(w0: u32) -> Self {
        Self {
            w: [u32::from_be(w0), 0, 0],
        }
    }

    /// IP version.
    #[inline(always)]
    pub fn version(&self) -> u32 {
        self.w[0] >> 28
    }

    /// Header length in bytes.
    #[inline(always)]
    pub fn ihl(&self) -> usize {
        ((self.w[0] >> 22) & 0x3c) as usize
    }

    /// Type of service.
    #[inline(always)]
    pub fn tos(&self) -> u8 {
        (self.w[0] >> 16) as u8
    }

    /// Total length.
    #[inline(always)]
    pub fn tot_len(&self) -> usize {
        (self.w[0] & 0xffff) as usize
    }

    /// Flags and fragment offset.
    #[inline(always)]
    pub fn frag(&self) -> u16 {
        self.w[1] as u16
    }

    /// Time to live.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        (self.w[2] >> 24) as u8
    }

    /// Protocol.
    #[inline(always)]
    pub fn proto(&self) -> u8 {
        (self.w[2] >> 16) as u8
    }
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
