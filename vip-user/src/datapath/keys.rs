//! Map keys and values built from `std::net` types: the one place user space turns an
//! address, a VIP or a flow into the datapath's network-order words. Byte order is
//! converted here and nowhere else.

use std::net::{IpAddr, SocketAddr};

use vip_common::{Backend, FAMILY_V4, FAMILY_V6, FlowKey, VipKey};

use crate::config::{Protocol, VipId};

/// Address as the maps store it: network-order words and a family tag.
pub fn addr_words(addr: IpAddr) -> ([u32; 4], u8) {
    match addr {
        IpAddr::V4(a) => ([u32::from_ne_bytes(a.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

/// The inverse of [`addr_words`].
pub fn words_addr(words: [u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from(words[0].to_ne_bytes())
    } else {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(o)
    }
}

/// The VIP-map key of `addr` (port 0 = all ports) for IP protocol `proto`.
pub fn vip_key(addr: SocketAddr, proto: u8) -> VipKey {
    let (words, family) = addr_words(addr.ip());
    VipKey {
        addr: words,
        port_be: addr.port().to_be(),
        proto,
        family,
    }
}

/// The VIP-map key of a configured VIP.
pub fn vip_id_key(id: &VipId) -> VipKey {
    vip_key(SocketAddr::new(id.addr, id.port), id.proto.number())
}

/// The VIP a VIP-map key names, if it is one vipd can have written (a known family,
/// TCP or UDP): the inverse of [`vip_id_key`].
pub fn key_vip_id(key: &VipKey) -> Option<VipId> {
    if key.family != FAMILY_V4 && key.family != FAMILY_V6 {
        return None;
    }
    let proto = [Protocol::Tcp, Protocol::Udp]
        .into_iter()
        .find(|p| p.number() == key.proto)?;
    Some(VipId {
        addr: words_addr(key.addr, key.family),
        port: u16::from_be(key.port_be),
        proto,
    })
}

/// The marker key that says "this address has VIPs" (see `VIP_F_ADDR_MARKER`).
pub fn vip_addr_marker(addr: IpAddr) -> VipKey {
    let (words, family) = addr_words(addr);
    VipKey {
        addr: words,
        port_be: 0,
        proto: 0,
        family,
    }
}

/// The connection-table key of a client flow `src -> dst` (same family).
pub fn flow_key(src: SocketAddr, dst: SocketAddr, proto: u8) -> FlowKey {
    let (s, family) = addr_words(src.ip());
    let (d, _) = addr_words(dst.ip());
    FlowKey {
        src: s,
        dst: d,
        src_port_be: src.port().to_be(),
        dst_port_be: dst.port().to_be(),
        proto,
        family,
        _pad: [0; 2],
    }
}

/// A backend-array value for `addr` with `state` (`BACKEND_*`) and `generation`, serving
/// the VIP whose `VipMeta::id` is `vip_id` and whose `VIP_F_*` flags are `vip_flags` (a
/// packet found in the connection table is forwarded with these).
pub fn backend(addr: IpAddr, state: u8, generation: u32, vip_id: u32, vip_flags: u32) -> Backend {
    let (words, family) = addr_words(addr);
    Backend {
        addr: words,
        generation,
        family,
        state,
        _pad: [0; 2],
        vip_id,
        vip_flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_words_round_trip_and_are_network_order() {
        for s in ["198.18.1.10", "2001:db8::1", "::", "255.255.255.255"] {
            let a: IpAddr = s.parse().unwrap();
            let (w, f) = addr_words(a);
            assert_eq!(words_addr(w, f), a);
        }
        let (w, _) = addr_words("198.18.1.10".parse().unwrap());
        assert_eq!(w[0].to_ne_bytes(), [198, 18, 1, 10]);
        let k = vip_key("198.18.1.10:80".parse().unwrap(), vip_common::PROTO_TCP);
        assert_eq!(k.port_be.to_ne_bytes(), [0, 80]);
        for v in ["198.18.1.10:80/tcp", "[2001:db8::1]:*/udp"] {
            let id: VipId = v.parse().unwrap();
            assert_eq!(key_vip_id(&vip_id_key(&id)), Some(id));
        }
        assert_eq!(
            key_vip_id(&vip_addr_marker("198.18.1.10".parse().unwrap())),
            None
        );
    }
}
