//! `tandem profile`: measures a worker's timing on its real executor (the same model and
//! engine flags as `tandem worker`) and writes the profile `tandem simulate --profile` reads:
//! prefill, decode and mixed step grids, the KV transfer through the real transfer service
//! on loopback, the host KV tier's copies, and a roofline fitted to the points for steps
//! beyond them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::ModelArgs;
use crate::backend::Backend;
use crate::engine::{EngineCore, EngineHandle, Executor, SamplingParams};
use crate::kv::KvCopy;
use crate::loader::{DeviceKind, LoadedModel, load_cpu, load_cuda};
use crate::sim::grid::Measured;
use crate::sim::hardware::{Gpu, ModelShape};
use crate::sim::measure::{Sweep, Sweeper, fit_roofline, grid_points};
use crate::sim::profile::Profile;
use crate::transfer::socket::TcpKv;
use crate::transfer::{KvSource, KvTransport, Reservation};
use crate::wire::convert::sampling_to_proto;
use crate::wire::proto::{self, worker_client::WorkerClient, worker_server::WorkerServer};
use crate::worker::kv_hub::KvEventHub;
use crate::worker::service::WorkerService;
use crate::worker::start::kv_layout;

/// Arguments of `tandem profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Where to write the profile (JSON).
    #[arg(long, default_value = "profile.json")]
    out: PathBuf,
    /// About how many points per axis of each grid.
    #[arg(long, default_value_t = 5)]
    points: usize,
    /// Timed steps per point (the median counts).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
}

/// Runs `tandem profile`.
pub fn profile(args: ProfileArgs) -> anyhow::Result<()> {
    args.model.pin_cpus()?;
    let mut spec = args.model.spec(false)?;
    if spec.host_kv_cache_bytes == 0 {
        // Room to time the host tier's copies on (256 MiB over all ranks).
        spec.host_kv_cache_bytes = 256 << 20;
    }
    match spec.device {
        DeviceKind::Cpu => run(args, load_cpu(&spec).context("loading the model")?),
        DeviceKind::Cuda => {
            // The profile is timings; the emulated device's mean nothing.
            #[cfg(feature = "cuda")]
            crate::backend::cuda::require_real_gpu(0, "profile --device cuda")?;
            run(args, load_cuda(&spec).context("loading the model")?)
        }
    }
}

fn run<B: Backend>(args: ProfileArgs, mut loaded: LoadedModel<B>) -> anyhow::Result<()> {
    let cfg = loaded.engine.config().clone();
    let layout = kv_layout(&loaded, args.model.tp);
    let mut sweep = Sweep::for_engine(&cfg, args.points);
    sweep.repeats = args.repeats.max(1);
    let transfers = transfer_sizes(&cfg);
    let bar = ProgressBar::new((sweep.steps() + transfers.len() * args.repeats) as u64);
    bar.set_style(
        ProgressStyle::with_template("profile {bar:40} {pos}/{len} steps {elapsed} (eta {eta})")
            .expect("static template"),
    );
    let started = Instant::now();
    let (prefill, decode, mixed) = {
        let mut s = Sweeper::new(&mut loaded.engine, |core| {
            let t = Instant::now();
            core.step().map_err(|f| f.error)?;
            Ok(t.elapsed().as_secs_f64())
        });
        let b = bar.clone();
        s.on_step = Box::new(move || b.inc(1));
        s.run(&sweep)?
    };
    // The roofline to extrapolate with: the model's byte and FLOP counts, its rates fitted.
    let dtype_bytes = layout.block_bytes as f64
        / (2.0 * cfg.block_size as f64 * layout.kv_heads_per_rank as f64 * layout.head_dim as f64);
    let shape = ModelShape::of(&loaded.config, dtype_bytes);
    let device = match args.model.device {
        super::DeviceArg::Cpu => Gpu::CPU_GUESS,
        super::DeviceArg::Cuda => crate::sim::hardware::H200,
    };
    let mut base = Profile::arithmetic(&shape, &device, args.model.tp);
    base.kv_capacity_tokens = cfg.num_blocks * cfg.block_size;
    let all = grid_points((&prefill, &decode, &mixed), sweep.mixed_context as f64);
    let mut fitted = fit_roofline(&base, &all);
    let short = (cfg.block_size)
        .min(prefill.x.last().copied().unwrap_or(1.0) as usize)
        .max(2);
    let step_of_short = prefill.at(short as f64, 0.0).0;
    let rank_block_bytes = layout.block_bytes as f64 * layout.num_layers as f64;
    let host_copy = measure_host_copies(&mut loaded.engine, rank_block_bytes, args.repeats)?;
    let (latency, bytes_per_s, overhead) = measure_transfers(
        loaded,
        layout,
        &transfers,
        args.repeats,
        &bar,
        (short, step_of_short),
    )?;
    bar.finish_and_clear();
    let name = format!(
        "{} TP{} on {} (measured by tandem profile in {:.0} s)",
        args.model.model_name(),
        args.model.tp,
        match args.model.device {
            super::DeviceArg::Cpu => format!("the CPU ({} threads)", cpus(&args.model)),
            super::DeviceArg::Cuda => "CUDA".into(),
        },
        started.elapsed().as_secs_f64()
    );
    fitted.name = name.clone();
    fitted.transfer_latency_s = latency;
    fitted.link_bandwidth = bytes_per_s;
    fitted.link_efficiency = 1.0;
    if let Some(bw) = host_copy {
        fitted.host_link_bandwidth = bw;
        fitted.host_link_efficiency = 1.0;
    }
    fitted.measured = Some(Measured {
        measured_on: name,
        prefill,
        decode,
        mixed,
        mixed_context: sweep.mixed_context as f64,
        transfer_latency_s: latency,
        transfer_bytes_per_s: bytes_per_s,
        request_overhead_s: overhead,
    });
    fitted.validate()?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&fitted)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let m = fitted.measured.as_ref().expect("set above");
    println!(
        "{}: {} grid points in {:.0} s; decode batch 1 {:.2} ms, prefill {} tokens {:.1} ms; \
         transfer {:.2} ms + {:.2} GB/s; host tier copies {:.2} GB/s per rank; a request's own \
         cost {:.2} ms; roofline {:.1} GB/s, \
         {:.1} GFLOP/s (attention at {:.2} of it), {:.2} ms a step",
        args.out.display(),
        m.prefill.x.len() * m.prefill.y.len()
            + m.decode.x.len() * m.decode.y.len()
            + m.mixed.x.len() * m.mixed.y.len(),
        started.elapsed().as_secs_f64(),
        m.decode.seconds[0][0] * 1e3,
        m.prefill.x.last().copied().unwrap_or(0.0),
        m.prefill.seconds.last().map_or(0.0, |r| r[0]) * 1e3,
        latency * 1e3,
        bytes_per_s / 1e9,
        fitted.host_link_bandwidth * fitted.host_link_efficiency / 1e9,
        overhead * 1e3,
        fitted.hbm_bandwidth / 1e9,
        fitted.matmul_flops / 1e9,
        fitted.attention_efficiency,
        fitted.step_overhead_s * 1e3,
    );
    Ok(())
}

