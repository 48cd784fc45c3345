//! Paged attention on the GPU: decode rows (one new token) go to the flash-decoding kernel,
//! longer queries (prefill chunks, possibly after a cached prefix) to the tensor-core
//! prefill kernel; both read K/V only through the block tables and write disjoint rows.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::kernels::{grid_dim, launch};
use super::{CudaBackend, CudaKvCache, CudaTensor};
use crate::backend::{AttentionMeta, AttnSeq, HeadDims};
use crate::error::{Error, Result};

/// Query rows per prefill block (kernels/attention_prefill.cu BQ).
const PREFILL_BQ: usize = 64;
/// Most partitions of one decode context (kernels/attention_decode.cu MAX_SPLITS).
pub(crate) const MAX_SPLITS: usize = 64;
/// Query heads one decode block serves (HEADS_PER_BLOCK).
const DECODE_HEADS: usize = 8;

fn err(detail: String) -> Error {
    Error::Backend(format!("attention: {detail}"))
}

/// The kernel instantiation for `head_dim`: the smallest padded width that holds it.
pub(crate) fn padded_dim(head_dim: usize, max: usize) -> Result<usize> {
    if head_dim == 0 || !head_dim.is_multiple_of(8) {
        return Err(err(format!("head_dim {head_dim} is not a multiple of 8")));
    }
    [32, 64, 128, 256]
        .into_iter()
        .find(|&d| d >= head_dim && d <= max)
        .ok_or_else(|| err(format!("head_dim {head_dim} above {max} is not supported")))
}

/// Decode partition length and count for contexts up to `max_ctx` with `ctas` blocks per
/// partition: short partitions when the batch alone cannot fill the GPU.
pub(crate) fn decode_partition(max_ctx: usize, ctas: usize) -> (usize, usize) {
    let mut partition = if ctas < 64 { 256 } else { 512 };
    partition = partition.max(max_ctx.div_ceil(MAX_SPLITS).next_multiple_of(64));
    (partition, max_ctx.div_ceil(partition).max(1))
}

fn check(seqs: &[AttnSeq], bs: usize, rows: usize, num_blocks: usize) -> Result<()> {
    for s in seqs {
        if s.context_len > s.block_table.len() * bs
            || s.query_len > s.context_len
            || s.query_start + s.query_len > rows
        {
            return Err(err(format!(
                "block table of {} blocks for {} tokens (query {}+{} of {rows} rows)",
                s.block_table.len(),
                s.context_len,
                s.query_start,
                s.query_len
            )));
        }
        let used = s.context_len.div_ceil(bs.max(1));
        if let Some(b) = s.block_table[..used]
            .iter()
            .find(|&&b| b as usize >= num_blocks)
        {
            return Err(err(format!("block {b} of a cache of {num_blocks}")));
        }
    }
    Ok(())
}

