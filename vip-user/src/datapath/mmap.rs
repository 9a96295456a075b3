//! The Maglev array mapped into user space (`BPF_F_MMAPABLE`, Linux 5.5+), so a new
//! table is written with plain stores instead of one `bpf()` call per entry: publishing
//! 65,537 entries takes well under a millisecond instead of about a tenth of a second.
//!
//! The kernel stores array elements 8-byte aligned (`round_up(value_size, 8)`), so a
//! `u32` entry `i` sits at byte `8 * i` of the mapping.

use std::{
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
};

/// `u32` words per array element (elements are 8-byte aligned in the kernel).
const STRIDE: usize = 2;

/// A shared, writable mapping of a `u32` BPF array.
#[derive(Debug)]
pub(crate) struct MappedArray {
    ptr: NonNull<u32>,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; moving it between
// threads is fine (the Datapath that owns it has a single writer).
unsafe impl Send for MappedArray {}
// SAFETY: shared access only reads through volatile loads.
unsafe impl Sync for MappedArray {}

impl MappedArray {
    /// Maps `len` entries of the array behind `fd`; `None` if the map is not mmapable
    /// (for instance adopted from a build that did not create it so).
    pub(crate) fn new(fd: BorrowedFd<'_>, len: u32) -> Option<Self> {
        let page = 4096usize;
        let bytes = (len as usize * STRIDE * 4).div_ceil(page) * page;
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
        })
    }

    /// Entry `i`.
    pub(crate) fn get(&self, i: u32) -> u32 {
        assert!((i as usize) < self.len, "Maglev index {i} beyond the map");
        // SAFETY: in bounds (checked), mapped for the life of self, u32-aligned (page
        // aligned base). Volatile: the kernel side reads it concurrently.
        unsafe { self.ptr.as_ptr().add(i as usize * STRIDE).read_volatile() }
    }

    /// Sets entry `i` (a single aligned 32-bit store: readers see old or new).
    pub(crate) fn set(&mut self, i: u32, v: u32) {
        assert!((i as usize) < self.len, "Maglev index {i} beyond the map");
        // SAFETY: as in get.
        unsafe { self.ptr.as_ptr().add(i as usize * STRIDE).write_volatile(v) }
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}
