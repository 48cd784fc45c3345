//! [`Backend`] for [`CudaBackend`]: shape checks (the same as the CPU reference's, plus
//! the kernels' alignment needs), then one kernel or library call each.

use half::bf16;

use super::{CudaBackend, CudaKvCache, CudaTensor, shape_err};
use crate::backend::ModelInput;
use crate::backend::{AttentionMeta, Backend, HeadDims, HostTensor, KvCacheSpec};
use crate::error::Result;
use crate::kv::BlockId;

/// Row widths the 16-byte-vector kernels accept.
fn check_vec8(op: &str, what: &str, n: usize) -> Result<()> {
    if n.is_multiple_of(8) {
        Ok(())
    } else {
        Err(shape_err(op, format!("{what} {n} is not a multiple of 8")))
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type KvCache = CudaKvCache;

    fn upload(&self, host: &HostTensor) -> Result<CudaTensor> {
        self.dev.bind()?;
        let data: Vec<bf16> = host.data.iter().map(|&x| bf16::from_f32(x)).collect();
        let mem = self.dev.alloc_owned(data.len() * 2)?;
        self.dev.htod(mem.ptr(), &data)?;
        Ok(CudaTensor {
            rows: host.rows(),
            cols: host.cols(),
            buf: super::Buf::Owned(mem),
        })
    }

    fn to_host(&self, t: &CudaTensor) -> Result<HostTensor> {
        self.dev.bind()?;
        let mut data = vec![bf16::ZERO; t.rows * t.cols];
        self.dev.dtoh(&mut data, t.ptr())?;
        Ok(HostTensor::new(
            vec![t.rows, t.cols],
            data.into_iter().map(f32::from).collect(),
        ))
    }

    fn alloc_kv_cache(&self, spec: &KvCacheSpec) -> Result<CudaKvCache> {
        self.dev.bind()?;
        // One block more than asked: the scratch block that graph padding rows write to.
        let bytes = (spec.num_blocks + 1) * spec.block_elems() * 2;
        if let Ok(mut g) = self.graphs.lock() {
            g.num_blocks = Some(spec.num_blocks);
        }
        let (k, v) = (self.dev.alloc_owned(bytes)?, self.dev.alloc_owned(bytes)?);
        // Zeroed so that a block read before it is written holds numbers, not NaN patterns.
        self.dev.zero(k.ptr(), bytes)?;
        self.dev.zero(v.ptr(), bytes)?;
        Ok(CudaKvCache { spec: *spec, k, v })
    }

    fn embedding(
        &self,
        table: &CudaTensor,
        ids: &[u32],
        vocab_offset: usize,
    ) -> Result<CudaTensor> {
        check_vec8("embedding", "hidden size", table.cols)?;
        self.dev.bind()?;
        let out = self.tensor(ids.len(), table.cols)?;
        if ids.is_empty() {
            return Ok(out);
        }
        let ids_buf = self.upload_u32(ids, "ids")?;
        self.k.embedding(
            &self.dev,
            out.ptr(),
            table.ptr(),
            ids_buf.ptr(),
            ids.len(),
            (table.rows, table.cols),
            vocab_offset,
        )?;
        Ok(out)
    }

    fn rms_norm(&self, x: &CudaTensor, w: &CudaTensor, eps: f32) -> Result<CudaTensor> {
        if w.rows * w.cols != x.cols {
            return Err(shape_err(
                "rms_norm",
                format!("weight {} vs row {}", w.rows * w.cols, x.cols),
            ));
        }
        check_vec8("rms_norm", "row width", x.cols)?;
        self.dev.bind()?;
        let out = self.tensor(x.rows, x.cols)?;
        if x.rows > 0 {
            self.k.rms_norm(
                &self.dev,
                out.ptr(),
                None,
                x.ptr(),
                w.ptr(),
                x.rows,
                x.cols,
                eps,
            )?;
        }
        Ok(out)
    }

    fn add_rms_norm(
        &self,
        x: &CudaTensor,
        residual: &mut CudaTensor,
        w: &CudaTensor,
        eps: f32,
    ) -> Result<CudaTensor> {
        if (x.rows, x.cols) != (residual.rows, residual.cols) || w.rows * w.cols != x.cols {
            return Err(shape_err(
                "add_rms_norm",
                "x, residual and weight differ".into(),
            ));
        }
        check_vec8("add_rms_norm", "row width", x.cols)?;
        self.dev.bind()?;
        let out = self.tensor(x.rows, x.cols)?;
        if x.rows > 0 {
            let res = Some(residual.ptr());
            self.k.rms_norm(
                &self.dev,
                out.ptr(),
                res,
                x.ptr(),
                w.ptr(),
                x.rows,
                x.cols,
                eps,
            )?;
        }
        Ok(out)
    }

    fn linear(&self, x: &CudaTensor, w: &CudaTensor) -> Result<CudaTensor> {
        if x.cols != w.cols {
            return Err(shape_err(
                "linear",
                format!("x [{}, {}] w [{}, {}]", x.rows, x.cols, w.rows, w.cols),
            ));
        }
        self.dev.bind()?;
        let out = self.tensor(x.rows, w.rows)?;
        self.gemm.matmul(
            &self.dev,
            out.ptr(),
            x.ptr(),
            w.ptr(),
            x.rows,
            w.rows,
            x.cols,
        )?;
        Ok(out)
    }

    fn qk_norm_rope(
        &self,
        qkv: &mut CudaTensor,
        dims: HeadDims,
        q_norm: &CudaTensor,
        k_norm: &CudaTensor,
        eps: f32,
        rope: &CudaTensor,
        positions: &[u32],
    ) -> Result<()> {
        let d = dims.head_dim;
        if qkv.cols != dims.qkv_width()
            || positions.len() != qkv.rows
            || rope.cols != d
            || q_norm.rows * q_norm.cols != d
            || k_norm.rows * k_norm.cols != d
        {
            return Err(shape_err(
                "qk_norm_rope",
                format!("qkv [{}, {}] for {dims:?}", qkv.rows, qkv.cols),
            ));
        }
        if !d.is_multiple_of(2) || d > 256 {
            return Err(shape_err(
                "qk_norm_rope",
                format!("head_dim {d} must be even and <= 256"),
            ));
        }
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= rope.rows) {
            return Err(shape_err(
                "qk_norm_rope",
                format!("position {p} beyond rope table {}", rope.rows),
            ));
        }
        if qkv.rows == 0 {
            return Ok(());
        }
        self.dev.bind()?;
        let pos = self.upload_u32(positions, "positions")?;
        self.k.qk_norm_rope(
            &self.dev,
            qkv.ptr(),
            (q_norm.ptr(), k_norm.ptr(), rope.ptr(), pos.ptr()),
            qkv.rows,
            (dims.q_heads, dims.kv_heads, d),
            qkv.cols,
            eps,
        )
    }

    fn silu_mul(&self, gate_up: &CudaTensor) -> Result<CudaTensor> {
        let i = gate_up.cols / 2;
        if !gate_up.cols.is_multiple_of(2) {
            return Err(shape_err("silu_mul", format!("odd width {}", gate_up.cols)));
        }
        check_vec8("silu_mul", "intermediate size", i)?;
        self.dev.bind()?;
        let out = self.tensor(gate_up.rows, i)?;
        if gate_up.rows > 0 && i > 0 {
            self.k
                .silu_mul(&self.dev, out.ptr(), gate_up.ptr(), gate_up.rows, i)?;
        }
        Ok(out)
    }

    fn write_kv(
        &self,
        cache: &mut CudaKvCache,
        qkv: &CudaTensor,
        dims: HeadDims,
        slots: &[u32],
    ) -> Result<()> {
        let w = dims.kv_heads * dims.head_dim;
        let q_w = dims.q_heads * dims.head_dim;
        // A graph step's padding rows write to the scratch block after the real ones.
        let blocks = cache.spec.num_blocks + usize::from(self.frozen());
        let capacity = blocks * cache.spec.block_size;
        if slots.len() != qkv.rows
            || w != cache.spec.kv_heads * cache.spec.head_dim
            || qkv.cols != dims.qkv_width()
        {
            return Err(shape_err(
                "write_kv",
                format!("{} slots for {} rows", slots.len(), qkv.rows),
            ));
        }
        check_vec8("write_kv", "head_dim", dims.head_dim)?;
        if let Some(&s) = slots.iter().find(|&&s| s as usize >= capacity) {
            return Err(shape_err(
                "write_kv",
                format!("slot {s} beyond cache of {capacity}"),
            ));
        }
        if slots.is_empty() {
            return Ok(());
        }
        self.dev.bind()?;
        let slots_buf = self.upload_u32(slots, "slots")?;
        self.k.write_kv(
            &self.dev,
            (cache.k.ptr(), cache.v.ptr()),
            qkv.ptr(),
            slots_buf.ptr(),
            qkv.rows,
            qkv.cols,
            q_w,
            w,
        )
    }

    fn attention(
        &self,
        qkv: &CudaTensor,
        dims: HeadDims,
        cache: &CudaKvCache,
        meta: &AttentionMeta,
    ) -> Result<CudaTensor> {
        self.dev.bind()?;
        self.paged_attention(qkv, dims, cache, meta)
    }

    fn run_step(
        &self,
        input: &ModelInput,
        mut step: impl FnMut(&ModelInput) -> Result<CudaTensor>,
    ) -> Result<CudaTensor> {
        self.dev.bind()?;
        self.graph_step(input, &mut step)
    }

    fn gather_rows(&self, x: &CudaTensor, rows: &[usize]) -> Result<CudaTensor> {
        if let Some(&r) = rows.iter().find(|&&r| r >= x.rows) {
            return Err(shape_err("gather_rows", format!("row {r} of {}", x.rows)));
        }
        self.dev.bind()?;
        let out = self.tensor(rows.len(), x.cols)?;
        if rows.is_empty() || x.cols == 0 {
            return Ok(out);
        }
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx_buf = self.upload_u32(&idx, "rows")?;
        self.k.gather_rows(
            &self.dev,
            out.ptr(),
            x.ptr(),
            idx_buf.ptr(),
            rows.len(),
            x.cols,
        )?;
        Ok(out)
    }

    fn all_reduce(&self, x: &mut CudaTensor) -> Result<()> {
        self.dev.bind()?;
        self.comm
            .all_reduce_bf16(&self.dev, x.ptr(), x.rows * x.cols)
    }

    fn all_gather_cols(&self, x: &CudaTensor) -> Result<CudaTensor> {
        self.dev.bind()?;
        self.gather_cols(x)
    }

    fn kv_block_bytes(&self, spec: &KvCacheSpec) -> usize {
        2 * spec.block_elems() * 2
    }

    fn kv_memory(&self, cache: &mut CudaKvCache) -> Option<crate::backend::KvMemory> {
        let span = |m: &super::device::DeviceMem| (m.ptr() as usize, m.bytes());
        Some(crate::backend::KvMemory {
            k: span(&cache.k),
            v: span(&cache.v),
            block_bytes: cache.spec.block_elems() * 2,
            device: Some(self.device().ctx.ordinal() as u32),
        })
    }

    fn alloc_host_tier(&self, bytes: usize) -> Result<bool> {
        let tier = super::host_tier::PinnedTier::new(&self.dev, bytes)?;
        self.host_tier.set(tier).map_err(|_| {
            crate::error::Error::Backend("the host KV tier is allocated once".into())
        })?;
        Ok(true)
    }

    fn copy_host_tier(
        &self,
        caches: &mut [CudaKvCache],
        copies: &[crate::kv::KvCopy],
        slot_bytes: usize,
    ) -> Result<()> {
        let tier = self
            .host_tier
            .get()
            .ok_or_else(|| crate::error::Error::KvCopy("this rank has no host KV tier".into()))?;
        tier.copy(&self.dev, caches, copies, slot_bytes)
    }

    fn wait_host_tier(&self) -> Result<()> {
        match self.host_tier.get() {
            Some(t) => t.wait(),
            None => Ok(()),
        }
    }

    fn read_kv_blocks(&self, cache: &CudaKvCache, blocks: &[BlockId]) -> Result<Vec<u8>> {
        self.check_blocks("read_kv_blocks", cache, blocks)?;
        check_vec8("read_kv_blocks", "block size", cache.spec.block_elems())?;
        let total = blocks.len() * self.kv_block_bytes(&cache.spec);
        let mut out = vec![0u8; total];
        if blocks.is_empty() {
            return Ok(out);
        }
        self.dev.bind()?;
        let staging = self.dev.alloc(total)?;
        let ids = self.upload_u32(blocks, "blocks")?;
        self.k.kv_blocks(
            &self.dev,
            true,
            (cache.k.ptr(), cache.v.ptr()),
            staging.ptr(),
            ids.ptr(),
            (blocks.len(), cache.spec.block_elems()),
        )?;
        // bf16 as little-endian bytes: the device layout is the wire layout.
        self.dev.dtoh(&mut out, staging.ptr())?;
        Ok(out)
    }

    fn write_kv_blocks(
        &self,
        cache: &mut CudaKvCache,
        blocks: &[BlockId],
        data: &[u8],
    ) -> Result<()> {
        if data.len() != blocks.len() * self.kv_block_bytes(&cache.spec) {
            return Err(shape_err(
                "write_kv_blocks",
                format!("{} bytes for {} blocks", data.len(), blocks.len()),
            ));
        }
        self.check_blocks("write_kv_blocks", cache, blocks)?;
        check_vec8("write_kv_blocks", "block size", cache.spec.block_elems())?;
        if blocks.is_empty() {
            return Ok(());
        }
        self.dev.bind()?;
        let staging = self.dev.alloc(data.len())?;
        self.dev.htod(staging.ptr(), data)?;
        let ids = self.upload_u32(blocks, "blocks")?;
        self.k.kv_blocks(
            &self.dev,
            false,
            (cache.k.ptr(), cache.v.ptr()),
            staging.ptr(),
            ids.ptr(),
            (blocks.len(), cache.spec.block_elems()),
        )
    }
}
