//! One GPU as a rank sees it: the context, the stream every operation is ordered on, owned
//! allocations (weights, KV cache) and the activation arena.
//!
//! Every operation of a rank runs on one stream, so a buffer returned to the arena can be
//! handed out again at once: any later use is ordered after the earlier kernels on the stream.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaStream, result, sys};

use crate::error::{Error, Result};

/// Maps a driver (or library) error into the crate's error, naming what failed.
pub(crate) fn cuda_err<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Backend(format!("cuda: {what}: {e:?}"))
}

/// Arena allocations are aligned to this (cuBLASLt and 16-byte vector loads need 16).
const ALIGN: usize = 256;

/// Memory owned outright (freed on drop): weights, KV caches, the arena itself.
#[derive(Debug)]
pub struct DeviceMem {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    ctx: Arc<CudaContext>,
}

impl DeviceMem {
    /// Device address of the first byte.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        // Kernels queued before the drop may still read this memory: wait for them (owned
        // buffers are weights, caches and rare arena overflows, so this is off the hot path).
        // Nothing to report to from a destructor; a failed free only leaks.
        if self.ctx.bind_to_thread().is_ok() && self.ctx.synchronize().is_ok() {
            // SAFETY: ptr came from malloc_sync in this context and is freed once.
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

/// Free ranges `(offset, len)` of the arena, sorted by offset and never adjacent (coalesced
/// on release): first fit, so a step that allocates in the same order gets the same offsets.
#[derive(Debug, Default)]
pub(crate) struct FreeList(Vec<(usize, usize)>);

impl FreeList {
    /// One free range of `bytes`.
    pub(crate) fn new(bytes: usize) -> Self {
        FreeList(vec![(0, bytes)])
    }

    /// The offset of `bytes` taken from the first range that holds them.
    pub(crate) fn take(&mut self, bytes: usize) -> Option<usize> {
        let i = self.0.iter().position(|&(_, len)| len >= bytes)?;
        let (off, len) = self.0[i];
        if len == bytes {
            self.0.remove(i);
        } else {
            self.0[i] = (off + bytes, len - bytes);
        }
        Some(off)
    }

    /// Returns a range taken before, merging it with its free neighbours.
    pub(crate) fn give_back(&mut self, off: usize, bytes: usize) {
        let free = &mut self.0;
        let i = free.partition_point(|&(o, _)| o < off);
        free.insert(i, (off, bytes));
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

#[derive(Debug)]
struct ArenaInner {
    mem: DeviceMem,
    free: Mutex<FreeList>,
}

impl ArenaInner {
    fn take(&self, bytes: usize) -> Option<usize> {
        self.free.lock().ok()?.take(bytes)
    }

    fn give_back(&self, off: usize, bytes: usize) {
        if let Ok(mut free) = self.free.lock() {
            free.give_back(off, bytes);
        }
    }
}

/// A range of the arena, returned to it on drop.
#[derive(Debug)]
pub struct Lease {
    arena: Arc<ArenaInner>,
    off: usize,
    bytes: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.arena.give_back(self.off, self.bytes);
    }
}

/// Device memory behind a tensor: owned, or leased from the activation arena.
#[derive(Debug)]
pub enum Buf {
    /// A separate allocation.
    Owned(DeviceMem),
    /// A range of the activation arena.
    Leased(Lease),
    /// Memory owned elsewhere (a graph's static buffers and outputs).
    Static(u64),
}

impl Buf {
    /// Device address of the first byte.
    pub fn ptr(&self) -> u64 {
        match self {
            Buf::Owned(m) => m.ptr,
            Buf::Leased(l) => l.arena.mem.ptr + l.off as u64,
            Buf::Static(p) => *p,
        }
    }
}

/// A device, its stream and its activation arena.
#[derive(Debug)]
pub struct Device {
    /// The CUDA context (primary context of the device).
    pub ctx: Arc<CudaContext>,
    /// The stream every operation of this rank is ordered on.
    pub stream: Arc<CudaStream>,
    arena: Arc<ArenaInner>,
    /// Activation allocations the arena could not serve (each one a cudaMalloc).
    overflows: AtomicUsize,
    /// A graph replay's dry run: launches and copies on the device are skipped (see graph.rs).
    dry: AtomicBool,
    /// The stream is being captured into a graph: no cudaMalloc (it would break the capture).
    capturing: AtomicBool,
}

impl Device {
    /// Opens device `ordinal` with an activation arena of `arena_bytes`.
    pub fn open(ordinal: usize, arena_bytes: usize) -> Result<Self> {
        let ctx = CudaContext::new(ordinal).map_err(cuda_err("open device"))?;
        let stream = ctx.new_stream().map_err(cuda_err("create stream"))?;
        let arena_bytes = arena_bytes.next_multiple_of(ALIGN).max(ALIGN);
        let mem = raw_alloc(&ctx, arena_bytes)?;
        Ok(Device {
            ctx,
            stream,
            arena: Arc::new(ArenaInner {
                mem,
                free: Mutex::new(FreeList::new(arena_bytes)),
            }),
            overflows: AtomicUsize::new(0),
            dry: AtomicBool::new(false),
            capturing: AtomicBool::new(false),
        })
    }

    /// Whether work is being skipped (a graph replay's dry run).
    pub fn is_dry(&self) -> bool {
        self.dry.load(Ordering::Relaxed)
    }

    pub(crate) fn set_dry(&self, on: bool) {
        self.dry.store(on, Ordering::Relaxed);
    }

    pub(crate) fn set_capturing(&self, on: bool) {
        self.capturing.store(on, Ordering::Relaxed);
    }

    /// Makes this device's context current on the calling thread (ranks run on their own threads).
    pub fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(cuda_err("bind context"))
    }

    /// Raw stream handle for kernel launches and libraries.
    pub fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    /// A separate allocation of `bytes` (weights, caches).
    pub fn alloc_owned(&self, bytes: usize) -> Result<DeviceMem> {
        raw_alloc(&self.ctx, bytes)
    }

    /// Activation memory: from the arena when it has room, else a separate allocation (counted:
    /// a correctly sized arena never overflows, so a step allocates nothing).
    pub fn alloc(&self, bytes: usize) -> Result<Buf> {
        let rounded = bytes.next_multiple_of(ALIGN).max(ALIGN);
        if let Some(off) = self.arena.take(rounded) {
            return Ok(Buf::Leased(Lease {
                arena: self.arena.clone(),
                off,
                bytes: rounded,
            }));
        }
        if self.capturing.load(Ordering::Relaxed) {
            return Err(Error::Backend(format!(
                "activation arena full ({bytes} bytes more) while capturing a graph"
            )));
        }
        if self.overflows.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                bytes,
                arena = self.arena.mem.bytes,
                "activation arena full: falling back to cudaMalloc"
            );
        }
        Ok(Buf::Owned(raw_alloc(&self.ctx, rounded)?))
    }

