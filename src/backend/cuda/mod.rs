//! The GPU backend (feature `cuda`): bf16 weights, activations and KV cache, f32 arithmetic
//! inside the kernels, cuBLASLt GEMMs, NCCL collectives. Checked against [`CpuBackend`]
//! (tests/cuda_kernels.rs) wherever a GPU is present.
//!
//! [`CpuBackend`]: crate::backend::CpuBackend

mod attention;
pub mod bench;
mod blas;
mod device;
pub mod graph;
mod host_tier;
mod kernels;
mod nccl;
pub mod sizing;

use super::KvCacheSpec;
use crate::error::{Error, Result};
use crate::kv::BlockId;
pub use device::{Buf, Device, DeviceMem};
pub use nccl::NcclComm;

/// A row-major bf16 matrix on the device.
#[derive(Debug)]
pub struct CudaTensor {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    buf: Buf,
}

impl CudaTensor {
    /// Device address of element (0, 0).
    pub fn ptr(&self) -> u64 {
        self.buf.ptr()
    }

    fn bytes(&self) -> usize {
        self.rows * self.cols * 2
    }
}

/// One layer's paged K and V: `[num_blocks, block_size, kv_heads, head_dim]` bf16 each.
#[derive(Debug)]
pub struct CudaKvCache {
    /// Layout of both tensors.
    pub spec: KvCacheSpec,
    k: DeviceMem,
    v: DeviceMem,
}

/// The CUDA backend of one tensor-parallel rank (one GPU).
pub struct CudaBackend {
    dev: Device,
    k: kernels::Kernels,
    gemm: blas::Gemm,
    comm: NcclComm,
    graphs: std::sync::Mutex<graph::Graphs>,
    /// Every rank's logits width, learnt on the first all-gather (graphs cannot ask again).
    widths: std::sync::Mutex<Option<Vec<usize>>>,
    /// The host KV tier, once given one.
    host_tier: std::sync::OnceLock<host_tier::PinnedTier>,
}

fn shape_err(op: &str, detail: String) -> Error {
    Error::Backend(format!("{op}: {detail}"))
}

/// What a machine offers the CUDA backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuPresence {
    /// No CUDA driver: libcuda cannot be loaded.
    NoDriver,
    /// A driver that sees this many devices (0: CUDA_ERROR_NO_DEVICE).
    Devices(usize),
}

/// Whether this machine has a driver and devices. Any other driver failure (a driver too old
/// for CUDA 13, a library mismatch, CUDA_ERROR_UNKNOWN) is an error with the driver's word
/// for it: a broken GPU setup is not a machine without a GPU.
pub fn gpu_presence() -> Result<GpuPresence> {
    // SAFETY: only probes whether libcuda can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Ok(GpuPresence::NoDriver);
    }
    match cudarc::driver::CudaContext::device_count() {
        Ok(n) => Ok(GpuPresence::Devices(n.max(0) as usize)),
        Err(cudarc::driver::DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE)) => {
            Ok(GpuPresence::Devices(0))
        }
        Err(e) => Err(Error::Backend(format!("cuda: the driver fails: {e:?}"))),
    }
}

/// Devices visible to this process; an error (not a panic) when no driver is installed.
pub fn device_count() -> Result<usize> {
    // SAFETY: only probes whether libcuda can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Backend("no CUDA driver (libcuda) found".into()));
    }
    let n = cudarc::driver::CudaContext::device_count()
        .map_err(|e| Error::Backend(format!("cuda: device count: {e:?}")))?;
    Ok(n.max(0) as usize)
}

/// Name prefix of the emulated device (emu/, scripts/cuda-emu.sh).
const EMULATED_NAME: &str = "tandem-emu";

/// Whether GPU `ordinal` is the emulated device: it runs kernels in a CPU interpreter, so it
/// proves function, and its timings say nothing about a GPU.
pub fn is_emulated(ordinal: usize) -> Result<bool> {
    let ctx = cudarc::driver::CudaContext::new(ordinal)
        .map_err(|e| Error::Backend(format!("cuda: opening device {ordinal}: {e:?}")))?;
    let name = ctx
        .name()
        .map_err(|e| Error::Backend(format!("cuda: device name: {e:?}")))?;
    Ok(name.starts_with(EMULATED_NAME))
}

