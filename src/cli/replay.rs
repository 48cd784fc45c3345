//! `tandem replay`: the Mooncake trace against a server, with AIPerf's metrics.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::trace::TraceArgs;
use crate::replay::client::{ReplayConfig, replay as run_replay};
use crate::replay::metrics::{Slo, summarize};

/// Arguments of `tandem replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    trace: TraceArgs,
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Model name (default: the server's, from /v1/models).
    #[arg(long)]
    model: Option<String>,
    /// Goodput thresholds in AIPerf's syntax, e.g. "time_to_first_token:2000 inter_token_latency:25".
    #[arg(long)]
    goodput: Option<String>,
    /// Write profile_export_aiperf.json and profile_export.jsonl here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Synthesized prompts use token ids below this (default: the server's ordinary
    /// vocabulary from /v1/models, else Qwen's 151,643).
    #[arg(long)]
    vocab: Option<u32>,
    /// API key of a server started with --api-key (sent as a bearer token).
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Seconds before a request that has not finished counts as failed.
    #[arg(long, default_value_t = 600.0)]
    request_timeout: f64,
    /// Ask for each request's clock points (tandem's frontend gives them) and keep them in
    /// profile_export.jsonl (`timeline`).
    #[arg(long)]
    timeline: bool,
}

/// Runs `tandem replay`.
pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let slo = args.goodput.as_deref().map(Slo::parse).transpose()?;
    let (reqs, trace_block) = args.trace.load()?;
    if args.vocab == Some(0) || !(args.request_timeout.is_finite() && args.request_timeout > 0.0) {
        anyhow::bail!("--vocab and --request-timeout must be positive");
    }
    let cfg = ReplayConfig {
        url: args.url.trim_end_matches('/').to_string(),
        model: args.model.clone(),
        speedup: 1.0,
        vocab: args.vocab,
        trace_block,
        request_timeout: Duration::from_secs_f64(args.request_timeout),
        progress: true,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        timeline: args.timeline,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let (records, duration) = rt.block_on(run_replay(&reqs, &cfg))?;
    let summary = summarize(&records, duration, slo.as_ref());
    print!("{}", summary.table());
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(&summary.aiperf_json())?;
        std::fs::write(dir.join("profile_export_aiperf.json"), json)?;
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join("profile_export.jsonl"))?);
        for r in &records {
            writeln!(f, "{}", serde_json::to_string(r)?)?;
        }
        f.flush()?;
    }
    Ok(())
}
