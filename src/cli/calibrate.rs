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
use super::calibrate_reference::{References, reference};
use super::calibrate_report::{Row, breakdown_json, breakdown_table, compare, table};
use super::calibrate_runs::{
    Simulated, deployments, real_run, recorded_run, timelines, write_records,
};
use super::calibrate_steps::{
    fits_table, levels_json, levels_table, read_steps, steps_over_simulated,
};
use super::profile_serving::STEPS_BURSTS;
use super::trace::TraceArgs;
use crate::config::EngineConfig;
use crate::replay::metrics::{RequestRecord, Slo, Summary};
use crate::sim::Profile;
use crate::sim::grid::Measured;
use crate::sim::measure::Reference;
use crate::sim::median::median_profile;
use crate::timeline::mean_segments;

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
    /// The measured profile's steps load, in bursts of 4 requests (`tandem profile
    /// --steps-bursts`): each deployment's step level under serving. 0: none, the steps
    /// priced at the grids' price.
    #[arg(long, default_value_t = STEPS_BURSTS)]
    steps_bursts: usize,
    /// Timed steps of each reference reading (`tandem profile --reference`: a fixed prefill
    /// and decode step, half a second on the demo model), taken before and after each
    /// profile pass and each real run on the first core. The simulator reruns with the
    /// profile scaled by the runs' readings over the passes' (the machine's speed when each
    /// ran), and prints that table too. 0: no readings. With --real-from, the readings that
    /// calibration recorded are read (they go with its own profile).
    #[arg(long, default_value_t = 5)]
    reference_repeats: usize,
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
    /// simulator alone reruns, on --profile, or else on that calibration's own profile (its
    /// passes merged again, or its profile.json).
    #[arg(long)]
    real_from: Option<PathBuf>,
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
    let given = match (&args.profile, &args.real_from) {
        (Some(p), _) => Some(Profile::load(p)?),
        (None, Some(from)) => Some(recorded_profile(from, &dir)?),
        (None, None) => None,
    };
    let passes = if given.is_some() {
        0
    } else {
        args.profile_repeats.max(1)
    };
    let mut measured = Vec::new();
    // The reference steps around each pass and each real run; an earlier calibration's
    // with --real-from.
    let mut refs = match &args.real_from {
        Some(from) => References::load(from)?.unwrap_or_default(),
        None => References::default(),
    };
    let repeats = args.reference_repeats;
    let ref_path = dir.join("reference.json");
    let time_ref = |to: &mut Vec<Reference>| -> anyhow::Result<()> {
        if repeats > 0 && args.real_from.is_none() {
            to.push(reference(&args.model, cores[0], repeats, &ref_path)?);
        }
        Ok(())
    };

    // 2. The real deployments, interleaved run by run so that drifts of the machine fall on
    // both alike; the profile's passes among them (pass k before round k * runs / passes),
    // so that it samples the machine over the same hour.
    let rt = tokio::runtime::Runtime::new()?;
    let mut real: Vec<Vec<Summary>> = vec![Vec::new(); 2];
    let mut real_records: Vec<Vec<Vec<RequestRecord>>> = vec![Vec::new(); 2];
    for run in 0..args.runs {
        while measured.len() < passes && measured.len() * args.runs / passes <= run {
            time_ref(&mut refs.passes)?;
            measured.push(profile_pass(&args, &cores, &dir, measured.len(), passes)?);
            time_ref(&mut refs.passes)?;
        }
        for (k, (name, flags, _, _)) in deployments().iter().enumerate() {
            let file = format!("{name}_real_{}.jsonl", run + 1);
            let s = match &args.real_from {
                Some(from) => recorded_run(&from.join(&file), trace.len(), &slo)?,
                None => {
                    eprintln!("calibrate: real {name}, run {} of {}", run + 1, args.runs);
                    time_ref(&mut refs.runs)?;
                    let s = rt
                        .block_on(real_run(
                            &args.model,
                            args.request_timeout,
                            flags,
                            &cores,
                            &trace,
                            trace_block,
                            &slo,
                        ))
                        .with_context(|| format!("the real {name} deployment"))?;
                    time_ref(&mut refs.runs)?;
                    s
                }
            };
            write_records(&dir.join(file), &s.1)?;
            real_records[k].push(s.1);
            real[k].push(s.0);
        }
    }
    let profile = match given {
        Some(p) => p,
        None => merge_passes(measured, &dir)?,
    };
    if args.real_from.is_none() && repeats > 0 {
        refs.save(&dir)?;
    }
    let engine = engine_config(&args.model, &profile)?;

    // 3. The same slice, simulated as many times as it ran for real: with the profile as
    // measured, and (with references) at the speed the runs' machine had.
    let simulate = |p: Arc<Profile>, out: Option<&Path>| {
        Simulated::run(&engine, p, &trace, trace_block, args.runs, &slo, out)
    };
    let sim = simulate(Arc::new(profile.clone()), Some(&dir))?;
    let slowdown = refs.slowdown();
    let at_runs = match slowdown {
        Some(l) => {
            let p = Arc::new(l.apply(&profile, "the runs' speed"));
            Some((p.name.clone(), simulate(p, None)?))
        }
        None => None,
    };

    // 4. The tables.
    let rows = compare(&real, &sim.summaries)?;
    print!("{}", table(&rows, trace.len(), args.runs, &profile.name));
    if !refs.passes.is_empty() || !refs.runs.is_empty() {
        eprint!("calibrate: {}", refs.summary());
    }
    let rows_at_runs = match &at_runs {
        Some((name, s)) => {
            let rows = compare(&real, &s.summaries)?;
            print!("{}", table(&rows, trace.len(), args.runs, name));
            Some(rows)
        }
        None => None,
    };
    let breakdown: Vec<_> = (0..2)
        .map(|k| {
            (
                mean_segments(
                    &real_records[k]
                        .iter()
                        .flat_map(|r| timelines(r))
                        .collect::<Vec<_>>(),
                ),
                mean_segments(&sim.timelines[k]),
            )
        })
        .collect();
    print!("{}", breakdown_table(&breakdown));
    let (levels, fits): (Vec<_>, Vec<_>) =
        real_records.iter().map(|r| read_steps(r, &profile)).unzip();
    print!("{}", levels_table(&levels, &sim.levels));
    print!("{}", fits_table(&fits, &sim.fits));

    // 5. A diagnosis, not a prediction (it reads the real runs): the simulator again, each
    // deployment with its steps priced at the level its real steps ran at over its simulated
    // ones. What is left of an error then is the rest of the model's: the queues, the
    // serving path, the transfers.
    let over: Vec<_> = (0..2)
        .map(|k| steps_over_simulated(&levels[k], &sim.levels[k]))
        .collect();
    let mut at_level = Vec::new();
    for (k, l) in over.iter().enumerate() {
        let p = Arc::new(l.apply(&profile, "the real runs' step level"));
        at_level.push(simulate(p, None)?.summaries.swap_remove(k));
    }
    let rows_at_level = compare(&real, &at_level)?;
    let name = format!(
        "{}, each deployment at the real runs' step level, their steps' time over the \
         simulated steps' (agg: prefills x{:.2}, decodes x{:.2}; disagg: prefills x{:.2}, \
         decodes x{:.2}): a diagnosis",
        profile.name, over[0].prefill, over[0].decode, over[1].prefill, over[1].decode
    );
    print!("{}", table(&rows_at_level, trace.len(), args.runs, &name));
    let report = json!({
        "requests": trace.len(),
        "runs": args.runs,
        "profile": profile.name,
        "rows": rows.iter().map(Row::json).collect::<Vec<Value>>(),
        "segments_ms": breakdown_json(&breakdown),
        "steps": levels_json(&levels, &sim.levels),
        "steps_fit": {
            "agg-rr": {"real": fits[0], "simulated": sim.fits[0]},
            "disagg-kv": {"real": fits[1], "simulated": sim.fits[1]},
        },
        "references": refs,
        "runs_over_profile_speed": slowdown,
        "rows_at_runs_speed": rows_at_runs.map(|r| r.iter().map(Row::json).collect::<Vec<Value>>()),
        "steps_over_simulated": {"agg-rr": over[0], "disagg-kv": over[1]},
        "rows_at_step_level": rows_at_level.iter().map(Row::json).collect::<Vec<Value>>(),
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
    argv.extend(args.model.to_cli_args_but_cpus());
    argv.extend(["--cpus".into(), cores[0].to_string()]);
    // The disaggregated serving load on the cores the real disaggregated deployment runs on.
    argv.extend(["--disagg-cpus".into(), format!("{},{}", cores[0], cores[1])]);
    argv.extend(["--points".into(), args.points.to_string()]);
    argv.extend(["--repeats".into(), "1".into()]);
    argv.extend(["--steps-bursts".into(), args.steps_bursts.to_string()]);
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

/// The profile an earlier calibration in `from` measured: its passes merged again (into
/// `dir`), or its profile.json when it made one pass.
fn recorded_profile(from: &Path, dir: &Path) -> anyhow::Result<Profile> {
    let mut passes = Vec::new();
    loop {
        let path = from.join(format!("profile_pass_{}.json", passes.len() + 1));
        if !path.exists() {
            break;
        }
        // A pass that is there but unreadable is an error, not the end of the passes.
        passes.push(Profile::load(&path)?);
    }
    if passes.is_empty() {
        return Ok(Profile::load(&from.join("profile.json"))?);
    }
    merge_passes(passes, dir)
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
