//! Device memory in host memory. Each emulated device reserves an address range of its own
//! (never mapped by anything else in the process, so a device pointer is never a host
//! pointer); an allocation makes its pages readable and writable and leaves an unmapped
//! guard gap after it, so that a stray host access faults and a kernel's overrun lands in
//! no allocation (which the checker reports). Freed ranges are unmapped again once no
//! running kernel can still hold them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const PAGE: usize = 4096;
/// Unmapped bytes after each allocation.
const GUARD: usize = 64 << 10;
/// Address space reserved per device.
const RESERVE: usize = 1 << 40;

/// An address range reserved for one device's allocations.
pub struct VaSpace {
    base: usize,
    len: usize,
    /// Free ranges (offset, len), sorted and coalesced, and where the last allocation ended:
    /// allocation is next-fit, so a freed range is reused only after the rest of the space
    /// (a use after free then faults instead of reading a newer allocation).
    free: Mutex<(Vec<(usize, usize)>, usize)>,
}

// SAFETY: the reservation is plain address space, owned for the life of the process.
unsafe impl Send for VaSpace {}
unsafe impl Sync for VaSpace {}

impl VaSpace {
    /// Reserves `RESERVE` bytes of address space (no memory is committed).
    pub fn reserve() -> Result<Self, String> {
        // SAFETY: an anonymous PROT_NONE mapping touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RESERVE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "cannot reserve {} GiB of address space for a device",
                RESERVE >> 30
            ));
        }
        Ok(VaSpace {
            base: p as usize,
            len: RESERVE,
            free: Mutex::new((vec![(0, RESERVE)], 0)),
        })
    }

    /// Whether `addr` lies in this device's range.
    pub fn contains(&self, addr: u64) -> bool {
        (self.base as u64..(self.base + self.len) as u64).contains(&addr)
    }

    fn take(&self, len: usize) -> Option<usize> {
        let mut g = self.free.lock().ok()?;
        let (free, cursor) = &mut *g;
        // Next fit: the first range with room at or after the cursor, else from the start.
        let fits = |&(o, l): &(usize, usize), from: usize| o.max(from) + len <= o + l;
        let (i, at) = match free.iter().position(|r| fits(r, *cursor)) {
            Some(i) => (i, free[i].0.max(*cursor)),
            None => {
                let i = free.iter().position(|r| fits(r, 0))?;
                (i, free[i].0)
            }
        };
        let (off, l) = free[i];
        // Up to two ranges stay free: before `at` and after `at + len`.
        let mut rest = Vec::with_capacity(2);
        if at > off {
            rest.push((off, at - off));
        }
        if at + len < off + l {
            rest.push((at + len, off + l - at - len));
        }
        free.splice(i..=i, rest);
        *cursor = at + len;
        Some(self.base + at)
    }

    fn give_back(&self, addr: usize, len: usize) {
        let Ok(mut g) = self.free.lock() else {
            return;
        };
        let free = &mut g.0;
        let off = addr - self.base;
        let i = free.partition_point(|&(o, _)| o < off);
        free.insert(i, (off, len));
        if i + 1 < free.len() && free[i].0 + free[i].1 == free[i + 1].0 {
            free[i].1 += free[i + 1].1;
            free.remove(i + 1);
        }
        if i > 0 && free[i - 1].0 + free[i - 1].1 == free[i].0 {
            free[i - 1].1 += free[i].1;
            free.remove(i);
        }
    }
}

/// One allocation of device memory. Dropping it unmaps its pages and returns its range.
pub struct DevAlloc {
    pub base: u64,
    /// Bytes asked for (the checker's bound).
    pub size: usize,
    /// Bytes mapped (whole pages).
    mapped: usize,
    space: Arc<VaSpace>,
}

