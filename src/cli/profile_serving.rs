//! The serving path's part of `tandem profile`: a real `tandem serve` (one worker with the
//! profile's model flags and cores, the frontend beside it; or a prefill and a decode worker,
//! one core each, as a disaggregated deployment runs) under two loads of timed requests from
//! the replay client, whose outputs differ in length, each paced to keep the workers busy
//! [`UTILIZATION`] of the time. The timelines' segment means are the path's latencies; the
//! CPU its processes spent, read from /proc around each load and split into per-request and
//! per-token parts, are its CPU terms. A third load, of prompts of mixed lengths, times how
//! much longer the engines' steps run under serving than the grids price them: once the
//! grids are measured, its steps priced against the simulator's run of the same load
//! ([`step_levels_of`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use super::ModelArgs;
use super::calibrate_runs::replayed;
use super::calibrate_steps::{StepFit, read_steps, steps_over_simulated};
use super::frontend::{spawn_tandem, stop_workers, wait_healthy};
use crate::config::EngineConfig;
use crate::replay::client::{ReplayConfig, replay};
use crate::replay::metrics::RequestRecord;
use crate::replay::trace::TraceRequest;
use crate::router::Policy;
use crate::sim::serving::{ServingCosts, cpu_split, step_gaps};
use crate::sim::{Profile, Topology, simulate};
use crate::timeline::Timeline;

/// Requests of each load, their prompt tokens, and the two output lengths.
const REQUESTS: usize = 48;
pub const PROMPT: usize = 96;
const OUTPUTS: [usize; 2] = [4, 32];
/// Requests arrive in bursts of this many (as the conversation trace's do).
const BURST: usize = 4;
/// The share of the time the worker is kept busy: loaded, not overloaded (queues that grow
/// without bound would make every latency the queue's).
const UTILIZATION: f64 = 0.6;

/// The steps load: `bursts` bursts of `BURST` requests of `STEPS_OUTPUT` tokens, their
/// prompts these many times `PROMPT` tokens in turn (as long as the model takes), as the
/// traces' prompts of a few hundred to a few thousand tokens are. Every prompt opens with
/// the same block, as a trace's conversations share a system prompt: all but the first
/// prefill after a cached prefix, and such prefills run longer over the grid's price than
/// prompts of their own (by 2-16% on the demo model, in interleaved loads with and without
/// the shared block: BENCHMARKS.md).
const STEPS_PROMPTS: [usize; 4] = [2, 5, 10, 15];
pub const STEPS_BURSTS: usize = 16;
const STEPS_OUTPUT: usize = 32;

fn steps_load(bursts: usize, gap_ms: u64, longest: usize, seed: u64) -> Vec<TraceRequest> {
    let shared = 1_000_000 * seed + 999_999;
    (0..bursts * BURST)
        .map(|i| {
            let blocks = STEPS_PROMPTS[i % STEPS_PROMPTS.len()]
                .min(longest / PROMPT)
                .max(1);
            let own = (1..blocks as u64).map(|b| 1_000_000 * seed + 100 * i as u64 + b);
            TraceRequest {
                timestamp: (i / BURST) as u64 * gap_ms,
                input_length: blocks * PROMPT,
                output_length: STEPS_OUTPUT,
                hash_ids: std::iter::once(shared).chain(own).collect(),
            }
        })
        .collect()
}

/// The steps load as it was sent, and its requests' records (with their timelines).
pub struct StepsLoad {
    pub trace: Vec<TraceRequest>,
    pub records: Vec<RequestRecord>,
}

