//! The device seam: every operation the Qwen3 forward pass needs, behind one trait.
//!
//! The model is written once over [`Backend`]; the CPU backend is the exact reference that
//! every other backend is tested against. Activations are row-major `[tokens, features]`.

pub mod comm;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::error::Result;
use crate::kv::BlockId;

pub use comm::ThreadComm;
pub use cpu::CpuBackend;

/// A dense f32 tensor in host memory (weights on their way to a device, logits on their way back).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// A tensor of `shape` holding `data` (lengths must agree).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }

    /// Rows when seen as a matrix (product of all but the last dimension).
    pub fn rows(&self) -> usize {
        self.shape[..self.shape.len().saturating_sub(1)]
            .iter()
            .product()
    }

    /// Columns when seen as a matrix (the last dimension).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// One row of the matrix view.
    pub fn row(&self, r: usize) -> &[f32] {
        let c = self.cols();
        &self.data[r * c..(r + 1) * c]
    }
}

/// Head counts of one rank's fused `[q | k | v]` projection output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadDims {
    /// Query heads on this rank.
    pub q_heads: usize,
    /// Key/value heads on this rank.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl HeadDims {
    /// Width of the fused qkv row.
    pub fn qkv_width(&self) -> usize {
        (self.q_heads + 2 * self.kv_heads) * self.head_dim
    }
}

/// The memory of one layer's paged K and V on one rank: each `[num_blocks, block]`, block b
/// at `start + b × block_bytes`. It stays at that address for the cache's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvMemory {
    /// Address and length in bytes of the keys.
    pub k: (usize, usize),
    /// Address and length in bytes of the values.
    pub v: (usize, usize),
    /// Bytes of one block of K (and of V).
    pub block_bytes: usize,
    /// CUDA device ordinal; None for host memory.
    pub device: Option<u32>,
}

/// Shape of one layer's paged K/V cache on one rank: `[num_blocks, block_size, kv_heads, head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheSpec {
    /// Blocks in the pool.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Key/value heads on this rank.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl KvCacheSpec {
    /// Values (K or V) per block.
    pub fn block_elems(&self) -> usize {
        self.block_size * self.kv_heads * self.head_dim
    }
}

/// One sequence's slice of a step, as attention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttnSeq {
    /// Row of its first new token in the step's activations.
    pub query_start: usize,
    /// New tokens this step (1 in decode).
    pub query_len: usize,
    /// Tokens in the cache after this step's write (cached prefix + earlier + new).
    pub context_len: usize,
    /// Physical blocks of the sequence, covering `context_len` tokens.
    pub block_table: Vec<BlockId>,
}

/// What paged attention needs for one step: K and V are read only through the block tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttentionMeta {
    /// Tokens per block.
    pub block_size: usize,
    /// The step's sequences, in row order.
    pub seqs: Vec<AttnSeq>,
}

/// One step's inputs to the model, shared by every rank (what a backend's
/// [`Backend::run_step`] replays: the tokens, their positions and cache slots, attention's view).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInput {
    /// Token ids of every new token, sequences concatenated.
    pub tokens: Vec<u32>,
    /// Position of each token in its sequence.
    pub positions: Vec<u32>,
    /// Cache slot (`block * block_size + offset`) each token's K/V goes to.
    pub slots: Vec<u32>,
    /// Per-sequence view for paged attention.
    pub attn: AttentionMeta,
    /// Rows whose logits are wanted (the last new token of sequences that sample).
    pub logit_rows: Vec<usize>,
}

