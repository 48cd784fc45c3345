//! Contexts: the device memory a context owns, the memory map its kernels run against, its
//! sticky error, and which context each host thread has current.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::memory::{DevAlloc, PinnedAlloc, charged};
use super::stream::Stream;
use super::{CUresult, CuResult, Device, Handles, fail};
use crate::exec::{MemMap, Span};

/// A context.
pub struct Context {
    pub id: u64,
    pub device: Arc<Device>,
    pub primary: bool,
    allocs: Mutex<BTreeMap<u64, Arc<DevAlloc>>>,
    /// The last ranges freed (start, end), oldest first: fault messages name them.
    freed: Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// The memory map and the allocation generation it was built at.
    map: Mutex<(u64, Arc<MemMap>)>,
    /// Streams created in this context (the legacy stream orders against blocking ones).
    pub(crate) streams: Mutex<Vec<Weak<Stream>>>,
    legacy: OnceLock<Arc<Stream>>,
    /// The first kernel fault: every later call of this context returns it.
    sticky: Mutex<Option<CUresult>>,
    pub destroyed: AtomicBool,
    /// Launches so far (`%gridid`).
    pub launches: AtomicU64,
}

/// A device's primary context and its retain count.
#[derive(Default)]
pub struct Primary {
    pub ctx: Option<Arc<Context>>,
    pub refs: u32,
}

/// Every context by handle.
pub fn contexts() -> &'static Handles<Context> {
    static H: OnceLock<Handles<Context>> = OnceLock::new();
    H.get_or_init(Handles::default)
}

/// Every pinned host allocation, by base address.
fn pinned() -> &'static Mutex<BTreeMap<u64, Arc<PinnedAlloc>>> {
    static P: OnceLock<Mutex<BTreeMap<u64, Arc<PinnedAlloc>>>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Freed ranges a context remembers for its fault messages.
const FREED_KEPT: usize = 256;

/// Bumped on every allocation and free: memory maps older than this are rebuilt.
static MEM_GEN: AtomicU64 = AtomicU64::new(1);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's context stack (the top is current).
    static CURRENT: RefCell<Vec<Arc<Context>>> = const { RefCell::new(Vec::new()) };
}

impl Context {
    pub fn new(device: Arc<Device>, primary: bool) -> Arc<Self> {
        Arc::new(Context {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            device,
            primary,
            allocs: Mutex::new(BTreeMap::new()),
            freed: Mutex::new(std::collections::VecDeque::new()),
            map: Mutex::new((0, Arc::new(MemMap::default()))),
            streams: Mutex::new(Vec::new()),
            legacy: OnceLock::new(),
            sticky: Mutex::new(None),
            destroyed: AtomicBool::new(false),
            launches: AtomicU64::new(0),
        })
    }

