//! `tandem generate`: one prompt, streamed to stdout.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;

use super::ModelArgs;
use crate::backend::Backend;
use crate::engine::text::TextStream;
use crate::engine::{FinishReason, Request, SamplingParams};
use crate::loader::{DeviceKind, LoadedModel, load_cpu, load_cuda};

/// Arguments of `tandem generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text.
    #[arg(long, conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy); defaults to the model's generation_config.json.
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Top-k (0: off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Top-p in (0, 1].
    #[arg(long)]
    top_p: Option<f32>,
    /// Min-p in [0, 1].
    #[arg(long)]
    min_p: Option<f32>,
    /// Seed of the random draws.
    #[arg(long)]
    seed: Option<u64>,
    /// Repetition penalty (> 0; 1 is off).
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// Presence penalty in [-2, 2].
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    presence_penalty: f32,
    /// Frequency penalty in [-2, 2].
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    frequency_penalty: f32,
    /// Stop strings (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Extra stop token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    stop_token_ids: Vec<u32>,
    /// Keep generating past EOS.
    #[arg(long)]
    ignore_eos: bool,
    /// Fewest tokens before EOS or a stop token id may end the output.
    #[arg(long, default_value_t = 0)]
    min_tokens: usize,
    /// Report this many top logprobs per token (with --json).
    #[arg(long)]
    logprobs: Option<usize>,
    /// Print one JSON object (token_ids, text, finish_reason, ...) instead of streaming text.
    #[arg(long)]
    json: bool,
}

/// Runs `tandem generate`.
pub fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let spec = args.model.spec(true)?;
    match spec.device {
        DeviceKind::Cpu => run(args, load_cpu(&spec).context("loading the model")?),
        DeviceKind::Cuda => run(args, load_cuda(&spec).context("loading the model")?),
    }
}

fn run<B: Backend>(args: GenerateArgs, mut loaded: LoadedModel<B>) -> anyhow::Result<()> {
    if loaded.is_demo {
        eprintln!(
            "tandem: no --model given, running the built-in demo model (a 3.5M-parameter Qwen3 \
             trained on the King James Bible)."
        );
    }
    let tok = loaded.tokenizer.clone();
    let prompt = match (&args.prompt, &args.prompt_ids) {
        (_, Some(ids)) => ids.clone(),
        (Some(text), None) => match &tok {
            Some(t) => t.encode(text)?,
            None => bail!(
                "{} has no tokenizer.json: pass --prompt-ids",
                args.model
                    .model
                    .as_ref()
                    .map_or("the model".into(), |p| p.display().to_string())
            ),
        },
        (None, None) => bail!("give a prompt with --prompt TEXT or --prompt-ids 1,2,3"),
    };
    let d = SamplingParams::from_generation_config(&loaded.generation);
    let params = SamplingParams {
        temperature: args.temperature.unwrap_or(d.temperature),
        top_k: args.top_k.unwrap_or(d.top_k),
        top_p: args.top_p.unwrap_or(d.top_p),
        min_p: args.min_p.unwrap_or(d.min_p),
        seed: args.seed,
        repetition_penalty: args.repetition_penalty.unwrap_or(d.repetition_penalty),
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        max_tokens: args.max_tokens,
        stop_token_ids: args.stop_token_ids.clone(),
        min_tokens: args.min_tokens,
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        logprobs: args.logprobs,
    };
    if !args.stop.is_empty() && tok.is_none() {
        bail!("stop strings need a tokenizer.json");
    }
    let engine = &mut loaded.engine;
    engine.add_request(Request {
        id: 0,
        prompt: prompt.clone(),
        params,
    })?;
    let mut text = TextStream::new(args.stop.clone());
    let (mut ids, mut logprobs) = (Vec::new(), Vec::new());
    let mut cached;
    let mut stdout = std::io::stdout().lock();
    let finish = 'run: loop {
        let outputs = engine.step().map_err(|f| f.error)?;
        for o in outputs {
            cached = o.cached_tokens;
            if let Some(s) = o.token {
                ids.push(s.token);
                if args.logprobs.is_some() {
                    logprobs.push(serde_json::json!({"token": s.token, "logprob": s.logprob, "top": s.top_logprobs}));
                }
                if let Some(t) = &tok {
                    let delta = text.push(t, s.token)?;
                    if !args.json {
                        stdout.write_all(delta.as_bytes())?;
                        stdout.flush()?;
                    }
                    if text.stopped() {
                        engine.abort(0);
                        break 'run FinishReason::Stop;
                    }
                }
            }
            if let Some(f) = o.finish {
                break 'run f;
            }
        }
    };
    let tail = match &tok {
        Some(t) => text.finish(t)?,
        None => String::new(),
    };
    if args.json {
        let mut obj = serde_json::json!({
            "token_ids": ids,
            "text": tok.as_ref().map(|_| text.text().to_string()),
            "finish_reason": finish.as_str(),
            "prompt_tokens": prompt.len(),
            "cached_tokens": cached,
        });
        if args.logprobs.is_some() {
            obj["logprobs"] = serde_json::Value::Array(logprobs);
        }
        writeln!(stdout, "{obj}")?;
    } else {
        writeln!(stdout, "{tail}")?;
    }
    Ok(())
}
