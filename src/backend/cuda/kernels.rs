//! The embedded kernel fatbins (compiled by build.rs from kernels/*.cu), loaded once per
//! device, and one typed launch function per kernel. Pointers are raw device addresses;
//! shapes are checked by the callers before they get here.

use std::collections::HashMap;

use cudarc::driver::{CudaFunction, LaunchArgs, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::device::{Device, cuda_err};
use crate::error::{Error, Result};

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Every kernel, by the module (file) that defines it.
const FUNCTIONS: &[(&str, &[&str])] = &[
    ("embedding", &["embedding_gather", "gather_rows"]),
    ("norm", &["rms_norm", "add_rms_norm"]),
    ("qk_norm_rope", &["qk_norm_rope"]),
    ("activation", &["silu_mul"]),
    (
        "kv_cache",
        &["write_kv", "kv_gather_blocks", "kv_scatter_blocks"],
    ),
    (
        "attention_decode",
        &[
            "attn_decode_d32",
            "attn_decode_d64",
            "attn_decode_d128",
            "attn_decode_d256",
            "attn_decode_combine",
        ],
    ),
    (
        "attention_prefill",
        &["attn_prefill_d32", "attn_prefill_d64", "attn_prefill_d128"],
    ),
    ("sampling", &["argmax_rows", "sample_top_k_top_p"]),
];

/// Threads of the row-wise kernels (norms, gathers).
const ROW_THREADS: u32 = 256;

/// The loaded kernels of one device.
pub struct Kernels {
    funcs: HashMap<&'static str, CudaFunction>,
}

fn cfg(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `b` unless the device is in a graph replay's dry run (which only refreshes the
/// graph's inputs: the launch was captured already).
pub(crate) fn launch(
    dev: &Device,
    mut b: LaunchArgs<'_>,
    cfg: LaunchConfig,
    name: &str,
) -> Result<()> {
    if dev.is_dry() {
        return Ok(());
    }
    // SAFETY: every caller pushes the arguments of its kernel's signature, in order, for
    // buffers it sized and indices it checked.
    unsafe { b.launch(cfg) }.map(drop).map_err(cuda_err(name))
}

/// A grid dimension from a count, refusing counts the hardware cannot launch.
pub(crate) fn grid_dim(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n < (1 << 31))
        .ok_or_else(|| Error::Backend(format!("{what}: {n} blocks is too many for one launch")))
}

impl Kernels {
    /// Loads every module into `dev`'s context.
    pub fn load(dev: &Device) -> Result<Self> {
        dev.bind()?;
        let mut funcs = HashMap::new();
        for &(module, names) in FUNCTIONS {
            let image = KERNEL_FATBINS
                .iter()
                .find(|(m, _)| *m == module)
                .map(|(_, bytes)| bytes)
                .ok_or_else(|| Error::Backend(format!("kernel module {module} not embedded")))?;
            // to_vec: a heap copy is 16-byte aligned, which the fatbin header needs (an
            // include_bytes! slice is only byte-aligned).
            let m = dev
                .ctx
                .load_module(Ptx::from_binary(image.to_vec()))
                .map_err(cuda_err(module))?;
            for &name in names {
                let f = m.load_function(name).map_err(cuda_err(name))?;
                funcs.insert(name, f);
            }
        }
        Ok(Kernels { funcs })
    }

    fn f(&self, name: &str) -> Result<&CudaFunction> {
        self.funcs
            .get(name)
            .ok_or_else(|| Error::Backend(format!("kernel {name} not loaded")))
    }

    /// `out[i] = table[ids[i] - vocab_offset]` or zeros (embedding.cu).
    #[allow(clippy::too_many_arguments)]
    pub fn embedding(
        &self,
        dev: &Device,
        out: u64,
        table: u64,
        ids: u64,
        n: usize,
        (rows, cols): (usize, usize),
        vocab_offset: usize,
    ) -> Result<()> {
        let (rows, cols, off) = (rows as i64, cols as i32, vocab_offset as i64);
        let f = self.f("embedding_gather")?;
        let mut b = dev.stream.launch_builder(f);
        b.arg(&out)
            .arg(&table)
            .arg(&ids)
            .arg(&rows)
            .arg(&cols)
            .arg(&off);
        let grid = (grid_dim(n, "embedding")?, 1, 1);
        launch(dev, b, cfg(grid, ROW_THREADS), "embedding_gather")?;
        Ok(())
    }

    /// `out[i] = x[rows[i]]` (embedding.cu).
    pub fn gather_rows(
        &self,
        dev: &Device,
        out: u64,
        x: u64,
        rows: u64,
        n: usize,
        cols: usize,
    ) -> Result<()> {
        let cols = cols as i32;
        let f = self.f("gather_rows")?;
        let mut b = dev.stream.launch_builder(f);
        b.arg(&out).arg(&x).arg(&rows).arg(&cols);
        let grid = (grid_dim(n, "gather_rows")?, 1, 1);
        launch(dev, b, cfg(grid, ROW_THREADS), "gather_rows")?;
        Ok(())
    }

    /// RMSNorm of `rows` rows (norm.cu); with `residual`, the fused add first.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm(
        &self,
        dev: &Device,
        out: u64,
        residual: Option<u64>,
        x: u64,
        w: u64,
        rows: usize,
        cols: usize,
        eps: f32,
    ) -> Result<()> {
        let cols = cols as i32;
        let grid = (grid_dim(rows, "rms_norm")?, 1, 1);
        match residual {
            None => {
                let f = self.f("rms_norm")?;
                let mut b = dev.stream.launch_builder(f);
                b.arg(&out).arg(&x).arg(&w).arg(&cols).arg(&eps);
                launch(dev, b, cfg(grid, ROW_THREADS), "rms_norm")?;
            }
            Some(res) => {
                let f = self.f("add_rms_norm")?;
                let mut b = dev.stream.launch_builder(f);
                b.arg(&out).arg(&res).arg(&x).arg(&w).arg(&cols).arg(&eps);
                launch(dev, b, cfg(grid, ROW_THREADS), "add_rms_norm")?;
            }
        }
        Ok(())
    }

    /// Per-head q/k RMSNorm and RoPE in place (qk_norm_rope.cu).
    #[allow(clippy::too_many_arguments)]
    pub fn qk_norm_rope(
        &self,
        dev: &Device,
        qkv: u64,
        (q_norm, k_norm, rope, positions): (u64, u64, u64, u64),
        tokens: usize,
        (q_heads, kv_heads, head_dim): (usize, usize, usize),
        qkv_cols: usize,
        eps: f32,
    ) -> Result<()> {
        const WARPS: usize = 4;
        let heads = q_heads + kv_heads;
        let grid = (
            grid_dim(tokens, "qk_norm_rope")?,
            grid_dim(heads.div_ceil(WARPS), "qk_norm_rope")?,
            1,
        );
        let (qh, kh, d, c) = (
            q_heads as i32,
            kv_heads as i32,
            head_dim as i32,
            qkv_cols as i32,
        );
        let f = self.f("qk_norm_rope")?;
        let mut b = dev.stream.launch_builder(f);
        b.arg(&qkv)
            .arg(&q_norm)
            .arg(&k_norm)
            .arg(&rope)
            .arg(&positions);
        b.arg(&qh).arg(&kh).arg(&d).arg(&c).arg(&eps);
        launch(dev, b, cfg(grid, 32 * WARPS as u32), "qk_norm_rope")?;
        Ok(())
    }

    /// `silu(gate) * up` (activation.cu).
    pub fn silu_mul(
        &self,
        dev: &Device,
        out: u64,
        input: u64,
        rows: usize,
        inter: usize,
    ) -> Result<()> {
        let chunks = rows * inter / 8;
        // Enough blocks to fill any current GPU; the kernel strides over the rest.
        let blocks = chunks.div_ceil(256).clamp(1, 4096);
        let (rows, inter) = (rows as i64, inter as i32);
        let f = self.f("silu_mul")?;
        let mut b = dev.stream.launch_builder(f);
        b.arg(&out).arg(&input).arg(&rows).arg(&inter);
        launch(dev, b, cfg((blocks as u32, 1, 1), 256), "silu_mul")?;
        Ok(())
    }

    /// Stores each row's k and v at its slot (kv_cache.cu).
    #[allow(clippy::too_many_arguments)]
    pub fn write_kv(
        &self,
        dev: &Device,
        (k_cache, v_cache): (u64, u64),
        qkv: u64,
        slots: u64,
        rows: usize,
        qkv_cols: usize,
        q_width: usize,
        kv_width: usize,
    ) -> Result<()> {
        let (c, q, kv) = (qkv_cols as i32, q_width as i32, kv_width as i32);
        let f = self.f("write_kv")?;
        let mut b = dev.stream.launch_builder(f);
        b.arg(&k_cache)
            .arg(&v_cache)
            .arg(&qkv)
            .arg(&slots)
            .arg(&c)
            .arg(&q)
            .arg(&kv);
        let grid = (grid_dim(rows, "write_kv")?, 1, 1);
        launch(dev, b, cfg(grid, 128), "write_kv")?;
        Ok(())
    }

    /// Packs (`gather`) or unpacks whole blocks for KV transfer (kv_cache.cu).
    pub fn kv_blocks(
        &self,
        dev: &Device,
        gather: bool,
        (k_cache, v_cache): (u64, u64),
        staging: u64,
        blocks: u64,
        (n, block_elems): (usize, usize),
    ) -> Result<()> {
        let name = if gather {
            "kv_gather_blocks"
        } else {
            "kv_scatter_blocks"
        };
        let elems = block_elems as i64;
        let f = self.f(name)?;
        let mut b = dev.stream.launch_builder(f);
        if gather {
            b.arg(&staging).arg(&k_cache).arg(&v_cache);
        } else {
            b.arg(&k_cache).arg(&v_cache).arg(&staging);
        }
        b.arg(&blocks).arg(&elems);
        let grid = (grid_dim(n, name)?, 2, 1);
        launch(dev, b, cfg(grid, 256), name)?;
        Ok(())
    }

    /// Greedy tokens of `rows` logits rows (sampling.cu).
    pub fn argmax(
        &self,
        dev: &Device,
        out: u64,
        logits: u64,
        rows: usize,
        vocab: usize,
    ) -> Result<()> {
        let v = vocab as i32;
        let f = self.f("argmax_rows")?;
        let mut b = dev.stream.launch_builder(f);
        b.arg(&out).arg(&logits).arg(&v);
        let grid = (grid_dim(rows, "argmax")?, 1, 1);
        launch(dev, b, cfg(grid, 1024), "argmax_rows")?;
        Ok(())
    }

    /// Temperature/top-k/top-p draws (sampling.cu); params are device arrays of `rows` each.
    pub fn sample(
        &self,
        dev: &Device,
        out: u64,
        logits: u64,
        (rows, vocab): (usize, usize),
        (temp, top_k, top_p, u): (u64, u64, u64, u64),
    ) -> Result<()> {
        let v = vocab as i32;
        let f = self.f("sample_top_k_top_p")?;
        let mut b = dev.stream.launch_builder(f);
        b.arg(&out)
            .arg(&logits)
            .arg(&v)
            .arg(&temp)
            .arg(&top_k)
            .arg(&top_p)
            .arg(&u);
        let grid = (grid_dim(rows, "sample")?, 1, 1);
        launch(dev, b, cfg(grid, 1024), "sample_top_k_top_p")?;
        Ok(())
    }

    /// Launches a kernel of the attention modules (see attention.rs for the arguments).
    pub(crate) fn attention_fn(&self, name: &str) -> Result<&CudaFunction> {
        self.f(name)
    }
}
