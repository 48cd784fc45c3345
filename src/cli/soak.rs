//! `tandem soak`: a load test of real deployments under faults. It starts workers and a
//! frontend (aggregated, then disaggregated), measures the deployment's capacity, replays a
//! slice of the trace at multiples of it, kills and restarts a worker during each run (and,
//! disaggregated, a prefill worker while a KV pull is in flight), and reports every request's
//! fate, the KV blocks left in use, and peak memory. It fails when a request is lost (hung)
//! or a block leaks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::ModelArgs;
use super::frontend::{spawn_tandem, wait_healthy};
use super::trace::TraceArgs;
use crate::replay::client::{ReplayConfig, replay};
use crate::replay::metrics::RequestRecord;
use crate::replay::trace::TraceRequest;
use crate::wire::proto::{LoadRequest, worker_client::WorkerClient};

/// Which deployments to soak.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum SoakDeployment {
    /// Aggregated workers behind the KV router.
    Agg,
    /// Prefill and decode workers.
    Disagg,
    /// One, then the other.
    Both,
}

/// Arguments of `tandem soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    trace: TraceArgs,
    /// Deployments to run.
    #[arg(long, value_enum, default_value = "both")]
    deployment: SoakDeployment,
    /// Aggregated workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Prefill workers of the disaggregated deployment (at least 2: one is killed).
    #[arg(long, default_value_t = 2)]
    prefill: usize,
    /// Decode workers of the disaggregated deployment.
    #[arg(long, default_value_t = 1)]
    decode: usize,
    /// Load levels, as multiples of the measured capacity.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    levels: Vec<f64>,
    /// Requests sent at once to measure capacity (spread over the trace slice).
    #[arg(long, default_value_t = 48)]
    probe_requests: usize,
    /// The frontend's --max-queued-requests.
    #[arg(long, default_value_t = 4096)]
    max_queued_requests: usize,
    /// The frontend's --queue-timeout, seconds.
    #[arg(long, default_value_t = 60.0)]
    queue_timeout: f64,
    /// Seconds before a request counts as hung (lost).
    #[arg(long, default_value_t = 120.0)]
    request_timeout: f64,
    /// Skip the faults (a clean run).
    #[arg(long)]
    no_faults: bool,
    /// Write soak.json here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A running process of the deployment.
struct Member {
    role: &'static str,
    argv: Vec<String>,
    addr: String,
    child: tokio::process::Child,
    /// Peak RSS of processes that were killed and replaced, KiB.
    peak_kib: u64,
}

impl Member {
    async fn start(role: &'static str, argv: Vec<String>) -> anyhow::Result<Self> {
        let (child, addr) = spawn_tandem(&argv)
            .await
            .with_context(|| format!("a {role}"))?;
        Ok(Member {
            role,
            argv,
            addr,
            child,
            peak_kib: 0,
        })
    }

    /// A /proc/PID/status field of the current process, KiB.
    fn status_kib(&self, field: &str) -> u64 {
        self.child.id().map_or(0, |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with(field))?
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                })
                .unwrap_or(0)
        })
    }

    /// Peak resident memory, KiB, over this member's lives.
    fn peak(&self) -> u64 {
        self.status_kib("VmHWM:").max(self.peak_kib)
    }

    /// Resident memory now, KiB.
    fn rss(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// SIGKILL now.
    async fn kill(&mut self) {
        self.peak_kib = self.peak();
        let _ = self.child.kill().await;
    }

    /// A new process at the same address.
    async fn restart(&mut self) -> anyhow::Result<()> {
        let port = self.addr.rsplit(':').next().unwrap_or("0").to_string();
        let mut argv = self.argv.clone();
        if let Some(i) = argv.iter().position(|a| a == "--port") {
            argv[i + 1] = port;
        }
        let (child, addr) = spawn_tandem(&argv).await.context("restarting a worker")?;
        self.child = child;
        self.addr = addr;
        Ok(())
    }
}

async fn load(addr: &str) -> Option<crate::wire::proto::LoadResponse> {
    let mut c = WorkerClient::connect(format!("http://{addr}")).await.ok()?;
    Some(c.load(LoadRequest {}).await.ok()?.into_inner())
}

