//! `tandem simulate`: the trace through simulated deployments, and the A/B of the two.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use super::frontend::RouterArg;
use super::preset::{GpuArg, Preset, Recipe, model_profile};
use super::trace::{SynthArgs, TraceArgs};
use crate::config::EngineConfig;
use crate::replay::metrics::{RequestRecord, Slo, summarize};
use crate::router::Policy;
use crate::sim::report::{Arm, json, table};
use crate::sim::{ClusterConfig, Profile, SimOutcome, Topology, plan, plot, simulate};

/// Which deployments to simulate.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Deployment {
    /// Aggregated workers behind the baseline router.
    Baseline,
    /// Prefill and decode workers behind the disaggregated router.
    Disagg,
    /// Both, side by side.
    Both,
}

/// Arguments of `tandem simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    trace: TraceArgs,
    /// baseline, disagg, or both (the A/B).
    #[arg(long, value_enum, default_value = "both")]
    deployment: Deployment,
    /// Aggregated workers of the baseline.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Prefill workers of the disaggregated deployment.
    #[arg(long, default_value_t = 6)]
    prefill: usize,
    /// Decode workers of the disaggregated deployment.
    #[arg(long, default_value_t = 2)]
    decode: usize,
    /// Router of the baseline.
    #[arg(long, value_enum, default_value = "round-robin")]
    baseline_router: RouterArg,
    /// Router of the disaggregated deployment's prefill pool.
    #[arg(long, value_enum, default_value = "kv")]
    disagg_router: RouterArg,
    /// Softmax temperature of the kv policy (0: always the cheapest worker).
    #[arg(long, default_value_t = 0.0)]
    router_temperature: f64,
    /// The kv policy's credit for a prefix block in a worker's host tier (1 for one on the
    /// device).
    #[arg(long, default_value_t = crate::router::DEFAULT_HOST_BLOCK_WEIGHT)]
    router_host_block_weight: f64,
    /// The kv policy's cost of a prompt block the worker must compute, against 1 for a block
    /// of a request in flight there (NVIDIA Dynamo's overlap_score_weight).
    #[arg(long, default_value_t = crate::router::DEFAULT_OVERLAP_WEIGHT)]
    router_overlap_weight: f64,
    /// Host memory per worker for its host KV tier, GiB (0: none); workers with a prefix
    /// cache offload evicted blocks there and onboard hits from it.
    #[arg(long, default_value_t = 0.0)]
    host_kv_gib: f64,
    /// Tensor-parallel GPUs per worker (for the default profile); with --sweep, a list of
    /// sizes to try, e.g. 1,2,4.
    #[arg(
        long = "tensor-parallel-size",
        visible_alias = "tp",
        value_delimiter = ',',
        default_value = "2"
    )]
    tp: Vec<usize>,
    /// Plan instead of A/B: simulate every prefill:decode split of --gpus, and the
    /// aggregated baseline, under round-robin and KV routing, ranked by goodput.
    #[arg(long)]
    sweep: bool,
    /// GPUs the sweep splits.
    #[arg(long, default_value_t = 16, requires = "sweep")]
    gpus: usize,
    /// Timing profile (JSON, the fields `--out` writes under "profile"); default: Qwen3-32B
    /// on H200 from arithmetic.
    #[arg(long, conflicts_with = "model_config")]
    profile: Option<PathBuf>,
    /// A reference deployment: its model, GPUs, workers, engine settings, synthesized trace
    /// and SLA, from its recipe (the flags it sets cannot be given with it). Its trace is
    /// derived from --trace as the recipe's `datagen synthesize` does (prefixes and prompts
    /// lengthened, capped in length), so --trace is the source trace, not a derived one.
    #[arg(long, value_enum, conflicts_with_all = [
        "workers", "prefill", "decode", "tp", "gpus", "profile", "model_config", "gpu",
        "attention_dp", "block_size", "max_model_len", "max_num_seqs",
        "max_num_batched_tokens", "no_prefix_caching", "goodput",
    ])]
    preset: Option<Preset>,
    /// The arithmetic profile of the model this config.json describes (a dense transformer,
    /// or a mixture of experts with latent attention), on --gpu.
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// The GPU of --model-config's workers.
    #[arg(long, value_enum, default_value = "h200")]
    gpu: GpuArg,
    /// Attention data-parallel ranks per worker (each with its own KV cache; MoE models run
    /// DEP: as many as --tensor-parallel-size).
    #[arg(long, default_value_t = 1)]
    attention_dp: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 64)]
    block_size: usize,
    /// KV blocks per worker (default: the profile's capacity over the block size).
    #[arg(long)]
    kv_blocks: Option<usize>,
    /// Longest sequence (the trace needs 128,195 tokens).
    #[arg(long, default_value_t = 131_072)]
    max_model_len: usize,
    /// Most sequences running at once per worker.
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    /// Token budget of one step.
    #[arg(long, default_value_t = 8192)]
    max_num_batched_tokens: usize,
    /// Most prompt tokens one sequence gets per step (0: no cap below the step budget).
    #[arg(long, default_value_t = 0)]
    long_prefill_token_threshold: usize,
    /// Turn off prefix caching.
    #[arg(long)]
    no_prefix_caching: bool,
    /// Goodput thresholds in AIPerf's syntax.
    #[arg(
        long,
        default_value = "time_to_first_token:2000 inter_token_latency:25"
    )]
    goodput: String,
    /// Synthesized prompts use token ids below this (Qwen's ordinary tokens).
    #[arg(long, default_value_t = 151_643)]
    vocab: u32,
    /// Seed of the router's draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write ab.json, per-deployment request records and the TTFT/ITL CDF plots here (with
    /// --sweep: plan.json and the plots of goodput and p90 latencies against the split;
    /// default ./tandem-plan).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn policy(r: RouterArg, args: &SimulateArgs) -> Policy {
    match r {
        RouterArg::RoundRobin => Policy::RoundRobin,
        RouterArg::Kv => Policy::Kv {
            temperature: args.router_temperature,
            host_weight: args.router_host_block_weight,
            overlap_weight: args.router_overlap_weight,
        },
    }
}

