//! Building test frames with `etherparse`, so fixtures state addresses and ports, not
//! hand-typed bytes, and checksums are right by construction.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use etherparse::PacketBuilder;

/// Client-side MAC used by fixtures.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// LB-side MAC used by fixtures.
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Transport protocol of a test frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP with the given flags (SYN when `syn`).
    Tcp {
        /// Sets SYN (otherwise ACK).
        syn: bool,
    },
    /// UDP.
    Udp,
}

/// An Ethernet frame carrying one TCP or UDP packet from `src` to `dst`.
pub fn frame(src: SocketAddr, dst: SocketAddr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed address families in a test frame: {src} -> {dst}"),
    };
    let mut out = Vec::new();
    match l4 {
        L4::Tcp { syn } => {
            let b = ip.tcp(src.port(), dst.port(), 1000, 65535);
            let b = if syn { b.syn() } else { b.ack(1) };
            b.write(&mut out, payload)
        }
        L4::Udp => ip.udp(src.port(), dst.port()).write(&mut out, payload),
    }
    .expect("writing a test frame");
    out
}

/// An Ethernet/IPv4 ARP frame, padded to the 60-byte Ethernet minimum as on the wire.
pub fn arp(
    eth_dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&eth_dst);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

/// Parses an `ip:port` literal (IPv6 in brackets); panics on a typo in a test.
pub fn sa(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad socket address {s:?} in a test: {e}"))
}

// ---- Variations of a frame, for the malformed / odd cases. Each edit keeps the frame
// otherwise valid (IPv4 header checksum recomputed), so only the named oddity differs.

/// Offset of the IP header in an untagged frame.
pub const L3: usize = 14;

/// Recomputes the IPv4 header checksum of the header at `l3` (with etherparse).
pub fn fix_ipv4_checksum(f: &mut [u8], l3: usize) {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    f[l3 + 10] = 0;
    f[l3 + 11] = 0;
    let h = etherparse::Ipv4HeaderSlice::from_slice(&f[l3..l3 + ihl])
        .expect("valid IPv4 header")
        .to_header();
    let c = h.calc_header_checksum().to_be_bytes();
    f[l3 + 10] = c[0];
    f[l3 + 11] = c[1];
}

/// The frame with one 802.1Q tag (VID `vid`).
pub fn with_vlan(f: &[u8], vid: u16) -> Vec<u8> {
    let mut out = f[..12].to_vec();
    out.extend_from_slice(&[0x81, 0x00]);
    out.extend_from_slice(&vid.to_be_bytes());
    out.extend_from_slice(&f[12..]);
    out
}

/// IPv4 frame with `opts` (a multiple of 4 bytes) of IP options added.
pub fn with_ipv4_options(f: &[u8], opts: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let mut out = f[..L3 + 20].to_vec();
    out.extend_from_slice(opts);
    out.extend_from_slice(&f[L3 + 20..]);
    out[L3] = 0x40 | (5 + opts.len() / 4) as u8;
    let tot = u16::from_be_bytes([out[L3 + 2], out[L3 + 3]]) + opts.len() as u16;
    out[L3 + 2..L3 + 4].copy_from_slice(&tot.to_be_bytes());
    fix_ipv4_checksum(&mut out, L3);
    out
}

/// IPv4 frame with fragment fields set (`offset` in 8-byte units).
pub fn ipv4_fragment(f: &[u8], more: bool, offset: u16) -> Vec<u8> {
    let mut out = f.to_vec();
    let v = (u16::from(more) << 13) | offset;
    out[L3 + 6..L3 + 8].copy_from_slice(&v.to_be_bytes());
    fix_ipv4_checksum(&mut out, L3);
    out
}

/// IPv4 frame with DF cleared.
pub fn ipv4_no_df(f: &[u8]) -> Vec<u8> {
    let mut out = f.to_vec();
    out[L3 + 6] &= !0x40;
    fix_ipv4_checksum(&mut out, L3);
    out
}

