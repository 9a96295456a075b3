//! Why the datapath did what it did with a packet. Every packet gets exactly one reason,
//! counted in the per-CPU `REASONS` map; every drop has a named reason.

/// A packet's fate, as an index into the `REASONS` map.
///
/// Stored as `u32` in maps; this is a plain user-facing list, so the kernel side uses
/// the `as u32` value and user space maps it back with [`Reason::from_index`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Forwarded to a backend (`XDP_TX` or `XDP_REDIRECT`).
    Forwarded = 0,
    /// Not ours (not IP, not addressed to a VIP): passed to the kernel untouched. A frame
    /// for an address no VIP has is counted here once its address is read, whatever
    /// follows its IP header.
    PassNotVip = 1,
    /// Passed untouched: frame type the datapath does not parse (e.g. two VLAN tags).
    PassUnparsed = 2,
    /// Dropped: a packet to a VIP whose transport header is cut short or malformed.
    DropMalformed = 3,
    /// Dropped: a fragment of a VIP flow that carries no ports.
    DropFragment = 4,
    /// Dropped: IPv6 extension-header chain longer than the datapath walks.
    DropIpv6Ext = 5,
    /// Dropped: TTL / hop limit would reach zero.
    DropTtl = 6,
    /// Dropped: the VIP has no usable backend.
    DropNoBackend = 7,
    /// Dropped: too big to encapsulate; ICMP frag-needed / packet-too-big sent instead.
    IcmpTooBigSent = 8,
    /// Dropped: too big to encapsulate and ICMP answers are disabled.
    DropTooBig = 9,
    /// Dropped: no route or neighbour towards the backend.
    DropNoRoute = 10,
    /// An ICMP error about a VIP flow, steered to the flow's backend.
    IcmpSteered = 11,
    /// Dropped: a packet operation (head adjustment) failed.
    DropInternal = 12,
    /// Tunnelled packet decapsulated by `vip_decap`.
    Decapsulated = 13,
    /// Passed to the kernel: IP header malformed or cut short, so it cannot be shown to
    /// be ours; the kernel's IP stack validates it (and drops and counts it).
    PassMalformed = 14,
    /// Passed to the kernel: ICMP/ICMPv6 to a VIP address, either an error whose inner
    /// header is not a VIP flow (or is cut short), or a message that is not an error
    /// (echo and the like).
    PassIcmpNotVip = 15,
    /// Answered: an ARP request for an announced VIP address of a group active here,
    /// turned into the reply (RFC 826) with the receiving interface's MAC (`XDP_TX`).
    ArpReplied = 16,
    /// Answered: an IPv6 neighbour solicitation for an announced VIP address of a group
    /// active here, turned into a neighbour advertisement (`XDP_TX`).
    NdpAdvertised = 17,
    /// Passed to the kernel: an ARP request or neighbour solicitation for an announced
    /// VIP address whose group is standby or fault here (another node answers), or
    /// whose receiving interface has no MAC in the datapath yet.
    PassNeighNotActive = 18,
    /// Passed to the kernel: an ARP frame that is not a request for an announced VIP
    /// address (replies, gratuitous announcements, requests for other addresses).
    PassArpNotVip = 19,
    /// Passed to the kernel: an ARP frame cut short or not Ethernet/IPv4 (hardware or
    /// protocol type, address lengths).
    PassArpMalformed = 20,
    /// Passed to the kernel: a neighbour solicitation that RFC 4861 7.1.1 says to
    /// ignore (hop limit not 255, code not 0, cut short, a zero-length option, a
    /// multicast target, a DAD probe with a source link-layer option), or one whose
    /// target is not an announced address; the kernel validates (and drops) it too.
    PassNdpIgnored = 21,
    /// Dropped: a new flow to a VIP whose access list refuses its source address (the
    /// longest matching prefix is a deny, or the VIP has an allow list and no prefix
    /// matches).
    DropAcl = 22,
}

impl Reason {
    /// Number of reasons: the size of the `REASONS` map.
    pub const COUNT: u32 = 23;

    /// Every reason, in index order.
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Forwarded,
        Reason::PassNotVip,
        Reason::PassUnparsed,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::DropIpv6Ext,
        Reason::DropTtl,
        Reason::DropNoBackend,
        Reason::IcmpTooBigSent,
        Reason::DropTooBig,
        Reason::DropNoRoute,
        Reason::IcmpSteered,
        Reason::DropInternal,
        Reason::Decapsulated,
        Reason::PassMalformed,
        Reason::PassIcmpNotVip,
        Reason::ArpReplied,
        Reason::NdpAdvertised,
        Reason::PassNeighNotActive,
        Reason::PassArpNotVip,
        Reason::PassArpMalformed,
        Reason::PassNdpIgnored,
        Reason::DropAcl,
    ];

    /// The reason with this map index.
    pub const fn from_index(i: u32) -> Option<Reason> {
        if i < Self::COUNT {
            Some(Self::ALL[i as usize])
        } else {
            None
        }
    }

    /// Stable snake_case name, used in metrics labels and CLI output.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Forwarded => "forwarded",
            Reason::PassNotVip => "pass_not_vip",
            Reason::PassUnparsed => "pass_unparsed",
            Reason::DropMalformed => "drop_malformed",
            Reason::DropFragment => "drop_fragment",
            Reason::DropIpv6Ext => "drop_ipv6_ext",
            Reason::DropTtl => "drop_ttl",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::IcmpTooBigSent => "icmp_too_big_sent",
            Reason::DropTooBig => "drop_too_big",
            Reason::DropNoRoute => "drop_no_route",
            Reason::IcmpSteered => "icmp_steered",
            Reason::DropInternal => "drop_internal",
            Reason::Decapsulated => "decapsulated",
            Reason::PassMalformed => "pass_malformed",
            Reason::PassIcmpNotVip => "pass_icmp_not_vip",
            Reason::ArpReplied => "arp_replied",
            Reason::NdpAdvertised => "ndp_advertised",
            Reason::PassNeighNotActive => "pass_neigh_not_active",
            Reason::PassArpNotVip => "pass_arp_not_vip",
            Reason::PassArpMalformed => "pass_arp_malformed",
            Reason::PassNdpIgnored => "pass_ndp_ignored",
            Reason::DropAcl => "drop_acl",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert_eq!(Reason::from_index(i as u32), Some(*r));
        }
        assert_eq!(Reason::from_index(Reason::COUNT), None);
    }
}