/// Runs `tandem simulate`.
pub fn simulate_cmd(mut args: SimulateArgs) -> anyhow::Result<()> {
    let recipe = args.preset.map(Preset::recipe);
    if let Some(r) = &recipe {
        args.workers = r.workers;
        (args.prefill, args.decode) = r.split;
        args.tp = vec![r.gpus_per_worker];
        args.attention_dp = r.gpus_per_worker;
        args.gpu = r.gpu;
        args.gpus = r.workers * r.gpus_per_worker;
        args.block_size = r.block_size;
        args.max_model_len = r.max_model_len;
        args.max_num_batched_tokens = r.max_num_batched_tokens;
        args.goodput = r.goodput.to_string();
    }
    let recipe = recipe.as_ref();
    if args.workers == 0 || args.prefill == 0 || args.decode == 0 || args.tp.contains(&0) {
        bail!("--workers, --prefill, --decode and --tensor-parallel-size must be positive");
    }
    if args.block_size == 0 || args.vocab == 0 {
        bail!("--block-size and --vocab must be positive");
    }
    let slo = Slo::parse(&args.goodput)?;
    policy(RouterArg::Kv, &args)
        .validate()
        .map_err(anyhow::Error::msg)?;
    if args.sweep {
        return sweep(&args, &slo, recipe);
    }
    let [tp] = args.tp[..] else {
        bail!("a list of --tensor-parallel-size values needs --sweep");
    };
    let profile = load_profile(&args, tp, recipe)?;
    let (trace, trace_block) = load_trace(&args, recipe)?;
    let roles = engines(&args, &profile, recipe);
    let base = |name: &str, topology, router| {
        cluster_config(
            &args,
            name.to_string(),
            (topology, policy(router, &args)),
            &roles,
            trace_block,
        )
    };
    let mut configs = Vec::new();
    if args.deployment != Deployment::Disagg {
        configs.push(base(
            "baseline",
            Topology::Aggregated {
                workers: args.workers,
            },
            args.baseline_router,
        ));
    }
    if args.deployment != Deployment::Baseline {
        configs.push(base(
            "disagg",
            Topology::Disaggregated {
                prefill: args.prefill,
                decode: args.decode,
            },
            args.disagg_router,
        ));
    }
    eprintln!(
        "simulating {} requests; profile: {}; {} KV blocks of {} tokens per worker",
        trace.len(),
        profile.name,
        roles.0.num_blocks,
        roles.0.block_size
    );
    let profile = Arc::new(profile);
    let mut runs: Vec<(String, SimOutcome)> = Vec::new();
    for c in &configs {
        let o = simulate(c, profile.clone(), &trace)
            .with_context(|| format!("simulating {}", c.name))?;
        eprintln!(
            "{}: {} steps, simulated {:.0} s in {:.2} s of wall time",
            c.name, o.steps, o.duration_s, o.wall_s
        );
        runs.push((c.name.clone(), o));
    }
    let summaries: Vec<_> = runs
        .iter()
        .map(|(_, o)| summarize(&o.records, o.duration_s, Some(&slo)))
        .collect();
    let arms: Vec<Arm> = runs
        .iter()
        .zip(&summaries)
        .map(|((name, outcome), summary)| Arm {
            name,
            outcome,
            summary,
        })
        .collect();
    print!("{}", table(&arms));
    if let Some(dir) = &args.out {
        write_out(dir, &arms, &profile)?;
    }
    Ok(())
}

