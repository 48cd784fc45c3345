//! `tandem calibrate`: the simulator against the real system, on this machine. It profiles a
//! worker (`tandem profile`, on one core), runs the two reference deployments for real
//! (2 aggregated workers behind round-robin, then 1 prefill + 1 decode worker behind the KV
//! router, each worker pinned to its own core, with `tandem serve` and the replay client),
//! simulates both on the same trace slice with the measured profile, and prints real,
//! simulated and error per metric, with the real runs' own spread and whether the simulated
//! A/B moves each metric the way the real one does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::ModelArgs;
use super::frontend::{spawn_tandem, stop_workers, wait_healthy};
use super::trace::TraceArgs;
use crate::config::EngineConfig;
use crate::replay::client::{ReplayConfig, replay};
use crate::replay::metrics::{RequestRecord, Slo, Summary, summarize};
use crate::replay::trace::TraceRequest;
use crate::router::Policy;
use crate::sim::{ClusterConfig, Profile, Topology, simulate};

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
    /// Timed steps per point of the profile.
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
    let cores = cores(&args.model)?;
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tandem-calibrate-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (trace, trace_block) = args.trace.load()?;
    if trace.is_empty() {
        bail!("the trace slice has no requests");
    }

    // 1. The profile, measured on one core as a worker runs.
    let profile_path = match &args.profile {
        Some(p) => p.clone(),
        None => {
            let path = dir.join("profile.json");
            let mut argv = vec!["profile".to_string()];
            argv.extend(model_flags(&args.model));
            argv.extend(["--cpus".into(), cores[0].to_string()]);
            argv.extend(["--points".into(), args.points.to_string()]);
            argv.extend(["--repeats".into(), args.profile_repeats.to_string()]);
            argv.extend(["--out".into(), path.display().to_string()]);
            eprintln!("calibrate: profiling one worker on core {}", cores[0]);
            let status = std::process::Command::new(std::env::current_exe()?)
                .args(&argv)
                .status()
                .context("starting tandem profile")?;
            if !status.success() {
                bail!("tandem profile failed: {status}");
            }
            path
        }
    };
    let profile = Profile::load(&profile_path)?;
    profile.validate()?;
    let engine = engine_config(&args.model, &profile)?;

    // 2. The real deployments, interleaved run by run so that drifts of the machine fall on
    // both alike.
    let rt = tokio::runtime::Runtime::new()?;
    let mut real: Vec<Vec<Summary>> = vec![Vec::new(); 2];
    for run in 0..args.runs {
        for (k, (name, flags, _, _)) in deployments().iter().enumerate() {
            eprintln!("calibrate: real {name}, run {} of {}", run + 1, args.runs);
            let s = rt
                .block_on(real_run(&args, flags, &cores, &trace, trace_block, &slo))
                .with_context(|| format!("the real {name} deployment"))?;
            write_records(&dir.join(format!("{name}_real_{}.jsonl", run + 1)), &s.1)?;
            real[k].push(s.0);
        }
    }

    // 3. The same slice, simulated.
    let profile = Arc::new(profile);
    let mut simulated = Vec::new();
    for (name, _, topology, policy) in deployments() {
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
            seed: 0,
        };
        let o = simulate(&cfg, profile.clone(), &trace)?;
        write_records(&dir.join(format!("{name}_sim.jsonl")), &o.records)?;
        simulated.push(summarize(&o.records, o.duration_s, Some(&slo)));
    }

    // 4. The table.
    let rows = compare(&real, &simulated)?;
    print!("{}", table(&rows, trace.len(), args.runs, &profile.name));
    let report = json!({
        "requests": trace.len(),
        "runs": args.runs,
        "profile": profile.name,
        "rows": rows.iter().map(Row::json).collect::<Vec<Value>>(),
    });
    std::fs::write(
        dir.join("calibrate.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    eprintln!("calibrate: wrote {}", dir.join("calibrate.json").display());
    Ok(())
}

/// The model flags a worker of this calibration gets (without the cores, given per process).
fn model_flags(model: &ModelArgs) -> Vec<String> {
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

/// One metric of one deployment.
#[derive(Debug, Clone)]
struct Cell {
    /// Mean of the real runs.
    real: f64,
    /// (max − min) / mean of the real runs, %.
    spread: f64,
    simulated: f64,
}

impl Cell {
    fn error(&self) -> f64 {
        if self.real == 0.0 {
            if self.simulated == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (self.simulated - self.real) / self.real * 100.0
        }
    }
}

/// One metric over both deployments.
#[derive(Debug, Clone)]
struct Row {
    metric: &'static str,
    agg: Cell,
    disagg: Cell,
}

/// Whether the A/B moves a metric the same way, simulated as real: "yes", "no", or "noise"
/// when the real difference is inside the real runs' spread.
fn direction(r: &Row) -> &'static str {
    let real = r.disagg.real - r.agg.real;
    let sim = r.disagg.simulated - r.agg.simulated;
    let noise =
        (r.agg.spread * r.agg.real.abs()).max(r.disagg.spread * r.disagg.real.abs()) / 100.0;
    if real.abs() <= noise {
        "noise"
    } else if real.signum() == sim.signum() {
        "yes"
    } else {
        "no"
    }
}

impl Row {
    fn json(&self) -> Value {
        let c = |c: &Cell| {
            json!({"real": c.real, "real_spread_pct": c.spread, "simulated": c.simulated,
                   "error_pct": c.error()})
        };
        json!({"metric": self.metric, "agg-rr": c(&self.agg), "disagg-kv": c(&self.disagg),
               "ab_direction_agrees": direction(self)})
    }
}

/// The metrics compared, read out of a summary.
type Metric = (&'static str, fn(&Summary) -> Option<f64>);

const METRICS: [Metric; 11] = [
    ("TTFT mean (ms)", |s| s.ttft.as_ref().map(|d| d.avg)),
    ("TTFT p50 (ms)", |s| s.ttft.as_ref().map(|d| d.p50)),
    ("TTFT p90 (ms)", |s| s.ttft.as_ref().map(|d| d.p90)),
    ("ITL mean (ms)", |s| s.itl.as_ref().map(|d| d.avg)),
    ("ITL p50 (ms)", |s| s.itl.as_ref().map(|d| d.p50)),
    ("ITL p90 (ms)", |s| s.itl.as_ref().map(|d| d.p90)),
    ("latency mean (ms)", |s| s.latency.as_ref().map(|d| d.avg)),
    ("latency p50 (ms)", |s| s.latency.as_ref().map(|d| d.p50)),
    ("latency p90 (ms)", |s| s.latency.as_ref().map(|d| d.p90)),
    ("goodput (req/s)", |s| s.goodput),
    ("hit rate (%)", |s| Some(s.prefix_hit_rate * 100.0)),
];

/// The rows of the table; an error when a metric is missing from a run (nothing succeeded).
fn compare(real: &[Vec<Summary>], simulated: &[Summary]) -> anyhow::Result<Vec<Row>> {
    let cell = |k: usize, name: &str, f: fn(&Summary) -> Option<f64>| -> anyhow::Result<Cell> {
        let vals: Vec<f64> = real[k]
            .iter()
            .map(|s| f(s).with_context(|| format!("no real {name}: no request succeeded")))
            .collect::<anyhow::Result<_>>()?;
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let (lo, hi) = vals
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        Ok(Cell {
            real: mean,
            spread: if mean != 0.0 {
                (hi - lo) / mean.abs() * 100.0
            } else {
                0.0
            },
            simulated: f(&simulated[k])
                .with_context(|| format!("no simulated {name}: no request finished"))?,
        })
    };
    METRICS
        .iter()
        .map(|&(name, f)| {
            Ok(Row {
                metric: name,
                agg: cell(0, name, f)?,
                disagg: cell(1, name, f)?,
            })
        })
        .collect()
}

fn table(rows: &[Row], requests: usize, runs: usize, profile: &str) -> String {
    let mut s = format!(
        "sim vs real: {requests} requests, {runs} real run(s) each; profile: {profile}\n\
         {:<18} {:>10} {:>7} {:>10} {:>8} | {:>10} {:>7} {:>10} {:>8} | {:>6}\n",
        "metric",
        "agg real",
        "spread",
        "agg sim",
        "error",
        "dis real",
        "spread",
        "dis sim",
        "error",
        "A/B"
    );
    let pct = |v: f64| {
        if v.is_finite() {
            format!("{v:+.1}%")
        } else {
            "inf".into()
        }
    };
    for r in rows {
        s += &format!(
            "{:<18} {:>10.2} {:>6.1}% {:>10.2} {:>8} | {:>10.2} {:>6.1}% {:>10.2} {:>8} | {:>6}\n",
            r.metric,
            r.agg.real,
            r.agg.spread,
            r.agg.simulated,
            pct(r.agg.error()),
            r.disagg.real,
            r.disagg.spread,
            r.disagg.simulated,
            pct(r.disagg.error()),
            direction(r),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(agg: (f64, f64, f64), disagg: (f64, f64, f64)) -> Row {
        let c = |(real, spread, simulated)| Cell {
            real,
            spread,
            simulated,
        };
        Row {
            metric: "m",
            agg: c(agg),
            disagg: c(disagg),
        }
    }

    #[test]
    fn directions_compare_the_two_ab_moves() {
        assert_eq!(
            direction(&row((100.0, 1.0, 90.0), (50.0, 1.0, 60.0))),
            "yes"
        );
        assert_eq!(direction(&row((100.0, 1.0, 90.0), (50.0, 1.0, 95.0))), "no");
        // A real move of 1% under a 5% spread cannot be read.
        assert_eq!(
            direction(&row((100.0, 5.0, 90.0), (101.0, 5.0, 80.0))),
            "noise"
        );
    }

    #[test]
    fn errors_are_relative_to_the_real_figure() {
        let c = Cell {
            real: 200.0,
            spread: 0.0,
            simulated: 210.0,
        };
        assert!((c.error() - 5.0).abs() < 1e-12);
    }
}
