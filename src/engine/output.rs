//! What a step gives its owner: per-request outputs, or the failure that ended its requests.

use super::sampler::Sampled;
use super::sequence::{FinishReason, RequestId, RequestTiming};
use crate::error::Error;
use crate::kv::BlockId;
use crate::timeline::StepTimes;

/// What one step produced for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    /// The request.
    pub id: RequestId,
    /// The token generated this step (none for a prefill chunk that did not finish the prompt).
    pub token: Option<Sampled>,
    /// Set when the request ended this step.
    pub finish: Option<FinishReason>,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    /// For a prefill request that finished: the blocks now held for a decode worker to pull.
    pub held_blocks: Option<Vec<BlockId>>,
    /// For a request that finished: where its time went.
    pub timing: Option<RequestTiming>,
    /// For a request that finished on an engine that runs the model: the steps it ran in.
    pub steps: Vec<StepTimes>,
}

/// A step whose execution failed: the error, and the requests it ended (their blocks freed).
#[derive(Debug)]
pub struct StepFailure {
    /// What went wrong.
    pub error: Error,
    /// Requests that were in the step; they are no longer live.
    pub failed: Vec<RequestId>,
}