/// The profile of a `tp`-GPU worker: --profile's, the preset's or --model-config's model's,
/// or the arithmetic one of Qwen3-32B on H200.
fn load_profile(
    args: &SimulateArgs,
    tp: usize,
    recipe: Option<&Recipe>,
) -> anyhow::Result<Profile> {
    let profile = match (&args.profile, recipe, &args.model_config) {
        (Some(p), _, _) => Profile::load(p)?,
        (None, Some(r), _) => model_profile(r.model_config, r.gpu, tp, args.attention_dp)?,
        (None, None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            model_profile(&text, args.gpu, tp, args.attention_dp)
                .with_context(|| path.display().to_string())?
        }
        (None, None, None) => {
            if args.attention_dp != 1 {
                bail!("--attention-dp needs --model-config (Qwen3-32B runs tensor-parallel)");
            }
            Profile::arithmetic(
                &crate::sim::hardware::QWEN3_32B,
                &crate::sim::hardware::H200,
                tp,
            )
        }
    };
    profile.validate()?;
    Ok(profile)
}

/// The trace: --trace and its scaling, or for a preset, the trace its recipe synthesizes
/// from it (--max-requests of them).
fn load_trace(
    args: &SimulateArgs,
    recipe: Option<&Recipe>,
) -> anyhow::Result<(Vec<crate::replay::trace::TraceRequest>, usize)> {
    let Some(r) = recipe else {
        return args.trace.load();
    };
    let (prefix, prompt, max_isl, n) = r.synthesis;
    let derived = SynthArgs {
        trace: TraceArgs {
            max_requests: None,
            ..args.trace.clone()
        },
        num_requests: args.trace.max_requests.unwrap_or(n),
        prefix_len_multiplier: prefix,
        prompt_len_multiplier: prompt,
        osl_multiplier: 1.0,
        max_isl: Some(max_isl),
        speedup_ratio: 1.0,
        seed: args.seed,
        out: None,
    }
    .synthesize();
    derived.with_context(|| {
        format!(
            "the preset derives its trace from --trace as its recipe does (prefix lengths \
             x{prefix}, prompt lengths x{prompt}, at most {max_isl} input tokens): give it \
             the source trace, not one already derived"
        )
    })
}

/// The aggregated (and default) workers' engine, then the prefill and decode workers' where
/// they differ.
type RoleEngines = (EngineConfig, Option<EngineConfig>, Option<EngineConfig>);

