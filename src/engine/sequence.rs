//! A request inside the engine: its tokens, progress and KV blocks.

use super::params::SamplingParams;
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::kv::BlockTable;

/// Engine-wide id of a request.
pub type RequestId = u64;

/// A generation request as the engine receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Caller-chosen id, unique among live requests.
    pub id: RequestId,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// How to sample and when to stop.
    pub params: SamplingParams,
}

/// Checks a request against the engine's limits: sampling parameters, an empty prompt, a
/// prompt that leaves no room under max_model_len, token ids outside the vocabulary.
pub fn validate_request(cfg: &EngineConfig, req: &Request) -> Result<()> {
    req.params.validate()?;
    if req.prompt.is_empty() {
        return Err(Error::InvalidRequest("the prompt is empty".into()));
    }
    if req.prompt.len() >= cfg.max_model_len {
        return Err(Error::InvalidRequest(format!(
            "the prompt has {} tokens; max_model_len {} leaves no room for output",
            req.prompt.len(),
            cfg.max_model_len
        )));
    }
    // Or-ing the comparisons of a chunk vectorizes on the baseline target (an unsigned max
    // needs SSE4.1); the error path, rare, finds the id. A vocabulary past u32 holds them all.
    let outside = |t: u32| u32::try_from(cfg.vocab_size).is_ok_and(|v| t >= v);
    let any_outside = req
        .prompt
        .chunks(1024)
        .any(|c| c.iter().fold(false, |o, &t| o | outside(t)));
    if let Some(t) = any_outside
        .then(|| req.prompt.iter().copied().find(|&t| outside(t)))
        .flatten()
    {
        return Err(Error::InvalidRequest(format!(
            "token id {t} is outside the vocabulary of {}",
            cfg.vocab_size
        )));
    }
    Ok(())
}

/// Why a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// max_tokens or the model's context length.
    Length,
    /// Aborted by the caller (or its client went away).
    Abort,
}

impl FinishReason {
    /// The OpenAI name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// A request's state in the scheduler.
#[derive(Debug, Clone)]
pub struct Sequence {
    /// The request id.
    pub id: RequestId,
    /// Prompt followed by the generated tokens.
    pub tokens: Vec<u32>,
    /// Length of the prompt within `tokens`.
    pub prompt_len: usize,
    /// Leading tokens whose K/V is in the cache.
    pub num_computed: usize,
    /// Prompt tokens served from the prefix cache when the request was first scheduled.
    pub num_cached_prompt: Option<usize>,
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Seed of the request's draws.
    pub seed: u64,
    /// The request's KV blocks.
    pub table: BlockTable,
    /// Times the request was preempted.
    pub num_preemptions: u32,
    /// Keep the blocks after finishing, for a decode worker to pull (prefill role).
    pub hold_kv: bool,
    /// When it reached the engine, was first scheduled, and got its first token.
    pub times: Times,
}

/// When a request reached each stage (the simulator's clock is not these: it ignores them).
#[derive(Debug, Clone)]
pub struct Times {
    /// Added to the engine.
    pub arrived: std::time::Instant,
    /// First scheduled into a step.
    pub scheduled: Option<std::time::Instant>,
    /// Its first token sampled.
    pub first_token: Option<std::time::Instant>,
    /// The steps it ran in (on an engine that runs the model).
    pub steps: Vec<crate::timeline::StepTimes>,
}

impl Times {
    /// Queue, prefill and decode time of a request that ends `now`.
    pub fn timing(&self, now: std::time::Instant) -> RequestTiming {
        let scheduled = self.scheduled.unwrap_or(now);
        let first = self.first_token.unwrap_or(now);
        RequestTiming {
            queued: scheduled.saturating_duration_since(self.arrived),
            prefill: first.saturating_duration_since(scheduled),
            decode: now.saturating_duration_since(first),
        }
    }
}

/// Where a finished request's time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTiming {
    /// Waiting before its first step.
    pub queued: std::time::Duration,
    /// From its first step to its first token.
    pub prefill: std::time::Duration,
    /// From its first token to its end.
    pub decode: std::time::Duration,
}

impl Sequence {
    /// A new, unscheduled sequence for `req`, drawing with `seed` unless the request has one.
    pub fn new(req: Request, seed: u64) -> Self {
        Sequence {
            id: req.id,
            prompt_len: req.prompt.len(),
            tokens: req.prompt,
            num_computed: 0,
            num_cached_prompt: None,
            seed: req.params.seed.unwrap_or(seed),
            params: req.params,
            table: BlockTable::default(),
            num_preemptions: 0,
            hold_kv: false,
            times: Times {
                arrived: std::time::Instant::now(),
                scheduled: None,
                first_token: None,
                steps: Vec::new(),
            },
        }
    }

    /// The prompt.
    pub fn prompt(&self) -> &[u32] {
        &self.tokens[..self.prompt_len]
    }

    /// The generated tokens.
    pub fn output(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Tokens not yet in the KV cache.
    pub fn num_uncomputed(&self) -> usize {
        self.tokens.len() - self.num_computed
    }
}
