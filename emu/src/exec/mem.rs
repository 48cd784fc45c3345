//! Memory as a kernel sees it, and the checker on every access: global addresses must lie
//! inside one live allocation, shared and local offsets inside the block's and thread's
//! memory, and every access must be naturally aligned to its full size. A failing access
//! becomes a [`FaultKind`] naming the address; nothing outside those ranges is ever touched.
//!
//! Global memory is read and written with relaxed atomics of the access's width: blocks run
//! on several host threads at once, and racing accesses (which a GPU allows) must not be
//! undefined behaviour in the emulator itself.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::ptx::ir::{LOCAL_WINDOW, SHARED_WINDOW, Space, WINDOW_SIZE};

/// One range of addresses a kernel may touch, and what keeps it alive.
#[derive(Clone)]
pub struct Span {
    pub start: u64,
    pub end: u64,
    /// The allocation; held so that memory freed while a kernel runs stays mapped until the
    /// kernel is done (a freed buffer is then reported, never unmapped under a running
    /// kernel).
    pub owner: Arc<dyn Any + Send + Sync>,
}

/// The live allocations of a context, sorted by address: the snapshot a launch runs against.
#[derive(Clone, Default)]
pub struct MemMap {
    spans: Vec<Span>,
    /// Recently freed ranges (start, end), for telling a use after free from a stray access.
    freed: Vec<(u64, u64)>,
}

impl MemMap {
    /// From spans in any order (they must not overlap).
    pub fn new(mut spans: Vec<Span>) -> Self {
        spans.sort_by_key(|s| s.start);
        MemMap {
            spans,
            freed: Vec::new(),
        }
    }

    /// With the ranges freed recently (named in fault messages).
    pub fn with_freed(mut self, freed: Vec<(u64, u64)>) -> Self {
        self.freed = freed;
        self
    }

    /// The span holding [addr, addr + len), if one does.
    pub fn find(&self, addr: u64, len: u64) -> Option<&Span> {
        let i = self.spans.partition_point(|s| s.start <= addr);
        let s = self.spans.get(i.checked_sub(1)?)?;
        (addr.checked_add(len)? <= s.end).then_some(s)
    }

    /// A description of where `addr` falls relative to the allocations, for fault messages.
    pub fn nearest(&self, addr: u64) -> String {
        if let Some((s, e)) = self
            .freed
            .iter()
            .rev()
            .find(|(s, e)| (*s..*e).contains(&addr))
        {
            return format!(
                "use after free: inside the {}-byte allocation at {s:#x}, freed by cuMemFree",
                e - s
            );
        }
        let i = self.spans.partition_point(|s| s.start <= addr);
        let before = i.checked_sub(1).and_then(|j| self.spans.get(j));
        match before {
            Some(s) if addr < s.end => format!(
                "the access runs past the end of the {}-byte allocation at {:#x}",
                s.end - s.start,
                s.start
            ),
            Some(s) => format!(
                "{} bytes after the end of the {}-byte allocation at {:#x}",
                addr - s.end,
                s.end - s.start,
                s.start
            ),
            None => "below every allocation".into(),
        }
    }

    /// Every span.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }
}

/// What went wrong with one access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// Outside every allocation (or the space's bounds).
    OutOfBounds {
        space: Space,
        addr: u64,
        size: u32,
        write: bool,
        detail: String,
    },
    /// Not aligned to the access size.
    Misaligned {
        space: Space,
        addr: u64,
        size: u32,
        write: bool,
    },
    /// A write to a read-only space.
    ReadOnly { space: Space, addr: u64 },
}

/// A resolved access: a host pointer and whether it is block-private (plain accesses) or
/// global (atomic accesses).
#[derive(Clone, Copy)]
pub struct Ptr {
    pub p: *mut u8,
    pub shared_by_blocks: bool,
}

/// The memories a thread reaches besides global memory.
pub struct ThreadMem<'a> {
    pub shared: &'a mut [u8],
    /// This thread's local memory.
    pub local: &'a mut [u8],
    pub params: &'a [u8],
}