/// A deployment under test: its workers, then its frontend.
struct Deployment {
    workers: Vec<Member>,
    frontend: Member,
    base: String,
}

impl Deployment {
    async fn start(args: &SoakArgs, disagg: bool) -> anyhow::Result<Self> {
        let mut model = args.model.to_cli_args();
        // Held KV that nobody pulls (its decode request died) is freed before the blocks are
        // counted.
        if let Some(i) = model.iter().position(|a| a == "--kv-hold-timeout") {
            model[i + 1] = "8".into();
        }
        let worker = |role: &str, extra: &[&str]| {
            let mut a = vec!["worker".to_string()];
            a.extend(model.iter().cloned());
            a.extend(["--port", "0", "--role", role].map(String::from));
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let mut workers = Vec::new();
        let roles: Vec<(&'static str, usize)> = if disagg {
            vec![("prefill", args.prefill), ("decode", args.decode)]
        } else {
            vec![("agg", args.workers)]
        };
        for (role, n) in roles {
            let extra: &[&str] = if role == "decode" {
                &["--no-prefix-caching"]
            } else {
                &[]
            };
            for _ in 0..n {
                workers.push(Member::start(role, worker(role, extra)).await?);
            }
        }
        let list = |role: &str| {
            workers
                .iter()
                .filter(|w| w.role == role)
                .map(|w| w.addr.clone())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut fe = vec!["frontend".to_string(), "--port".into(), "0".into()];
        if disagg {
            fe.extend(["--prefill-workers".into(), list("prefill")]);
            fe.extend(["--decode-workers".into(), list("decode")]);
        } else {
            fe.extend(["--workers".into(), list("agg")]);
        }
        fe.extend([
            "--max-queued-requests".into(),
            args.max_queued_requests.to_string(),
            "--queue-timeout".into(),
            args.queue_timeout.to_string(),
        ]);
        if let Some(m) = &args.model.model {
            fe.extend(["--model".into(), m.display().to_string()]);
        }
        let frontend = Member::start("frontend", fe).await?;
        let base = format!("http://{}", frontend.addr);
        let d = Deployment {
            workers,
            frontend,
            base,
        };
        d.wait_healthy(Duration::from_secs(60)).await?;
        Ok(d)
    }

    async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        wait_healthy(&self.base, within).await
    }

    /// Waits until no worker runs, waits or holds anything; returns each worker's blocks in use.
    async fn settle(&self) -> Vec<(String, u64)> {
        let t = Instant::now();
        loop {
            let mut all = Vec::new();
            let mut idle = true;
            for w in &self.workers {
                let l = load(&w.addr).await.unwrap_or_default();
                idle &= l.running == 0 && l.waiting == 0 && l.used_blocks == 0;
                all.push((format!("{} {}", w.role, w.addr), l.used_blocks));
            }
            if idle || t.elapsed() > Duration::from_secs(20) {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The frontend's retry counter.
    async fn retries(&self) -> u64 {
        let text = match reqwest::get(format!("{}/metrics", self.base)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        text.lines()
            .find_map(|l| {
                l.strip_prefix("tandem:failovers_total{path=\"retry\"} ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }
}

/// Why a request failed, in the report's words.
fn cause(r: &RequestRecord) -> Option<String> {
    let e = r.error.as_deref()?;
    Some(
        if e.contains("max_queued_requests") {
            "rejected: queue full (503)"
        } else if e.contains("queue_timeout") {
            "rejected: queue timeout (503)"
        } else if e.contains("no complete answer") {
            "lost: no answer in time"
        } else if e.contains("worker") {
            "a worker died mid-stream"
        } else if e.contains("stream broken") || e.contains("request failed") {
            "connection broken"
        } else {
            e
        }
        .to_string(),
    )
}

fn replay_cfg(args: &SoakArgs, base: &str, block: usize) -> ReplayConfig {
    ReplayConfig {
        url: base.to_string(),
        model: None,
        speedup: 1.0,
        vocab: None,
        trace_block: block,
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        progress: false,
        api_key: None,
        timeline: false,
    }
}

/// One level's run: the trace at `rate` requests/s, with the faults.
async fn run_level(
    args: &SoakArgs,
    d: &mut Deployment,
    trace: &[TraceRequest],
    block: usize,
    rate: f64,
) -> anyhow::Result<Value> {
    let span_ms = trace.last().map_or(0, |r| r.timestamp).max(1) as f64;
    let natural = trace.len() as f64 / (span_ms / 1000.0);
    let speedup = rate / natural;
    let reqs: Vec<TraceRequest> = trace
        .iter()
        .map(|r| TraceRequest {
            timestamp: (r.timestamp as f64 / speedup) as u64,
            ..r.clone()
        })
        .collect();
    let expected = Duration::from_secs_f64(span_ms / speedup / 1000.0);
    let retries_before = d.retries().await;
    let rss_before = (
        d.frontend.rss(),
        d.workers.iter().map(Member::rss).max().unwrap_or(0),
    );
    let cfg = replay_cfg(args, &d.base, block);
    let faults = !args.no_faults;
    let disagg = d.workers.iter().any(|w| w.role == "prefill");
    let (records, duration, events) = {
        let run = replay(&reqs, &cfg);
        tokio::pin!(run);
        let mut events: Vec<String> = Vec::new();
        // A worker killed at 30% and restarted at 50%; disaggregated, a prefill worker killed
        // while a pull is in flight at 70% (and restarted).
        let plan = async {
            if !faults {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(expected.mul_f64(0.3)).await;
            let victim = d
                .workers
                .iter()
                .position(|w| w.role != "decode")
                .unwrap_or(0);
            d.workers[victim].kill().await;
            events.push(format!(
                "killed {} {}",
                d.workers[victim].role, d.workers[victim].addr
            ));
            tokio::time::sleep(expected.mul_f64(0.2)).await;
            d.workers[victim].restart().await?;
            events.push("restarted it".into());
            if disagg {
                tokio::time::sleep(expected.mul_f64(0.2)).await;
                let decode: Vec<String> = d
                    .workers
                    .iter()
                    .filter(|w| w.role == "decode")
                    .map(|w| w.addr.clone())
                    .collect();
                let t = Instant::now();
                let mut caught = false;
                while t.elapsed() < expected.mul_f64(0.2) {
                    for a in &decode {
                        if load(a).await.is_some_and(|l| l.kv_pulls_in_flight > 0) {
                            caught = true;
                        }
                    }
                    if caught {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let p = d
                    .workers
                    .iter()
                    .rposition(|w| w.role == "prefill")
                    .unwrap_or(0);
                d.workers[p].kill().await;
                events.push(format!(
                    "killed prefill {} {}",
                    d.workers[p].addr,
                    if caught {
                        "mid-transfer"
                    } else {
                        "(no pull caught in flight)"
                    }
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
                d.workers[p].restart().await?;
                events.push("restarted it".into());
            }
            Ok(())
        };
        let (out, fault) = tokio::join!(&mut run, plan);
        fault?;
        let (records, duration) = out?;
        (records, duration, events)
    };
    d.wait_healthy(Duration::from_secs(30)).await?;
    let blocks = d.settle().await;
    let mut causes: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    for r in &records {
        if let Some(c) = cause(r) {
            *causes.entry(c.clone()).or_default() += 1;
            examples
                .entry(c)
                .or_insert_with(|| r.error.clone().unwrap_or_default());
        }
    }
    let completed = records.iter().filter(|r| r.error.is_none()).count();
    Ok(json!({
        "rate_req_s": rate,
        "duration_s": duration,
        "sent": records.len(),
        "completed": completed,
        "failed": causes,
        "failure_examples": examples,
        "retried": d.retries().await - retries_before,
        "blocks_in_use_after": blocks.iter().map(|(w, b)| json!({"worker": w, "blocks": b})).collect::<Vec<_>>(),
        "faults": events,
        "peak_rss_mib": {
            "frontend": d.frontend.peak() / 1024,
            "workers": d.workers.iter().map(|w| w.peak() / 1024).max().unwrap_or(0),
        },
        // Resident memory before and after the level (the largest worker): flat is good.
        "rss_mib": {
            "frontend": [rss_before.0 / 1024, d.frontend.rss() / 1024],
            "workers": [rss_before.1 / 1024, d.workers.iter().map(Member::rss).max().unwrap_or(0) / 1024],
        },
    }))
}

/// Requests per second the deployment completes when `n` arrive at once.
async fn capacity(
    args: &SoakArgs,
    d: &Deployment,
    trace: &[TraceRequest],
    block: usize,
) -> anyhow::Result<f64> {
    // Spread over the slice: its first requests are not a fair sample of its lengths.
    let step = (trace.len() / args.probe_requests.max(1)).max(1);
    let burst: Vec<TraceRequest> = trace
        .iter()
        .step_by(step)
        .take(args.probe_requests)
        .map(|r| TraceRequest {
            timestamp: 0,
            ..r.clone()
        })
        .collect();
    let (records, duration) = replay(&burst, &replay_cfg(args, &d.base, block)).await?;
    let ok = records.iter().filter(|r| r.error.is_none()).count();
    if ok == 0 {
        bail!(
            "no request of the capacity probe completed: {:?}",
            records.first().and_then(|r| r.error.clone())
        );
    }
    d.settle().await;
    Ok(ok as f64 / duration.max(1e-3))
}

/// Runs `tandem soak`.
pub fn soak(args: SoakArgs) -> anyhow::Result<()> {
    if args.prefill < 2 && !args.no_faults && args.deployment != SoakDeployment::Agg {
        bail!("--prefill must be at least 2: one prefill worker is killed");
    }
    if args.levels.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
        bail!("--levels must be positive multiples of capacity");
    }
    let (trace, block) = args.trace.load()?;
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(async {
        let mut report = Vec::new();
        let kinds = match args.deployment {
            SoakDeployment::Agg => vec![false],
            SoakDeployment::Disagg => vec![true],
            SoakDeployment::Both => vec![false, true],
        };
        for disagg in kinds {
            let name = if disagg { "disagg" } else { "agg" };
            let mut d = Deployment::start(&args, disagg).await?;
            let cap = capacity(&args, &d, &trace, block).await?;
            eprintln!("{name}: capacity {cap:.2} requests/s");
            let mut levels = Vec::new();
            for &level in &args.levels {
                let mut v = run_level(&args, &mut d, &trace, block, cap * level).await?;
                v["level"] = json!(level);
                eprintln!("{name} at {level}x: {v}");
                levels.push(v);
            }
            report.push(json!({"deployment": name, "capacity_req_s": cap, "levels": levels}));
        }
        Ok::<_, anyhow::Error>(Value::Array(report))
    })?;
    print!("{}", table(&report));
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join("soak.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
    }
    let lost: u64 = report
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["levels"].as_array().into_iter().flatten())
        .map(|l| {
            let leaked: u64 = l["blocks_in_use_after"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| b["blocks"].as_u64().unwrap_or(0))
                .sum();
            leaked + l["failed"]["lost: no answer in time"].as_u64().unwrap_or(0)
        })
        .sum();
    if lost > 0 {
        bail!("{lost} leaked blocks or lost requests");
    }
    Ok(())
}

/// The report as a Markdown table.
fn table(report: &Value) -> String {
    let mut out = String::from(
        "| deployment | load | req/s | sent | completed | failed (cause: n) | retried | blocks in use after | peak RSS frontend / worker (MiB) | faults |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for d in report.as_array().into_iter().flatten() {
        for l in d["levels"].as_array().into_iter().flatten() {
            let failed: Vec<String> = l["failed"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let blocks: u64 = l["blocks_in_use_after"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| b["blocks"].as_u64().unwrap_or(0))
                .sum();
            let faults: Vec<&str> = l["faults"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            out.push_str(&format!(
                "| {} | {}x | {:.2} | {} | {} | {} | {} | {} | {} / {} | {} |\n",
                d["deployment"].as_str().unwrap_or(""),
                l["level"],
                l["rate_req_s"].as_f64().unwrap_or(0.0),
                l["sent"],
                l["completed"],
                if failed.is_empty() {
                    "0".into()
                } else {
                    failed.join(", ")
                },
                l["retried"],
                blocks,
                l["peak_rss_mib"]["frontend"],
                l["peak_rss_mib"]["workers"],
                faults.join("; "),
            ));
        }
    }
    out
}