/// How much longer `load`'s real steps ran on `deployment` than the simulator's steps of the
/// same load on `profile` (its serving path's CPU charged, no step level of its own), the
/// steps with prompts and the decode-only ones: the deployment's step levels. `engine` is
/// the served workers' engine configuration.
pub fn step_levels_of(
    profile: &Profile,
    deployment: Deployment,
    load: &StepsLoad,
    engine: &EngineConfig,
) -> anyhow::Result<StepTerms> {
    let (topology, policy) = match deployment {
        Deployment::Aggregated => (Topology::Aggregated { workers: 1 }, Policy::RoundRobin),
        Deployment::Disaggregated(_) => (
            Topology::Disaggregated {
                prefill: 1,
                decode: 1,
            },
            Policy::kv(0.0),
        ),
    };
    let mut unlevelled = profile.clone();
    for s in std::iter::once(&mut unlevelled.serving).chain(unlevelled.serving_disagg.as_mut()) {
        (s.prefill_step_level, s.decode_step_level, s.engine_resume_s) = (0.0, 0.0, 0.0);
    }
    // A few seeds: the serving path's races are drawn.
    let simulate_load = |p: &Arc<Profile>| -> anyhow::Result<Vec<Vec<RequestRecord>>> {
        (0..3)
            .map(|seed| {
                let cfg = replayed("steps load", topology, policy, engine, PROMPT, seed);
                Ok(simulate(&cfg, p.clone(), &load.trace)?.records)
            })
            .collect()
    };
    let real = std::slice::from_ref(&load.records);
    // First the fixed cost of a step after an idle engine, net of what the simulator charges
    // such steps without it; then the levels, against the simulator charging it.
    let priced = Arc::new(unlevelled.clone());
    let (real_levels, real_fit) = read_steps(real, &priced);
    let (_, own_fit) = read_steps(&simulate_load(&priced)?, &priced);
    let resume = |f: Option<StepFit>| f.map_or(0.0, |f| f.resume_s);
    let engine_resume_s = (resume(real_fit) - resume(own_fit)).max(0.0);
    for s in std::iter::once(&mut unlevelled.serving).chain(unlevelled.serving_disagg.as_mut()) {
        s.engine_resume_s = engine_resume_s;
    }
    let with_resume = Arc::new(unlevelled);
    let (simulated, _) = read_steps(&simulate_load(&with_resume)?, &priced);
    let level = steps_over_simulated(&real_levels, &simulated);
    Ok(StepTerms {
        prefill_step_level: level.prefill,
        decode_step_level: level.decode,
        engine_resume_s,
    })
}

/// What the steps load measures of a deployment's steps ([`ServingCosts`]' fields of the
/// same names).
#[derive(Debug, Clone, Copy)]
pub struct StepTerms {
    pub prefill_step_level: f64,
    pub decode_step_level: f64,
    pub engine_resume_s: f64,
}

impl StepTerms {
    pub fn set(&self, s: &mut ServingCosts) {
        s.prefill_step_level = self.prefill_step_level;
        s.decode_step_level = self.decode_step_level;
        s.engine_resume_s = self.engine_resume_s;
    }
}

/// A load: `REQUESTS` requests of `output` tokens, in bursts every `gap_ms`; every prompt its
/// own (no prefix hits).
fn load(output: usize, gap_ms: u64, seed: u64) -> Vec<TraceRequest> {
    (0..REQUESTS)
        .map(|i| TraceRequest {
            timestamp: (i / BURST) as u64 * gap_ms,
            input_length: PROMPT,
            output_length: output,
            hash_ids: vec![1_000_000 * seed + i as u64],
        })
        .collect()
}

/// CPU seconds a process's threads have run, and those of its threads named `engine`
/// (/proc/PID/task/*/schedstat: ns on a CPU, per thread).
fn cpu_of(pid: u32) -> anyhow::Result<(f64, f64)> {
    let (mut all, mut engine) = (0.0, 0.0);
    let dir = format!("/proc/{pid}/task");
    for t in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let t = t?.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(t.join("schedstat")),
            std::fs::read_to_string(t.join("comm")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let ns: f64 = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        all += ns / 1e9;
        if comm.trim() == "engine" {
            engine += ns / 1e9;
        }
    }
    Ok((all, engine))
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// The deployment the serving path is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// One aggregated worker on the profile's cores.
    Aggregated,
    /// A prefill worker on the first of two cores and a decode worker on the second.
    Disaggregated([usize; 2]),
}