/// Refuses to time anything on the emulated device.
pub fn require_real_gpu(ordinal: usize, what: &str) -> Result<()> {
    if is_emulated(ordinal)? {
        return Err(Error::Backend(format!(
            "{what}: device {ordinal} is the emulated device ({EMULATED_NAME}), which runs \
             kernels in a CPU interpreter: its times would be emulated and meaningless. Run \
             {what} on a GPU."
        )));
    }
    Ok(())
}

fn require_libs(nccl: bool) -> Result<()> {
    // SAFETY: only probe whether the libraries can be opened; cudarc would panic later.
    let (lt, nc) = unsafe {
        (
            cudarc::cublaslt::sys::is_culib_present(),
            cudarc::nccl::sys::is_culib_present(),
        )
    };
    if !lt {
        return Err(Error::Backend(
            "cuBLASLt (libcublasLt) not found: put the CUDA libraries on LD_LIBRARY_PATH (without \
             a GPU, the emulated device's: scripts/cuda-emu.sh prints their directory)"
                .into(),
        ));
    }
    if nccl && !nc {
        return Err(Error::Backend(
            "NCCL (libnccl) not found: tensor parallelism on GPUs needs it on LD_LIBRARY_PATH \
             (without a GPU, the emulated device's: scripts/cuda-emu.sh prints their directory)"
                .into(),
        ));
    }
    Ok(())
}

