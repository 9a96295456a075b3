//! Which VIP a packet is for. Three steps, cheapest first: the VIP-address filter (one
//! array read rules out traffic for other addresses), the VIP slots (a direct-mapped
//! copy of the VIP map, `vip_common::vipslots`: one array read for a new flow), and the
//! VIP hash map as the fallback when a slot holds another VIP.

use vip_common::{
    CONFIG_F_HAS_ALL_PORTS_VIPS, FlowKey, GlobalConfig, VipKey, VipMeta, vip_filter_slot,
    vip_slot_hash, vip_slot_index,
};

use crate::maps::{VIP_FILTER, VIP_SLOTS, VIPS};

/// False when no VIP has the address `addr` (any port, any protocol): one array read.
/// True may still be a neighbour sharing the bit; the VIP lookup decides.
#[inline(always)]
pub fn maybe_vip(addr: &[u32; 4], family: u8) -> bool {
    let (word, mask) = vip_filter_slot(addr, family);
    match VIP_FILTER.get(word) {
        Some(w) => *w & mask != 0,
        None => false,
    }
}

/// The VIP of a flow: exact (address, port, protocol), else the all-ports VIP. Each is
/// looked for in its slot first, then in the VIP map.
#[inline(always)]
pub fn lookup_vip(key: &FlowKey, cfg: &GlobalConfig) -> Option<VipMeta> {
    let mut vk = VipKey {
        addr: key.dst,
        port_be: key.dst_port_be,
        proto: key.proto,
        family: key.family,
    };
    if let Some(m) = slotted_vip(&vk, cfg) {
        return Some(m);
    }
    // SAFETY: values are copied out at once; user space replaces entries whole.
    if let Some(m) = unsafe { VIPS.get(&vk) } {
        return Some(*m);
    }
    if cfg.flags & CONFIG_F_HAS_ALL_PORTS_VIPS == 0 {
        return None;
    }
    vk.port_be = 0;
    if let Some(m) = slotted_vip(&vk, cfg) {
        return Some(m);
    }
    // SAFETY: as above.
    unsafe { VIPS.get(&vk) }.copied()
}

/// The entry of VIP `key` from its slot, or `None` when the slot holds another VIP (or
/// none, or is being rewritten): then the VIP map decides.
#[inline(always)]
fn slotted_vip(key: &VipKey, cfg: &GlobalConfig) -> Option<VipMeta> {
    let h = vip_slot_hash(key);
    VIP_SLOTS
        .get(vip_slot_index(h, cfg.vip_slots_mask))?
        .get(key, h)
}
