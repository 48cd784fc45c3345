//! The runs `tandem calibrate` compares: the real deployments (served, or read back from an
//! earlier calibration's records) and the simulated ones.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::ModelArgs;
use super::calibrate_steps::{StepFit, StepLevels, read_steps};
use super::frontend::{spawn_tandem, stop_workers, wait_healthy};
use crate::config::EngineConfig;
use crate::replay::client::{ReplayConfig, replay};
use crate::replay::metrics::{RequestRecord, Slo, Summary, summarize};
use crate::replay::trace::TraceRequest;
use crate::router::Policy;
use crate::sim::{ClusterConfig, Profile, Topology, simulate};
use crate::timeline::Timeline;

/// The two reference deployments: name, `tandem serve` flags, simulated topology, policy.
pub(super) fn deployments() -> [(&'static str, &'static [&'static str], Topology, Policy); 2] {
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

/// A deployment simulated as a real one replays a trace: every worker with the served
/// engine, at the trace's own pace, with timelines; the race of the serving path drawn by
/// `seed`.
pub(super) fn replayed(
    name: &str,
    topology: Topology,
    policy: Policy,
    engine: &EngineConfig,
    trace_block: usize,
    seed: u64,
) -> ClusterConfig {
    ClusterConfig {
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
    }
}

/// Both deployments simulated `--runs` times on the slice, each run with a seed of its own
/// (the serving path's races are drawn: which of a burst's requests an engine starts
/// without): per deployment, the summaries, timelines, step levels and fit.
pub(super) struct Simulated {
    pub summaries: Vec<Vec<Summary>>,
    pub timelines: Vec<Vec<Timeline>>,
    pub levels: Vec<StepLevels>,
    pub fits: Vec<Option<StepFit>>,
}

impl Simulated {
    /// `count` runs of each; writes each run's records to `out` when given.
    pub fn run(
        engine: &EngineConfig,
        profile: Arc<Profile>,
        trace: &[TraceRequest],
        trace_block: usize,
        count: usize,
        slo: &Slo,
        out: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut sim = Simulated {
            summaries: Vec::new(),
            timelines: Vec::new(),
            levels: Vec::new(),
            fits: Vec::new(),
        };
        for (name, _, topology, policy) in deployments() {
            let (mut runs, mut timelines, mut records) = (Vec::new(), Vec::new(), Vec::new());
            for seed in 0..count as u64 {
                let cfg = replayed(name, topology, policy, engine, trace_block, seed);
                let o = simulate(&cfg, profile.clone(), trace)?;
                if let Some(dir) = out {
                    let file = dir.join(format!("{name}_sim_{}.jsonl", seed + 1));
                    write_records(&file, &o.records)?;
                }
                runs.push(summarize(&o.records, o.duration_s, Some(slo)));
                timelines.extend(self::timelines(&o.records));
                records.push(o.records);
            }
            sim.summaries.push(runs);
            sim.timelines.push(timelines);
            let (levels, fit) = read_steps(&records, &profile);
            sim.levels.push(levels);
            sim.fits.push(fit);
        }
        Ok(sim)
    }
}

/// One real run: `tandem serve` with `flags`, its workers one per core, the slice replayed.
pub(super) async fn real_run(
    model: &ModelArgs,
    request_timeout: f64,
    flags: &[&str],
    cores: &[usize],
    trace: &[TraceRequest],
    trace_block: usize,
    slo: &Slo,
) -> anyhow::Result<(Summary, Vec<RequestRecord>)> {
    let mut argv = vec!["serve".to_string()];
    argv.extend(model.to_cli_args_but_cpus());
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
        request_timeout: Duration::from_secs_f64(request_timeout),
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
pub(super) fn recorded_run(
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

/// The timelines of `records` that have one.
pub(super) fn timelines(records: &[RequestRecord]) -> Vec<Timeline> {
    records
        .iter()
        .filter_map(|r| r.timeline.as_deref().cloned())
        .collect()
}

/// Per-request records, one JSON object a line (as `tandem replay --out` writes them).
pub(super) fn write_records(
    path: &std::path::Path,
    records: &[RequestRecord],
) -> anyhow::Result<()> {
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
