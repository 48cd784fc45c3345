//! The engine steps the timelines saw, rebuilt: a step is one span of one engine, which
//! every request in it records, and its work is what each of them did in it. A request's
//! first step prefills its prompt past the cached prefix, each later one decodes one token.
//! A step holding a prompt prefilled over several steps, or a request that started over, has
//! work the timelines cannot say, and counts as unknown.
//!
//! `tandem calibrate` prices the real runs' steps with its profile: how far the machine the
//! runs met stood from the profile's, by kind of step.

use std::collections::HashMap;

use crate::engine::SeqWork;
use crate::replay::metrics::RequestRecord;
use crate::timeline::{StepTimes, WorkerTimes};

/// One engine step the timelines saw.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenStep {
    pub start: u64,
    pub end: u64,
    /// Each request's share of it.
    pub work: Vec<SeqWork>,
    /// Whether every share is known (see the module's note).
    pub known: bool,
    /// Whether a disaggregated deployment's prefill worker ran it (its engines are apart
    /// from the decode workers').
    pub prefill_worker: bool,
}

impl SeenStep {
    pub fn prompts(&self) -> usize {
        self.work.iter().filter(|w| w.new_tokens > 1).count()
    }
}

/// The steps of `records`' timelines, by start.
pub fn seen_steps(records: &[RequestRecord]) -> Vec<SeenStep> {
    let mut steps: HashMap<(u64, u64), SeenStep> = HashMap::new();
    let mut add = |s: &StepTimes, work: Option<SeqWork>, prefill_worker: bool| {
        let e = steps.entry((s.start, s.end)).or_insert_with(|| SeenStep {
            start: s.start,
            end: s.end,
            work: Vec::new(),
            known: true,
            prefill_worker,
        });
        match work {
            Some(w) => e.work.push(w),
            None => e.known = false,
        }
    };
    for r in records {
        let Some(t) = r.timeline.as_deref() else {
            continue;
        };
        let prompt = r.input_tokens;
        let new = prompt.saturating_sub(r.cached_tokens).max(1);
        let failed = r.error.is_some();
        if let Some(p) = &t.prefill {
            shares(p, prompt, new, true, failed, &mut |s, w| add(s, w, true));
        }
        if let Some(w) = &t.worker {
            // A disaggregated request's decode worker gets its prompt's KV: it only decodes.
            let prefills = t.prefill.is_none();
            shares(w, prompt, new, prefills, failed, &mut |s, w| {
                add(s, w, false)
            });
        }
    }
    let mut out: Vec<SeenStep> = steps.into_values().collect();
    out.sort_by_key(|s| (s.start, s.end));
    out
}

/// Each step's lane: steps go to lanes, each to the lane of its side (prefill workers, or
/// the others) free at its start that was busy last. An engine's steps follow one another,
/// so a lane is one engine, or several of one side taking turns.
pub fn lanes(steps: &[SeenStep]) -> Vec<usize> {
    // Each lane's side and last step.
    let mut last: Vec<(bool, usize)> = Vec::new();
    let mut lane_of = vec![0; steps.len()];
    for (i, s) in steps.iter().enumerate() {
        let free = last
            .iter()
            .enumerate()
            .filter(|&(_, &(side, j))| side == s.prefill_worker && steps[j].end <= s.start)
            .max_by_key(|&(_, &(_, j))| steps[j].end)
            .map(|(k, _)| k);
        let k = free.unwrap_or_else(|| {
            last.push((s.prefill_worker, i));
            last.len() - 1
        });
        last[k].1 = i;
        lane_of[i] = k;
    }
    lane_of
}

/// How long each step's engine sat idle before it: from the end of the step before it on its
/// lane ([`lanes`]) to its start, ns; None for a lane's first step (idle since it started).
pub fn idle_before(steps: &[SeenStep]) -> Vec<Option<u64>> {
    let lane_of = lanes(steps);
    let mut last_end: Vec<Option<u64>> = Vec::new();
    steps
        .iter()
        .zip(&lane_of)
        .map(|(s, &k)| {
            if last_end.len() <= k {
                last_end.resize(k + 1, None);
            }
            let idle = last_end[k].map(|e| s.start.saturating_sub(e));
            last_end[k] = Some(s.end);
            idle
        })
        .collect()
}

