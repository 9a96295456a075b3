//! Counters shared by the programs.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use vip_common::Reason;

/// Packets per [`Reason`].
#[map(name = "REASONS")]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Reason::COUNT, 0);

/// Counts one packet under `reason`.
#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU value, only this CPU writes it while the program runs.
        unsafe { *c += 1 };
    }
}
