//! Proxy ARP / NDP and HA groups: which addresses the datapath answers for, in which HA
//! group, and the role of each group on this node.
//!
//! A VIP with `announce = "arp"` has its address in [`MAP_NEIGH`] with its group's index;
//! the datapath answers ARP requests and IPv6 neighbour solicitations for that address
//! with the receiving interface's MAC ([`MAP_IF_MACS`]) only while the group's entry in
//! [`MAP_HA_GROUPS`] says [`HA_ROLE_ACTIVE`]. The group map is pinned with the others, so
//! a node keeps its role while vipd is down, and `vipctl ha set` can write it then.

use core::mem::size_of;

/// Announced address → [`NeighEntry`] (hash map, key [`NeighKey`]).
pub const MAP_NEIGH: &str = "NEIGH";
/// HA group index → [`HaGroup`] (array of [`MAX_HA_GROUPS`], pinned).
pub const MAP_HA_GROUPS: &str = "HA_GROUPS";
/// Interface index → [`IfMac`] (hash map): the MAC an answer received there carries.
pub const MAP_IF_MACS: &str = "IF_MACS";

/// HA groups a node can hold (the size of [`MAP_HA_GROUPS`]).
pub const MAX_HA_GROUPS: u32 = 64;
/// Announced addresses (the size of [`MAP_NEIGH`]).
pub const MAX_NEIGH_ADDRS: u32 = 1024;
/// Interfaces with a known MAC (the size of [`MAP_IF_MACS`]).
pub const MAX_IF_MACS: u32 = 64;

/// Group role: another node answers for the group's VIPs; this one keeps forwarding
/// what still reaches it (stale neighbour caches) but answers no ARP/NDP. Zero, so a
/// group nobody has set is silent.
pub const HA_ROLE_STANDBY: u32 = 0;
/// Group role: this node answers ARP/NDP for the group's VIPs.
pub const HA_ROLE_ACTIVE: u32 = 1;
/// Group role: the election engine found this node unfit; silent as in standby.
pub const HA_ROLE_FAULT: u32 = 2;

/// Key of [`MAP_NEIGH`]: an address (network-order words, IPv4 in word 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NeighKey {
    /// Network-order address words.
    pub addr: [u32; 4],
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    /// Zero.
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<NeighKey>() == 20);

/// Value of [`MAP_NEIGH`]: the HA group whose role decides whether the address is
/// answered. One entry per address, however many VIPs (ports, protocols) share it, so
/// each request gets one answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighEntry {
    /// Index into [`MAP_HA_GROUPS`].
    pub group: u32,
}
const _: () = assert!(size_of::<NeighEntry>() == 4);

/// Length of [`HaGroup::name`].
pub const HA_GROUP_NAME_LEN: usize = 32;

/// Value of [`MAP_HA_GROUPS`]. The datapath reads `role`; the rest is for `vipctl ha
/// status` and for vipd to find its groups again after a restart (by name, not index).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaGroup {
    /// `HA_ROLE_*`.
    pub role: u32,
    /// Role changes since the entry was created.
    pub transitions: u32,
    /// When the role last changed, milliseconds since the Unix epoch.
    pub since_unix_ms: u64,
    /// The group's name, NUL-padded (empty: slot unused).
    pub name: [u8; HA_GROUP_NAME_LEN],
}
const _: () = assert!(size_of::<HaGroup>() == 48);

/// Value of [`MAP_IF_MACS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfMac {
    /// The interface's MAC address.
    pub mac: [u8; 6],
    /// Zero.
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<IfMac>() == 8);

/// The solicited-node multicast address (RFC 4291 2.7.1) of an IPv6 address given as
/// network-order words: `ff02::1:ffXX:XXXX` with the address's low 24 bits. A neighbour
/// solicitation for the address is sent there, so it is put in the VIP-address filter.
#[inline(always)]
pub fn solicited_node(addr: &[u32; 4]) -> [u32; 4] {
    let low = u32::from_be(addr[3]) & 0x00ff_ffff;
    [
        0xff02_0000u32.to_be(),
        0,
        1u32.to_be(),
        (0xff00_0000 | low).to_be(),
    ]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, integers and byte arrays only, no padding (size asserts above).
    unsafe impl aya::Pod for super::NeighKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NeighEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HaGroup {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IfMac {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solicited_node_keeps_the_low_24_bits() {
        let a: [u8; 16] = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78,
        ];
        let w = [0, 4, 8, 12].map(|i| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]));
        let s = solicited_node(&w);
        let bytes: [u8; 16] = {
            let mut b = [0u8; 16];
            for (i, x) in s.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&x.to_ne_bytes());
            }
            b
        };
        assert_eq!(
            bytes,
            [
                0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0x34, 0x56, 0x78
            ]
        );
    }
}