/// One worker's steps of a request, each with its share (None: unknown).
fn shares(
    w: &WorkerTimes,
    prompt: usize,
    new: usize,
    prefills: bool,
    failed: bool,
    add: &mut dyn FnMut(&StepTimes, Option<SeqWork>),
) {
    // Steps up to the first that samples prefill the prompt; one alone did all of it.
    let prefill_steps = if prefills {
        w.steps
            .iter()
            .position(|s| s.sampled)
            .map_or(w.steps.len(), |i| i + 1)
    } else {
        0
    };
    let mut decoded = 0;
    let mut lost = failed;
    for (i, s) in w.steps.iter().enumerate() {
        // A step past the prompt that samples nothing starts it over (a preemption): what it
        // and the steps after it recompute is not in the timeline.
        lost |= i >= prefill_steps && !s.sampled;
        let share = if lost {
            None
        } else if i < prefill_steps {
            (prefill_steps == 1).then_some(SeqWork {
                new_tokens: new,
                context_len: prompt,
            })
        } else {
            decoded += 1;
            Some(SeqWork {
                new_tokens: 1,
                context_len: prompt + decoded,
            })
        };
        add(s, share);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::timeline::Timeline;

    pub fn step(start: u64, end: u64, sampled: bool) -> StepTimes {
        StepTimes {
            start,
            end,
            sampled,
        }
    }

    pub fn record(
        input: usize,
        cached: usize,
        prefill: Option<Vec<StepTimes>>,
        worker: Vec<StepTimes>,
    ) -> RequestRecord {
        let mut r = RequestRecord::sent(0, 0.0, input);
        r.cached_tokens = cached;
        let part = |steps| WorkerTimes {
            steps,
            ..Default::default()
        };
        r.timeline = Some(Box::new(Timeline {
            prefill: prefill.map(part),
            worker: Some(part(worker)),
            ..Default::default()
        }));
        r
    }

    pub fn w(new_tokens: usize, context_len: usize) -> SeqWork {
        SeqWork {
            new_tokens,
            context_len,
        }
    }

    #[test]
    fn steps_are_rebuilt_from_the_requests_in_them() {
        // Aggregated: two prompts prefilled together (one with a cached prefix), then one
        // decodes beside the other's last decode.
        let a = record(
            100,
            32,
            None,
            vec![step(0, 10, true), step(10, 12, true), step(12, 14, true)],
        );
        let b = record(50, 0, None, vec![step(0, 10, true), step(10, 12, true)]);
        let steps = seen_steps(&[a, b]);
        assert_eq!(steps.len(), 3);
        let mut first = steps[0].work.clone();
        first.sort_by_key(|s| s.new_tokens);
        assert_eq!(first, vec![w(50, 50), w(68, 100)]);
        assert_eq!(steps[0].prompts(), 2);
        let mut second = steps[1].work.clone();
        second.sort_by_key(|s| s.context_len);
        assert_eq!(second, vec![w(1, 51), w(1, 101)]);
        assert_eq!(steps[2].work, vec![w(1, 102)]);
        assert!(steps.iter().all(|s| s.known));

        // Disaggregated: the decode worker's first step decodes.
        let d = record(
            40,
            0,
            Some(vec![step(0, 5, true)]),
            vec![step(7, 8, true), step(8, 9, true)],
        );
        let steps = seen_steps(&[d]);
        let work: Vec<_> = steps.iter().map(|s| s.work.clone()).collect();
        assert_eq!(work, vec![vec![w(40, 40)], vec![w(1, 41)], vec![w(1, 42)]]);
    }

    #[test]
    fn an_engine_sat_idle_from_its_last_steps_end() {
        // The prefill worker: [0, 10) and [30, 40); the decode worker: [12, 15), [15, 16)
        // and [20, 21). The decode worker's first step follows the prefill worker's end, but
        // is not that engine's.
        let d = record(
            40,
            0,
            Some(vec![step(0, 10, true)]),
            vec![step(12, 15, true), step(15, 16, true), step(20, 21, true)],
        );
        let e = record(40, 0, Some(vec![step(30, 40, true)]), vec![]);
        let steps = seen_steps(&[d, e]);
        let starts: Vec<u64> = steps.iter().map(|s| s.start).collect();
        assert_eq!(starts, vec![0, 12, 15, 20, 30]);
        let sides: Vec<bool> = steps.iter().map(|s| s.prefill_worker).collect();
        assert_eq!(sides, vec![true, false, false, false, true]);
        assert_eq!(
            idle_before(&steps),
            vec![None, None, Some(0), Some(4), Some(20)]
        );
    }

    #[test]
    fn chunked_prompts_and_restarts_leave_their_steps_unknown() {
        let chunked = record(
            3000,
            0,
            None,
            vec![step(0, 10, false), step(10, 20, true), step(20, 21, true)],
        );
        let restarted = record(
            20,
            0,
            None,
            vec![step(30, 31, true), step(31, 32, false), step(32, 33, true)],
        );
        let known: Vec<bool> = seen_steps(&[chunked, restarted])
            .iter()
            .map(|s| s.known)
            .collect();
        // After the restart's step that samples nothing, its steps are unknown.
        assert_eq!(known, vec![false, false, true, true, false, false]);
    }
}
