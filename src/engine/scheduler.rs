//! Continuous batching: each step spends a token budget on running sequences (decodes and
//! unfinished prefill chunks) first, then admits waiting ones; when blocks run out, the
//! newest running sequence is preempted and later recomputed.

use std::collections::VecDeque;

use super::sequence::{RequestId, Sequence};
use crate::kv::{KvCacheManager, PrefixHit};

/// Limits of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most tokens computed in one step (decode tokens plus prefill chunks).
    pub max_num_batched_tokens: usize,
    /// Most prefill tokens one sequence gets per step (0: no limit beyond the budget), so
    /// that one long prompt does not hold up the others' decodes.
    pub long_prefill_token_threshold: usize,
}

impl SchedulerConfig {
    /// Tokens a sequence with `remaining` uncomputed tokens gets from a step with `budget` left.
    fn chunk(&self, remaining: usize, budget: usize) -> usize {
        let cap = match self.long_prefill_token_threshold {
            0 => usize::MAX,
            t => t,
        };
        remaining.min(budget).min(cap)
    }
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// Index into [`Scheduler::running`].
    pub index: usize,
    /// Tokens computed for it this step.
    pub num_new: usize,
}

/// The plan of one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    /// Sequences to run, in [`Scheduler::running`] order.
    pub scheduled: Vec<Scheduled>,
    /// Sequences preempted (their blocks freed) to make room.
    pub preempted: Vec<RequestId>,
}

