//! `tandem profile`: measures a worker's timing on its real executor (the same model and
//! engine flags as `tandem worker`) and writes the profile `tandem simulate --profile` reads:
//! prefill, decode and mixed step grids, the KV transfer through the real transfer service
//! on loopback, the host KV tier's copies, a roofline fitted to the points for steps
//! beyond them, and the serving path around the engine under load (profile_serving.rs).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::ModelArgs;
use super::profile_serving::{
    Deployment, PROMPT, STEPS_BURSTS, StepsLoad, measure_serving, step_levels_of,
};
use super::profile_transfer::measure_transfers;
use crate::backend::Backend;
use crate::engine::hooks::Hooked;
use crate::engine::{EngineCore, Executor};
use crate::kv::KvCopy;
use crate::loader::{DeviceKind, LoadedModel, load_cpu, load_cuda};
use crate::sim::grid::Measured;
use crate::sim::hardware::{Gpu, ModelShape};
use crate::sim::measure::{Sweep, Sweeper, fit_roofline, grid_points};
use crate::sim::profile::Profile;
use crate::sim::serving::ServingCosts;
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
    /// Time only the reference steps (a fixed prefill and decode step, each the median of
    /// --repeats) and write them to --out: `tandem calibrate` reads the machine's speed with
    /// them around its profile passes and its real runs.
    #[arg(long)]
    reference: bool,
    /// Leave the serving path (client, frontend, gRPC) unmeasured, at zero.
    #[arg(long)]
    no_serving: bool,
    /// The two cores of the disaggregated serving load, its prefill worker on the first and
    /// its decode worker on the second, e.g. 0,1 (a CPU device's). Default: the first two of
    /// --cpus, or 0,1 without --cpus on a machine of two cores or more. With one core the
    /// disaggregated path is not measured, and the simulator charges the aggregated one for
    /// it.
    #[arg(long, value_delimiter = ',')]
    disagg_cpus: Vec<usize>,
    /// Bursts of 4 requests in the steps load, which measures how much longer the steps run
    /// under serving than the grids price them (each deployment's step level). 0 leaves the
    /// levels unmeasured: the simulator prices the steps at the grids' price.
    #[arg(long, default_value_t = STEPS_BURSTS)]
    steps_bursts: usize,
}

/// The cores of the disaggregated serving load, if there are two to run it on.
fn disagg_cores(args: &ProfileArgs) -> anyhow::Result<Option<[usize; 2]>> {
    let cores = if !args.disagg_cpus.is_empty() {
        &args.disagg_cpus
    } else if !args.model.cpus.is_empty() {
        &args.model.cpus
    } else if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
        return Ok(Some([0, 1]));
    } else {
        return Ok(None);
    };
    match cores.as_slice() {
        [a, b, ..] if a != b => Ok(Some([*a, *b])),
        [_] if args.disagg_cpus.is_empty() => Ok(None),
        _ => bail!("--disagg-cpus: give two different cores, e.g. 0,1"),
    }
}

/// Runs `tandem profile`.
pub fn profile(args: ProfileArgs) -> anyhow::Result<()> {
    let mut spec = args.model.spec(false)?;
    if spec.device == DeviceKind::Cuda {
        // The profile is timings; the emulated device's mean nothing. Refused before the
        // serving path's workers start.
        #[cfg(feature = "cuda")]
        crate::backend::cuda::require_real_gpu(0, "profile --device cuda")?;
        #[cfg(not(feature = "cuda"))]
        load_cuda(&spec).context("loading the model")?;
    }
    // First, before this process pins itself: the frontend and the client it starts must
    // run where they would beside a worker. Their CPU shares a CPU worker's cores; a GPU
    // worker's host has cores to spare for them.
    let cpu = args.model.device == super::DeviceArg::Cpu;
    let disagg_cores = disagg_cores(&args)?;
    let served = if args.no_serving || args.reference {
        Served::default()
    } else {
        eprintln!("profile: timing the serving path under load");
        let one = measure_serving(&args.model, cpu, Deployment::Aggregated, args.steps_bursts)
            .context("measuring the serving path")?;
        // A GPU host would need two devices for it; a CPU one, two cores.
        let disagg = match disagg_cores {
            Some(cores) if cpu => {
                eprintln!("profile: timing the disaggregated serving path under load");
                let (costs, load) = measure_serving(
                    &args.model,
                    cpu,
                    Deployment::Disaggregated(cores),
                    args.steps_bursts,
                )
                .context("measuring the disaggregated serving path")?;
                Some((costs, load, cores))
            }
            _ => None,
        };
        Served {
            serving: one.0,
            steps: one.1,
            disagg,
        }
    };
    args.model.pin_cpus()?;
    if spec.host_kv_cache_bytes == 0 {
        // Room to time the host tier's copies on (256 MiB over all ranks).
        spec.host_kv_cache_bytes = 256 << 20;
    }
    match spec.device {
        DeviceKind::Cpu => run(args, load_cpu(&spec).context("loading the model")?, served),
        DeviceKind::Cuda => run(args, load_cuda(&spec).context("loading the model")?, served),
    }
}