fn cpus(m: &ModelArgs) -> usize {
    if m.cpus.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        m.cpus.len()
    }
}

/// Times the host tier's copies on the idle engine's executor: every host slot (at most as
/// many as device blocks) offloaded from device blocks and onboarded back into them, so the
/// cache's contents are unchanged; the median round over `repeats`. Returns each rank's
/// bytes per second (every rank copies its own shard at once), or None without a host tier.
fn measure_host_copies<E: Executor>(
    engine: &mut EngineCore<E>,
    rank_block_bytes: f64,
    repeats: usize,
) -> anyhow::Result<Option<f64>> {
    let cfg = engine.config();
    let n = cfg.host_kv_blocks.min(cfg.num_blocks) as u32;
    if n == 0 {
        return Ok(None);
    }
    let offload: Vec<KvCopy> = (0..n)
        .map(|i| KvCopy::Offload { block: i, slot: i })
        .collect();
    let onboard: Vec<KvCopy> = (0..n)
        .map(|i| KvCopy::Onboard { slot: i, block: i })
        .collect();
    let mut rates = Vec::new();
    for _ in 0..repeats.max(1) {
        for copies in [&offload, &onboard] {
            let t = Instant::now();
            engine
                .executor_mut()
                .copy_kv(copies)
                .context("timing the host tier's copies")?;
            rates.push(n as f64 * rank_block_bytes / t.elapsed().as_secs_f64());
        }
    }
    rates.sort_by(f64::total_cmp);
    Ok(Some(rates[rates.len() / 2]))
}

/// Prompt lengths (tokens) whose KV the transfer is timed on: up to a quarter of the cache.
fn transfer_sizes(cfg: &crate::config::EngineConfig) -> Vec<usize> {
    let bs = cfg.block_size;
    let most = (cfg.num_blocks / 4)
        .min((cfg.max_model_len - 2) / bs)
        .max(1);
    let mut v = Vec::new();
    let mut blocks = 1;
    while blocks < most {
        v.push(blocks * bs);
        blocks *= 4;
    }
    v.push(most * bs);
    v
}