    /// The handle C sees.
    pub fn handle(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// The sticky error, if a kernel of this context faulted, or a destroyed context's.
    pub fn check(&self) -> CuResult<()> {
        if self.destroyed.load(Ordering::Acquire) {
            return Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED);
        }
        match *self
            .sticky
            .lock()
            .map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Records a fault of work running in this context: from now on every call fails with
    /// `code` (as a GPU context does after an illegal address), and the message is logged.
    pub fn set_sticky(&self, code: CUresult, msg: &str) {
        super::log(format_args!(
            "{msg} ({code:?}); the context is now unusable"
        ));
        if let Ok(mut s) = self.sticky.lock()
            && s.is_none()
        {
            *s = Some(code);
        }
    }

    /// Whether a fault happened.
    pub fn faulted(&self) -> bool {
        self.sticky.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    /// The legacy (NULL) stream.
    pub fn legacy(self: &Arc<Self>) -> Arc<Stream> {
        self.legacy
            .get_or_init(|| Stream::new(self.clone(), true, true))
            .clone()
    }

    /// Allocates `bytes` of device memory.
    pub fn alloc(&self, bytes: usize) -> CuResult<u64> {
        self.check()?;
        if bytes == 0 {
            return fail(CUresult::CUDA_ERROR_INVALID_VALUE, "cuMemAlloc of 0 bytes");
        }
        let cost = charged(bytes);
        let dev = &self.device;
        if !dev.budget.take(cost) {
            return fail(
                CUresult::CUDA_ERROR_OUT_OF_MEMORY,
                format!(
                    "cuMemAlloc of {bytes} bytes on device {}: {} of {} bytes in use",
                    dev.ordinal,
                    dev.budget.used(),
                    dev.budget.total
                ),
            );
        }
        let Some(a) = DevAlloc::new(&dev.space, bytes) else {
            dev.budget.give(cost);
            return fail(
                CUresult::CUDA_ERROR_OUT_OF_MEMORY,
                format!("cuMemAlloc of {bytes} bytes: no address space left"),
            );
        };
        let base = a.base;
        self.allocs
            .lock()
            .map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?
            .insert(base, Arc::new(a));
        MEM_GEN.fetch_add(1, Ordering::AcqRel);
        Ok(base)
    }

    /// Frees the allocation at `base` (which must be its start).
    pub fn free(&self, base: u64) -> CuResult<()> {
        let a = self
            .allocs
            .lock()
            .map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?
            .remove(&base);
        match a {
            Some(a) => {
                self.device.budget.give(charged(a.size));
                if let Ok(mut f) = self.freed.lock() {
                    if f.len() == FREED_KEPT {
                        f.pop_front();
                    }
                    f.push_back((a.base, a.base + a.size as u64));
                }
                MEM_GEN.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            None => fail(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format!("cuMemFree({base:#x}): not the start of a live allocation of this context"),
            ),
        }
    }

    /// The allocation holding [addr, addr + len), if this context has one.
    pub fn find(&self, addr: u64, len: u64) -> Option<Arc<DevAlloc>> {
        let allocs = self.allocs.lock().ok()?;
        let (_, a) = allocs.range(..=addr).next_back()?;
        (addr.checked_add(len)? <= a.base + a.size as u64).then(|| a.clone())
    }

    /// The allocation containing `addr` (for cuMemGetAddressRange / cuPointerGetAttribute).
    pub fn containing(&self, addr: u64) -> Option<Arc<DevAlloc>> {
        self.find(addr, 1)
    }

    /// The memory a kernel of this context may touch: its allocations and all pinned host
    /// memory (mapped into every device's address space, as unified addressing does).
    pub fn mem_map(&self) -> Arc<MemMap> {
        let generation = MEM_GEN.load(Ordering::Acquire);
        let Ok(mut m) = self.map.lock() else {
            return Arc::new(MemMap::default());
        };
        if m.0 != generation {
            let mut spans = Vec::new();
            if let Ok(allocs) = self.allocs.lock() {
                for a in allocs.values() {
                    spans.push(Span {
                        start: a.base,
                        end: a.base + a.size as u64,
                        owner: a.clone(),
                    });
                }
            }
            if let Ok(p) = pinned().lock() {
                for a in p.values() {
                    spans.push(Span {
                        start: a.base,
                        end: a.base + a.size as u64,
                        owner: a.clone(),
                    });
                }
            }
            let freed = self
                .freed
                .lock()
                .map(|f| f.iter().copied().collect())
                .unwrap_or_default();
            *m = (generation, Arc::new(MemMap::new(spans).with_freed(freed)));
        }
        m.1.clone()
    }

    /// Drops every allocation and marks the context destroyed (its handles then fail).
    pub fn destroy(&self) {
        self.destroyed.store(true, Ordering::Release);
        if let Ok(streams) = self.streams.lock() {
            for s in streams.iter().filter_map(Weak::upgrade) {
                s.shutdown();
            }
        }
        if let Some(l) = self.legacy.get() {
            l.shutdown();
        }
        if let Ok(mut allocs) = self.allocs.lock() {
            for a in std::mem::take(&mut *allocs).into_values() {
                self.device.budget.give(charged(a.size));
            }
        }
        MEM_GEN.fetch_add(1, Ordering::AcqRel);
    }

    /// Waits for every stream of the context (cuCtxSynchronize), then reports a fault.
    pub fn synchronize(self: &Arc<Self>) -> CuResult<()> {
        let streams: Vec<Arc<Stream>> = self
            .streams
            .lock()
            .map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?
            .iter()
            .filter_map(Weak::upgrade)
            .chain(self.legacy.get().cloned())
            .collect();
        for s in streams {
            s.wait_idle();
        }
        self.check()
    }
}

/// Allocates pinned host memory.
pub fn alloc_pinned(bytes: usize) -> CuResult<u64> {
    let Some(a) = PinnedAlloc::new(bytes) else {
        return fail(
            CUresult::CUDA_ERROR_OUT_OF_MEMORY,
            format!("pinned host allocation of {bytes} bytes"),
        );
    };
    let base = a.base;
    pinned()
        .lock()
        .map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?
        .insert(base, Arc::new(a));
    MEM_GEN.fetch_add(1, Ordering::AcqRel);
    Ok(base)
}

/// Frees pinned host memory allocated by [`alloc_pinned`].
pub fn free_pinned(base: u64) -> CuResult<()> {
    let a = pinned()
        .lock()
        .map_err(|_| CUresult::CUDA_ERROR_UNKNOWN)?
        .remove(&base);
    MEM_GEN.fetch_add(1, Ordering::AcqRel);
    match a {
        Some(_) => Ok(()),
        None => fail(
            CUresult::CUDA_ERROR_INVALID_VALUE,
            format!("cuMemFreeHost({base:#x}): not pinned memory from cuMemHostAlloc"),
        ),
    }
}

/// The pinned allocation holding [addr, addr + len), if any.
pub fn find_pinned(addr: u64, len: u64) -> Option<Arc<PinnedAlloc>> {
    let p = pinned().lock().ok()?;
    let (_, a) = p.range(..=addr).next_back()?;
    (addr.checked_add(len)? <= a.base + a.size as u64).then(|| a.clone())
}

/// This thread's current context.
pub fn current() -> CuResult<Arc<Context>> {
    super::driver()?;
    let c = CURRENT.with(|c| c.borrow().last().cloned());
    match c {
        Some(c) if c.destroyed.load(Ordering::Acquire) => {
            Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED)
        }
        Some(c) => Ok(c),
        None => fail(
            CUresult::CUDA_ERROR_INVALID_CONTEXT,
            "no current context on this thread",
        ),
    }
}

/// The current context, or None (cuCtxGetCurrent).
pub fn current_opt() -> Option<Arc<Context>> {
    CURRENT.with(|c| c.borrow().last().cloned())
}

/// Replaces the top of the stack (cuCtxSetCurrent); None pops.
pub fn set_current(c: Option<Arc<Context>>) {
    CURRENT.with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        if let Some(c) = c {
            s.push(c);
        }
    });
}

/// Pushes onto the stack (cuCtxPushCurrent).
pub fn push_current(c: Arc<Context>) {
    CURRENT.with(|s| s.borrow_mut().push(c));
}

/// Pops the stack (cuCtxPopCurrent).
pub fn pop_current() -> Option<Arc<Context>> {
    CURRENT.with(|s| s.borrow_mut().pop())
}