/// Waiting and running sequences.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    /// Sequences not yet admitted (or preempted), first come first served.
    pub waiting: VecDeque<Sequence>,
    /// Admitted sequences, oldest first.
    pub running: Vec<Sequence>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Scheduler {
            cfg,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    /// Whether any sequence is waiting or running.
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// Plans one step, allocating KV slots for every scheduled token.
    pub fn schedule(&mut self, kv: &mut KvCacheManager) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.cfg.max_num_batched_tokens;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let num_new = self.cfg.chunk(self.running[i].num_uncomputed(), budget);
            loop {
                let seq = &mut self.running[i];
                if kv.allocate_slots(&mut seq.table, &seq.tokens, &[], seq.num_computed, num_new) {
                    out.scheduled.push(Scheduled { index: i, num_new });
                    budget -= num_new;
                    i += 1;
                    break;
                }
                // The newest running sequence gives way; it is never one already scheduled,
                // since those come before `i`.
                let victim = self.running.pop().expect("running holds sequence i");
                let was_self = self.running.len() == i;
                self.preempt(victim, kv, &mut out);
                if was_self {
                    break;
                }
            }
        }
        if !out.preempted.is_empty() {
            return out;
        }
        while budget > 0 && self.running.len() < self.cfg.max_num_seqs {
            let Some(seq) = self.waiting.front_mut() else {
                break;
            };
            let num_new = if seq.num_computed > 0 {
                // Its prompt's KV arrived from a prefill worker: it holds those blocks and
                // needs only the slots of its new tokens.
                let num_new = self.cfg.chunk(seq.num_uncomputed(), budget);
                if !kv.allocate_slots(&mut seq.table, &seq.tokens, &[], seq.num_computed, num_new) {
                    break;
                }
                num_new
            } else {
                let hits = kv.find_cached_prefix(&mut seq.table, &seq.tokens);
                let hit_tokens = hits.len() * kv.block_size();
                let host_hit_tokens = hits
                    .iter()
                    .filter(|h| matches!(h, PrefixHit::Host { .. }))
                    .count()
                    * kv.block_size();
                let num_new = self.cfg.chunk(seq.tokens.len() - hit_tokens, budget);
                if !kv.allocate_slots(&mut seq.table, &seq.tokens, &hits, 0, num_new) {
                    break;
                }
                if seq.num_cached_prompt.is_none() {
                    seq.num_cached_prompt = Some(hit_tokens);
                    kv.record_prefix_lookup(seq.prompt_len, hit_tokens, host_hit_tokens);
                }
                seq.num_computed = hit_tokens;
                num_new
            };
            budget -= num_new;
            let mut seq = self.waiting.pop_front().expect("front exists");
            seq.times
                .scheduled
                .get_or_insert_with(std::time::Instant::now);
            self.running.push(seq);
            out.scheduled.push(Scheduled {
                index: self.running.len() - 1,
                num_new,
            });
        }
        out
    }

    /// Puts running sequences back at the front of the waiting queue in their order, their
    /// blocks freed and progress reset, as preemption does.
    pub fn requeue(&mut self, ids: &[RequestId], kv: &mut KvCacheManager) {
        let mut out = SchedulerOutput::default();
        for &id in ids.iter().rev() {
            if let Some(i) = self.running.iter().position(|s| s.id == id) {
                let seq = self.running.remove(i);
                self.preempt(seq, kv, &mut out);
                // Admitted afresh: what it reuses is what it finds then.
                if let Some(s) = self.waiting.front_mut() {
                    s.num_cached_prompt = None;
                }
            }
        }
    }

    fn preempt(&mut self, mut seq: Sequence, kv: &mut KvCacheManager, out: &mut SchedulerOutput) {
        kv.free(&mut seq.table);
        seq.num_computed = 0;
        seq.num_preemptions += 1;
        out.preempted.push(seq.id);
        self.waiting.push_front(seq);
    }

    /// Removes a sequence wherever it is, freeing its blocks; None if unknown.
    pub fn remove(&mut self, id: RequestId, kv: &mut KvCacheManager) -> Option<Sequence> {
        let mut seq = self.detach(id)?;
        kv.free(&mut seq.table);
        Some(seq)
    }

    /// Removes a sequence wherever it is, keeping its blocks allocated; None if unknown.
    pub fn detach(&mut self, id: RequestId) -> Option<Sequence> {
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            return Some(self.running.remove(i));
        }
        let i = self.waiting.iter().position(|s| s.id == id)?;
        self.waiting.remove(i)
    }

    /// Whether a request with this id is live.
    pub fn contains(&self, id: RequestId) -> bool {
        self.running.iter().chain(&self.waiting).any(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::params::SamplingParams;
    use crate::engine::sequence::Request;
    use crate::kv::EventDetail;

    fn seq(id: u64, len: usize) -> Sequence {
        let prompt = (0..len as u32).map(|t| t + 1000 * id as u32).collect();
        Sequence::new(
            Request {
                id,
                prompt,
                params: SamplingParams::greedy(100),
            },
            0,
        )
    }

    fn sched(budget: usize, max_seqs: usize) -> Scheduler {
        Scheduler::new(SchedulerConfig {
            max_num_seqs: max_seqs,
            max_num_batched_tokens: budget,
            long_prefill_token_threshold: 0,
        })
    }

    /// Marks the plan as executed: computed counts advance, finished prompts get a token.
    fn execute(s: &mut Scheduler, plan: &SchedulerOutput) {
        for p in &plan.scheduled {
            let q = &mut s.running[p.index];
            q.num_computed += p.num_new;
            if q.num_computed == q.tokens.len() {
                q.tokens.push(1);
            }
        }
    }

    #[test]
    fn chunks_long_prompts_and_mixes_them_with_decodes() {
        let mut kv = KvCacheManager::new(64, 4, true, EventDetail::Off);
        let mut s = sched(10, 8);
        s.waiting.push_back(seq(1, 3));
        s.waiting.push_back(seq(2, 25));
        let plan = s.schedule(&mut kv);
        assert_eq!(
            plan.scheduled,
            vec![
                Scheduled {
                    index: 0,
                    num_new: 3
                },
                Scheduled {
                    index: 1,
                    num_new: 7
                }
            ]
        );
        execute(&mut s, &plan);
        // Next step: one decode token for seq 1 and a 9-token chunk for seq 2.
        let plan = s.schedule(&mut kv);
        assert_eq!(
            plan.scheduled,
            vec![
                Scheduled {
                    index: 0,
                    num_new: 1
                },
                Scheduled {
                    index: 1,
                    num_new: 9
                }
            ]
        );
        kv.pool().check_invariants().unwrap();
    }

    #[test]
    fn preempts_the_newest_and_admits_in_arrival_order() {
        let mut kv = KvCacheManager::new(6, 4, false, EventDetail::Off);
        let mut s = sched(100, 8);
        for id in 1..=3 {
            s.waiting.push_back(seq(id, 8));
        }
        let plan = s.schedule(&mut kv);
        assert_eq!(
            plan.scheduled.len(),
            3,
            "6 blocks hold three 8-token prompts"
        );
        execute(&mut s, &plan);
        // Every sequence now needs a third block: the newest gives its two up for the others.
        let plan = s.schedule(&mut kv);
        assert_eq!(plan.preempted, vec![3]);
        assert_eq!(
            plan.scheduled,
            vec![
                Scheduled {
                    index: 0,
                    num_new: 1
                },
                Scheduled {
                    index: 1,
                    num_new: 1
                }
            ]
        );
        let waiting = &s.waiting[0];
        assert!(waiting.id == 3 && waiting.num_computed == 0 && waiting.table.blocks.is_empty());
        kv.pool().check_invariants().unwrap();
        execute(&mut s, &plan);
        // Removing the oldest lets the preempted one back in, recomputing prompt and output.
        s.remove(1, &mut kv).unwrap();
        let plan = s.schedule(&mut kv);
        assert_eq!(
            s.running.iter().map(|q| q.id).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(
            plan.scheduled[1],
            Scheduled {
                index: 1,
                num_new: 9
            }
        );
        kv.pool().check_invariants().unwrap();
    }

    #[test]
    fn respects_max_num_seqs() {
        let mut kv = KvCacheManager::new(64, 4, true, EventDetail::Off);
        let mut s = sched(100, 2);
        for id in 1..=3 {
            s.waiting.push_back(seq(id, 5));
        }
        assert_eq!(s.schedule(&mut kv).scheduled.len(), 2);
        assert_eq!(s.waiting.len(), 1);
    }
}