/// Block tables padded to the longest, row-major.
fn tables(seqs: &[&AttnSeq]) -> (usize, Vec<u32>) {
    let max_blocks = seqs
        .iter()
        .map(|s| s.block_table.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut t = vec![0u32; seqs.len() * max_blocks];
    for (i, s) in seqs.iter().enumerate() {
        t[i * max_blocks..i * max_blocks + s.block_table.len()].copy_from_slice(&s.block_table);
    }
    (max_blocks, t)
}

fn launch_cfg(grid: (u32, u32, u32), threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl CudaBackend {
    pub(crate) fn paged_attention(
        &self,
        qkv: &CudaTensor,
        dims: HeadDims,
        cache: &CudaKvCache,
        meta: &AttentionMeta,
    ) -> Result<CudaTensor> {
        let d = dims.head_dim;
        if qkv.cols != dims.qkv_width()
            || dims.kv_heads == 0
            || !dims.q_heads.is_multiple_of(dims.kv_heads)
            || cache.spec.kv_heads != dims.kv_heads
            || cache.spec.head_dim != d
            || meta.block_size != cache.spec.block_size
        {
            return Err(err(format!(
                "qkv [{}, {}] for {dims:?} over cache {:?}",
                qkv.rows, qkv.cols, cache.spec
            )));
        }
        let frozen = self.frozen_config();
        // In a graph step the padding rows read the scratch block after the real ones.
        let blocks = cache.spec.num_blocks + usize::from(frozen.is_some());
        check(&meta.seqs, meta.block_size, qkv.rows, blocks)?;
        let out = self.tensor(qkv.rows, dims.q_heads * d)?;
        // Rows of no sequence read as zeros, as on the CPU.
        self.dev.zero(out.ptr(), out.bytes())?;
        let decode: Vec<&AttnSeq> = meta.seqs.iter().filter(|s| s.query_len == 1).collect();
        let prefill: Vec<&AttnSeq> = meta.seqs.iter().filter(|s| s.query_len > 1).collect();
        if !decode.is_empty() {
            self.decode(&out, qkv, dims, cache, &decode)?;
        }
        if !prefill.is_empty() {
            self.prefill(&out, qkv, dims, cache, &prefill)?;
        }
        Ok(out)
    }

    fn decode(
        &self,
        out: &CudaTensor,
        qkv: &CudaTensor,
        dims: HeadDims,
        cache: &CudaKvCache,
        seqs: &[&AttnSeq],
    ) -> Result<()> {
        let dp = padded_dim(dims.head_dim, 256)?;
        let n = seqs.len();
        let (max_blocks, table) = tables(seqs);
        let mut meta: Vec<u32> = seqs.iter().map(|s| s.query_start as u32).collect();
        meta.extend(seqs.iter().map(|s| s.context_len as u32));
        meta.extend(table);
        let meta_buf = self.upload_u32(&meta, "decode_meta")?;
        let group = dims.q_heads / dims.kv_heads;
        let chunks = group.div_ceil(DECODE_HEADS);
        // A graph is captured for the longest context it may replay with.
        let max_ctx = match self.frozen_config() {
            Some(g) => g.max_blocks * g.block_size,
            None => seqs.iter().map(|s| s.context_len).max().unwrap_or(1),
        };
        let (partition, splits) = decode_partition(max_ctx, n * dims.kv_heads * chunks);
        let parts = if splits > 1 {
            let o = self.dev.alloc(n * dims.q_heads * splits * dp * 4)?;
            let ml = self.dev.alloc(n * dims.q_heads * splits * 2 * 4)?;
            Some((o, ml))
        } else {
            None
        };
        let (po, pml) = parts.as_ref().map_or((0, 0), |(o, ml)| (o.ptr(), ml.ptr()));
        let name = format!("attn_decode_d{dp}");
        let f = self.k.attention_fn(&name)?;
        let (outp, qkvp, kp, vp, mp) = (
            out.ptr(),
            qkv.ptr(),
            cache.k.ptr(),
            cache.v.ptr(),
            meta_buf.ptr(),
        );
        let ints = [
            n as i32,
            max_blocks as i32,
            dims.q_heads as i32,
            dims.kv_heads as i32,
            dims.head_dim as i32,
            qkv.cols as i32,
            cache.spec.block_size as i32,
            partition as i32,
        ];
        let scale = 1.0f32 / (dims.head_dim as f32).sqrt();
        let mut b = self.dev.stream.launch_builder(f);
        b.arg(&outp).arg(&qkvp).arg(&kp).arg(&vp).arg(&mp);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&scale).arg(&po).arg(&pml);
        let grid = (
            grid_dim(splits, "decode splits")?,
            grid_dim(dims.kv_heads * chunks, "decode heads")?,
            grid_dim(n, "decode seqs")?,
        );
        // Arguments in attn_decode_d*'s order; every block id and row was checked.
        launch(&self.dev, b, launch_cfg(grid, 128), &name)?;
        if splits > 1 {
            let f = self.k.attention_fn("attn_decode_combine")?;
            let ints = [
                n as i32,
                dims.q_heads as i32,
                dims.head_dim as i32,
                dp as i32,
                splits as i32,
            ];
            let mut b = self.dev.stream.launch_builder(f);
            b.arg(&outp).arg(&po).arg(&pml).arg(&mp);
            for i in &ints {
                b.arg(i);
            }
            let grid = (grid_dim(dims.q_heads, "heads")?, grid_dim(n, "seqs")?, 1);
            launch(&self.dev, b, launch_cfg(grid, 128), "attn_decode_combine")?;
        }
        Ok(())
    }

    fn prefill(
        &self,
        out: &CudaTensor,
        qkv: &CudaTensor,
        dims: HeadDims,
        cache: &CudaKvCache,
        seqs: &[&AttnSeq],
    ) -> Result<()> {
        let dp = padded_dim(dims.head_dim, 128)?;
        let n = seqs.len();
        let (max_blocks, table) = tables(seqs);
        let mut meta: Vec<u32> = seqs.iter().map(|s| s.query_start as u32).collect();
        meta.extend(seqs.iter().map(|s| s.query_len as u32));
        meta.extend(seqs.iter().map(|s| s.context_len as u32));
        meta.extend(table);
        let mut tiles = 0usize;
        for (i, s) in seqs.iter().enumerate() {
            for t in (0..s.query_len).step_by(PREFILL_BQ) {
                meta.extend([i as u32, t as u32]);
                tiles += 1;
            }
        }
        let meta_buf = self.upload_u32(&meta, "prefill_meta")?;
        let name = format!("attn_prefill_d{dp}");
        let f = self.k.attention_fn(&name)?;
        let (outp, qkvp, kp, vp, mp) = (
            out.ptr(),
            qkv.ptr(),
            cache.k.ptr(),
            cache.v.ptr(),
            meta_buf.ptr(),
        );
        let ints = [
            n as i32,
            max_blocks as i32,
            dims.q_heads as i32,
            dims.kv_heads as i32,
            dims.head_dim as i32,
            qkv.cols as i32,
            cache.spec.block_size as i32,
        ];
        let scale = 1.0f32 / (dims.head_dim as f32).sqrt();
        let mut b = self.dev.stream.launch_builder(f);
        b.arg(&outp).arg(&qkvp).arg(&kp).arg(&vp).arg(&mp);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&scale);
        let grid = (
            grid_dim(tiles, "prefill tiles")?,
            grid_dim(dims.q_heads, "heads")?,
            1,
        );
        // Arguments in attn_prefill_d*'s order; every block id and row was checked.
        launch(&self.dev, b, launch_cfg(grid, 128), &name)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_widths_and_partitions() {
        assert_eq!(padded_dim(24, 128).unwrap(), 32);
        assert_eq!(padded_dim(128, 128).unwrap(), 128);
        assert_eq!(padded_dim(256, 256).unwrap(), 256);
        assert!(padded_dim(256, 128).is_err());
        assert!(padded_dim(20, 256).is_err());
        // Few blocks: short partitions; many: long ones; never more than MAX_SPLITS.
        assert_eq!(decode_partition(1500, 8), (256, 6));
        assert_eq!(decode_partition(1500, 512), (512, 3));
        assert_eq!(decode_partition(1, 8), (256, 1));
        let (p, n) = decode_partition(131_072, 8);
        assert!(n <= MAX_SPLITS && p * n >= 131_072 && p.is_multiple_of(64));
    }
}