/// Frame with TTL / hop limit `ttl`.
pub fn with_ttl(f: &[u8], ttl: u8) -> Vec<u8> {
    let mut out = f.to_vec();
    if out[12] == 0x08 {
        out[L3 + 8] = ttl;
        fix_ipv4_checksum(&mut out, L3);
    } else {
        out[L3 + 7] = ttl;
    }
    out
}

/// IPv6 extension header kinds for [`with_ipv6_ext`].
pub const IPV6_HOPOPTS: u8 = 0;
/// Destination options.
pub const IPV6_DSTOPTS: u8 = 60;
/// Fragment header.
pub const IPV6_FRAGMENT: u8 = 44;

/// IPv6 frame with 8-byte extension headers `kinds` inserted (in order) before the
/// transport header. A fragment header says offset 0 with M set (a first fragment).
pub fn with_ipv6_ext(f: &[u8], kinds: &[u8]) -> Vec<u8> {
    let mut out = f[..L3 + 40].to_vec();
    let mut next = f[L3 + 6];
    let mut exts = Vec::new();
    for (i, kind) in kinds.iter().enumerate().rev() {
        let mut h = vec![next, 0];
        if *kind == IPV6_FRAGMENT {
            h.extend_from_slice(&[0x00, 0x01, 0, 0, 0x12, 0x34]);
        } else {
            // PadN with 4 bytes of padding.
            h.extend_from_slice(&[1, 4, 0, 0, 0, 0]);
        }
        exts.splice(0..0, h);
        next = *kind;
        let _ = i;
    }
    out[L3 + 6] = next;
    out.extend_from_slice(&exts);
    out.extend_from_slice(&f[L3 + 40..]);
    let plen = u16::from_be_bytes([out[L3 + 4], out[L3 + 5]]) + exts.len() as u16;
    out[L3 + 4..L3 + 6].copy_from_slice(&plen.to_be_bytes());
    out
}

/// Replaces the MACs (what `dsr-l2` does).
pub fn with_macs(f: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut out = f.to_vec();
    out[..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out
}

/// The outer header a tunnel adds, for [`tunnelled`].
#[derive(Debug, Clone, Copy)]
pub struct Outer {
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination (the backend).
    pub dst: IpAddr,
    /// IPv6 flow label (ignored for IPv4).
    pub flow_label: u32,
}

/// `f` as the LB must send it through a tunnel: new MACs, the same VLAN tag if any, the
/// outer header built with etherparse (checksum by etherparse), then the inner IP packet
/// unchanged.
pub fn tunnelled(f: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6], outer: Outer) -> Vec<u8> {
    use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header};
    let l3 = if f[12] == 0x81 { 18 } else { 14 };
    let inner = &f[l3..];
    let inner_v4 = inner[0] >> 4 == 4;
    let (inner_len, tos) = if inner_v4 {
        (
            usize::from(u16::from_be_bytes([inner[2], inner[3]])),
            inner[1],
        )
    } else {
        (
            usize::from(u16::from_be_bytes([inner[4], inner[5]])) + 40,
            (inner[0] << 4) | (inner[1] >> 4),
        )
    };
    let proto = if inner_v4 {
        IpNumber::IPV4
    } else {
        IpNumber::IPV6
    };
    let mut out = Vec::new();
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&src_mac);
    if l3 == 18 {
        out.extend_from_slice(&f[12..16]);
    }
    match (outer.src, outer.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x08, 0x00]);
            let mut h = Ipv4Header::new(inner_len as u16, 64, proto, s.octets(), d.octets())
                .expect("small packet");
            h.dscp = etherparse::IpDscp::try_new(tos >> 2).unwrap();
            h.ecn = etherparse::IpEcn::try_new(tos & 3).unwrap();
            h.dont_fragment = true;
            h.header_checksum = h.calc_header_checksum();
            h.write(&mut out).unwrap();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&[0x86, 0xdd]);
            let h = Ipv6Header {
                traffic_class: tos,
                flow_label: Ipv6FlowLabel::try_new(outer.flow_label).unwrap(),
                payload_length: inner_len as u16,
                next_header: proto,
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
            };
            h.write(&mut out).unwrap();
        }
        _ => panic!("outer addresses of mixed families"),
    }
    out.extend_from_slice(inner);
    out
}

