//! Header parsing: Ethernet (one 802.1Q tag), IPv4 (honouring IHL), IPv6, TCP/UDP ports.

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use vip_common::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP, Reason};

use crate::ptr::ptr_at;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HDR_LEN: usize = 4;

/// Where the headers of a parsed packet start, and its 5-tuple.
#[derive(Debug)]
pub struct Parsed {
    /// Offset of the IP header.
    pub l3_off: usize,
    /// Offset of the transport header.
    pub l4_off: usize,
    /// The 5-tuple (ports zero for other protocols).
    pub key: FlowKey,
}

/// Parses a frame up to the transport ports. `Err` carries the reason the packet is not
/// parsed further; the caller decides its fate.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Parsed, Reason> {
    let eth = ptr_at::<EthHdr>(ctx, 0).map_err(|()| Reason::PassUnparsed)?;
    // SAFETY: ptr_at checked the bounds.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    let mut l3_off = EthHdr::LEN;
    if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
        let tci = ptr_at::<[u8; VLAN_HDR_LEN]>(ctx, l3_off).map_err(|()| Reason::PassUnparsed)?;
        // SAFETY: ptr_at checked the bounds.
        let inner = unsafe { *tci };
        ether_type = u16::from_be_bytes([inner[2], inner[3]]);
        l3_off += VLAN_HDR_LEN;
        if ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD {
            // One tag is all the datapath parses (see DESIGN.md); stacked tags go to
            // the kernel.
            return Err(Reason::PassUnparsed);
        }
    }
    let mut key = FlowKey::default();
    let l4_off = match ether_type {
        ETH_P_IP => {
            let ip = ptr_at::<Ipv4Hdr>(ctx, l3_off).map_err(|()| Reason::PassMalformed)?;
            // SAFETY: ptr_at checked the bounds.
            let ip = unsafe { &*ip };
            let ihl = usize::from(ip.vihl & 0x0f) * 4;
            if ip.vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN {
                return Err(Reason::PassMalformed);
            }
            key.family = FAMILY_V4;
            key.proto = ip.proto;
            key.src[0] = u32::from_ne_bytes(ip.src_addr);
            key.dst[0] = u32::from_ne_bytes(ip.dst_addr);
            l3_off + ihl
        }
        ETH_P_IPV6 => {
            let ip = ptr_at::<Ipv6Hdr>(ctx, l3_off).map_err(|()| Reason::PassMalformed)?;
            // SAFETY: ptr_at checked the bounds.
            let ip = unsafe { &*ip };
            if ip.vcf[0] >> 4 != 6 {
                return Err(Reason::PassMalformed);
            }
            key.family = FAMILY_V6;
            key.proto = ip.next_hdr;
            key.src = words(&ip.src_addr);
            key.dst = words(&ip.dst_addr);
            l3_off + Ipv6Hdr::LEN
        }
        _ => return Err(Reason::PassNotVip),
    };
    if key.proto == PROTO_TCP || key.proto == PROTO_UDP {
        // Source and destination ports are the first four bytes of both headers.
        let ports = ptr_at::<[u16; 2]>(ctx, l4_off).map_err(|()| Reason::PassMalformed)?;
        // SAFETY: ptr_at checked the bounds.
        let ports = unsafe { *ports };
        key.src_port_be = ports[0];
        key.dst_port_be = ports[1];
    }
    Ok(Parsed {
        l3_off,
        l4_off,
        key,
    })
}

#[inline(always)]
fn words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}
