//! BPF arrays mapped into user space (`BPF_F_MMAPABLE`, Linux 5.5+): the Maglev array,
//! so a new table is written with plain stores instead of one `bpf()` call per entry
//! (publishing 65,537 entries takes well under a millisecond instead of about a tenth of
//! a second); the connection table, so counting and looking up flows does not take one
//! `bpf()` call per set; and the VIP slots, rebuilt from the VIP map on every restart.
//!
//! The kernel stores array elements 8-byte aligned (`round_up(value_size, 8)`), so
//! element `i` sits at byte `i * round_up(size_of::<T>(), 8)` of the mapping.

use std::{
    marker::PhantomData,
    mem::{align_of, size_of},
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
};

/// A shared, writable mapping of a BPF array whose values are `T`.
#[derive(Debug)]
pub(crate) struct MappedArray<T> {
    ptr: NonNull<u8>,
    len: usize,
    bytes: usize,
    _values: PhantomData<T>,
}

// SAFETY: the mapping is plain shared memory owned by this value; moving it between
// threads is fine (the Datapath that owns it has a single writer).
unsafe impl<T: Send> Send for MappedArray<T> {}
// SAFETY: shared access only reads, through volatile loads.
unsafe impl<T: Sync> Sync for MappedArray<T> {}

impl<T: Copy> MappedArray<T> {
    /// Bytes from one element to the next, as the kernel lays them out.
    const STRIDE: usize = size_of::<T>().next_multiple_of(8);

    /// Maps `len` elements of the array behind `fd`; `None` if the map is not mmapable
    /// (for instance adopted from a build that did not create it so).
    pub(crate) fn new(fd: BorrowedFd<'_>, len: u32) -> Option<Self> {
        const { assert!(align_of::<T>() <= 8, "elements are only 8-byte aligned") };
        let page = 4096usize;
        let bytes = (len as usize * Self::STRIDE).div_ceil(page) * page;
        // SAFETY: mapping a BPF map fd; the kernel checks size, flags and mmapability and
        // fails (MAP_FAILED) otherwise.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(Self {
            ptr: NonNull::new(p.cast())?,
            len: len as usize,
            bytes,
            _values: PhantomData,
        })
    }

    fn element(&self, i: u32) -> *mut T {
        assert!(
            (i as usize) < self.len,
            "index {i} beyond the mapped array of {} elements",
            self.len
        );
        // SAFETY: in bounds (checked), within the mapping made in new().
        unsafe { self.ptr.as_ptr().add(i as usize * Self::STRIDE).cast() }
    }

    /// Element `i`. Volatile: the datapath writes it concurrently, so a value wider than
    /// a word may be a mixture of two writes (the connection table's entries carry a tag
    /// that detects that).
    pub(crate) fn get(&self, i: u32) -> T {
        // SAFETY: in bounds, mapped for the life of self, aligned for T (page-aligned
        // base, 8-byte stride, T aligned to at most 8).
        unsafe { self.element(i).read_volatile() }
    }

    /// Sets element `i` (for a `u32` a single aligned store: readers see old or new).
    pub(crate) fn set(&mut self, i: u32, v: T) {
        // SAFETY: as in get.
        unsafe { self.element(i).write_volatile(v) }
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}