/// The ICMP frag-needed (IPv4) / packet-too-big (IPv6) answer to frame `f` with `mtu`,
/// built with etherparse: back to the sender's MAC, from the VIP to the client, quoting
/// the IP header and 8 bytes.
pub fn too_big_answer(f: &[u8], mtu: u32) -> Vec<u8> {
    use etherparse::{
        IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpNumber, Ipv4Header,
        Ipv6FlowLabel, Ipv6Header, icmpv4::DestUnreachableHeader,
    };
    let _ = IcmpEchoHeader { id: 0, seq: 0 };
    let l3 = if f[12] == 0x81 { 18 } else { 14 };
    let mut out = Vec::new();
    out.extend_from_slice(&f[6..12]);
    out.extend_from_slice(&f[0..6]);
    out.extend_from_slice(&f[12..l3]);
    let ip = &f[l3..];
    if ip[0] >> 4 == 4 {
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let quote = &ip[..ihl + 8];
        let icmp = Icmpv4Header::with_checksum(
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: mtu as u16,
            }),
            quote,
        );
        let src: [u8; 4] = ip[16..20].try_into().unwrap();
        let dst: [u8; 4] = ip[12..16].try_into().unwrap();
        let mut h = Ipv4Header::new(
            (icmp.header_len() + quote.len()) as u16,
            64,
            IpNumber::ICMP,
            src,
            dst,
        )
        .unwrap();
        h.dont_fragment = false;
        h.header_checksum = h.calc_header_checksum();
        h.write(&mut out).unwrap();
        icmp.write(&mut out).unwrap();
        out.extend_from_slice(quote);
    } else {
        let quote = &ip[..48];
        let src: [u8; 16] = ip[24..40].try_into().unwrap();
        let dst: [u8; 16] = ip[8..24].try_into().unwrap();
        let icmp =
            Icmpv6Header::with_checksum(Icmpv6Type::PacketTooBig { mtu }, src, dst, quote).unwrap();
        let h = Ipv6Header {
            traffic_class: 0,
            flow_label: Ipv6FlowLabel::ZERO,
            payload_length: (icmp.header_len() + quote.len()) as u16,
            next_header: IpNumber::IPV6_ICMP,
            hop_limit: 64,
            source: src,
            destination: dst,
        };
        h.write(&mut out).unwrap();
        icmp.write(&mut out).unwrap();
        out.extend_from_slice(quote);
    }
    out
}

/// An ICMP error (IPv4 frag-needed / IPv6 packet-too-big) sent by a router at `router`
/// to the VIP about the packet `reply` (a backend's answer VIP -> client, an IP packet
/// without Ethernet header), as a frame arriving at the LB.
pub fn icmp_error_about(router: IpAddr, reply: &[u8], mtu: u32) -> Vec<u8> {
    use etherparse::{Icmpv4Type, Icmpv6Type, icmpv4::DestUnreachableHeader};
    let eth = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC);
    let mut out = Vec::new();
    match router {
        IpAddr::V4(r) => {
            let quote = &reply[..28];
            let vip: [u8; 4] = reply[12..16].try_into().unwrap();
            eth.ipv4(r.octets(), vip, 64)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::FragmentationNeeded {
                        next_hop_mtu: mtu as u16,
                    },
                ))
                .write(&mut out, quote)
                .unwrap();
        }
        IpAddr::V6(r) => {
            let quote = &reply[..48];
            let vip: [u8; 16] = reply[8..24].try_into().unwrap();
            eth.ipv6(r.octets(), vip, 64)
                .icmpv6(Icmpv6Type::PacketTooBig { mtu })
                .write(&mut out, quote)
                .unwrap();
        }
    }
    out
}

