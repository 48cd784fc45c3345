//! Conversions between the gRPC types and the engine's: sampling parameters (the frontend
//! sends them, the worker reads them), one generated token, and a worker's timeline of a
//! request.

use super::proto;
use crate::engine::{RequestOutput, SamplingParams};
use crate::timeline::{StepTimes, WorkerTimes};

/// Sampling parameters of a gRPC request (validated by the engine on submit).
pub fn sampling_from_proto(p: proto::SamplingParams) -> SamplingParams {
    SamplingParams {
        temperature: p.temperature,
        top_k: p.top_k as usize,
        top_p: p.top_p,
        min_p: p.min_p,
        seed: p.seed,
        repetition_penalty: p.repetition_penalty,
        presence_penalty: p.presence_penalty,
        frequency_penalty: p.frequency_penalty,
        max_tokens: p.max_tokens as usize,
        stop_token_ids: p.stop_token_ids,
        min_tokens: p.min_tokens as usize,
        stop: Vec::new(),
        ignore_eos: p.ignore_eos,
        logprobs: p.logprobs.map(|n| n as usize),
    }
}

/// The gRPC form of engine sampling parameters (stop strings stay with the frontend).
pub fn sampling_to_proto(p: &SamplingParams) -> proto::SamplingParams {
    proto::SamplingParams {
        temperature: p.temperature,
        top_k: p.top_k as u32,
        top_p: p.top_p,
        min_p: p.min_p,
        seed: p.seed,
        repetition_penalty: p.repetition_penalty,
        presence_penalty: p.presence_penalty,
        frequency_penalty: p.frequency_penalty,
        max_tokens: p.max_tokens.min(u32::MAX as usize) as u32,
        stop_token_ids: p.stop_token_ids.clone(),
        min_tokens: p.min_tokens.min(u32::MAX as usize) as u32,
        ignore_eos: p.ignore_eos,
        logprobs: p.logprobs.map(|n| n as u32),
    }
}

/// The gRPC form of one engine output.
pub fn response_of(o: RequestOutput) -> proto::GenerateResponse {
    let (token_id, logprob, top) = match o.token {
        Some(t) => (Some(t.token), t.logprob, t.top_logprobs),
        None => (None, None, Vec::new()),
    };
    proto::GenerateResponse {
        token_id,
        logprob,
        top_logprobs: top
            .into_iter()
            .map(|(token_id, logprob)| proto::TokenLogprob { token_id, logprob })
            .collect(),
        finish_reason: o.finish.map(|f| f.as_str().to_string()).unwrap_or_default(),
        prompt_tokens: o.prompt_tokens as u32,
        cached_tokens: o.cached_tokens as u32,
        sent_ns: 0,
        timeline: None,
    }
}

/// What a worker saw of a request before its steps, for the timeline it was asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerClock {
    /// The RPC arrived.
    pub received: u64,
    /// The request reached the engine.
    pub queued: u64,
    /// A decode worker's KV pull: start, end.
    pub kv_pull: Option<(u64, u64)>,
}

impl WorkerClock {
    /// The gRPC form, with the request's steps.
    pub fn to_proto(&self, steps: &[StepTimes]) -> proto::WorkerTimeline {
        let (a, b) = self.kv_pull.unwrap_or((0, 0));
        proto::WorkerTimeline {
            received_ns: self.received,
            queued_ns: self.queued,
            kv_pull_start_ns: a,
            kv_pull_end_ns: b,
            steps: steps
                .iter()
                .map(|s| proto::StepTimes {
                    start_ns: s.start,
                    end_ns: s.end,
                    sampled: s.sampled,
                })
                .collect(),
        }
    }
}

/// A worker's timeline of a request, with the times it sent the request's tokens.
pub fn worker_times_of(t: &proto::WorkerTimeline, sent: Vec<u64>) -> WorkerTimes {
    WorkerTimes {
        received: t.received_ns,
        queued: t.queued_ns,
        kv_pull: (t.kv_pull_end_ns > 0).then_some((t.kv_pull_start_ns, t.kv_pull_end_ns)),
        steps: t
            .steps
            .iter()
            .map(|s| StepTimes {
                start: s.start_ns,
                end: s.end_ns,
                sampled: s.sampled,
            })
            .collect(),
        sent,
    }
}
