//! The reference backend: plain f32 on the CPU, written for clarity over speed
//! (the matrix products go through `matrixmultiply`).

use std::sync::Arc;

use super::{AttentionMeta, Backend, HeadDims, HostTensor, KvCacheSpec, ThreadComm};
use crate::error::{Error, Result};
use crate::kv::BlockId;

/// A row-major f32 matrix in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTensor {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

impl CpuTensor {
    fn zeros(rows: usize, cols: usize) -> Self {
        CpuTensor {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// One layer's paged K and V: `[num_blocks, block_size, kv_heads, head_dim]` each.
#[derive(Debug, Clone)]
pub struct CpuKvCache {
    /// Layout of both tensors.
    pub spec: KvCacheSpec,
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

/// The CPU backend of one tensor-parallel rank.
#[derive(Debug, Clone)]
pub struct CpuBackend {
    rank: usize,
    comm: Option<Arc<ThreadComm>>,
}

impl CpuBackend {
    /// A backend without tensor parallelism.
    pub fn new() -> Self {
        CpuBackend {
            rank: 0,
            comm: None,
        }
    }

    /// Rank `rank` of a thread group sharing `comm`.
    pub fn with_comm(rank: usize, comm: Arc<ThreadComm>) -> Self {
        CpuBackend {
            rank,
            comm: Some(comm),
        }
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn shape_err(op: &str, detail: String) -> Error {
    Error::Backend(format!("{op}: {detail}"))
}

/// Dot product with 8 independent partial sums (lets the compiler vectorize).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * inv);
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type KvCache = CpuKvCache;

    fn upload(&self, host: &HostTensor) -> Result<CpuTensor> {
        Ok(CpuTensor {
            rows: host.rows(),
            cols: host.cols(),
            data: host.data.clone(),
        })
    }

    fn to_host(&self, t: &CpuTensor) -> Result<HostTensor> {
        Ok(HostTensor::new(vec![t.rows, t.cols], t.data.clone()))
    }

    fn alloc_kv_cache(&self, spec: &KvCacheSpec) -> Result<CpuKvCache> {
        let n = spec.num_blocks * spec.block_elems();
        let (k, v) = (vec![0.0; n], vec![0.0; n]);
        // Huge pages for the caches (zeroed, so not yet touched): fewer TLB misses, and a
        // KV transfer reads them in fewer, larger pieces.
        for x in [&k, &v] {
            advise_huge_pages(bytemuck::cast_slice(x));
        }
        Ok(CpuKvCache { spec: *spec, k, v })
    }

    fn embedding(&self, table: &CpuTensor, ids: &[u32], vocab_offset: usize) -> Result<CpuTensor> {
        let mut out = CpuTensor::zeros(ids.len(), table.cols);
        for (i, &id) in ids.iter().enumerate() {
            let local = (id as usize).wrapping_sub(vocab_offset);
            if local < table.rows {
                out.data[i * table.cols..(i + 1) * table.cols].copy_from_slice(table.row(local));
            }
        }
        Ok(out)
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32) -> Result<CpuTensor> {
        if w.data.len() != x.cols {
            return Err(shape_err(
                "rms_norm",
                format!("weight {} vs row {}", w.data.len(), x.cols),
            ));
        }
        let mut out = CpuTensor::zeros(x.rows, x.cols);
        for r in 0..x.rows {
            let c = x.cols;
            rms_norm_row(x.row(r), &w.data, eps, &mut out.data[r * c..(r + 1) * c]);
        }
        Ok(out)
    }

    fn add_rms_norm(
        &self,
        x: &CpuTensor,
        residual: &mut CpuTensor,
        w: &CpuTensor,
        eps: f32,
    ) -> Result<CpuTensor> {
        if x.data.len() != residual.data.len() {
            return Err(shape_err("add_rms_norm", "x and residual differ".into()));
        }
        for (r, v) in residual.data.iter_mut().zip(&x.data) {
            *r += v;
        }
        self.rms_norm(residual, w, eps)
    }

    fn linear(&self, x: &CpuTensor, w: &CpuTensor) -> Result<CpuTensor> {
        if x.cols != w.cols {
            return Err(shape_err(
                "linear",
                format!("x [{}, {}] w [{}, {}]", x.rows, x.cols, w.rows, w.cols),
            ));
        }
        let (m, k, n) = (x.rows, x.cols, w.rows);
        let mut out = CpuTensor::zeros(m, n);
        if m == 0 || n == 0 {
            return Ok(out);
        }
        if m <= 16 {
            // Decode-sized products: matrixmultiply would repack all of w on every call, so
            // read each weight row once and dot it with every input row instead.
            for (j, wr) in w.data.chunks_exact(k).enumerate() {
                for i in 0..m {
                    out.data[i * n + j] = dot(&x.data[i * k..(i + 1) * k], wr);
                }
            }
            return Ok(out);
        }
        // SAFETY: the pointers cover m*k, n*k and m*n f32s as the strides describe; w is read
        // transposed (element (p, j) of the right operand is w[j][p]).
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                x.data.as_ptr(),
                k as isize,
                1,
                w.data.as_ptr(),
                1,
                k as isize,
                0.0,
                out.data.as_mut_ptr(),
                n as isize,
                1,
            );
        }
        Ok(out)
    }

    fn qk_norm_rope(
        &self,
        qkv: &mut CpuTensor,
        dims: HeadDims,
        q_norm: &CpuTensor,
        k_norm: &CpuTensor,
        eps: f32,
        rope: &CpuTensor,
        positions: &[u32],
    ) -> Result<()> {
        let d = dims.head_dim;
        if qkv.cols != dims.qkv_width() || positions.len() != qkv.rows || rope.cols != d {
            return Err(shape_err(
                "qk_norm_rope",
                format!("qkv [{}, {}] for {dims:?}", qkv.rows, qkv.cols),
            ));
        }
        let half = d / 2;
        let mut normed = vec![0.0f32; d];
        for (r, &pos) in positions.iter().enumerate() {
            let pos = pos as usize;
            if pos >= rope.rows {
                return Err(shape_err(
                    "qk_norm_rope",
                    format!("position {pos} beyond rope table {}", rope.rows),
                ));
            }
            let (cos, sin) = rope.row(pos).split_at(half);
            let row = &mut qkv.data[r * qkv.cols..(r + 1) * qkv.cols];
            for h in 0..dims.q_heads + dims.kv_heads {
                let w = if h < dims.q_heads {
                    &q_norm.data
                } else {
                    &k_norm.data
                };
                let head = &mut row[h * d..(h + 1) * d];
                rms_norm_row(head, w, eps, &mut normed);
                for j in 0..half {
                    let (x1, x2) = (normed[j], normed[j + half]);
                    head[j] = x1 * cos[j] - x2 * sin[j];
                    head[j + half] = x2 * cos[j] + x1 * sin[j];
                }
            }
        }
        Ok(())
    }

    fn silu_mul(&self, gate_up: &CpuTensor) -> Result<CpuTensor> {
        let i = gate_up.cols / 2;
        let mut out = CpuTensor::zeros(gate_up.rows, i);
        for r in 0..gate_up.rows {
            let (g, u) = gate_up.row(r).split_at(i);
            for (o, (g, u)) in out.data[r * i..(r + 1) * i].iter_mut().zip(g.iter().zip(u)) {
                *o = g / (1.0 + (-g).exp()) * u;
            }
        }
        Ok(out)
    }

    fn write_kv(
        &self,
        cache: &mut CpuKvCache,
        qkv: &CpuTensor,
        dims: HeadDims,
        slots: &[u32],
    ) -> Result<()> {
        let w = dims.kv_heads * dims.head_dim;
        let q_w = dims.q_heads * dims.head_dim;
        let capacity = cache.spec.num_blocks * cache.spec.block_size;
        if slots.len() != qkv.rows || w != cache.spec.kv_heads * cache.spec.head_dim {
            return Err(shape_err(
                "write_kv",
                format!("{} slots for {} rows", slots.len(), qkv.rows),
            ));
        }
        for (r, &slot) in slots.iter().enumerate() {
            let slot = slot as usize;
            if slot >= capacity {
                return Err(shape_err(
                    "write_kv",
                    format!("slot {slot} beyond cache of {capacity}"),
                ));
            }
            let row = qkv.row(r);
            cache.k[slot * w..(slot + 1) * w].copy_from_slice(&row[q_w..q_w + w]);
            cache.v[slot * w..(slot + 1) * w].copy_from_slice(&row[q_w + w..q_w + 2 * w]);
        }
        Ok(())
    }

    fn attention(
        &self,
        qkv: &CpuTensor,
        dims: HeadDims,
        cache: &CpuKvCache,
        meta: &AttentionMeta,
    ) -> Result<CpuTensor> {
        let d = dims.head_dim;
        let kv_w = dims.kv_heads * d;
        let group = dims.q_heads / dims.kv_heads;
        let bs = meta.block_size;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = CpuTensor::zeros(qkv.rows, dims.q_heads * d);
        let mut scores = Vec::new();
        for s in &meta.seqs {
            if s.context_len > s.block_table.len() * bs || s.query_len > s.context_len {
                return Err(shape_err(
                    "attention",
                    format!(
                        "block table of {} blocks for {} tokens",
                        s.block_table.len(),
                        s.context_len
                    ),
                ));
            }
            for i in 0..s.query_len {
                let row = s.query_start + i;
                let pos = s.context_len - s.query_len + i;
                for h in 0..dims.q_heads {
                    let q = &qkv.row(row)[h * d..(h + 1) * d];
                    let kv_off = (h / group) * d;
                    // Context positions 0..=pos, visited block by block through the table.
                    let bases = (0..=pos).step_by(bs).flat_map(|start| {
                        let block = s.block_table[start / bs] as usize;
                        (0..bs.min(pos + 1 - start))
                            .map(move |off| (block * bs + off) * kv_w + kv_off)
                    });
                    scores.clear();
                    scores.extend(bases.clone().map(|b| dot(q, &cache.k[b..b + d]) * scale));
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut denom = 0.0f32;
                    for sc in scores.iter_mut() {
                        *sc = (*sc - max).exp();
                        denom += *sc;
                    }
                    let o = &mut out.data[row * dims.q_heads * d + h * d..][..d];
                    for (b, p) in bases.zip(&scores) {
                        let p = p / denom;
                        for (o, v) in o.iter_mut().zip(&cache.v[b..b + d]) {
                            *o += p * v;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn gather_rows(&self, x: &CpuTensor, rows: &[usize]) -> Result<CpuTensor> {
        let mut out = CpuTensor::zeros(rows.len(), x.cols);
        for (i, &r) in rows.iter().enumerate() {
            if r >= x.rows {
                return Err(shape_err("gather_rows", format!("row {r} of {}", x.rows)));
            }
            out.data[i * x.cols..(i + 1) * x.cols].copy_from_slice(x.row(r));
        }
        Ok(out)
    }

    fn all_reduce(&self, x: &mut CpuTensor) -> Result<()> {
        if let Some(c) = &self.comm {
            c.all_reduce(self.rank, &mut x.data);
        }
        Ok(())
    }

    fn kv_block_bytes(&self, spec: &KvCacheSpec) -> usize {
        2 * spec.block_elems() * 4
    }

    fn kv_memory(&self, cache: &mut CpuKvCache) -> Option<super::KvMemory> {
        let span =
            |v: &mut Vec<f32>| (v.as_mut_ptr() as usize, std::mem::size_of_val(v.as_slice()));
        Some(super::KvMemory {
            k: span(&mut cache.k),
            v: span(&mut cache.v),
            block_bytes: cache.spec.block_elems() * 4,
            device: None,
        })
    }

    fn read_kv_blocks(&self, cache: &CpuKvCache, blocks: &[BlockId]) -> Result<Vec<u8>> {
        let n = cache.spec.block_elems();
        let mut out = Vec::with_capacity(blocks.len() * 2 * n * 4);
        for &b in blocks {
            let b = b as usize;
            if b >= cache.spec.num_blocks {
                return Err(shape_err(
                    "read_kv_blocks",
                    format!("block {b} of {}", cache.spec.num_blocks),
                ));
            }
            for t in [&cache.k, &cache.v] {
                // f32 as little-endian bytes: the in-memory layout on every target tandem builds for.
                out.extend_from_slice(bytemuck::cast_slice(&t[b * n..(b + 1) * n]));
            }
        }
        Ok(out)
    }

    fn write_kv_blocks(
        &self,
        cache: &mut CpuKvCache,
        blocks: &[BlockId],
        data: &[u8],
    ) -> Result<()> {
        let n = cache.spec.block_elems();
        if data.len() != blocks.len() * 2 * n * 4 {
            return Err(shape_err(
                "write_kv_blocks",
                format!("{} bytes for {} blocks", data.len(), blocks.len()),
            ));
        }
        for (&b, chunk) in blocks.iter().zip(data.chunks_exact(2 * n * 4)) {
            let b = b as usize;
            if b >= cache.spec.num_blocks {
                return Err(shape_err(
                    "write_kv_blocks",
                    format!("block {b} of {}", cache.spec.num_blocks),
                ));
            }
            let (k, v) = chunk.split_at(n * 4);
            for (dst, src) in [(&mut cache.k, k), (&mut cache.v, v)] {
                bytemuck::cast_slice_mut::<f32, u8>(&mut dst[b * n..(b + 1) * n])
                    .copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn all_gather_cols(&self, x: &CpuTensor) -> Result<CpuTensor> {
        match &self.comm {
            None => Ok(x.clone()),
            Some(c) => {
                let data = c.all_gather_cols(self.rank, &x.data, x.rows);
                let cols = data.len().checked_div(x.rows).unwrap_or(0);
                Ok(CpuTensor {
                    rows: x.rows,
                    cols,
                    data,
                })
            }
        }
    }
}

/// Asks for huge pages over the whole pages of `mem` (memory not yet touched, so the advice
/// takes effect): fewer TLB misses and page faults for large caches. Best effort.
pub(crate) fn advise_huge_pages(mem: &[u8]) {
    const PAGE: usize = 4096;
    let (start, end) = (mem.as_ptr() as usize, mem.as_ptr() as usize + mem.len());
    let first = start.next_multiple_of(PAGE);
    if end > first + PAGE {
        // SAFETY: advice over whole pages inside memory the caller's slice covers; an error
        // only means no huge pages.
        unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                (end - first) / PAGE * PAGE,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_blocks_round_trip_between_caches() {
        let be = CpuBackend::new();
        let spec = KvCacheSpec {
            num_blocks: 4,
            block_size: 2,
            kv_heads: 2,
            head_dim: 3,
        };
        let mut src = be.alloc_kv_cache(&spec).unwrap();
        for (i, x) in src.k.iter_mut().enumerate() {
            *x = i as f32 * 0.5 - 3.0;
        }
        for (i, x) in src.v.iter_mut().enumerate() {
            *x = 100.0 - i as f32;
        }
        let bytes = be.read_kv_blocks(&src, &[3, 1]).unwrap();
        assert_eq!(bytes.len(), 2 * be.kv_block_bytes(&spec));
        let mut dst = be.alloc_kv_cache(&spec).unwrap();
        be.write_kv_blocks(&mut dst, &[0, 2], &bytes).unwrap();
        let n = spec.block_elems();
        assert_eq!(dst.k[..n], src.k[3 * n..4 * n]);
        assert_eq!(dst.v[2 * n..3 * n], src.v[n..2 * n]);
        assert!(be.read_kv_blocks(&src, &[4]).is_err());
        assert!(be.write_kv_blocks(&mut dst, &[0], &bytes).is_err());
    }
}