/// A checked pointer to `size` bytes at `addr` in `space`.
pub fn resolve(
    map: &MemMap,
    tm: &mut ThreadMem,
    space: Space,
    addr: u64,
    size: u32,
    write: bool,
) -> Result<Ptr, FaultKind> {
    if !addr.is_multiple_of(size as u64) {
        return Err(FaultKind::Misaligned {
            space,
            addr,
            size,
            write,
        });
    }
    let oob = |detail: String| FaultKind::OutOfBounds {
        space,
        addr,
        size,
        write,
        detail,
    };
    let within = |buf_len: usize, off: u64| {
        off.checked_add(size as u64)
            .is_some_and(|e| e <= buf_len as u64)
    };
    match space {
        Space::Shared => {
            if !within(tm.shared.len(), addr) {
                return Err(oob(format!(
                    "the block has {} bytes of shared memory",
                    tm.shared.len()
                )));
            }
            Ok(Ptr {
                p: tm.shared[addr as usize..].as_mut_ptr(),
                shared_by_blocks: false,
            })
        }
        Space::Local => {
            if !within(tm.local.len(), addr) {
                return Err(oob(format!(
                    "the thread has {} bytes of local memory",
                    tm.local.len()
                )));
            }
            Ok(Ptr {
                p: tm.local[addr as usize..].as_mut_ptr(),
                shared_by_blocks: false,
            })
        }
        Space::Param => {
            if write {
                return Err(FaultKind::ReadOnly { space, addr });
            }
            if !within(tm.params.len(), addr) {
                return Err(oob(format!(
                    "the kernel has {} bytes of parameters",
                    tm.params.len()
                )));
            }
            Ok(Ptr {
                p: tm.params[addr as usize..].as_ptr() as *mut u8,
                shared_by_blocks: false,
            })
        }
        Space::Generic => {
            if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&addr) {
                return resolve(map, tm, Space::Shared, addr - SHARED_WINDOW, size, write);
            }
            if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&addr) {
                return resolve(map, tm, Space::Local, addr - LOCAL_WINDOW, size, write);
            }
            resolve(map, tm, Space::Global, addr, size, write)
        }
        Space::Global | Space::Const => {
            if map.find(addr, size as u64).is_none() {
                return Err(oob(map.nearest(addr)));
            }
            Ok(Ptr {
                p: addr as *mut u8,
                shared_by_blocks: true,
            })
        }
    }
}

/// Reads `size` bytes (1, 2, 4 or 8) at `ptr`, zero-extended.
///
/// # Safety
/// `ptr` must come from [`resolve`] for at least `size` bytes.
#[inline]
pub unsafe fn read(ptr: Ptr, size: u32) -> u64 {
    // SAFETY: the caller's contract; global pointers are aligned to `size` (checked).
    unsafe {
        if ptr.shared_by_blocks {
            match size {
                1 => AtomicU8::from_ptr(ptr.p).load(Relaxed) as u64,
                2 => AtomicU16::from_ptr(ptr.p as *mut u16).load(Relaxed) as u64,
                4 => AtomicU32::from_ptr(ptr.p as *mut u32).load(Relaxed) as u64,
                _ => AtomicU64::from_ptr(ptr.p as *mut u64).load(Relaxed),
            }
        } else {
            match size {
                1 => *ptr.p as u64,
                2 => (ptr.p as *const u16).read_unaligned() as u64,
                4 => (ptr.p as *const u32).read_unaligned() as u64,
                _ => (ptr.p as *const u64).read_unaligned(),
            }
        }
    }
}

