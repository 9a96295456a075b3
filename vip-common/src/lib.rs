//! Types shared by the `vip` datapath (`vip-ebpf`) and its control plane (`vip-user`).
//!
//! Everything that crosses the kernel/user boundary lives here: map names, map keys and
//! values, limits, drop/pass reasons and the flow hash. User space answers "which backend
//! gets this flow" with the very function the kernel runs, so the two can never disagree.
//!
//! Rules for the shared types: `#[repr(C)]`, no `bool`, enum, `Option` or `usize`,
//! explicit `_pad` fields, a size assertion each, and network byte order marked by a
//! `_be` suffix. Addresses are four network-order 32-bit words (`[u32; 4]`); an IPv4
//! address uses the first word and leaves the rest zero.
#![no_std]

pub mod acl;
pub mod anomaly;
pub mod flowtable;
pub mod hash;
pub mod maps;
pub mod neigh;
pub mod reason;
pub mod trace;
pub mod vipslots;

pub use acl::*;
pub use anomaly::Anomaly;
pub use flowtable::{
    FLOW_CLOCK_SHIFT, FLOW_IDLE_TICKS, FLOW_WAYS, FlowEntry, FlowSet, VIP_FILTER_BITS,
    VIP_FILTER_WORDS, flow_clock, flow_set_index, flow_sets, flow_table_hash, vip_filter_bit,
    vip_filter_slot,
};
pub use hash::{flow_hash, jhash2, tunnel_hash};
pub use maps::*;
pub use neigh::*;
pub use reason::Reason;
pub use trace::*;
pub use vipslots::{VipSlot, vip_slot_check, vip_slot_hash, vip_slot_index, vip_slots};

/// Address family tag stored in keys and values (`AF_INET`/`AF_INET6` are not used
/// because their numbers differ between platforms).
pub const FAMILY_V4: u8 = 4;
/// See [`FAMILY_V4`].
pub const FAMILY_V6: u8 = 6;

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;
/// IP protocol number of IPv4-in-IP encapsulation.
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number of IPv6-in-IP encapsulation.
pub const PROTO_IPV6: u8 = 41;

/// TTL / hop limit of every IP header the datapath writes itself: a tunnel's outer
/// header and the ICMP answers it sends (64, the usual default of hosts).
pub const DEFAULT_TTL: u8 = 64;

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ service) VLAN tag.
pub const ETH_P_8021AD: u16 = 0x88A8;

/// IPv4 flags/fragment-offset field: don't fragment.
pub const IPV4_DF: u16 = 0x4000;
/// IPv4 flags/fragment-offset field: more fragments, and the offset. Either set means
/// the packet is a fragment.
pub const IPV4_MF_OFFSET: u16 = 0x3fff;
