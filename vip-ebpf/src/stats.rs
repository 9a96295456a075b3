//! Per-CPU counters: one reason per packet, and per-VIP / per-backend traffic.

use vip_common::Reason;

use crate::maps::{BACKEND_STATS, CONN_FILLS, REASONS, VIP_STATS};

/// Counts one packet under `reason`.
#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
}

/// A flow took an empty way of the connection table: it holds one flow more.
#[inline(always)]
pub fn conn_filled() {
    if let Some(c) = CONN_FILLS.get_ptr_mut(0) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
}

/// A packet of `bytes` forwarded for VIP `vip` to backend `backend`.
#[inline(always)]
pub fn forwarded(vip: u32, backend: u32, bytes: u64, new_flow: bool) {
    // `new_flows` is only touched for a new flow: most packets skip its load and store.
    if let Some(c) = VIP_STATS.get_ptr_mut(vip) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            if new_flow {
                (*c).new_flows += 1;
            }
        }
    }
    if let Some(c) = BACKEND_STATS.get_ptr_mut(backend) {
        // SAFETY: as above.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            if new_flow {
                (*c).new_flows += 1;
            }
        }
    }
}

/// A packet for VIP `vip` dropped.
#[inline(always)]
pub fn vip_dropped(vip: u32) {
    if let Some(c) = VIP_STATS.get_ptr_mut(vip) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { (*c).dropped += 1 };
    }
}