/// Writes the low `size` bytes of `v` at `ptr`.
///
/// # Safety
/// As [`read`].
#[inline]
pub unsafe fn write(ptr: Ptr, size: u32, v: u64) {
    // SAFETY: as read.
    unsafe {
        if ptr.shared_by_blocks {
            match size {
                1 => AtomicU8::from_ptr(ptr.p).store(v as u8, Relaxed),
                2 => AtomicU16::from_ptr(ptr.p as *mut u16).store(v as u16, Relaxed),
                4 => AtomicU32::from_ptr(ptr.p as *mut u32).store(v as u32, Relaxed),
                _ => AtomicU64::from_ptr(ptr.p as *mut u64).store(v, Relaxed),
            }
        } else {
            match size {
                1 => *ptr.p = v as u8,
                2 => (ptr.p as *mut u16).write_unaligned(v as u16),
                4 => (ptr.p as *mut u32).write_unaligned(v as u32),
                _ => (ptr.p as *mut u64).write_unaligned(v),
            }
        }
    }
}

/// Atomically replaces the value at `ptr` (4 or 8 bytes) by `f(old)`, returning the old
/// value; block-private memory is updated in place (one host thread runs a block).
///
/// # Safety
/// As [`read`].
pub unsafe fn update(ptr: Ptr, size: u32, mut f: impl FnMut(u64) -> u64) -> u64 {
    // SAFETY: as read.
    unsafe {
        if !ptr.shared_by_blocks {
            let old = read(ptr, size);
            write(ptr, size, f(old));
            return old;
        }
        match size {
            2 => {
                let a = AtomicU16::from_ptr(ptr.p as *mut u16);
                let mut old = a.load(Relaxed);
                loop {
                    match a.compare_exchange_weak(old, f(old as u64) as u16, Relaxed, Relaxed) {
                        Ok(o) => return o as u64,
                        Err(o) => old = o,
                    }
                }
            }
            4 => {
                let a = AtomicU32::from_ptr(ptr.p as *mut u32);
                let mut old = a.load(Relaxed);
                loop {
                    match a.compare_exchange_weak(old, f(old as u64) as u32, Relaxed, Relaxed) {
                        Ok(o) => return o as u64,
                        Err(o) => old = o,
                    }
                }
            }
            _ => {
                let a = AtomicU64::from_ptr(ptr.p as *mut u64);
                let mut old = a.load(Relaxed);
                loop {
                    match a.compare_exchange_weak(old, f(old), Relaxed, Relaxed) {
                        Ok(o) => return o,
                        Err(o) => old = o,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_finds_whole_accesses_only() {
        let owner: Arc<dyn Any + Send + Sync> = Arc::new(());
        let span = |start, end| Span {
            start,
            end,
            owner: owner.clone(),
        };
        let m = MemMap::new(vec![span(0x2000, 0x2100), span(0x1000, 0x1010)]);
        assert!(m.find(0x1000, 16).is_some());
        assert!(m.find(0x1008, 16).is_none(), "runs past the end");
        assert!(m.find(0x20fc, 4).is_some());
        assert!(m.find(0x1800, 4).is_none());
        assert!(m.find(0x0, 4).is_none());
        assert!(m.nearest(0x1010).contains("0 bytes after"));
    }

    #[test]
    fn shared_local_and_param_bounds() {
        let m = MemMap::default();
        let (mut sh, mut lo, pa) = (vec![0u8; 64], vec![0u8; 16], vec![0u8; 8]);
        let mut tm = ThreadMem {
            shared: &mut sh,
            local: &mut lo,
            params: &pa,
        };
        assert!(resolve(&m, &mut tm, Space::Shared, 60, 4, true).is_ok());
        assert!(matches!(
            resolve(&m, &mut tm, Space::Shared, 64, 4, false),
            Err(FaultKind::OutOfBounds { .. })
        ));
        assert!(matches!(
            resolve(&m, &mut tm, Space::Shared, 2, 4, false),
            Err(FaultKind::Misaligned { .. })
        ));
        assert!(resolve(&m, &mut tm, Space::Generic, SHARED_WINDOW + 8, 8, false).is_ok());
        assert!(resolve(&m, &mut tm, Space::Generic, LOCAL_WINDOW + 16, 4, false).is_err());
        assert!(matches!(
            resolve(&m, &mut tm, Space::Param, 0, 8, true),
            Err(FaultKind::ReadOnly { .. })
        ));
        assert!(resolve(&m, &mut tm, Space::Global, 0x1000, 4, false).is_err());
    }
}