/// Times KV pulls through the real transfer service on loopback: prefill a prompt (its
/// blocks held), pull them as a decode worker does, write them into a reservation. Then
/// times one-token generations of `short.0` tokens over gRPC, less their step (`short.1`):
/// what serving adds to a request. Returns the fitted (latency s, bytes/s) and that cost.
fn measure_transfers<B: Backend>(
    loaded: LoadedModel<B>,
    layout: proto::KvLayout,
    sizes: &[usize],
    repeats: usize,
    bar: &ProgressBar,
    short: (usize, f64),
) -> anyhow::Result<(f64, f64, f64)> {
    let memory = loaded.engine.executor().kv_memory();
    let engine = Arc::new(EngineHandle::spawn(loaded.engine)?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let timeout = crate::transfer::DEFAULT_TRANSFER_TIMEOUT;
        let svc = WorkerService::new(
            engine.clone(),
            Arc::new(KvEventHub::new()),
            proto::ModelInfoResponse::default(),
            layout.clone(),
            addr.clone(),
        )
        .with_kv_socket(
            std::net::TcpListener::bind("127.0.0.1:0")?,
            memory.clone(),
            &crate::wire::tls::TlsFiles::default(),
            false,
            timeout,
        )?;
        // The puller's side of the same socket: this engine pulls its own held blocks into
        // a reservation, as a decode worker would.
        let tcp = Arc::new(TcpKv::new(layout.clone(), memory, None, timeout));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WorkerServer::new(svc))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                ),
        );
        let mut c = WorkerClient::connect(format!("http://{addr}")).await?;
        let source_layout = c
            .get_kv_layout(proto::KvLayoutRequest {})
            .await?
            .into_inner();
        let vocab = engine.config().vocab_size as u32;
        let mut samples: Vec<(f64, f64)> = Vec::new();
        for (k, &tokens) in sizes.iter().enumerate() {
            for r in 0..repeats {
                let id = format!("transfer-{k}-{r}");
                let prompt: Vec<u32> = (0..tokens as u32 - 1)
                    .map(|i| (i * 7919 + k as u32 * 104_729 + r as u32 * 31) % vocab)
                    .collect();
                let sampling = greedy(2);
                let pre = c
                    .prefill(proto::GenerateRequest {
                        request_id: id.clone(),
                        prompt_token_ids: prompt.clone(),
                        sampling: Some(sampling),
                    })
                    .await?
                    .into_inner();
                let local = 1u64 << 50 | (k * repeats + r) as u64;
                let e = engine.clone();
                let n = prompt.len();
                let dst = tokio::task::spawn_blocking(move || e.reserve_kv(local, n)).await??;
                let (e, t, source_layout, a, i) = (
                    engine.clone(),
                    tcp.clone(),
                    source_layout.clone(),
                    addr.clone(),
                    id.clone(),
                );
                let src = pre.block_ids.clone();
                let started = Instant::now();
                let bytes = tokio::task::spawn_blocking(move || {
                    let source = KvSource {
                        addr: &a,
                        layout: &source_layout,
                        request_id: &i,
                        blocks: &src,
                    };
                    let into = Reservation {
                        engine: &e,
                        id: local,
                        blocks: &dst,
                    };
                    t.pull(&source, &into)
                })
                .await??;
                samples.push((bytes as f64, started.elapsed().as_secs_f64()));
                engine.cancel_reserved(local)?;
                c.release_kv(proto::ReleaseKvRequest { request_id: id })
                    .await?;
                bar.inc(1);
            }
        }
        let (latency, rate) = fit_line(&samples);
        let mut whole = Vec::new();
        for r in 0..repeats.max(1) * 3 {
            let prompt: Vec<u32> = (0..short.0 as u32)
                .map(|i| (i * 104_729 + r as u32 * 7919 + 13) % vocab)
                .collect();
            let t = Instant::now();
            let mut s = c
                .generate(proto::GenerateRequest {
                    request_id: format!("overhead-{r}"),
                    prompt_token_ids: prompt,
                    sampling: Some(greedy(1)),
                })
                .await?
                .into_inner();
            while s.message().await?.is_some() {}
            whole.push(t.elapsed().as_secs_f64());
        }
        whole.sort_by(f64::total_cmp);
        let overhead = (whole[whole.len() / 2] - short.1).max(0.0);
        Ok((latency, rate, overhead))
    })
}

/// Greedy sampling of exactly `n` tokens, as a gRPC request carries it.
fn greedy(n: usize) -> proto::SamplingParams {
    sampling_to_proto(&SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(n)
    })
}

/// Least squares t = a + bytes / rate over the samples: (a, rate).
fn fit_line(samples: &[(f64, f64)]) -> (f64, f64) {
    let n = samples.len() as f64;
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (x, y) in samples {
        sxx += (x - mx) * (x - mx);
        sxy += (x - mx) * (y - my);
    }
    let slope = if sxx > 0.0 {
        (sxy / sxx).max(1e-15)
    } else {
        my / mx.max(1.0)
    };
    let latency = (my - slope * mx).max(0.0);
    (latency, 1.0 / slope)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_through_transfer_times_is_fitted() {
        let pts: Vec<(f64, f64)> = [1e6, 4e6, 16e6]
            .iter()
            .map(|&b| (b, 0.002 + b / 2e9))
            .collect();
        let (lat, rate) = super::fit_line(&pts);
        assert!(
            (lat - 0.002).abs() < 1e-9 && (rate / 2e9 - 1.0).abs() < 1e-9,
            "{lat} {rate}"
        );
    }
}
