//! The simulated executor: no model, a step takes the time the profile says.

use std::sync::Arc;

use super::profile::Profile;
use crate::engine::{Executor, Sampled, StepBatch};
use crate::error::Result;

/// Token every simulated step samples (requests ignore EOS, so its value does not matter).
pub const SIM_TOKEN: u32 = 0;

/// Times steps with a [`Profile`] instead of running them.
pub struct SimExecutor {
    profile: Arc<Profile>,
    last: Option<f64>,
}

impl SimExecutor {
    /// An executor timed by `profile`.
    pub fn new(profile: Arc<Profile>) -> Self {
        SimExecutor {
            profile,
            last: None,
        }
    }

    /// The duration of the step executed since the last call, if one was (a step that
    /// scheduled nothing never reaches the executor).
    pub fn take_step_time(&mut self) -> Option<f64> {
        self.last.take()
    }
}

impl Executor for SimExecutor {
    fn execute(&mut self, batch: &StepBatch<'_>) -> Result<Vec<Sampled>> {
        self.last = Some(self.profile.step_time(&batch.work));
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
}