/// The worker processes under the server: (the one a request reaches first, the decode
/// worker of a disaggregated deployment).
fn workers_of(frontend: u32, deployment: Deployment) -> anyhow::Result<(u32, Option<u32>)> {
    let role = |pid: u32| {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        args.windows(2)
            .find(|w| w[0] == b"--role")
            .map(|w| String::from_utf8_lossy(w[1]).into_owned())
    };
    let found: Vec<(u32, Option<String>)> = children(frontend)
        .into_iter()
        .map(|c| (c, role(c)))
        .collect();
    let with = |r: &str| {
        found
            .iter()
            .find(|(_, x)| x.as_deref() == Some(r))
            .map(|w| w.0)
    };
    match (deployment, found.as_slice()) {
        (Deployment::Aggregated, [(w, _)]) => Ok((*w, None)),
        (Deployment::Disaggregated(_), [_, _]) => match (with("prefill"), with("decode")) {
            (Some(p), Some(d)) => Ok((p, Some(d))),
            _ => bail!("expected a prefill and a decode worker under the server, found {found:?}"),
        },
        (_, other) => bail!("unexpected worker processes under the server: {other:?}"),
    }
}

/// CPU seconds, so far, of the serving threads of the worker a request reaches first, of
/// the decode worker's (zero without one), and of the frontend and the client.
fn cpu_now(frontend: u32, (first, decode): (u32, Option<u32>)) -> anyhow::Result<[f64; 3]> {
    let serving = |pid: u32| cpu_of(pid).map(|(all, engine)| all - engine);
    let (fe, _) = cpu_of(frontend)?;
    let (me, _) = cpu_of(std::process::id())?;
    Ok([serving(first)?, decode.map_or(Ok(0.0), serving)?, fe + me])
}

/// One load's counts and the CPU its processes spent: requests, tokens, and the seconds of
/// [`cpu_now`]'s three.
#[derive(Debug, Clone, Copy)]
struct LoadCpu {
    requests: f64,
    tokens: f64,
    cpu: [f64; 3],
}

/// Measures the serving path with `model`'s flags on `deployment`, the aggregated worker on
/// `model.cpus` (all cores when none are given). `shared` says whether the frontend and
/// the client share the workers' cores (CPU workers): without it the CPU terms stay zero.
/// The steps load, of `steps_bursts` bursts, runs last; none with 0.
pub fn measure_serving(
    model: &ModelArgs,
    shared: bool,
    deployment: Deployment,
    steps_bursts: usize,
) -> anyhow::Result<(ServingCosts, Option<StepsLoad>)> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut argv = vec!["serve".to_string()];
        argv.extend(model.to_cli_args_but_cpus());
        let cores: Vec<usize> = match deployment {
            Deployment::Aggregated => model.cpus.clone(),
            Deployment::Disaggregated(cores) => cores.to_vec(),
        };
        if !cores.is_empty() {
            let list: Vec<String> = cores.iter().map(usize::to_string).collect();
            argv.extend(["--cpus".into(), list.join(",")]);
        }
        let workers: &[&str] = match deployment {
            Deployment::Aggregated => &["--workers", "1"],
            Deployment::Disaggregated(_) => &["--prefill", "1", "--decode", "1", "--router", "kv"],
        };
        argv.extend(workers.iter().map(|s| s.to_string()));
        argv.extend(["--port", "0"].map(String::from));
        let (child, addr) = spawn_tandem(&argv).await?;
        let result = drive(&child, &addr, deployment, model.max_model_len, steps_bursts).await;
        stop_workers(vec![child], 5.0).await;
        let (mut costs, loads, timelines, steps) = result?;
        if shared {
            cpu_terms(&mut costs, &loads, deployment)?;
            costs.shared_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            // The gaps again, net of the serving threads' CPU now that it is known.
            (costs.engine_gap_s, costs.engine_gap_per_token_s) =
                step_gaps(&timelines, costs.worker_cpu_per_token_s);
        }
        Ok((costs, steps))
    })
}

