//! `tandem bench-kernels`: the CUDA kernel microbenchmarks at Qwen3-32B shapes.

use clap::Args;

/// Arguments of `tandem bench-kernels`.
#[derive(Debug, Args)]
pub struct BenchKernelsArgs {
    /// GPU to run on.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Tensor-parallel shards to measure (1: the full model, 2: one TP2 rank's shard).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    tp: Vec<usize>,
    /// Also write the markdown table here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Runs the benchmarks and prints a markdown table.
#[cfg(feature = "cuda")]
pub fn bench_kernels(args: BenchKernelsArgs) -> anyhow::Result<()> {
    use crate::backend::cuda::{CudaBackend, bench, require_real_gpu};
    use anyhow::Context;
    require_real_gpu(args.device, "bench-kernels")?;
    // 6 GiB of arena: every activation of an 8192-token step at TP1, with room to spare.
    let be = CudaBackend::single(args.device, 6 << 30).context("opening the GPU")?;
    let name = be
        .device()
        .ctx
        .name()
        .unwrap_or_else(|_| "unknown GPU".into());
    let ceilings = be.bench_ceilings()?;
    let mut rows = Vec::new();
    for &tp in &args.tp {
        if tp != 1 && tp != 2 {
            anyhow::bail!("--tp takes 1 and/or 2");
        }
        rows.extend(be.bench_kernels(tp, ceilings)?);
    }
    let text = format!("GPU: {name}\n\n{}", bench::table(ceilings, &rows));
    println!("{text}");
    if let Some(p) = &args.out {
        std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Without the cuda feature there is nothing to measure.
#[cfg(not(feature = "cuda"))]
pub fn bench_kernels(_args: BenchKernelsArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench-kernels: this tandem was built without the cuda feature")
}
