//! The simulated executor: no model, a step takes the time the profile says.

use crate::engine::{Executor, Sampled, SeqWork, StepBatch};
use crate::error::Result;
use crate::kv::KvCopy;

/// Token every simulated step samples (requests ignore EOS, so its value does not matter).
pub const SIM_TOKEN: u32 = 0;

/// Records the work of each step instead of running it; the cluster times it with its
/// [`super::Profile`] (with the other data-parallel ranks' work, when the worker has them).
#[derive(Default)]
pub struct SimExecutor {
    last: Option<Vec<SeqWork>>,
    last_ids: Vec<crate::engine::RequestId>,
    copied_blocks: usize,
}

impl SimExecutor {
    /// The work of the step executed since the last call, if one was (a step that
    /// scheduled nothing never reaches the executor).
    pub fn take_step_work(&mut self) -> Option<Vec<SeqWork>> {
        self.last.take()
    }

    /// The requests of the step executed last (each once: a second call gives none).
    pub fn take_step_ids(&mut self) -> Vec<crate::engine::RequestId> {
        std::mem::take(&mut self.last_ids)
    }

    /// Blocks copied between the tiers since the last call (either way: each crosses the
    /// host link once).
    pub fn take_copied_blocks(&mut self) -> usize {
        std::mem::take(&mut self.copied_blocks)
    }
}

impl Executor for SimExecutor {
    fn execute(&mut self, batch: &StepBatch<'_>) -> Result<Vec<Sampled>> {
        self.last = Some(batch.work.clone());
        self.last_ids.clone_from(&batch.ids);
        self.copied_blocks += batch.copies.len();
        Ok(batch
            .samples
            .iter()
            .map(|_| Sampled {
                token: SIM_TOKEN,
                logprob: None,
                top_logprobs: Vec::new(),
            })
            .collect())
    }

    fn runs_model(&self) -> bool {
        false
    }

    fn copy_kv(&mut self, copies: &[KvCopy]) -> Result<()> {
        self.copied_blocks += copies.len();
        Ok(())
    }
}
