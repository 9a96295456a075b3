//! VIP slots: a direct-mapped copy of the VIP map, for the packets that must find their
//! VIP (a flow's first packet, and every packet of a VIP without the connection table).
//!
//! The VIP map ([`crate::MAP_VIPS`]) is a kernel hash map: a lookup hashes the 20-byte key
//! with jhash, walks a bucket and compares keys, about 50 ns on the machines `cargo xtask
//! bench` ran on (section 1b), which was the largest single step of a new flow. The slot
//! array ([`crate::MAP_VIP_SLOTS`]) holds each VIP at [`vip_slot_index`] of its key: one
//! multiply-hash, one array read, one key compare. The VIP map stays the authority:
//! when two VIPs want the same slot, one of them keeps using the hash map, and a slot
//! that does not hold the key (or does not check out) sends the lookup there too.
//!
//! `vipd` is the only writer and rewrites a slot whenever it writes the VIP's map entry.
//! A reader on another CPU can see a slot half-written; the check word
//! ([`vip_slot_check`]) ties the value to the key, so a mixture of two writes does not
//! check out and the lookup goes to the VIP map, which is replaced atomically.

use core::mem::size_of;

use crate::{VipKey, VipMeta};

/// One slot of [`crate::MAP_VIP_SLOTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipSlot {
    /// The VIP this slot holds.
    pub key: VipKey,
    /// Its entry, as in the VIP map.
    pub meta: VipMeta,
    /// [`vip_slot_check`] of the key's hash and `meta`; 0 (never a valid check) for an
    /// empty slot.
    pub check: u32,
}
const _: () = assert!(size_of::<VipSlot>() == 40);

/// Slots for `max_vips` VIPs: four per VIP, rounded up to a power of two, so that few
/// VIPs share a slot (at most 2^24).
pub const fn vip_slots(max_vips: u32) -> u32 {
    let want = if max_vips > 1 << 22 {
        1 << 24
    } else {
        max_vips * 4
    };
    if want <= 1 {
        1
    } else {
        want.next_power_of_two()
    }
}

/// The key as five words, in place.
#[inline(always)]
fn key_words(key: &VipKey) -> &[u32; 5] {
    // SAFETY: VipKey is repr(C), 20 bytes, 4-byte aligned, every byte an explicit integer
    // field.
    unsafe { &*(key as *const VipKey).cast::<[u32; 5]>() }
}

/// The slot hash of a VIP key: NH over its five words (fixed keys: VIP addresses are
/// chosen by the operator, not by clients), then a multiply to spread the bits.
#[inline(always)]
pub fn vip_slot_hash(key: &VipKey) -> u64 {
    let w = key_words(key);
    let p = |a: u32, ka: u32, b: u32, kb: u32| {
        u64::from(a.wrapping_add(ka)).wrapping_mul(u64::from(b.wrapping_add(kb)))
    };
    let mut sum = p(w[0], 0x9e37_79b9, w[1], 0x85eb_ca77)
        .wrapping_add(p(w[2], 0xc2b2_ae3d, w[3], 0x27d4_eb2f))
        .wrapping_add(p(w[4], 0x1656_67b1, 0, 0xd3a2_646d));
    sum ^= sum >> 32;
    sum.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The slot of a VIP with slot hash `h` in an array of `mask + 1` slots.
#[inline(always)]
pub fn vip_slot_index(h: u64, mask: u32) -> u32 {
    (h >> 32) as u32 & mask
}

/// The check word of a slot holding a key with slot hash `h` and entry `meta` (never 0).
#[inline(always)]
pub fn vip_slot_check(h: u64, meta: &VipMeta) -> u32 {
    let t = (h as u32)
        ^ meta.id.wrapping_mul(0x9e37_79b1)
        ^ meta.flags.wrapping_mul(0x85eb_ca77)
        ^ meta.table_base.wrapping_mul(0xc2b2_ae3d)
        ^ meta.table_size.wrapping_mul(0x27d4_eb2f);
    t | 1
}

impl VipSlot {
    /// A slot holding `key` (slot hash `h`) → `meta`.
    pub fn new(key: &VipKey, h: u64, meta: &VipMeta) -> Self {
        Self {
            key: *key,
            meta: *meta,
            check: vip_slot_check(h, meta),
        }
    }

    /// The entry of `key` (slot hash `h`) if this slot holds it and checks out.
    #[inline(always)]
    pub fn get(&self, key: &VipKey, h: u64) -> Option<VipMeta> {
        let a = key_words(&self.key);
        let b = key_words(key);
        if a[0] != b[0] || a[4] != b[4] || a[1] != b[1] || a[2] != b[2] || a[3] != b[3] {
            return None;
        }
        let meta = self.meta;
        if self.check != vip_slot_check(h, &meta) {
            return None;
        }
        Some(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FAMILY_V4, PROTO_TCP, PROTO_UDP};

    fn key(addr: u32, port: u16, proto: u8) -> VipKey {
        VipKey {
            addr: [addr, 0, 0, 0],
            port_be: port.to_be(),
            proto,
            family: FAMILY_V4,
        }
    }

    fn meta(base: u32) -> VipMeta {
        VipMeta {
            id: 3,
            flags: 0,
            table_base: base,
            table_size: 65537,
        }
    }

    #[test]
    fn sizes_are_four_slots_per_vip_in_a_power_of_two() {
        assert_eq!(vip_slots(0), 1);
        assert_eq!(vip_slots(256), 1024);
        assert_eq!(vip_slots(100_000), 524_288);
        assert_eq!(vip_slots(u32::MAX), 1 << 24);
    }

    #[test]
    fn a_slot_answers_for_its_key_only() {
        let k = key(0x0a01_12c6, 80, PROTO_TCP);
        let h = vip_slot_hash(&k);
        let s = VipSlot::new(&k, h, &meta(0));
        assert_eq!(s.get(&k, h), Some(meta(0)));
        for other in [
            key(0x0b01_12c6, 80, PROTO_TCP),
            key(0x0a01_12c6, 81, PROTO_TCP),
            key(0x0a01_12c6, 80, PROTO_UDP),
        ] {
            assert_eq!(s.get(&other, vip_slot_hash(&other)), None, "{other:?}");
        }
        assert_eq!(VipSlot::default().get(&VipKey::default(), 0), None);
    }

    #[test]
    fn a_torn_slot_does_not_check_out() {
        let k = key(0x0a01_12c6, 80, PROTO_TCP);
        let h = vip_slot_hash(&k);
        let old = VipSlot::new(&k, h, &meta(0));
        let new = VipSlot::new(&k, h, &meta(65537));
        // The new table base with the old check word, and the reverse.
        let mut torn = old;
        torn.meta.table_base = new.meta.table_base;
        assert_eq!(torn.get(&k, h), None);
        let mut torn = new;
        torn.check = old.check;
        assert_eq!(torn.get(&k, h), None);
    }

    #[test]
    fn neighbouring_vips_spread_over_slots() {
        let mask = vip_slots(256) - 1;
        let mut used = [0u32; 1024];
        for a in 0..256u32 {
            let k = key((0xc612_0000 | a).to_be(), 443, PROTO_TCP);
            used[vip_slot_index(vip_slot_hash(&k), mask) as usize] += 1;
        }
        let max = used.iter().max().copied().unwrap_or(0);
        assert!(max <= 3, "{max} of 256 neighbouring VIPs share one slot");
    }
}