/// The operations of a Qwen3 forward pass on one device (one tensor-parallel rank).
pub trait Backend: Send + Sized + 'static {
    /// A device buffer (weights and activations).
    type Tensor: Send;
    /// One layer's paged K and V.
    type KvCache: Send;

    /// Copies a host tensor to the device.
    fn upload(&self, host: &HostTensor) -> Result<Self::Tensor>;
    /// Copies a device tensor back to the host.
    fn to_host(&self, t: &Self::Tensor) -> Result<HostTensor>;
    /// Allocates one layer's K/V cache.
    fn alloc_kv_cache(&self, spec: &KvCacheSpec) -> Result<Self::KvCache>;

    /// Rows of `table` for `ids`; ids outside `[vocab_offset, vocab_offset + rows)` give zeros
    /// (vocab-parallel embedding, completed by an all-reduce).
    fn embedding(
        &self,
        table: &Self::Tensor,
        ids: &[u32],
        vocab_offset: usize,
    ) -> Result<Self::Tensor>;
    /// RMSNorm of each row of `x`, scaled by `w`.
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32) -> Result<Self::Tensor>;
    /// `residual += x`, then returns RMSNorm(residual) scaled by `w`.
    fn add_rms_norm(
        &self,
        x: &Self::Tensor,
        residual: &mut Self::Tensor,
        w: &Self::Tensor,
        eps: f32,
    ) -> Result<Self::Tensor>;
    /// `x [n, k]` times the transpose of `w [m, k]`: `[n, m]`.
    fn linear(&self, x: &Self::Tensor, w: &Self::Tensor) -> Result<Self::Tensor>;
    /// In place on the fused qkv rows: per-head RMSNorm of q and k, then neox RoPE at
    /// `positions` from the `[max_pos, head_dim]` table (cos in the first half, sin in the second).
    #[allow(clippy::too_many_arguments)]
    fn qk_norm_rope(
        &self,
        qkv: &mut Self::Tensor,
        dims: HeadDims,
        q_norm: &Self::Tensor,
        k_norm: &Self::Tensor,
        eps: f32,
        rope: &Self::Tensor,
        positions: &[u32],
    ) -> Result<()>;
    /// `silu(gate) * up` of the fused `[gate | up]` rows.
    fn silu_mul(&self, gate_up: &Self::Tensor) -> Result<Self::Tensor>;
    /// Stores each row's k and v at its slot (`block * block_size + offset`).
    fn write_kv(
        &self,
        cache: &mut Self::KvCache,
        qkv: &Self::Tensor,
        dims: HeadDims,
        slots: &[u32],
    ) -> Result<()>;
    /// Causal paged attention of each row's q over its sequence's cached K/V:
    /// `[tokens, q_heads * head_dim]`.
    fn attention(
        &self,
        qkv: &Self::Tensor,
        dims: HeadDims,
        cache: &Self::KvCache,
        meta: &AttentionMeta,
    ) -> Result<Self::Tensor>;
    /// The given rows of `x`, in order.
    fn gather_rows(&self, x: &Self::Tensor, rows: &[usize]) -> Result<Self::Tensor>;
    /// Sums `x` over the tensor-parallel group, in place.
    fn all_reduce(&self, x: &mut Self::Tensor) -> Result<()>;
    /// Concatenates every rank's columns of `x` in rank order.
    fn all_gather_cols(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Runs one forward pass, `step`, for `input`. A backend may call `step` on a padded copy
    /// of the input (to replay a captured graph: more rows, the real ones first) and may call
    /// it more than once; the default calls it once with `input`.
    fn run_step(
        &self,
        input: &ModelInput,
        mut step: impl FnMut(&ModelInput) -> Result<Self::Tensor>,
    ) -> Result<Self::Tensor> {
        step(input)
    }

    /// Bytes of one block of one layer (K and V) in this backend's cache dtype.
    fn kv_block_bytes(&self, spec: &KvCacheSpec) -> usize;
    /// Where one layer's cache lives, for a transfer library or a copy thread to read and
    /// write in place (None: the backend does not expose it). It takes the cache mutably
    /// because the addresses are written through.
    fn kv_memory(&self, _cache: &mut Self::KvCache) -> Option<KvMemory> {
        None
    }
    /// Copies whole blocks out of one layer's cache: for each block, its K then its V, as
    /// little-endian values of the cache dtype (what a KV transfer moves).
    fn read_kv_blocks(&self, cache: &Self::KvCache, blocks: &[BlockId]) -> Result<Vec<u8>>;
    /// Takes a host KV tier of `bytes` that the backend copies to and from itself, ordered
    /// against its own work: true for a cache in device memory (pinned host memory and a copy
    /// stream); false when the rank's copy thread copies a cache in host memory directly.
    fn alloc_host_tier(&self, _bytes: usize) -> Result<bool> {
        Ok(false)
    }
    /// Starts `copies` between every layer's cache (`caches`, one per layer) and the host tier
    /// of [`Backend::alloc_host_tier`], whose slot s holds at `s × slot_bytes`, layer by layer,
    /// one block's K then V. They are ordered after the work queued so far, and the work
    /// queued next waits for them.
    fn copy_host_tier(
        &self,
        _caches: &mut [Self::KvCache],
        _copies: &[crate::kv::KvCopy],
        _slot_bytes: usize,
    ) -> Result<()> {
        Err(crate::error::Error::KvCopy(
            "this backend copies no host tier itself".into(),
        ))
    }
    /// Waits until the host-tier copies started so far are done.
    fn wait_host_tier(&self) -> Result<()> {
        Ok(())
    }
    /// Writes blocks laid out as [`Backend::read_kv_blocks`] returns them.
    fn write_kv_blocks(
        &self,
        cache: &mut Self::KvCache,
        blocks: &[BlockId],
        data: &[u8],
    ) -> Result<()>;
}