    /// Times the arena could not serve an activation (0 when sized right).
    pub fn arena_overflows(&self) -> usize {
        self.overflows.load(Ordering::Relaxed)
    }

    /// Bytes of the activation arena.
    pub fn arena_bytes(&self) -> usize {
        self.arena.mem.bytes
    }

    /// Copies `src` to device address `dst` (ordered on the stream; the host slice may be
    /// dropped on return: pageable copies are staged before the call returns).
    pub fn htod<T>(&self, dst: u64, src: &[T]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the caller's dst holds at least size_of_val(src) bytes.
        unsafe { result::memcpy_htod_async(dst, src, self.cu_stream()) }
            .map_err(cuda_err("copy to device"))
    }

    /// Copies from device address `src` into `dst` and waits for it.
    pub fn dtoh<T>(&self, dst: &mut [T], src: u64) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: the caller's src holds at least size_of_val(dst) bytes.
        unsafe { result::memcpy_dtoh_async(dst, src, self.cu_stream()) }
            .map_err(cuda_err("copy to host"))?;
        self.sync()
    }

    /// Copies `bytes` between device addresses, ordered on the stream.
    pub fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 || self.is_dry() {
            return Ok(());
        }
        // SAFETY: both ranges hold `bytes` bytes.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.cu_stream()) }
            .map_err(cuda_err("device copy"))
    }

    /// Copies `height` rows of `width` bytes between pitched device buffers, ordered on the stream.
    pub fn dtod_2d(
        &self,
        (dst, dst_pitch): (u64, usize),
        (src, src_pitch): (u64, usize),
        width: usize,
        height: usize,
    ) -> Result<()> {
        if width == 0 || height == 0 || self.is_dry() {
            return Ok(());
        }
        // Every field spelled out: the struct holds enums (CUmemorytype) for which all-zero
        // bytes are no valid value, so it cannot be zero-initialized.
        let p = sys::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcHost: std::ptr::null(),
            srcDevice: src,
            srcArray: std::ptr::null_mut(),
            srcPitch: src_pitch,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstHost: std::ptr::null_mut(),
            dstDevice: dst,
            dstArray: std::ptr::null_mut(),
            dstPitch: dst_pitch,
            WidthInBytes: width,
            Height: height,
        };
        // SAFETY: both buffers hold `height` rows at their pitches.
        unsafe { sys::cuMemcpy2DAsync_v2(&p, self.cu_stream()) }
            .result()
            .map_err(cuda_err("2d copy"))
    }

    /// Zeroes `bytes` at `dst`, ordered on the stream.
    pub fn zero(&self, dst: u64, bytes: usize) -> Result<()> {
        if self.is_dry() {
            return Ok(());
        }
        // SAFETY: dst holds `bytes` bytes.
        unsafe { result::memset_d8_async(dst, 0, bytes, self.cu_stream()) }
            .map_err(cuda_err("memset"))
    }

    /// Waits for everything queued on the stream.
    pub fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_err("synchronize"))
    }

    /// Free and total device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.bind()?;
        result::mem_get_info().map_err(cuda_err("memory info"))
    }
}

fn raw_alloc(ctx: &Arc<CudaContext>, bytes: usize) -> Result<DeviceMem> {
    ctx.bind_to_thread().map_err(cuda_err("bind context"))?;
    let bytes = bytes.max(ALIGN);
    // SAFETY: a plain allocation; freed by DeviceMem's drop.
    let ptr = unsafe { result::malloc_sync(bytes) }
        .map_err(|e| Error::Backend(format!("cuda: allocating {bytes} bytes: {e:?}")))?;
    Ok(DeviceMem {
        ptr,
        bytes,
        ctx: ctx.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::FreeList;

    #[test]
    fn free_list_reuses_and_coalesces() {
        let mut f = FreeList::new(1000);
        let a = f.take(100).unwrap();
        let b = f.take(200).unwrap();
        let c = f.take(300).unwrap();
        assert_eq!((a, b, c), (0, 100, 300));
        assert_eq!(f.take(401), None);
        f.give_back(b, 200);
        // First fit: the hole left by b.
        assert_eq!(f.take(150), Some(100));
        f.give_back(100, 150);
        f.give_back(a, 100);
        f.give_back(c, 300);
        // Everything merged back into one range.
        assert_eq!(f.0, vec![(0, 1000)]);
        assert_eq!(f.take(1000), Some(0));
        assert_eq!(f.take(1), None);
    }
}
