//! Building test frames with `etherparse`, so fixtures state addresses and ports, not
//! hand-typed bytes, and checksums are right by construction.

use std::net::{IpAddr, SocketAddr};

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

/// Parses an `ip:port` literal (IPv6 in brackets); panics on a typo in a test.
pub fn sa(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad socket address {s:?} in a test: {e}"))
}
