//! `tandem calibrate`: the simulator against the real system, on this machine. It profiles a
//! worker (`tandem profile`, on one core, in passes among the real runs), runs the two
//! reference deployments for real (2 aggregated workers behind round-robin, then 1 prefill + 1
//! decode worker behind the KV router, each worker pinned to its own core, with `tandem
//! serve` and the replay client), simulates both on the same trace slice with the measured
//! profile, and prints real, simulated and error per metric, with the real runs' own spread
//! and whether the simulated A/B moves each metric the way the real one does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::ModelArgs;
use super::calibrate_report::{Row, breakdown_json, breakdown_table, compare, table};
use super::frontend::{spawn_tandem, stop_workers, wait_healthy};
use super::trace::TraceArgs;
use crate::config::EngineConfig;
use crate::replay::client::{ReplayConfig, replay};
use crate::replay::metrics::{RequestRecord, Slo, Summary, summarize};
use crate::replay::trace::TraceRequest;
use crate::router::Policy;
use crate::sim::grid::Measured;
use crate::sim::median::median_profile;
use crate::sim::{ClusterConfig, Profile, Topology, simulate};
use crate::timeline::{Timeline, mean_segments};

/// Arguments of `tandem calibrate`.
#[derive(Debug, Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    trace: TraceArgs,
    /// Real runs of each deployment: their spread is the noise below which no error reads.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Use this profile instead of measuring one.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Points per axis of the measured profile's grids.
    #[arg(long, default_value_t = 5)]
    points: usize,
    /// Passes of the profile, each timing every point once (a `tandem profile --repeats 1`),
    /// spread over the real runs (one before each round of them, as far as they go) and
    /// merged point by point by their median: the profile samples the machine over the same
    /// hour as the runs, and a slow spell falls on one pass.
    #[arg(long, default_value_t = 3)]
    profile_repeats: usize,
    /// Goodput thresholds in AIPerf's syntax.
    #[arg(
        long,
        default_value = "time_to_first_token:2000 inter_token_latency:25"
    )]
    goodput: String,
    /// Seconds before a real request counts as failed.
    #[arg(long, default_value_t = 300.0)]
    request_timeout: f64,
    /// Write profile.json and calibrate.json here (default: a temporary folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compare with the real runs an earlier `calibrate --out` recorded in this folder (its
    /// `*_real_N.jsonl`, of the same trace slice) instead of running them again: the
    /// simulator alone reruns. Give that run's profile with --profile.
    #[arg(long, requires = "profile")]
    real_from: Option<PathBuf>,
}

