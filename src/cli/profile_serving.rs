//! The serving path's part of `tandem profile`: a real `tandem serve` (one worker with the
//! profile's model flags and cores, the frontend beside it) under two loads of timed requests
//! from the replay client, whose outputs differ in length, each paced to keep the worker busy
//! [`UTILIZATION`] of the time. The timelines' segment means are the path's latencies; the
//! CPU its processes spent, read from /proc around each load and split into per-request and
//! per-token parts, are its CPU terms.

use std::time::Duration;

use anyhow::{Context, bail};

use super::ModelArgs;
use super::frontend::{spawn_tandem, stop_workers, wait_healthy};
use crate::replay::client::{ReplayConfig, replay};
use crate::replay::trace::TraceRequest;
use crate::sim::serving::{ServingCosts, cpu_split, step_gaps};
use crate::timeline::Timeline;

/// Requests of each load, their prompt tokens, and the two output lengths.
const REQUESTS: usize = 48;
const PROMPT: usize = 96;
const OUTPUTS: [usize; 2] = [4, 32];
/// Requests arrive in bursts of this many (as the conversation trace's do).
const BURST: usize = 4;
/// The share of the time the worker is kept busy: loaded, not overloaded (queues that grow
/// without bound would make every latency the queue's).
const UTILIZATION: f64 = 0.6;

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

/// CPU seconds of (the worker's serving threads, the frontend and the client).
fn cpu_now(frontend: u32, worker: u32) -> anyhow::Result<(f64, f64)> {
    let (w_all, w_engine) = cpu_of(worker)?;
    let (fe, _) = cpu_of(frontend)?;
    let (me, _) = cpu_of(std::process::id())?;
    Ok((w_all - w_engine, fe + me))
}

/// Measures the serving path with `model`'s flags, its worker on `model.cpus` (all cores
/// when none are given). `shared` says whether the frontend and the client share the
/// worker's cores (a CPU worker): without it the CPU terms stay zero.
pub fn measure_serving(model: &ModelArgs, shared: bool) -> anyhow::Result<ServingCosts> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut argv = vec!["serve".to_string()];
        argv.extend(model.to_cli_args_but_cpus());
        if !model.cpus.is_empty() {
            let list: Vec<String> = model.cpus.iter().map(usize::to_string).collect();
            argv.extend(["--cpus".into(), list.join(",")]);
        }
        argv.extend(["--workers", "1", "--port", "0"].map(String::from));
        let (child, addr) = spawn_tandem(&argv).await?;
        let result = drive(&child, &addr).await;
        stop_workers(vec![child], 5.0).await;
        let (mut costs, cpu, timelines) = result?;
        if shared {
            let worker: Vec<_> = cpu.iter().map(|c| (c.0, c.1, c.2)).collect();
            let fe: Vec<_> = cpu.iter().map(|c| (c.0, c.1, c.3)).collect();
            (costs.worker_cpu_per_request_s, costs.worker_cpu_per_token_s) =
                cpu_split(worker[0], worker[1])?;
            (costs.shared_cpu_per_request_s, costs.shared_cpu_per_token_s) =
                cpu_split(fe[0], fe[1])?;
            costs.shared_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            // The gaps again, net of the serving threads' CPU now that it is known.
            (costs.engine_gap_s, costs.engine_gap_per_token_s) =
                step_gaps(&timelines, costs.worker_cpu_per_token_s);
        }
        Ok(costs)
    })
}

/// Runs the two loads against the server at `addr`: the latencies from every timeline, per
/// load (requests, tokens, worker serving CPU s, frontend + client CPU s), and the timelines.
async fn drive(
    child: &tokio::process::Child,
    addr: &str,
) -> anyhow::Result<(ServingCosts, Vec<(f64, f64, f64, f64)>, Vec<Timeline>)> {
    let base = format!("http://{addr}");
    wait_healthy(&base, Duration::from_secs(120)).await?;
    let frontend = child.id().context("the server has exited")?;
    let worker = match children(frontend).as_slice() {
        [w] => *w,
        other => bail!("expected one worker process under the server, found {other:?}"),
    };
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
        let before = cpu_now(frontend, worker)?;
        let (records, _) = replay(&load(output, gap_ms, k as u64), &cfg).await?;
        let after = cpu_now(frontend, worker)?;
        if let Some(e) = records.iter().find_map(|r| r.error.clone()) {
            bail!("a request of the serving load failed: {e}");
        }
        let tokens: usize = records.iter().map(|r| r.output_tokens).sum();
        cpu.push((
            records.len() as f64,
            tokens as f64,
            after.0 - before.0,
            after.1 - before.1,
        ));
        timelines.extend(records.into_iter().filter_map(|r| r.timeline.map(|t| *t)));
    }
    let costs = ServingCosts::latencies_of(&timelines)
        .context("the server gave no timelines (is it tandem's frontend?)")?;
    Ok((costs, cpu, timelines))
}