/// The CPU terms from the two loads. Aggregated: the worker's per request and per token.
/// Disaggregated: the prefill worker's per request (net of its one token), the decode
/// worker's per request and per token (of the tokens it makes: all but the first).
fn cpu_terms(
    costs: &mut ServingCosts,
    loads: &[LoadCpu],
    deployment: Deployment,
) -> anyhow::Result<()> {
    let [a, b] = loads else {
        bail!("expected two loads, got {}", loads.len());
    };
    let split = |i: usize, first_token: f64| {
        cpu_split(
            (a.requests, a.tokens - first_token * a.requests, a.cpu[i]),
            (b.requests, b.tokens - first_token * b.requests, b.cpu[i]),
        )
    };
    (costs.shared_cpu_per_request_s, costs.shared_cpu_per_token_s) = split(2, 0.0)?;
    match deployment {
        Deployment::Aggregated => {
            (costs.worker_cpu_per_request_s, costs.worker_cpu_per_token_s) = split(0, 0.0)?;
        }
        Deployment::Disaggregated(_) => {
            (costs.decode_cpu_per_request_s, costs.worker_cpu_per_token_s) = split(1, 1.0)?;
            let per_request = (a.cpu[0] + b.cpu[0]) / (a.requests + b.requests);
            costs.worker_cpu_per_request_s = (per_request - costs.worker_cpu_per_token_s).max(0.0);
        }
    }
    Ok(())
}

