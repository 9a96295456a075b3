//! The connection table (`vip_common::flowtable`) as the datapath uses it: one array
//! access to find a flow's set, no kernel hash map.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use vip_common::{
    Backend, ConnState, FlowKey, FlowSet, GlobalConfig, VIP_F_NO_CONNTRACK, flow_clock,
    flow_set_index, flow_table_hash,
};

use crate::maps::{BACKENDS, CONNS};

/// Where a flow lives in the connection table: its set (null before user space has
/// created the table) and its hash.
///
/// Not an `Option`: the compiler copies an `Option`'s payload even when it is `None`,
/// and the verifier refuses a copy of a register that was never written.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    set: *mut FlowSet,
    h: u64,
}

/// The connection-table hash of `key` (also the source of its tunnel bits).
#[inline(always)]
pub fn hash(key: &FlowKey, cfg: &GlobalConfig) -> u64 {
    flow_table_hash(key, cfg.flow_seed)
}

/// The slot of a flow with hash `h`.
#[inline(always)]
pub fn slot(h: u64, cfg: &GlobalConfig) -> Slot {
    let set = CONNS
        .get_ptr_mut(flow_set_index(h, cfg.flow_sets_mask))
        .unwrap_or(core::ptr::null_mut());
    Slot { set, h }
}

/// The backend `key` is pinned to, if its entry checks out and the backend is still the
/// one it was pinned to (same generation), usable, and its VIP still uses the table.
/// Marks the entry as recently used and its flow as confirmed. The backend is a reference into the map, not a
/// copy: the BPF stack is small.
#[inline(always)]
pub fn lookup(slot: &Slot, key: &FlowKey) -> Option<(u32, &'static Backend)> {
    // SAFETY: a map value or null; entries are plain integers, a torn one fails its
    // check word.
    let set = unsafe { slot.set.as_mut() }?;
    let (way, c) = set.find(key, slot.h)?;
    let b = BACKENDS.get(c.backend_id)?;
    if b.generation != c.generation || !b.usable() || b.vip_flags & VIP_F_NO_CONNTRACK != 0 {
        return None;
    }
    set.touch(way);
    Some((c.backend_id, b))
}

/// Pins `key` to `conn` on probation (`FlowSet::admit`: never in place of a confirmed
/// flow that was seen recently), counting the entry when it fills an empty way (so user
/// space knows how many flows the table holds without walking it). When the set has no
/// way it may take, the flow is not pinned: this packet and the next go by the Maglev
/// table, to the same backend while the backend set is stable.
#[inline(always)]
pub fn remember(slot: &Slot, key: &FlowKey, conn: &ConnState) {
    // SAFETY: as in `lookup`.
    let Some(set) = (unsafe { slot.set.as_mut() }) else {
        return;
    };
    // SAFETY: a helper without arguments (Linux 5.11).
    let now = || flow_clock(unsafe { bpf_ktime_get_coarse_ns() });
    if let Some((_, true)) = set.admit(key, slot.h, conn, now) {
        crate::stats::conn_filled();
    }
}
