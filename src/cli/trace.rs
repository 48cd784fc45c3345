//! The trace a command replays (`--trace` and its scaling flags, shared by replay, simulate
//! and soak), and `tandem trace`: a trace's figures, or a scaled copy of it.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::replay::synth::{SynthOptions, Synthesizer, prefix_stats};
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
    /// Derive a trace from a Mooncake trace's prefix tree and arrivals, with longer shared
    /// prefixes or prompts (NVIDIA Dynamo's `datagen synthesize`), and print its figures.
    Synthesize(SynthArgs),
}

/// Arguments of `tandem trace synthesize`.
#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// The source trace and its scaling (applied first).
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Requests to synthesize.
    #[arg(long, default_value_t = 100_000)]
    pub num_requests: usize,
    /// Multiply the shared prefixes' lengths (above 1: by its ceiling).
    #[arg(long, default_value_t = 1.0)]
    pub prefix_len_multiplier: f64,
    /// Multiply the unique prompts' lengths.
    #[arg(long, default_value_t = 1.0)]
    pub prompt_len_multiplier: f64,
    /// Multiply output lengths.
    #[arg(long, default_value_t = 1.0)]
    pub osl_multiplier: f64,
    /// Leave out (and draw again) requests longer than this.
    #[arg(long)]
    pub max_isl: Option<usize>,
    /// Divide the gaps between arrivals by this.
    #[arg(long, default_value_t = 1.0)]
    pub speedup_ratio: f64,
    /// Seed of the draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl SynthArgs {
    /// The synthesized trace and its tokens per hash id.
    pub fn synthesize(&self) -> anyhow::Result<(Vec<TraceRequest>, usize)> {
        let (source, block) = self.trace.load()?;
        let opts = SynthOptions {
            requests: self.num_requests,
            block,
            prefix_len_multiplier: self.prefix_len_multiplier,
            prompt_len_multiplier: self.prompt_len_multiplier,
            osl_multiplier: self.osl_multiplier,
            max_isl: self.max_isl,
            speedup: self.speedup_ratio,
            seed: self.seed,
        };
        let out = Synthesizer::new(&source, opts)?.run();
        if out.len() < self.num_requests {
            anyhow::bail!(
                "only {} of {} requests fit under --max-isl",
                out.len(),
                self.num_requests
            );
        }
        Ok((out, block))
    }
}

fn write_jsonl(reqs: &[TraceRequest], out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let mut w: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    for r in reqs {
        writeln!(w, "{}", serde_json::to_string(r)?)?;
    }
    w.flush()?;
    Ok(())
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
            write_jsonl(&reqs, out.as_deref())?;
            eprintln!(
                "{} requests, {block} tokens per hash id: replay with --trace-block-size {block}",
                reqs.len()
            );
        }
        TraceCommand::Synthesize(a) => {
            let (reqs, block) = a.synthesize()?;
            write_jsonl(&reqs, a.out.as_deref())?;
            let s = prefix_stats(&reqs, block);
            eprintln!(
                "{} requests, {block} tokens per hash id: ISL mean {:.0} ({}–{}), OSL mean \
                 {:.0}; hit rate {:.1}% (infinite cache), shared-prefix ratio {:.1}%",
                reqs.len(),
                s.isl.0,
                s.isl.1,
                s.isl.2,
                s.osl,
                100.0 * s.hit_rate,
                100.0 * s.shared_prefix_ratio
            );
        }
    }
    Ok(())
}