/// What the serving loads measured: the aggregated deployment's costs and steps load, and
/// the disaggregated pair's with its cores, where it was measured.
#[derive(Default)]
struct Served {
    serving: ServingCosts,
    steps: Option<StepsLoad>,
    disagg: Option<(ServingCosts, Option<StepsLoad>, [usize; 2])>,
}

fn run<B: Backend>(
    args: ProfileArgs,
    loaded: LoadedModel<B>,
    served: Served,
) -> anyhow::Result<()> {
    let Served {
        serving,
        steps,
        disagg,
    } = served;
    let (serving_disagg, disagg_steps) = match disagg {
        Some((costs, load, cores)) => (Some(costs), load.map(|l| (l, cores))),
        None => (None, None),
    };
    let cfg = loaded.engine.config().clone();
    let layout = kv_layout(&loaded, args.model.tp);
    // The steps are timed on the executor a worker with these flags runs: its test hooks
    // (a known step delay) included.
    let hooks = super::worker::hooks_of(&args.model, &loaded)?;
    let config = loaded.config;
    let mut engine = loaded.engine.map_executor(|e| Hooked::new(e, hooks));
    if args.reference {
        return reference(&args, &mut engine);
    }
    let mut sweep = Sweep::for_engine(&cfg, args.points);
    sweep.repeats = args.repeats.max(1);
    let transfers = transfer_sizes(&cfg);
    let bar = ProgressBar::new((sweep.steps() + 2 * transfers.len() * args.repeats) as u64);
    // The KV transfer's CPU shares a CPU worker's core with its engine.
    let cpu_shared = args.model.device == super::DeviceArg::Cpu && !args.no_serving;
    bar.set_style(
        ProgressStyle::with_template("profile {bar:40} {pos}/{len} steps {elapsed} (eta {eta})")
            .expect("static template"),
    );
    let started = Instant::now();
    let (prefill, decode, mixed) = {
        let mut s = Sweeper::new(&mut engine, |core| {
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
    let mut engine = engine.map_executor(Hooked::into_inner);
    let shape = ModelShape::of(&config, dtype_bytes);
    let device = match args.model.device {
        super::DeviceArg::Cpu => Gpu::CPU_GUESS,
        super::DeviceArg::Cuda => crate::sim::hardware::H200,
    };
    let mut base = Profile::arithmetic(&shape, &device, args.model.tp);
    base.kv_capacity_tokens = cfg.num_blocks * cfg.block_size;
    let all = grid_points((&prefill, &decode, &mixed), sweep.mixed_context as f64);
    let mut fitted = fit_roofline(&base, &all);
    let rank_block_bytes = layout.block_bytes as f64 * layout.num_layers as f64;
    let host_copy = measure_host_copies(&mut engine, rank_block_bytes, args.repeats)?;
    let t = measure_transfers(engine, layout, &transfers, args.repeats, &bar)?;
    let (latency, bytes_per_s) = (t.latency_s, t.bytes_per_s);
    let (mut serving, mut serving_disagg) = (serving, serving_disagg);
    if cpu_shared {
        for s in std::iter::once(&mut serving).chain(serving_disagg.as_mut()) {
            s.busy_transfer_latency_s = t.busy_latency_s;
            s.busy_transfer_bytes_per_s = t.busy_bytes_per_s;
            s.transfer_cpu_source_per_byte = t.source_cpu_per_byte;
            s.transfer_cpu_dest_per_byte = t.dest_cpu_per_byte;
        }
        // The decode worker's CPU per request held its pull's, which the simulator charges
        // by the byte: it counts once.
        if let Some(d) = &mut serving_disagg {
            let pulled = PROMPT as f64 * base.transfer_bytes_per_token;
            d.decode_cpu_per_request_s =
                (d.decode_cpu_per_request_s - pulled * t.dest_cpu_per_byte).max(0.0);
        }
    }
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
    });
    fitted.serving = serving;
    fitted.serving_disagg = serving_disagg;
    // The steps' level under serving, now that the grids price them: each steps load
    // against the simulator's run of it, with the served workers' engine (no host tier
    // unless asked for).
    let mut served_engine = cfg.clone();
    if args.model.host_kv_cache_gib <= 0.0 {
        served_engine.host_kv_blocks = 0;
    }
    served_engine.kv_hold_timeout = std::time::Duration::from_secs_f64(args.model.kv_hold_timeout);
    if let Some(load) = &steps {
        step_levels_of(&fitted, Deployment::Aggregated, load, &served_engine)
            .context("pricing the steps load")?
            .set(&mut fitted.serving);
    }
    if let Some((load, cores)) = &disagg_steps {
        let terms = step_levels_of(
            &fitted,
            Deployment::Disaggregated(*cores),
            load,
            &served_engine,
        )
        .context("pricing the disaggregated steps load")?;
        if let Some(s) = &mut fitted.serving_disagg {
            terms.set(s);
        }
    }
    let serving = fitted.serving;
    fitted.validate()?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&fitted)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let m = fitted.measured.as_ref().expect("set above");
    println!(
        "{}: {} grid points in {:.0} s; decode batch 1 {:.2} ms, prefill {} tokens {:.1} ms; \
         transfer {:.2} ms + {:.2} GB/s; host tier copies {:.2} GB/s per rank; serving path \
         {:.2} ms in, {:.2} ms a token out, CPU {:.0} us a token (worker) + {:.0} us (shared), \
         {:.0} us + {:.0} us a token between steps; roofline {:.1} GB/s, \
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
        serving.entry_s() * 1e3,
        (serving.token_out_s + serving.relay_s + serving.chunk_s + serving.to_client_s) * 1e3,
        serving.worker_cpu_per_token_s * 1e6,
        serving.shared_cpu_per_token_s * 1e6,
        serving.engine_gap_s * 1e6,
        serving.engine_gap_per_token_s * 1e6,
        fitted.hbm_bandwidth / 1e9,
        fitted.matmul_flops / 1e9,
        fitted.attention_efficiency,
        fitted.step_overhead_s * 1e3,
    );
    if let Some(d) = &fitted.serving_disagg {
        println!(
            "{}: disaggregated serving path {:.2} ms in, {:.2} ms from the first token's relay to \
             the decode call; CPU {:.0} us a request (prefill worker), {:.0} us a request + {:.0} \
             us a token (decode worker), {:.0} us a request + {:.0} us a token (shared)",
            args.out.display(),
            d.entry_s() * 1e3,
            d.decode_call_s * 1e3,
            d.worker_cpu_per_request_s * 1e6,
            d.decode_cpu_per_request_s * 1e6,
            d.worker_cpu_per_token_s * 1e6,
            d.shared_cpu_per_request_s * 1e6,
            d.shared_cpu_per_token_s * 1e6,
        );
    }
    if let Some((p, d)) = fitted.serving.step_levels() {
        let pair = fitted
            .serving_disagg
            .as_ref()
            .and_then(|s| s.step_levels())
            .map_or(String::new(), |(p, d)| {
                let resume = fitted.serving_disagg.map_or(0.0, |s| s.engine_resume_s);
                format!(
                    ", x{p:.2} / x{d:.2} + {:.2} ms on the disaggregated pair",
                    resume * 1e3
                )
            });
        println!(
            "{}: steps under serving (their time over the simulator's, with prompts / decodes \
             only, + a step after an idle engine): x{p:.2} / x{d:.2} + {:.2} ms on one \
             worker{pair}",
            args.out.display(),
            fitted.serving.engine_resume_s * 1e3
        );
    }
    Ok(())
}

fn cpus(m: &ModelArgs) -> usize {
    if m.cpus.is_empty() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        m.cpus.len()
    }
}

/// Times the reference steps and writes them to `--out`.
fn reference<E: Executor>(args: &ProfileArgs, engine: &mut EngineCore<E>) -> anyhow::Result<()> {
    let r = Sweeper::new(engine, |core| {
        let t = Instant::now();
        core.step().map_err(|f| f.error)?;
        Ok(t.elapsed().as_secs_f64())
    })
    .reference(args.repeats)?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&r)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{}: reference prefill of {} tokens {:.2} ms, decode step of {} at {} tokens {:.3} ms",
        args.out.display(),
        r.prefill_tokens,
        r.prefill_s * 1e3,
        r.decode_batch,
        r.decode_context,
        r.decode_s * 1e3
    );
    Ok(())
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