impl CudaBackend {
    /// A rank on GPU `ordinal` with an activation arena of `arena_bytes` and communicator `comm`.
    pub fn new(ordinal: usize, arena_bytes: usize, comm: NcclComm) -> Result<Self> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(Error::Backend(format!(
                "cuda device {ordinal} requested, {n} visible"
            )));
        }
        require_libs(comm.world() > 1)?;
        let dev = Device::open(ordinal, arena_bytes)?;
        let k = kernels::Kernels::load(&dev)?;
        let gemm = blas::Gemm::new(&dev)?;
        Ok(CudaBackend {
            dev,
            k,
            gemm,
            comm,
            graphs: std::sync::Mutex::new(graph::Graphs::new()),
            widths: std::sync::Mutex::new(None),
            host_tier: std::sync::OnceLock::new(),
        })
    }

    /// A single-rank backend on GPU `ordinal`.
    pub fn single(ordinal: usize, arena_bytes: usize) -> Result<Self> {
        Self::new(ordinal, arena_bytes, NcclComm::single())
    }

    /// The device (memory info, arena statistics, synchronization).
    pub fn device(&self) -> &Device {
        &self.dev
    }

    fn tensor(&self, rows: usize, cols: usize) -> Result<CudaTensor> {
        Ok(CudaTensor {
            rows,
            cols,
            buf: self.dev.alloc(rows * cols * 2)?,
        })
    }

    /// Host data for a kernel (through graph.rs: a captured step keeps it in static buffers).
    fn upload_u32(&self, data: &[u32], role: &'static str) -> Result<Buf> {
        self.upload_u32_as(data, role)
    }

    /// Whether the step in flight is captured into or replayed from a graph.
    fn frozen(&self) -> bool {
        self.graphs.lock().map(|g| g.frozen()).unwrap_or(false)
    }

    /// Graph config while a graph step is in flight (fixed block-table width and context).
    fn frozen_config(&self) -> Option<graph::GraphConfig> {
        self.graphs
            .lock()
            .ok()
            .filter(|g| g.frozen())
            .and_then(|g| g.cfg)
    }

    /// Greedy token of each row of `logits`, computed on the device.
    pub fn argmax(&self, logits: &CudaTensor) -> Result<Vec<u32>> {
        self.dev.bind()?;
        let out = self.dev.alloc(logits.rows * 4)?;
        self.k
            .argmax(&self.dev, out.ptr(), logits.ptr(), logits.rows, logits.cols)?;
        let mut host = vec![0u32; logits.rows];
        self.dev.dtoh(&mut host, out.ptr())?;
        Ok(host)
    }

    /// One draw per row from softmax(logits / temperature) cut to top-k (0: off) and top-p,
    /// using the uniform numbers `u` in [0, 1) (drawn by the caller, so seeds stay on the host).
    pub fn sample(
        &self,
        logits: &CudaTensor,
        temperature: &[f32],
        top_k: &[i32],
        top_p: &[f32],
        u: &[f32],
    ) -> Result<Vec<u32>> {
        let r = logits.rows;
        if [temperature.len(), top_k.len(), top_p.len(), u.len()] != [r; 4] {
            return Err(shape_err(
                "sample",
                format!("parameters for {r} rows differ in length"),
            ));
        }
        self.dev.bind()?;
        let params: Vec<Buf> = [
            bytemuck::cast_slice::<f32, u32>(temperature),
            bytemuck::cast_slice::<i32, u32>(top_k),
            bytemuck::cast_slice::<f32, u32>(top_p),
            bytemuck::cast_slice::<f32, u32>(u),
        ]
        .into_iter()
        .map(|p| self.upload_u32(p, "sampling"))
        .collect::<Result<_>>()?;
        let out = self.dev.alloc(r * 4)?;
        let p = (
            params[0].ptr(),
            params[1].ptr(),
            params[2].ptr(),
            params[3].ptr(),
        );
        self.k
            .sample(&self.dev, out.ptr(), logits.ptr(), (r, logits.cols), p)?;
        let mut host = vec![0u32; r];
        self.dev.dtoh(&mut host, out.ptr())?;
        Ok(host)
    }

    fn check_blocks(&self, op: &str, cache: &CudaKvCache, blocks: &[BlockId]) -> Result<()> {
        match blocks
            .iter()
            .find(|&&b| b as usize >= cache.spec.num_blocks)
        {
            Some(b) => Err(shape_err(
                op,
                format!("block {b} of {}", cache.spec.num_blocks),
            )),
            None => Ok(()),
        }
    }

    /// Every rank's logits width (shards differ by the vocabulary's remainder): asked once
    /// over NCCL, then cached (the answer never changes and a graph capture cannot ask).
    fn rank_widths(&self, mine: usize) -> Result<Vec<usize>> {
        let mut cache = self
            .widths
            .lock()
            .map_err(|_| Error::Backend("width cache poisoned".into()))?;
        if let Some(w) = cache
            .as_ref()
            .filter(|w| w.get(self.comm.rank()) == Some(&mine))
        {
            return Ok(w.clone());
        }
        if self.frozen() {
            return Err(Error::Backend("rank widths unknown inside a graph".into()));
        }
        // One u32 each, moved as two bf16 (NCCL only copies the bytes).
        let world = self.comm.world();
        let mine_buf = self.dev.alloc(4)?;
        self.dev.htod(mine_buf.ptr(), &[mine as u32])?;
        let all = self.dev.alloc(world * 4)?;
        self.comm
            .all_gather_bf16(&self.dev, mine_buf.ptr(), all.ptr(), 2)?;
        let mut widths = vec![0u32; world];
        self.dev.dtoh(&mut widths, all.ptr())?;
        let widths: Vec<usize> = widths.into_iter().map(|w| w as usize).collect();
        *cache = Some(widths.clone());
        Ok(widths)
    }

    /// Concatenates every rank's columns of `x` (vocabulary shards may differ in width by
    /// one rank's remainder: NCCL gathers equal counts, so shards are padded to the widest).
    fn gather_cols(&self, x: &CudaTensor) -> Result<CudaTensor> {
        let world = self.comm.world();
        if world == 1 {
            let out = self.tensor(x.rows, x.cols)?;
            self.dev.dtod(out.ptr(), x.ptr(), x.bytes())?;
            return Ok(out);
        }
        let widths = self.rank_widths(x.cols)?;
        let max_c = widths.iter().copied().max().unwrap_or(0);
        let padded = self.tensor(x.rows, max_c)?;
        self.dev.zero(padded.ptr(), padded.bytes())?;
        self.dev.dtod_2d(
            (padded.ptr(), max_c * 2),
            (x.ptr(), x.cols * 2),
            x.cols * 2,
            x.rows,
        )?;
        let gathered = self.dev.alloc(world * x.rows * max_c * 2)?;
        self.comm
            .all_gather_bf16(&self.dev, padded.ptr(), gathered.ptr(), x.rows * max_c)?;
        let total: usize = widths.iter().sum();
        let out = self.tensor(x.rows, total)?;
        let mut col = 0;
        for (r, &w) in widths.iter().enumerate() {
            let src = gathered.ptr() + (r * x.rows * max_c * 2) as u64;
            self.dev.dtod_2d(
                (out.ptr() + (col * 2) as u64, total * 2),
                (src, max_c * 2),
                w * 2,
                x.rows,
            )?;
            col += w;
        }
        Ok(out)
    }
}

mod ops;
