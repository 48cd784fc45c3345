//! The trace a command replays (`--trace` and its scaling flags, shared by replay, simulate
//! and soak), and `tandem trace`: a trace's figures, or a scaled copy of it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::replay::trace::{Scaling, TraceRequest, load_or_reference, scale, stats};

/// Which trace, and how to scale it to the workers at hand.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Mooncake JSONL trace (timestamp, input_length, output_length, hash_ids per line; .xz
    /// is read too). Default: the built-in Mooncake conversation trace (12,031 requests).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Tokens per hash id of --trace (AIPerf's --prompt-input-tokens-block-size).
    #[arg(long, default_value_t = 512)]
    pub trace_block_size: usize,
    /// Only the first N requests.
    #[arg(long)]
    pub max_requests: Option<usize>,
    /// This many times faster than the trace's timestamps (0.5: half the request rate).
    #[arg(long, default_value_t = 1.0)]
    pub speedup: f64,
    /// Multiply prompt and output lengths by this, keeping the prefix structure (1/32: a
    /// hash id of 512 tokens stands for 16).
    #[arg(long, default_value_t = 1.0)]
    pub length_scale: f64,
    /// Cap prompts at this many tokens (whole trailing blocks are dropped).
    #[arg(long)]
    pub max_input_tokens: Option<usize>,
    /// Cap outputs at this many tokens.
    #[arg(long)]
    pub max_output_tokens: Option<usize>,
}

impl TraceArgs {
    /// The requests, scaled, and the tokens per hash id they have now.
    pub fn load(&self) -> anyhow::Result<(Vec<TraceRequest>, usize)> {
        for (flag, v) in [
            ("--speedup", self.speedup),
            ("--length-scale", self.length_scale),
        ] {
            if !(v.is_finite() && v > 0.0) {
                anyhow::bail!("{flag} must be positive");
            }
        }
        if self.trace_block_size == 0 {
            anyhow::bail!("--trace-block-size must be positive");
        }
        let reqs = load_or_reference(self.trace.as_deref(), self.trace_block_size)?;
        let s = Scaling {
            first: self.max_requests,
            length: self.length_scale,
            speedup: self.speedup,
            max_input: self.max_input_tokens,
            max_output: self.max_output_tokens,
        };
        Ok(scale(&reqs, self.trace_block_size, &s)?)
    }
}

/// `tandem trace`.
#[derive(Debug, Args)]
pub struct TraceCmdArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TraceCommand,
}

/// Subcommands of `tandem trace`.
#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Print a trace's figures (after scaling, if asked).
    Stats(TraceArgs),
    /// Write the scaled trace as JSONL (replay it with --trace-block-size as printed).
    Scale {
        /// The trace and its scaling.
        #[command(flatten)]
        trace: TraceArgs,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Runs `tandem trace`.
pub fn trace_cmd(args: TraceCmdArgs) -> anyhow::Result<()> {
    match args.command {
        TraceCommand::Stats(t) => {
            let (reqs, block) = t.load()?;
            let s = stats(&reqs, block);
            println!(
                "{} requests over {:.1} min ({:.2}/s), {block} tokens per hash id\n\
                 input tokens: mean {:.1}, median {}, p99 {}, max {}\n\
                 output tokens: mean {:.1}, max {}\n\
                 block references {}, unique {}: {:.2}% repeat; {:.2}% of input tokens cacheable",
                s.requests,
                s.duration_ms as f64 / 60_000.0,
                s.requests as f64 / (s.duration_ms.max(1) as f64 / 1000.0),
                s.input.0,
                s.input.1,
                s.input.2,
                s.input.3,
                s.output.0,
                s.output.1,
                s.block_refs,
                s.unique_blocks,
                100.0 * s.repeat_fraction,
                100.0 * s.cached_token_fraction,
            );
        }
        TraceCommand::Scale { trace, out } => {
            let (reqs, block) = trace.load()?;
            let mut w: Box<dyn Write> = match &out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            for r in &reqs {
                writeln!(w, "{}", serde_json::to_string(r)?)?;
            }
            w.flush()?;
            eprintln!(
                "{} requests, {block} tokens per hash id: replay with --trace-block-size {block}",
                reqs.len()
            );
        }
    }
    Ok(())
}
