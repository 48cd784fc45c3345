//! Test hooks around an executor, behind the workers' hidden `--debug-*` flags: a fixed output
//! (so that a client test knows what the model says, tool calls included) and a slow step (so
//! that a test can hold requests in flight, or stall the engine), and failed onboards from the
//! host KV tier (so that a test sees the prefix computed again), and known CPU costs per
//! step and per token sent (the latter applied by the worker's service). The model still runs, so
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
    /// Added to every step (asleep).
    pub step_delay: Duration,
    /// CPU added to every step (a busy loop on the engine thread: a host cost per step of
    /// known size, for the profile to measure).
    pub step_cpu: Duration,
    /// Batches of tier copies with an onboard among them that fail, before copies work.
    pub failed_onboards: u32,
    /// CPU every token a worker sends costs its serving thread (a busy loop beside the
    /// engine: a serving path of known cost, for the profile to measure).
    pub token_cpu: Duration,
}

/// Runs this thread on a CPU until it has used `d` of CPU time (not of wall time: sharing
/// its core with other threads makes it take longer, as real work does).
pub fn spin(d: Duration) {
    if d.is_zero() {
        return;
    }
    let cpu = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `ts`.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let until = cpu() + d;
    while cpu() < until {
        std::hint::spin_loop();
    }
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

    /// The executor inside, without the hooks.
    pub fn into_inner(self) -> E {
        self.inner
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
        spin(self.hooks.step_cpu);
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