/// Runs the two loads against the server at `addr`, then the steps load of `steps_bursts`
/// bursts (if any): the latencies from every timeline of the two, each one's CPU, their
/// timelines, and the steps load.
async fn drive(
    child: &tokio::process::Child,
    addr: &str,
    deployment: Deployment,
    max_model_len: Option<usize>,
    steps_bursts: usize,
) -> anyhow::Result<(ServingCosts, Vec<LoadCpu>, Vec<Timeline>, Option<StepsLoad>)> {
    let base = format!("http://{addr}");
    wait_healthy(&base, Duration::from_secs(120)).await?;
    let frontend = child.id().context("the server has exited")?;
    let workers = workers_of(frontend, deployment)?;
    let cfg = ReplayConfig {
        url: base,
        model: None,
        speedup: 1.0,
        vocab: None,
        trace_block: PROMPT,
        request_timeout: Duration::from_secs(120),
        progress: false,
        api_key: None,
        timeline: true,
    };
    // A warm-up: connections, the first step's allocations.
    replay(&load(2, 0, 9)[..BURST], &cfg).await?;
    let mut timelines: Vec<Timeline> = Vec::new();
    let mut cpu = Vec::new();
    for (k, &output) in OUTPUTS.iter().enumerate() {
        // One burst alone says how long the worker takes to serve one: the load's bursts
        // come that much apart over the utilization.
        let (_, alone) = replay(&load(output, 0, 10 + k as u64)[..BURST], &cfg).await?;
        let gap_ms = (alone * 1e3 / UTILIZATION).ceil() as u64;
        let before = cpu_now(frontend, workers)?;
        let (records, _) = replay(&load(output, gap_ms, k as u64), &cfg).await?;
        let after = cpu_now(frontend, workers)?;
        if let Some(e) = records.iter().find_map(|r| r.error.clone()) {
            bail!("a request of the serving load failed: {e}");
        }
        let tokens: usize = records.iter().map(|r| r.output_tokens).sum();
        // A thread that ended meanwhile takes its earlier CPU out of the sum: never below 0.
        cpu.push(LoadCpu {
            requests: records.len() as f64,
            tokens: tokens as f64,
            cpu: [0, 1, 2].map(|i| (after[i] - before[i]).max(0.0)),
        });
        timelines.extend(records.into_iter().filter_map(|r| r.timeline.map(|t| *t)));
    }
    let costs = ServingCosts::latencies_of(&timelines)
        .context("the server gave no timelines (is it tandem's frontend?)")?;
    if steps_bursts == 0 {
        return Ok((costs, cpu, timelines, None));
    }
    // Paced as the others: one burst alone, then the load at the utilization.
    let longest = max_model_len.map_or(usize::MAX, |l| l.saturating_sub(STEPS_OUTPUT + 1));
    let (_, alone) = replay(&steps_load(1, 0, longest, 20), &cfg).await?;
    let gap_ms = (alone * 1e3 / UTILIZATION).ceil() as u64;
    let trace = steps_load(steps_bursts, gap_ms, longest, 21);
    let (records, _) = replay(&trace, &cfg).await?;
    if let Some(e) = records.iter().find_map(|r| r.error.clone()) {
        bail!("a request of the steps load failed: {e}");
    }
    Ok((costs, cpu, timelines, Some(StepsLoad { trace, records })))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two loads of 48 requests, of 4 and 32 tokens each, on processes of known CPU costs.
    fn loads(cpu: impl Fn(f64, f64) -> [f64; 3]) -> Vec<LoadCpu> {
        [4.0, 32.0]
            .map(|out| LoadCpu {
                requests: 48.0,
                tokens: 48.0 * out,
                cpu: cpu(48.0, 48.0 * out),
            })
            .to_vec()
    }

    #[test]
    fn the_steps_load_has_prompts_of_mixed_lengths_that_fit_the_model() {
        let load = steps_load(STEPS_BURSTS, 700, usize::MAX, 21);
        assert_eq!(load.len(), STEPS_BURSTS * BURST);
        let mut ids = std::collections::HashSet::new();
        for (i, r) in load.iter().enumerate() {
            assert_eq!(r.timestamp, (i / BURST) as u64 * 700);
            assert_eq!(r.input_length, STEPS_PROMPTS[i % 4] * PROMPT);
            assert_eq!(r.hash_ids.len() * PROMPT, r.input_length);
            // One shared block, then the prompt's own.
            assert_eq!(r.hash_ids[0], load[0].hash_ids[0]);
            assert!(
                r.hash_ids[1..].iter().all(|&h| ids.insert(h)),
                "its own blocks"
            );
        }
        assert!(!ids.contains(&load[0].hash_ids[0]));
        // Another seed, another prefix: the burst that paces the load leaves it no hit.
        assert_ne!(
            steps_load(1, 0, usize::MAX, 20)[0].hash_ids[0],
            load[0].hash_ids[0]
        );
        // A model of 1,024 tokens takes prompts of at most 991 (with the output): 10 blocks.
        let short = steps_load(STEPS_BURSTS, 0, 1024 - STEPS_OUTPUT - 1, 21);
        let longest = short.iter().map(|r| r.input_length).max().unwrap();
        assert_eq!(longest, 10 * PROMPT);
        assert!(short.iter().all(|r| r.input_length >= 2 * PROMPT));
    }

    #[test]
    fn each_process_cpu_splits_into_its_own_terms() {
        // The worker 0.3 ms a request and 40 us a token; the frontend and client 0.7 ms and
        // 0.1 ms.
        let agg = loads(|r, t| [3e-4 * r + 4e-5 * t, 0.0, 7e-4 * r + 1e-4 * t]);
        let mut c = ServingCosts::default();
        cpu_terms(&mut c, &agg, Deployment::Aggregated).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(c.worker_cpu_per_request_s, 3e-4), "{c:?}");
        assert!(close(c.worker_cpu_per_token_s, 4e-5), "{c:?}");
        assert!(close(c.shared_cpu_per_request_s, 7e-4) && close(c.shared_cpu_per_token_s, 1e-4));
        assert_eq!(c.decode_cpu_per_request_s, 0.0);
        // Disaggregated: the prefill worker 0.45 ms a request, its one token included; the
        // decode worker 0.6 ms a request and 30 us for each token it makes (all but the first).
        let disagg = loads(|r, t| [4.5e-4 * r, 6e-4 * r + 3e-5 * (t - r), 9e-4 * r + 8e-5 * t]);
        let mut c = ServingCosts::default();
        cpu_terms(&mut c, &disagg, Deployment::Disaggregated([0, 1])).unwrap();
        assert!(close(c.decode_cpu_per_request_s, 6e-4), "{c:?}");
        assert!(close(c.worker_cpu_per_token_s, 3e-5), "{c:?}");
        // Net of the one token the simulator charges it per token.
        assert!(close(c.worker_cpu_per_request_s, 4.2e-4), "{c:?}");
        assert!(close(c.shared_cpu_per_request_s, 9e-4) && close(c.shared_cpu_per_token_s, 8e-5));
        assert!(cpu_terms(&mut c, &disagg[..1], Deployment::Aggregated).is_err());
    }
}