/// The two reference deployments: name, `tandem serve` flags, simulated topology, policy.
fn deployments() -> [(&'static str, &'static [&'static str], Topology, Policy); 2] {
    [
        (
            "agg-rr",
            &["--workers", "2", "--router", "round-robin"],
            Topology::Aggregated { workers: 2 },
            Policy::RoundRobin,
        ),
        (
            "disagg-kv",
            &["--prefill", "1", "--decode", "1", "--router", "kv"],
            Topology::Disaggregated {
                prefill: 1,
                decode: 1,
            },
            Policy::kv(0.0),
        ),
    ]
}

/// The cores the workers run on: `--cpus`, or the first two this process may use.
fn cores(model: &ModelArgs) -> anyhow::Result<Vec<usize>> {
    if !model.cpus.is_empty() {
        if model.cpus.len() < 2 {
            bail!("--cpus: calibrate runs two workers, one per core; give two cores");
        }
        return Ok(model.cpus[..2].to_vec());
    }
    Ok(vec![0, 1])
}

/// Runs `tandem calibrate`.
pub fn calibrate(args: CalibrateArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.model.device != super::DeviceArg::Cpu {
        bail!(
            "calibrate runs CPU workers (one per core); on a GPU, use tandem profile and simulate"
        );
    }
    if !(args.request_timeout.is_finite() && args.request_timeout > 0.0) {
        bail!("--request-timeout must be positive");
    }
    let slo = Slo::parse(&args.goodput)?;
    let cores = match &args.real_from {
        Some(_) => Vec::new(),
        None => cores(&args.model)?,
    };
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tandem-calibrate-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (trace, trace_block) = args.trace.load()?;
    if trace.is_empty() {
        bail!("the trace slice has no requests");
    }

    // 1. The profile: the one given, or measured in passes spread over the real runs below.
    let given = match &args.profile {
        Some(p) => Some(Profile::load(p)?),
        None => None,
    };
    let passes = if given.is_some() {
        0
    } else {
        args.profile_repeats.max(1)
    };
    let mut measured = Vec::new();

    // 2. The real deployments, interleaved run by run so that drifts of the machine fall on
    // both alike; the profile's passes among them (pass k before round k * runs / passes),
    // so that it samples the machine over the same hour.
    let rt = tokio::runtime::Runtime::new()?;
    let mut real: Vec<Vec<Summary>> = vec![Vec::new(); 2];
    let mut real_timelines: Vec<Vec<Timeline>> = vec![Vec::new(); 2];
    for run in 0..args.runs {
        while measured.len() < passes && measured.len() * args.runs / passes <= run {
            measured.push(profile_pass(&args, &cores, &dir, measured.len(), passes)?);
        }
        for (k, (name, flags, _, _)) in deployments().iter().enumerate() {
            let file = format!("{name}_real_{}.jsonl", run + 1);
            let s = match &args.real_from {
                Some(from) => recorded_run(&from.join(&file), trace.len(), &slo)?,
                None => {
                    eprintln!("calibrate: real {name}, run {} of {}", run + 1, args.runs);
                    rt.block_on(real_run(&args, flags, &cores, &trace, trace_block, &slo))
                        .with_context(|| format!("the real {name} deployment"))?
                }
            };
            write_records(&dir.join(file), &s.1)?;
            real_timelines[k].extend(s.1.iter().filter_map(|r| r.timeline.as_deref().cloned()));
            real[k].push(s.0);
        }
    }
    let profile = match given {
        Some(p) => p,
        None => merge_passes(measured, &dir)?,
    };
    let engine = engine_config(&args.model, &profile)?;

    // 3. The same slice, simulated as many times as it ran for real, each with a seed of its
    // own (the serving path's races are drawn: which of a burst's requests an engine starts
    // without).
    let profile = Arc::new(profile);
    let mut simulated = Vec::new();
    let mut sim_timelines = Vec::new();
    for (name, _, topology, policy) in deployments() {
        let mut runs = Vec::new();
        let mut timelines = Vec::new();
        for seed in 0..args.runs as u64 {
            let cfg = ClusterConfig {
                name: name.to_string(),
                topology,
                policy,
                engine: engine.clone(),
                prefill_engine: None,
                decode_engine: None,
                speedup: 1.0,
                vocab: engine.vocab_size as u32,
                trace_block,
                seed,
                timelines: true,
            };
            let o = simulate(&cfg, profile.clone(), &trace)?;
            write_records(
                &dir.join(format!("{name}_sim_{}.jsonl", seed + 1)),
                &o.records,
            )?;
            runs.push(summarize(&o.records, o.duration_s, Some(&slo)));
            timelines.extend(
                o.records
                    .iter()
                    .filter_map(|r| r.timeline.as_deref().cloned()),
            );
        }
        simulated.push(runs);
        sim_timelines.push(timelines);
    }

    // 4. The table.
    let rows = compare(&real, &simulated)?;
    print!("{}", table(&rows, trace.len(), args.runs, &profile.name));
    let breakdown: Vec<_> = (0..2)
        .map(|k| {
            (
                mean_segments(&real_timelines[k]),
                mean_segments(&sim_timelines[k]),
            )
        })
        .collect();
    print!("{}", breakdown_table(&breakdown));
    let report = json!({
        "requests": trace.len(),
        "runs": args.runs,
        "profile": profile.name,
        "rows": rows.iter().map(Row::json).collect::<Vec<Value>>(),
        "segments_ms": breakdown_json(&breakdown),
    });
    std::fs::write(
        dir.join("calibrate.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!("calibrate: wrote {}", dir.join("calibrate.json").display());
    Ok(())
}

/// Measures pass `k` (from 0) of `passes` of the profile: `tandem profile` on the first core,
/// timing every point once. A single pass is the profile, in `profile.json`; several go to
/// `profile_pass_K.json` and are merged by [`merge_passes`].
fn profile_pass(
    args: &CalibrateArgs,
    cores: &[usize],
    dir: &Path,
    k: usize,
    passes: usize,
) -> anyhow::Result<Profile> {
    let path = if passes == 1 {
        dir.join("profile.json")
    } else {
        dir.join(format!("profile_pass_{}.json", k + 1))
    };
    let mut argv = vec!["profile".to_string()];
    argv.extend(model_flags(&args.model));
    argv.extend(["--cpus".into(), cores[0].to_string()]);
    argv.extend(["--points".into(), args.points.to_string()]);
    argv.extend(["--repeats".into(), "1".into()]);
    argv.extend(["--out".into(), path.display().to_string()]);
    eprintln!(
        "calibrate: profiling one worker on core {}, pass {} of {passes}",
        cores[0],
        k + 1
    );
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(&argv)
        .status()
        .context("starting tandem profile")?;
    if !status.success() {
        bail!("tandem profile failed: {status}");
    }
    Ok(Profile::load(&path)?)
}

/// The profile of the passes: the one, or their median ([`median_profile`]) written to
/// `profile.json`, with how far apart the passes priced the largest prefill and the smallest
/// decode step (how much the machine moved under them).
fn merge_passes(passes: Vec<Profile>, dir: &Path) -> anyhow::Result<Profile> {
    if passes.len() == 1 {
        return Ok(passes.into_iter().next().expect("one pass"));
    }
    let merged = median_profile(&passes)?;
    let path = dir.join("profile.json");
    std::fs::write(&path, serde_json::to_string_pretty(&merged)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let list = |pick: fn(&Measured) -> f64| -> String {
        let v: Vec<String> = passes
            .iter()
            .filter_map(|p| p.measured.as_ref())
            .map(|m| format!("{:.1}", pick(m) * 1e3))
            .collect();
        v.join(" / ")
    };
    let m = merged
        .measured
        .as_ref()
        .expect("a median profile is measured");
    eprintln!(
        "calibrate: {} profile passes priced a prefill of {} tokens at {} ms and a decode \
         step of one at {} ms; {} holds their median",
        passes.len(),
        m.prefill.x.last().copied().unwrap_or(0.0),
        list(|m| m.prefill.seconds.last().map_or(0.0, |r| r[0])),
        list(|m| m.decode.seconds[0][0]),
        path.display()
    );
    Ok(merged)
}

/// The model flags a worker of this calibration gets (without the cores, given per process).
pub(super) fn model_flags(model: &ModelArgs) -> Vec<String> {
    let all = model.to_cli_args();
    let mut out = Vec::with_capacity(all.len());
    let mut it = all.into_iter();
    while let Some(a) = it.next() {
        if a == "--cpus" {
            it.next();
        } else {
            out.push(a);
        }
    }
    out
}

/// The engine settings the real workers run with: their flags, the profile's KV capacity.
fn engine_config(model: &ModelArgs, profile: &Profile) -> anyhow::Result<EngineConfig> {
    let spec = model.spec(false)?;
    let loaded = crate::loader::load_cpu(&spec).context("loading the model")?;
    let mut cfg = loaded.engine.config().clone();
    let capacity = cfg.num_blocks * cfg.block_size;
    if capacity != profile.kv_capacity_tokens {
        bail!(
            "the profile was measured with a KV cache of {} tokens, these flags give {capacity}: \
             profile with the same flags",
            profile.kv_capacity_tokens
        );
    }
    cfg.kv_hold_timeout = Duration::from_secs_f64(model.kv_hold_timeout);
    Ok(cfg)
}

/// One real run: `tandem serve` with `flags`, its workers one per core, the slice replayed.
async fn real_run(
    args: &CalibrateArgs,
    flags: &[&str],
    cores: &[usize],
    trace: &[TraceRequest],
    trace_block: usize,
    slo: &Slo,
) -> anyhow::Result<(Summary, Vec<RequestRecord>)> {
    let mut argv = vec!["serve".to_string()];
    argv.extend(model_flags(&args.model));
    argv.extend(["--cpus".into(), format!("{},{}", cores[0], cores[1])]);
    argv.extend(flags.iter().map(|s| s.to_string()));
    argv.extend(["--port".into(), "0".into()]);
    let (child, addr) = spawn_tandem(&argv).await?;
    let base = format!("http://{addr}");
    wait_healthy(&base, Duration::from_secs(60)).await?;
    let cfg = ReplayConfig {
        url: base,
        model: None,
        speedup: 1.0,
        vocab: None,
        trace_block,
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        progress: true,
        api_key: None,
        timeline: true,
    };
    let result = replay(trace, &cfg).await;
    stop_workers(vec![child], 5.0).await;
    let (records, duration) = result?;
    let s = summarize(&records, duration, Some(slo));
    if s.errors > 0 {
        let first = records
            .iter()
            .find_map(|r| r.error.clone())
            .unwrap_or_default();
        eprintln!(
            "calibrate: {} of {} requests failed ({first})",
            s.errors, s.requests
        );
    }
    Ok((s, records))
}

/// A real run recorded by an earlier calibration: its records, and its summary over the
/// span from the first send to the last request's end (the replay's own clock, to within
/// its start-up).
fn recorded_run(
    path: &std::path::Path,
    requests: usize,
    slo: &Slo,
) -> anyhow::Result<(Summary, Vec<RequestRecord>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let records = text
        .lines()
        .map(serde_json::from_str::<RequestRecord>)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if records.len() != requests {
        bail!(
            "{} holds {} requests, the trace slice {requests}: record it with the same slice",
            path.display(),
            records.len()
        );
    }
    let end_ms = records
        .iter()
        .map(|r| r.send_ms + r.latency_ms.unwrap_or(0.0))
        .fold(0.0, f64::max);
    Ok((summarize(&records, end_ms / 1e3, Some(slo)), records))
}

/// Per-request records, one JSON object a line (as `tandem replay --out` writes them).
fn write_records(path: &std::path::Path, records: &[RequestRecord]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for r in records {
        writeln!(f, "{}", serde_json::to_string(r)?)?;
    }
    f.flush()?;
    Ok(())
}
