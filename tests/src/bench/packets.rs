//! The benchmark packets. Every frame is at least [`MIN_FRAME`] bytes, because the
//! restoring wrapper in `vip_bench` saves and restores that many bytes.

use std::net::SocketAddr;

use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4, icmpv6};

use crate::packet::{CLIENT_MAC, L4, LB_MAC, frame, sa};

/// Bytes `vip_bench`'s wrapper saves (`SAVE_LEN` there).
pub const MIN_FRAME: usize = 128;

/// A client.
pub fn client_v4() -> SocketAddr {
    sa("198.18.0.10:40000")
}
/// The IPv4 VIP.
pub fn vip_v4() -> SocketAddr {
    sa("198.18.100.1:80")
}
/// The IPv4 VIP in `dsr-l2` mode.
pub fn vip_dsr_v4() -> SocketAddr {
    sa("198.18.100.2:80")
}
/// The IPv4 VIP's port 81: a VIP of its own with a source access list of
/// [`crate::bench::lbsetup::ACL_PREFIXES`] prefixes, sharing port 80's id and table (see
/// `lbsetup`).
pub fn vip_acl_v4() -> SocketAddr {
    sa("198.18.100.1:81")
}
/// An IPv6 client.
pub fn client_v6() -> SocketAddr {
    sa("[2001:db8::10]:40000")
}
/// The IPv6 VIP.
pub fn vip_v6() -> SocketAddr {
    sa("[2001:db8:100::1]:80")
}

/// `frame` padded with payload to at least [`MIN_FRAME`] bytes.
pub fn padded(src: SocketAddr, dst: SocketAddr, l4: L4) -> Vec<u8> {
    let bare = frame(src, dst, l4, &[]);
    let pad = MIN_FRAME.saturating_sub(bare.len());
    frame(src, dst, l4, &vec![0x5a; pad])
}

/// TCP ACK of an established flow client → VIP.
pub fn tcp_v4(src: SocketAddr) -> Vec<u8> {
    padded(src, vip_v4(), L4::Tcp { syn: false })
}

/// TCP SYN client → VIP (a connection-table miss that pins nothing).
pub fn syn_v4(src: SocketAddr) -> Vec<u8> {
    padded(src, vip_v4(), L4::Tcp { syn: true })
}

/// TCP ACK client → the VIP with an access list.
pub fn tcp_acl_v4(src: SocketAddr) -> Vec<u8> {
    padded(src, vip_acl_v4(), L4::Tcp { syn: false })
}

/// TCP ACK client → the `dsr-l2` VIP.
pub fn tcp_dsr_v4(src: SocketAddr) -> Vec<u8> {
    padded(src, vip_dsr_v4(), L4::Tcp { syn: false })
}

/// UDP client → VIP (same port as the TCP VIP; the bench configures a UDP VIP too).
pub fn udp_v4() -> Vec<u8> {
    padded(client_v4(), vip_v4(), L4::Udp)
}

/// TCP ACK over IPv6.
pub fn tcp_v6() -> Vec<u8> {
    padded(client_v6(), vip_v6(), L4::Tcp { syn: false })
}

/// TCP to an address that is no VIP.
pub fn not_vip_v4() -> Vec<u8> {
    padded(client_v4(), sa("198.18.200.1:80"), L4::Tcp { syn: false })
}

/// ICMP "fragmentation needed" from a router on the path, about a packet the VIP
/// (through a backend) sent to the client: the datapath steers it by the quoted header
/// to the backend of the flow client → VIP.
pub fn icmp_frag_needed_v4() -> Vec<u8> {
    // The quoted packet: VIP:80 → client:40000, TCP, as the backend sent it.
    let quoted = frame(vip_v4(), client_v4(), L4::Tcp { syn: false }, &[]);
    let quoted = &quoted[14..14 + 20 + 8];
    let router = [198, 18, 0, 254];
    let vip = match vip_v4() {
        SocketAddr::V4(a) => a.ip().octets(),
        SocketAddr::V6(_) => unreachable!("v4 literal"),
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv4(router, vip, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut out, &pad_to(quoted, MIN_FRAME - 14 - 20 - 8))
        .expect("writing an ICMP frame");
    out
}

/// ICMPv6 "packet too big" about VIP → client.
pub fn icmp6_too_big() -> Vec<u8> {
    let quoted = frame(vip_v6(), client_v6(), L4::Tcp { syn: false }, &[]);
    let quoted = &quoted[14..14 + 40 + 8];
    let router = "2001:db8::fe"
        .parse::<std::net::Ipv6Addr>()
        .expect("literal")
        .octets();
    let vip = match vip_v6() {
        SocketAddr::V6(a) => a.ip().octets(),
        SocketAddr::V4(_) => unreachable!("v6 literal"),
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ipv6(router, vip, 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1400 })
        .write(&mut out, &pad_to(quoted, MIN_FRAME - 14 - 40 - 8))
        .expect("writing an ICMPv6 frame");
    let _ = icmpv6::TYPE_PACKET_TOO_BIG;
    out
}

fn pad_to(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    if v.len() < len {
        v.resize(len, 0);
    }
    v
}
