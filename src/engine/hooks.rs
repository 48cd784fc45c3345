//! Test hooks around an executor, behind the workers' hidden `--debug-*` flags: a fixed output
//! (so that a client test knows what the model says, tool calls included) and a slow step (so
//! that a test can hold requests in flight, or stall the engine), and failed onboards from the
//! host KV tier (so that a test sees the prefix computed again). The model still runs, so
//! every other path (KV, events, transfers) is the real one.

use std::time::Duration;

use super::executor::{Executor, StepBatch};
use super::sampler::Sampled;
use crate::error::{Error, Result};
use crate::kv::{BlockId, KvCopy};

/// What the hooks do; the default does nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Every request's output, token by token (then it repeats the last).
    pub script: Option<Vec<u32>>,
    /// Added to every step.
    pub step_delay: Duration,
    /// Batches of tier copies with an onboard among them that fail, before copies work.
    pub failed_onboards: u32,
}

/// An executor with [`Hooks`].
pub struct Hooked<E> {
    inner: E,
    hooks: Hooks,
}

impl<E> Hooked<E> {
    /// `inner` with `hooks`.
    pub fn new(inner: E, hooks: Hooks) -> Self {
        Hooked { inner, hooks }
    }

    /// The executor inside.
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

impl<E> Hooked<E> {
    /// Fails a batch of copies with an onboard among them while `failed_onboards` lasts.
    fn fail_onboards(&mut self, copies: &[KvCopy]) -> Result<()> {
        let onboard = copies.iter().any(|c| matches!(c, KvCopy::Onboard { .. }));
        if onboard && self.hooks.failed_onboards > 0 {
            self.hooks.failed_onboards -= 1;
            return Err(Error::KvCopy(
                "onboard failed (--debug-fail-onboards)".into(),
            ));
        }
        Ok(())
    }
}

impl<E: Executor> Executor for Hooked<E> {
    fn execute(&mut self, batch: &StepBatch<'_>) -> Result<Vec<Sampled>> {
        if !self.hooks.step_delay.is_zero() {
            std::thread::sleep(self.hooks.step_delay);
        }
        self.fail_onboards(&batch.copies)?;
        let mut out = self.inner.execute(batch)?;
        if let Some(script) = self.hooks.script.as_ref().filter(|s| !s.is_empty()) {
            for (s, ctx) in out.iter_mut().zip(&batch.samples) {
                let at = ctx.output.len().min(script.len() - 1);
                if s.token != script[at] {
                    // The model's logprob is of another token: none rather than a wrong one.
                    s.token = script[at];
                    s.logprob = None;
                }
            }
        }
        Ok(out)
    }

    fn runs_model(&self) -> bool {
        self.inner.runs_model()
    }

    fn read_kv_blocks(&mut self, blocks: &[BlockId]) -> Result<Vec<Vec<u8>>> {
        self.inner.read_kv_blocks(blocks)
    }

    fn write_kv_blocks(&mut self, blocks: &[BlockId], shards: &[Vec<u8>]) -> Result<()> {
        self.inner.write_kv_blocks(blocks, shards)
    }

    fn kv_memory(&self) -> Vec<Vec<crate::backend::KvMemory>> {
        self.inner.kv_memory()
    }

    fn copy_seconds(&self) -> f64 {
        self.inner.copy_seconds()
    }

    fn copy_kv(&mut self, copies: &[KvCopy]) -> Result<()> {
        self.fail_onboards(copies)?;
        self.inner.copy_kv(copies)
    }
}