/// Checks every checksum in an output frame with etherparse (outer IPv4 header, ICMP /
/// ICMPv6, and the inner IPv4 header and TCP/UDP of a tunnelled packet); returns what is
/// wrong.
pub fn checksum_errors(frame: &[u8]) -> Vec<String> {
    use etherparse::{IpNumber, SlicedPacket};
    match SlicedPacket::from_ethernet(frame) {
        Ok(p) => ip_checksum_errors(&p, "outer"),
        Err(e) => vec![format!("etherparse cannot parse the output: {e}")],
    }
    .into_iter()
    .chain({
        // A tunnelled packet: the inner packet's own checksums.
        let inner = match SlicedPacket::from_ethernet(frame) {
            Ok(SlicedPacket {
                net: Some(etherparse::NetSlice::Ipv4(v4)),
                ..
            }) if matches!(v4.payload().ip_number, IpNumber::IPV4 | IpNumber::IPV6) => {
                Some(v4.payload().payload.to_vec())
            }
            Ok(SlicedPacket {
                net: Some(etherparse::NetSlice::Ipv6(v6)),
                ..
            }) if matches!(v6.payload().ip_number, IpNumber::IPV4 | IpNumber::IPV6) => {
                Some(v6.payload().payload.to_vec())
            }
            _ => None,
        };
        inner
            .map(|ip| match SlicedPacket::from_ip(&ip) {
                Ok(p) => ip_checksum_errors(&p, "inner"),
                Err(e) => vec![format!("inner packet unparseable: {e}")],
            })
            .unwrap_or_default()
    })
    .collect()
}

fn ip_checksum_errors(p: &etherparse::SlicedPacket<'_>, which: &str) -> Vec<String> {
    use etherparse::{NetSlice, TransportSlice};
    let mut errs = Vec::new();
    match (&p.net, &p.transport) {
        (Some(NetSlice::Ipv4(v4)), t) => {
            let h = v4.header().to_header();
            if h.calc_header_checksum() != h.header_checksum {
                errs.push(format!("{which} IPv4 header checksum"));
            }
            let (s, d) = (v4.header().source(), v4.header().destination());
            match t {
                Some(TransportSlice::Icmpv4(icmp))
                    if icmp.icmp_type().calc_checksum(icmp.payload()) != icmp.checksum() =>
                {
                    errs.push(format!("{which} ICMP checksum"));
                }
                Some(TransportSlice::Tcp(tcp))
                    if tcp.calc_checksum_ipv4(s, d).ok() != Some(tcp.checksum()) =>
                {
                    errs.push(format!("{which} TCP checksum"));
                }
                Some(TransportSlice::Udp(udp))
                    if udp
                        .to_header()
                        .calc_checksum_ipv4_raw(s, d, udp.payload())
                        .ok()
                        != Some(udp.checksum()) =>
                {
                    errs.push(format!("{which} UDP checksum"));
                }
                _ => {}
            }
        }
        (Some(NetSlice::Ipv6(v6)), t) => {
            let (s, d) = (v6.header().source(), v6.header().destination());
            match t {
                Some(TransportSlice::Icmpv6(icmp))
                    if icmp.icmp_type().calc_checksum(s, d, icmp.payload()).ok()
                        != Some(icmp.checksum()) =>
                {
                    errs.push(format!("{which} ICMPv6 checksum"));
                }
                Some(TransportSlice::Tcp(tcp))
                    if tcp.calc_checksum_ipv6(s, d).ok() != Some(tcp.checksum()) =>
                {
                    errs.push(format!("{which} TCP checksum"));
                }
                Some(TransportSlice::Udp(udp))
                    if udp
                        .to_header()
                        .calc_checksum_ipv6_raw(s, d, udp.payload())
                        .ok()
                        != Some(udp.checksum()) =>
                {
                    errs.push(format!("{which} UDP checksum"));
                }
                _ => {}
            }
        }
        _ => {}
    }
    errs
}