/// One simulated deployment of the flags' settings: `name`, its arrangement and routing, and
/// its workers' engines.
fn cluster_config(
    args: &SimulateArgs,
    name: String,
    (topology, policy): (Topology, Policy),
    (engine, prefill_engine, decode_engine): &RoleEngines,
    trace_block: usize,
) -> ClusterConfig {
    ClusterConfig {
        name,
        topology,
        policy,
        engine: engine.clone(),
        prefill_engine: prefill_engine.clone(),
        decode_engine: decode_engine.clone(),
        speedup: 1.0,
        trace_block,
        vocab: args.vocab,
        seed: args.seed,
        timelines: false,
    }
}

/// The engines of aggregated workers, and of prefill and decode workers where they differ.
fn engines(args: &SimulateArgs, profile: &Profile, recipe: Option<&Recipe>) -> RoleEngines {
    let base = engine_config(args, profile);
    match recipe {
        Some(r) => {
            let (agg, prefill, decode) = r.engines(&base);
            (agg, Some(prefill), Some(decode))
        }
        None => (base, None, None),
    }
}

/// Every simulated worker's engine: the flags, and the profile's KV capacity unless
/// --kv-blocks says otherwise.
fn engine_config(args: &SimulateArgs, profile: &Profile) -> EngineConfig {
    EngineConfig {
        block_size: args.block_size,
        num_blocks: args
            .kv_blocks
            .unwrap_or(profile.kv_capacity_tokens / args.block_size),
        max_model_len: args.max_model_len,
        max_num_seqs: args.max_num_seqs,
        max_num_batched_tokens: args.max_num_batched_tokens,
        long_prefill_token_threshold: args.long_prefill_token_threshold,
        enable_prefix_caching: !args.no_prefix_caching,
        vocab_size: args.vocab as usize,
        kv_hold_timeout: std::time::Duration::from_secs(30),
        host_kv_blocks: if args.no_prefix_caching {
            0
        } else {
            host_blocks(args.host_kv_gib, args.block_size, profile)
        },
    }
}

/// Host-tier blocks per engine of `gib` GiB per worker: each block holds every rank's shard,
/// and a worker with attention data parallelism splits the memory over its ranks' engines.
pub fn host_blocks(gib: f64, block_size: usize, profile: &Profile) -> usize {
    let per_engine = gib * (1u64 << 30) as f64 / profile.attention_dp.max(1) as f64;
    (per_engine / (block_size as f64 * profile.transfer_bytes_per_token)) as usize
}