impl DevAlloc {
    /// Maps `size` bytes (at least one page) in `space`, zero-filled by the OS.
    pub fn new(space: &Arc<VaSpace>, size: usize) -> Option<Self> {
        let mapped = size.max(1).next_multiple_of(PAGE);
        let addr = space.take(mapped + GUARD)?;
        // SAFETY: [addr, addr + mapped) lies in our reservation and is not mapped RW by
        // anyone else.
        let ok = unsafe {
            libc::mprotect(
                addr as *mut libc::c_void,
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        } == 0;
        if !ok {
            space.give_back(addr, mapped + GUARD);
            return None;
        }
        Some(DevAlloc {
            base: addr as u64,
            size,
            mapped,
            space: space.clone(),
        })
    }

    /// Sets `len` bytes at `off` to zero without touching pages that are whole (they are
    /// handed back to the OS and read as zero again).
    pub fn zero(&self, off: usize, len: usize) {
        let start = self.base as usize + off;
        let end = start + len;
        let first = start.next_multiple_of(PAGE);
        let last = end / PAGE * PAGE;
        if last > first {
            // SAFETY: whole pages inside this allocation.
            let ok = unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_DONTNEED,
                )
            } == 0;
            if ok {
                // SAFETY: the partial pages at both ends lie inside the allocation.
                unsafe {
                    std::ptr::write_bytes(start as *mut u8, 0, first - start);
                    std::ptr::write_bytes(last as *mut u8, 0, end - last);
                }
                return;
            }
        }
        // SAFETY: [start, end) lies inside the allocation.
        unsafe { std::ptr::write_bytes(start as *mut u8, 0, len) };
    }
}

impl Drop for DevAlloc {
    fn drop(&mut self) {
        let addr = self.base as usize;
        // SAFETY: the pages are ours; afterwards any access to them faults.
        unsafe {
            libc::madvise(addr as *mut libc::c_void, self.mapped, libc::MADV_DONTNEED);
            libc::mprotect(addr as *mut libc::c_void, self.mapped, libc::PROT_NONE);
        }
        self.space.give_back(addr, self.mapped + GUARD);
    }
}

/// Page-locked ("pinned") host memory: ordinary host memory the emulator knows about, so
/// that copies from and to it run asynchronously as on a GPU.
pub struct PinnedAlloc {
    pub base: u64,
    pub size: usize,
    mapped: usize,
}

impl PinnedAlloc {
    /// `size` bytes of zeroed host memory (page aligned).
    pub fn new(size: usize) -> Option<Self> {
        let mapped = size.max(1).next_multiple_of(PAGE);
        // SAFETY: a fresh anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED).then(|| PinnedAlloc {
            base: p as u64,
            size,
            mapped,
        })
    }
}

impl Drop for PinnedAlloc {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.mapped) };
    }
}

/// Bytes in use on a device, against its size.
pub struct Budget {
    pub total: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(total: usize) -> Self {
        Budget {
            total,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `n` bytes if they fit.
    pub fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.total)
            })
            .is_ok()
    }

    pub fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// What cuMemAlloc's bytes cost against the budget: the driver hands out whole 2 MiB pages
/// for large allocations and rounds small ones to 512 bytes; the emulator charges the
/// same, so that free memory moves as a GPU's would.
pub fn charged(bytes: usize) -> usize {
    if bytes >= 2 << 20 {
        bytes.next_multiple_of(2 << 20)
    } else {
        bytes.max(1).next_multiple_of(512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_separate_and_zeroed() {
        let s = Arc::new(VaSpace::reserve().unwrap());
        let a = DevAlloc::new(&s, 100).unwrap();
        let b = DevAlloc::new(&s, 3 * PAGE + 5).unwrap();
        assert!(s.contains(a.base) && s.contains(b.base));
        assert!(b.base >= a.base + (PAGE + GUARD) as u64 || a.base >= b.base + GUARD as u64);
        assert_eq!(a.base % PAGE as u64, 0);
        // SAFETY: inside b.
        unsafe { std::ptr::write_bytes(b.base as *mut u8, 7, b.size) };
        b.zero(1, b.size - 1);
        // SAFETY: inside b.
        let bytes = unsafe { std::slice::from_raw_parts(b.base as *const u8, b.size) };
        assert_eq!(bytes[0], 7);
        assert!(bytes[1..].iter().all(|&x| x == 0));
        let at = b.base;
        drop(b);
        // A freed range is not handed out again while unused space remains.
        let c = DevAlloc::new(&s, 3 * PAGE).unwrap();
        assert_ne!(c.base, at);
    }

    #[test]
    fn the_budget_refuses_what_does_not_fit() {
        let b = Budget::new(1000);
        assert!(b.take(600));
        assert!(!b.take(600));
        b.give(600);
        assert!(b.take(1000));
        assert_eq!(charged(1), 512);
        assert_eq!(charged(3 << 20), 4 << 20);
    }
}
