//! The host KV tier of a CUDA rank: pinned host memory and a copy stream of its own.
//!
//! A batch of copies waits (on the device, not the host) for the work the rank's stream has
//! queued, so that an offload reads a block after the last step wrote it; it then runs one
//! asynchronous copy per block, layer and K/V over PCIe, and the rank's stream waits for the
//! batch before its next kernel, so the step that needs the blocks reads them after they
//! land. The host returns as soon as the copies are queued. Per-layer waits, as the CPU copy
//! thread gives, are not used: a replayed CUDA graph has no layer boundary to wait at.

use std::sync::Arc;

use cudarc::driver::sys;
use cudarc::driver::{CudaStream, PinnedHostSlice};

use super::device::{Device, cuda_err};
use super::{CudaKvCache, shape_err};
use crate::error::Result;
use crate::kv::KvCopy;

/// Pinned slots and the stream that copies them.
pub(super) struct PinnedTier {
    /// Held for its lifetime; freed (after its copies) when the tier goes.
    mem: PinnedHostSlice<u8>,
    /// `mem`'s address, taken once (the slice's own accessor synchronizes first).
    base: usize,
    stream: Arc<CudaStream>,
}

// SAFETY: `base` is an address into `mem`, which the tier owns; the tier is only used from
// the rank that owns its backend.
unsafe impl Send for PinnedTier {}
unsafe impl Sync for PinnedTier {}

impl PinnedTier {
    /// `bytes` of page-locked host memory (so that the copies are DMA, asynchronous to the
    /// host) and a copy stream.
    pub(super) fn new(dev: &Device, bytes: usize) -> Result<Self> {
        dev.bind()?;
        // SAFETY: the memory is uninitialized; a slot is only read after an offload wrote it
        // (the pool onboards only slots it stored).
        let mut mem = unsafe { dev.ctx.alloc_pinned_with_flags::<u8>(bytes.max(1), 0) }
            .map_err(cuda_err("pin host KV tier"))?;
        let base = mem.as_mut_ptr().map_err(cuda_err("pinned address"))? as usize;
        let stream = dev
            .ctx
            .new_stream()
            .map_err(cuda_err("create copy stream"))?;
        Ok(PinnedTier { mem, base, stream })
    }

    /// Queues `copies` on the copy stream between the caches and slots of `slot_bytes`, after
    /// the work on `dev`'s stream; `dev`'s stream waits for them.
    pub(super) fn copy(
        &self,
        dev: &Device,
        caches: &[CudaKvCache],
        copies: &[KvCopy],
        slot_bytes: usize,
    ) -> Result<()> {
        let slots = self.mem.len() / slot_bytes.max(1);
        for c in copies {
            let (block, slot, _) = c.parts();
            if slot as usize >= slots {
                return Err(shape_err(
                    "copy_host_tier",
                    format!("slot {slot} of {slots}"),
                ));
            }
            if let Some(cache) = caches.iter().find(|c| block as usize >= c.spec.num_blocks) {
                let n = cache.spec.num_blocks;
                return Err(shape_err("copy_host_tier", format!("block {block} of {n}")));
            }
        }
        self.ordered(dev, || {
            for (l, cache) in caches.iter().enumerate() {
                // bf16 K and V of one block, contiguous in their tensors.
                let kb = cache.spec.block_elems() * 2;
                for c in copies {
                    let (block, slot, offload) = c.parts();
                    for (half, dev_base) in [(0, cache.k.ptr()), (kb, cache.v.ptr())] {
                        let at = slot as usize * slot_bytes + l * 2 * kb + half;
                        let device = dev_base + (block as usize * kb) as u64;
                        // SAFETY: both spans were bounds-checked above (the slot within the
                        // pinned slice, the block within the layer's tensors).
                        unsafe { self.memcpy(at, device, kb, offload) }?;
                    }
                }
            }
            Ok(())
        })
    }

    /// One copy of the whole tier to or from device memory at `device` (as many bytes), on
    /// the copy stream and ordered as [`PinnedTier::copy`]: the reference the per-block
    /// copies are measured against.
    pub(super) fn copy_whole(&self, dev: &Device, device: u64, to_host: bool) -> Result<()> {
        // SAFETY: `device` holds as many bytes as the tier (the caller's contract).
        self.ordered(dev, || unsafe {
            self.memcpy(0, device, self.mem.len(), to_host)
        })
    }

    /// Queues `copy` on the copy stream after the work on `dev`'s stream, and makes `dev`'s
    /// stream wait for it.
    fn ordered(&self, dev: &Device, copy: impl FnOnce() -> Result<()>) -> Result<()> {
        dev.bind()?;
        self.stream
            .join(&dev.stream)
            .map_err(cuda_err("order the copies after the step"))?;
        copy()?;
        dev.stream
            .join(&self.stream)
            .map_err(cuda_err("order the step after its copies"))
    }

    /// Queues a copy of `n` bytes between the pinned memory at offset `at` and `device`, to the
    /// host or from it.
    ///
    /// # Safety
    /// `at..at + n` must lie in the pinned memory and `device..device + n` in device memory
    /// that outlives the copy stream's work (the tier synchronizes its stream before its own
    /// memory is freed); [`PinnedTier::ordered`] orders it against the kernels.
    unsafe fn memcpy(&self, at: usize, device: u64, n: usize, to_host: bool) -> Result<()> {
        let host = (self.base + at) as *mut std::ffi::c_void;
        let cu = self.stream.cu_stream();
        // SAFETY: the caller's contract.
        let r = unsafe {
            if to_host {
                sys::cuMemcpyDtoHAsync_v2(host, device, n, cu)
            } else {
                sys::cuMemcpyHtoDAsync_v2(device, host, n, cu)
            }
        };
        r.result().map_err(cuda_err("copy between the KV tiers"))
    }

    /// Waits for every copy queued so far.
    pub(super) fn wait(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(cuda_err("wait for the KV tier copies"))
    }
}

impl Drop for PinnedTier {
    fn drop(&mut self) {
        // Copies still queued read or write the pinned memory about to be freed.
        let _ = self.stream.synchronize();
    }
}