/// `tandem simulate --sweep`: the planner's ranked table, plan.json and two plots.
fn sweep(args: &SimulateArgs, slo: &Slo, recipe: Option<&Recipe>) -> anyhow::Result<()> {
    if args.profile.is_some() && args.tp.len() > 1 {
        bail!("--profile describes one worker size: give one --tensor-parallel-size with it");
    }
    let mut setups = Vec::new();
    for &tp in &args.tp {
        let profile = load_profile(args, tp, recipe)?;
        let engines = engines(args, &profile, recipe);
        engines.0.validate()?;
        setups.push((tp, Arc::new(profile), engines));
    }
    let (trace, trace_block) = load_trace(args, recipe)?;
    let (candidates, skipped) = plan::candidates(args.gpus, &args.tp, policy(RouterArg::Kv, args));
    if candidates.is_empty() {
        bail!("nothing to plan: {}", skipped.join("; "));
    }
    eprintln!(
        "planning {} GPUs: {} deployments of {} requests",
        args.gpus,
        candidates.len(),
        trace.len()
    );
    let started = std::time::Instant::now();
    let setup = |c: &plan::Candidate| {
        let (_, profile, roles) = setups
            .iter()
            .find(|(tp, _, _)| *tp == c.tp)
            .expect("a candidate's TP size is one of the setups");
        let cfg = cluster_config(args, c.label(), (c.topology, c.policy), roles, trace_block);
        (cfg, profile.clone())
    };
    let planned = plan::run(&candidates, &setup, &trace, slo)?;
    eprintln!(
        "simulated {} deployments in {:.1} s",
        planned.len(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", plan::table(&planned, &skipped));
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("tandem-plan"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let rows: Vec<_> = planned
        .iter()
        .map(|p| {
            serde_json::json!({
                "deployment": p.candidate.label(),
                "metrics": p.summary.aiperf_json(),
                "preemptions": p.outcome.preemptions,
                "transfers": p.outcome.transfers,
            })
        })
        .collect();
    std::fs::write(
        dir.join("plan.json"),
        serde_json::to_string_pretty(
            &serde_json::json!({"gpus": args.gpus, "ranked": rows, "skipped": skipped}),
        )?,
    )?;
    // The plots follow the candidates' order (splits from most prefill to most decode), one
    // line per router.
    let splits: Vec<&plan::Candidate> = candidates
        .iter()
        .filter(|c| c.policy == Policy::RoundRobin)
        .collect();
    let labels: Vec<String> = splits
        .iter()
        .map(|c| c.label().trim_end_matches(" round-robin").to_string())
        .collect();
    let find = |c: &plan::Candidate, p: Policy| {
        planned
            .iter()
            .find(|x| {
                x.candidate.tp == c.tp
                    && x.candidate.topology == c.topology
                    && x.candidate.policy == p
            })
            .map(|x| &x.summary)
    };
    let kv = policy(RouterArg::Kv, args);
    let line =
        |p: Policy, f: &dyn Fn(&crate::replay::metrics::Summary) -> Option<f64>| -> Vec<f64> {
            splits
                .iter()
                .map(|c| find(c, p).and_then(f).unwrap_or(f64::NAN))
                .collect()
        };
    type Figure = fn(&crate::replay::metrics::Summary) -> Option<f64>;
    let goodput: Figure = |s| s.goodput;
    let ttft90: Figure = |s| s.ttft.as_ref().map(|d| d.p90);
    let itl90: Figure = |s| s.itl.as_ref().map(|d| d.p90);
    // TTFT and ITL apart: seconds and milliseconds on one linear axis hide the ITL.
    for (file, title, unit, figure) in [
        (
            "plan_goodput.svg",
            "Goodput at the SLA against the split",
            "good requests/s",
            goodput,
        ),
        ("plan_ttft.svg", "p90 TTFT against the split", "ms", ttft90),
        ("plan_itl.svg", "p90 ITL against the split", "ms", itl90),
    ] {
        std::fs::write(
            dir.join(file),
            plot::lines_svg(
                title,
                unit,
                &labels,
                &[
                    ("kv", line(kv, &figure)),
                    ("round-robin", line(Policy::RoundRobin, &figure)),
                ],
            )?,
        )?;
    }
    eprintln!(
        "wrote {}/plan.json, plan_goodput.svg, plan_ttft.svg, plan_itl.svg",
        dir.display()
    );
    Ok(())
}

fn write_out(dir: &std::path::Path, arms: &[Arm], profile: &Profile) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("ab.json"),
        serde_json::to_string_pretty(&json(arms, profile))?,
    )?;
    for a in arms {
        let mut f = std::io::BufWriter::new(std::fs::File::create(
            dir.join(format!("{}_requests.jsonl", a.name)),
        )?);
        for r in &a.outcome.records {
            writeln!(f, "{}", serde_json::to_string(r)?)?;
        }
        f.flush()?;
    }
    let series = |f: fn(&RequestRecord) -> Option<f64>| -> Vec<(&str, Vec<f64>)> {
        arms.iter()
            .map(|a| (a.name, a.outcome.records.iter().filter_map(f).collect()))
            .collect()
    };
    std::fs::write(
        dir.join("ttft_cdf.svg"),
        plot::cdf_svg("Time to first token", "ms", &series(|r| r.ttft_ms))?,
    )?;
    std::fs::write(
        dir.join("itl_cdf.svg"),
        plot::cdf_svg("Inter-token latency", "ms", &series(RequestRecord::itl_ms))?,
    )?;
    Ok(())
}
