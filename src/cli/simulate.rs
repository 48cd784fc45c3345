//! `tandem simulate`: the trace through simulated deployments, and the A/B of the two.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use super::frontend::RouterArg;
use super::trace::TraceArgs;
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
    #[arg(long)]
    profile: Option<PathBuf>,
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

fn policy(r: RouterArg, temperature: f64) -> Policy {
    match r {
        RouterArg::RoundRobin => Policy::RoundRobin,
        RouterArg::Kv => Policy::Kv { temperature },
    }
}

/// Runs `tandem simulate`.
pub fn simulate_cmd(args: SimulateArgs) -> anyhow::Result<()> {
    if args.workers == 0 || args.prefill == 0 || args.decode == 0 || args.tp.contains(&0) {
        bail!("--workers, --prefill, --decode and --tensor-parallel-size must be positive");
    }
    if args.block_size == 0 || args.vocab == 0 {
        bail!("--block-size and --vocab must be positive");
    }
    let slo = Slo::parse(&args.goodput)?;
    if args.sweep {
        return sweep(&args, &slo);
    }
    let [tp] = args.tp[..] else {
        bail!("a list of --tensor-parallel-size values needs --sweep");
    };
    let profile = load_profile(&args, tp)?;
    let (trace, trace_block) = args.trace.load()?;
    let engine = engine_config(&args, &profile);
    let base = |name: &str, topology, router| ClusterConfig {
        name: name.to_string(),
        topology,
        policy: policy(router, args.router_temperature),
        engine: engine.clone(),
        speedup: 1.0,
        trace_block,
        vocab: args.vocab,
        seed: args.seed,
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
        engine.num_blocks,
        engine.block_size
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

/// The profile of a `tp`-GPU worker: --profile's, or the arithmetic one of Qwen3-32B on H200.
fn load_profile(args: &SimulateArgs, tp: usize) -> anyhow::Result<Profile> {
    let profile = match &args.profile {
        Some(p) => Profile::load(p)?,
        None => Profile::arithmetic(
            &crate::sim::profile::QWEN3_32B,
            &crate::sim::profile::H200,
            tp,
        ),
    };
    profile.validate()?;
    Ok(profile)
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
    }
}

/// `tandem simulate --sweep`: the planner's ranked table, plan.json and two plots.
fn sweep(args: &SimulateArgs, slo: &Slo) -> anyhow::Result<()> {
    if args.profile.is_some() && args.tp.len() > 1 {
        bail!("--profile describes one worker size: give one --tensor-parallel-size with it");
    }
    let mut setups = Vec::new();
    for &tp in &args.tp {
        let profile = load_profile(args, tp)?;
        let engine = engine_config(args, &profile);
        engine.validate()?;
        setups.push((tp, Arc::new(profile), engine));
    }
    let (trace, trace_block) = args.trace.load()?;
    let (candidates, skipped) = plan::candidates(
        args.gpus,
        &args.tp,
        policy(RouterArg::Kv, args.router_temperature),
    );
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
        let (_, profile, engine) = setups
            .iter()
            .find(|(tp, _, _)| *tp == c.tp)
            .expect("a candidate's TP size is one of the setups");
        let cfg = ClusterConfig {
            name: c.label(),
            topology: c.topology,
            policy: c.policy,
            engine: engine.clone(),
            speedup: 1.0,
            trace_block,
            vocab: args.vocab,
            seed: args.seed,
        };
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
    let kv = policy(RouterArg::Kv, args.router_temperature);
    let line =
        |p: Policy, f: &dyn Fn(&crate::replay::metrics::Summary) -> Option<f64>| -> Vec<f64> {
            splits
                .iter()
                .map(|c| find(c, p).and_then(f).unwrap_or(f64::NAN))
                .collect()
        };
    let goodput = |s: &crate::replay::metrics::Summary| s.goodput;
    let ttft90 = |s: &crate::replay::metrics::Summary| s.ttft.as_ref().map(|d| d.p90);
    let itl90 = |s: &crate::replay::metrics::Summary| s.itl.as_ref().map(|d| d.p90);
    std::fs::write(
        dir.join("plan_goodput.svg"),
        plot::lines_svg(
            "Goodput at the SLA against the split",
            "good requests/s",
            &labels,
            &[
                ("kv", line(kv, &goodput)),
                ("round-robin", line(Policy::RoundRobin, &goodput)),
            ],
        ),
    )?;
    std::fs::write(
        dir.join("plan_latency.svg"),
        plot::lines_svg(
            "p90 TTFT and ITL against the split",
            "ms",
            &labels,
            &[
                ("TTFT p90, kv", line(kv, &ttft90)),
                ("TTFT p90, round-robin", line(Policy::RoundRobin, &ttft90)),
                ("ITL p90, kv", line(kv, &itl90)),
                ("ITL p90, round-robin", line(Policy::RoundRobin, &itl90)),
            ],
        ),
    )?;
    eprintln!(
        "wrote {}/plan.json, plan_goodput.svg, plan_latency.svg",
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
        plot::cdf_svg("Time to first token", "ms", &series(|r| r.ttft_ms)),
    )?;
    std::fs::write(
        dir.join("itl_cdf.svg"),
        plot::cdf_svg("Inter-token latency", "ms", &series(RequestRecord::itl_ms)),
    )?;
    Ok(())
}
