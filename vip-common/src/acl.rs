//! Per-VIP source-address access lists: which clients may open flows to a VIP.
//!
//! One longest-prefix-match trie per family (`BPF_MAP_TYPE_LPM_TRIE`) holds the prefixes
//! of every VIP. A key is the ACL id (32 bits, big-endian, so it is matched first) and
//! the source address; its prefix length counts the id's bits, so a prefix of one VIP
//! never matches a packet of another. A VIP has two ACL ids, `2 * id` and `2 * id + 1`
//! ([`acl_id`]): a new list is written under the id the VIP is not using and published
//! by flipping [`crate::VIP_F_ACL_B`] in its VIP entry, so a packet sees the old list or
//! the new one, never a mixture; then the old id's entries are deleted.
//!
//! The value says what a match means ([`ACL_ALLOW`] or [`ACL_DENY`]); user space writes
//! the default of a VIP with an allow list as a zero-length deny prefix, so the datapath
//! only asks "is the longest match a deny".

/// IPv4 source prefixes of every VIP: `Key<AclKeyV4>` → `u32` verdict (LPM trie).
pub const MAP_ACL_V4: &str = "ACL_V4";
/// IPv6 source prefixes of every VIP: `Key<AclKeyV6>` → `u32` verdict (LPM trie).
pub const MAP_ACL_V6: &str = "ACL_V6";

/// Bits of the ACL id at the front of every key: a key's prefix length is this plus the
/// address prefix's length.
pub const ACL_ID_BITS: u32 = 32;

/// Prefixes of one family that all VIPs together may have (the configuration is checked
/// against it).
pub const ACL_MAX_PREFIXES: u32 = 65_536;

/// Entries of each ACL map: room for every VIP's old and new list while lists are
/// replaced.
pub const ACL_MAP_ENTRIES: u32 = 2 * ACL_MAX_PREFIXES;

/// Verdict of an ACL entry: a source whose longest match this is may open flows.
pub const ACL_ALLOW: u32 = 1;
/// Verdict of an ACL entry: a source whose longest match this is is refused
/// (`drop_acl`).
pub const ACL_DENY: u32 = 2;

/// The data part of an IPv4 ACL key (the LPM key's prefix length precedes it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AclKeyV4 {
    /// [`acl_id`], big-endian (network order), so its bits are matched first.
    pub acl_id_be: u32,
    /// Source address, network-order word.
    pub addr: u32,
}
const _: () = assert!(core::mem::size_of::<AclKeyV4>() == 8);

/// The data part of an IPv6 ACL key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AclKeyV6 {
    /// [`acl_id`], big-endian.
    pub acl_id_be: u32,
    /// Source address, network-order words.
    pub addr: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<AclKeyV6>() == 20);

/// The ACL id a VIP entry names: `2 * id`, plus one when [`crate::VIP_F_ACL_B`] is set.
#[inline(always)]
pub const fn acl_id(vip_id: u32, vip_flags: u32) -> u32 {
    vip_id.wrapping_mul(2)
        | ((vip_flags & crate::VIP_F_ACL_B) >> crate::VIP_F_ACL_B.trailing_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vip_has_two_ids_of_its_own() {
        assert_eq!(acl_id(7, 0), 14);
        assert_eq!(acl_id(7, crate::VIP_F_ACL_B), 15);
        assert_eq!(acl_id(7, crate::VIP_F_ACL | crate::VIP_F_DSR_L2), 14);
    }
}
