//! The one bounds-checked way to touch packet bytes, and the only `unsafe` packet access
//! of the programs.
//!
//! [`ptr_at`] makes the comparison `data + offset + size <= data_end` that the verifier
//! must see before any packet access, and returns an [`InPacket`]: a `T`'s worth of frame
//! the comparison proved present. Its methods read and write that frame memory; they are
//! safe to call because of the justification below, given once for all of them.

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};

/// A type that may be read from (and written to) raw frame bytes: every bit pattern is a
/// valid value and it holds no pointers.
///
/// # Safety
/// Implement only for integers, arrays of them and `#[repr(C)]` structs made of them
/// without padding (a write must not put uninitialised bytes into the frame).
pub unsafe trait Plain: Copy {}

// SAFETY: integers: every bit pattern is a value.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for u16 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: an array of plain values is plain.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}
// SAFETY: `#[repr(C)]` structs of integers and byte arrays, no padding (14, 20 and 40
// bytes: the sum of their fields).
unsafe impl Plain for EthHdr {}
// SAFETY: as above.
unsafe impl Plain for Ipv4Hdr {}
// SAFETY: as above.
unsafe impl Plain for Ipv6Hdr {}

/// `size_of::<T>()` bytes of the frame, at an offset [`ptr_at`] checked.
///
/// Valid until the frame changes size (`bpf_xdp_adjust_head`, `bpf_xdp_adjust_tail`):
/// the verifier then forgets every packet pointer's bounds and refuses a program that
/// uses one again, so a stale `InPacket` fails at load time, never at run time. Check
/// again with [`ptr_at`] after a resize.
///
/// # Safety of the accesses (the justification of every `unsafe` block below)
/// - Bounds: `ptr_at` proved `[ptr, ptr + size_of::<T>())` inside `[data, data_end)`,
///   and the methods only reach bytes inside that range (array indexes are checked by
///   Rust, sub-ranges by a compile-time assertion).
/// - Values: `T: Plain`, so whatever bytes the frame holds are a valid `T`.
/// - Aliasing: the frame belongs to this program while it runs (no other CPU or thread
///   touches it), and the accesses go through the raw pointer without creating
///   references, so no Rust reference is ever invalidated by a write.
/// - Alignment: the frame may place a `T` at any byte. Loads and stores are still made
///   at `T`'s natural width on purpose: a BPF packet access needs no alignment where
///   the CPU needs none (the verifier enforces alignment only on the others, where it
///   refuses the program at load time), while an unaligned access in Rust's sense makes
///   LLVM's BPF backend split every word into byte loads or stores (twelve stores for
///   two MAC addresses).
#[derive(Debug)]
pub struct InPacket<T> {
    ptr: *mut T,
}

impl<T> Clone for InPacket<T> {
    #[inline(always)]
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for InPacket<T> {}

/// The `T` at `offset` bytes into the frame, or `None` when the frame is too short.
#[inline(always)]
pub fn ptr_at<T: Plain>(ctx: &XdpContext, offset: usize) -> Option<InPacket<T>> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some(InPacket {
        ptr: (start + offset) as *mut T,
    })
}

/// [`ptr_at`] for a pointer whose bounds proof stays its own: it is made from `data`
/// plus an offset the verifier cannot see is zero, so the verifier gives it an identity
/// of its own, and proving it in bounds widens no other packet pointer's known range.
/// For copies whose length varies (the live trace): through [`ptr_at`] each length
/// would leave the path's other packet pointers with a different range, one state each
/// for the verifier to walk through the rest of the path.
#[inline(always)]
pub fn ptr_at_apart<T: Plain>(ctx: &XdpContext, offset: usize) -> Option<InPacket<T>> {
    let start = ctx.data() + core::hint::black_box(0usize);
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some(InPacket {
        ptr: (start + offset) as *mut T,
    })
}

impl<T: Plain> InPacket<T> {
    /// The value in the frame.
    #[inline(always)]
    pub fn read(self) -> T {
        // SAFETY: see the type's documentation.
        unsafe { *self.ptr }
    }

    /// Overwrites the value in the frame.
    #[inline(always)]
    pub fn write(self, value: T) {
        // SAFETY: see the type's documentation.
        unsafe { *self.ptr = value }
    }

    /// The `U` at byte `OFF` of this `T` (no run-time check: the compiler proves that it
    /// fits).
    #[inline(always)]
    pub fn part<U: Plain, const OFF: usize>(self) -> InPacket<U> {
        const {
            assert!(OFF + core::mem::size_of::<U>() <= core::mem::size_of::<T>());
        }
        InPacket {
            ptr: self.ptr.cast::<u8>().wrapping_add(OFF).cast::<U>(),
        }
    }
}

impl<E: Plain, const N: usize> InPacket<[E; N]> {
    /// Element `i` (`i < N`: a constant or loop-bounded index costs no check).
    #[inline(always)]
    pub fn get(self, i: usize) -> E {
        // SAFETY: see the type's documentation (the index is checked).
        unsafe { (*self.ptr)[i] }
    }

    /// Overwrites element `i` (`i < N`, as for [`Self::get`]).
    #[inline(always)]
    pub fn set(self, i: usize, value: E) {
        // SAFETY: see the type's documentation (the index is checked).
        unsafe { (*self.ptr)[i] = value }
    }
}
