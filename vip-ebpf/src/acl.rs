//! Per-VIP source access lists (`vip_common::acl`): one LPM lookup for a new flow to a
//! VIP that has a list. The entries are the control plane's whole answer (an allow list's
//! default is written as a zero-length deny prefix), so a refusal is "the longest match
//! is a deny".

use aya_ebpf::maps::lpm_trie::Key;
use vip_common::{ACL_DENY, ACL_ID_BITS, AclKeyV4, AclKeyV6, FAMILY_V6, FlowKey, VipMeta, acl_id};

use crate::maps::{ACL_V4, ACL_V6};

/// Whether the VIP's access list refuses the flow's source. Only called for a VIP with
/// `VIP_F_ACL`.
#[inline(always)]
pub fn refused(key: &FlowKey, vip: &VipMeta) -> bool {
    let id = acl_id(vip.id, vip.flags).to_be();
    let verdict = if key.family == FAMILY_V6 {
        ACL_V6.get(&Key::new(
            ACL_ID_BITS + 128,
            AclKeyV6 {
                acl_id_be: id,
                addr: key.src,
            },
        ))
    } else {
        ACL_V4.get(&Key::new(
            ACL_ID_BITS + 32,
            AclKeyV4 {
                acl_id_be: id,
                addr: key.src[0],
            },
        ))
    };
    matches!(verdict, Some(v) if *v == ACL_DENY)
}
