//! The engine: requests, scheduling, sampling and the step loop.

pub mod core;
pub mod executor;
pub mod handle;
pub mod handoff;
pub mod hold;
pub mod hooks;
pub mod output;
pub mod params;
pub mod sampler;
pub mod scheduler;
pub mod sequence;
pub mod text;
mod tier_copy;

pub use self::core::EngineCore;
pub use executor::{Executor, ExecutorConfig, ModelExecutor, SeqWork, StepBatch};
pub use handle::{EngineHandle, EngineStats, OutputStream};
pub use hold::HoldView;
pub use output::{RequestOutput, StepFailure};
pub use params::SamplingParams;
pub use sampler::Sampled;
pub use sequence::{FinishReason, Request, RequestId, validate_request};
