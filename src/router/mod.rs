//! Routing requests to workers: round-robin, or KV-aware (prefix overlap and load).

pub mod index;
pub mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::RngExt;

use crate::kv::hash::extend_sequence_hashes;
pub use pool::{WorkerHandle, WorkerPool};

/// How the router picks a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// The next healthy worker in turn.
    RoundRobin,
    /// Lowest cost: prefill blocks left after the cached prefix plus blocks of requests in
    /// flight; sampled with a softmax at `temperature` (0: always the lowest).
    Kv {
        /// Softmax temperature over costs in blocks.
        temperature: f64,
    },
}

/// A routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index of the worker in the pool.
    pub worker: usize,
    /// Prompt blocks the index says it already holds.
    pub overlap_blocks: usize,
}

/// Picks workers for requests.
pub struct Router {
    policy: Policy,
    pool: Arc<WorkerPool>,
    next: AtomicUsize,
}

impl Router {
    /// A router over `pool`.
    pub fn new(policy: Policy, pool: Arc<WorkerPool>) -> Self {
        Router {
            policy,
            pool,
            next: AtomicUsize::new(0),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<WorkerPool> {
        &self.pool
    }

    /// Picks a healthy worker for `prompt`, skipping those in `exclude`; None if none is up.
    pub fn pick(&self, prompt: &[u32], exclude: &[usize]) -> Option<Choice> {
        let workers = &self.pool.workers;
        let n = workers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates: Vec<usize> = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| workers[*i].is_healthy() && !exclude.contains(i))
            .collect();
        let first = *candidates.first()?;
        let temperature = match self.policy {
            Policy::RoundRobin => {
                return Some(Choice {
                    worker: first,
                    overlap_blocks: 0,
                });
            }
            Policy::Kv { temperature } => temperature,
        };
        let Some(bs) = self.pool.block_size() else {
            return Some(Choice {
                worker: first,
                overlap_blocks: 0,
            });
        };
        let mut hashes = Vec::new();
        extend_sequence_hashes(&mut hashes, prompt, bs);
        let overlaps = self
            .pool
            .index
            .read()
            .map(|ix| ix.overlaps(&hashes))
            .unwrap_or_else(|_| vec![0; n]);
        let prompt_blocks = prompt.len().div_ceil(bs);
        let cost = |i: usize| {
            let prefill = prompt_blocks - overlaps[i].min(prompt_blocks);
            (prefill + workers[i].active_blocks.load(Ordering::Relaxed)) as f64
        };
        // Candidates start at a rotating offset, so equal costs spread over workers.
        let worker = if temperature <= 0.0 {
            *candidates
                .iter()
                .min_by(|&&a, &&b| cost(a).total_cmp(&cost(b)))?
        } else {
            let min = candidates
                .iter()
                .map(|&i| cost(i))
                .fold(f64::INFINITY, f64::min);
            let weights: Vec<f64> = candidates
                .iter()
                .map(|&i| (-(cost(i) - min) / temperature).exp())
                .collect();
            let mut u = rand::rng().random::<f64>() * weights.iter().sum::<f64>();
            let mut pick = first;
            for (&i, w) in candidates.iter().zip(&weights) {
                pick = i;
                if u < *w {
                    break;
                }
                u -= w;
            }
            pick
        };
        Some(Choice {
            worker,
            overlap_blocks: overlaps[worker],
        })
    }
}
