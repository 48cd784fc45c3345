//! What the serving path around the engines costs: the client, HTTP, the frontend's
//! tokenization and routing, gRPC, and each token's relay back. `tandem profile` measures it
//! from timed requests under load (cli/profile_serving.rs); the simulator charges each term
//! where the real system pays it: latencies on the request's clock points, CPU on the steps
//! it takes cores from.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::timeline::{Timeline, WorkerTimes};

/// The serving path's costs, s. The latencies are means of timeline segments
/// ([`crate::timeline::SEGMENTS`]); zero in the arithmetic profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingCosts {
    /// The client sends -> the frontend reads the request.
    pub to_frontend_s: f64,
    /// The requests of a burst (sent at once) reach the engines this far apart: the
    /// frontend takes them one after another.
    pub arrival_gap_s: f64,
    /// An idle engine thread starts its step this long after a request reaches it, or
    /// after the last of those that keep reaching it closer together (they join the step)...
    pub engine_wake_s: f64,
    /// ... except in this share of the bursts, where it wins the race for the core against
    /// the serving thread and starts with the first request alone.
    pub engine_early_share: f64,
    /// The frontend's tokenization (and the request's checks).
    pub tokenize_s: f64,
    /// The router's pick.
    pub route_s: f64,
    /// The gRPC call reaches the worker.
    pub to_worker_s: f64,
    /// The worker hands the request to its engine thread.
    pub to_engine_s: f64,
    /// A step's end -> the worker sends its first token (the engine thread's fan-out, the
    /// gRPC stream's turn), when the engine then goes idle...
    pub token_out_s: f64,
    /// ... and when it steps on at once (the sending thread then shares the core with it).
    pub token_out_busy_s: f64,
    /// ... and each further token of the step, one after another.
    pub token_gap_s: f64,
    /// Between two steps the engine thread hands the first's outputs to their streams and
    /// takes its commands: the next step starts this long after a step's end, plus this
    /// much for each token the step made. The per-token part is net of the serving
    /// threads' CPU per token (`worker_cpu_per_token_s`), which the next step pays.
    pub engine_gap_s: f64,
    pub engine_gap_per_token_s: f64,
    /// The worker sends a token -> the frontend has relayed it (gRPC, detokenization).
    pub relay_s: f64,
    /// Disaggregated: the frontend has relayed the prefill's first token -> the decode worker
    /// has the Decode call (0 in a profile of one aggregated worker: the call to a worker,
    /// `to_worker_s`, stands for it).
    pub decode_call_s: f64,
    /// The first token relayed -> its chunk leaves the frontend.
    pub chunk_s: f64,
    /// The first chunk leaves the frontend -> the client reads it.
    pub to_client_s: f64,
    /// The last token relayed -> the client reads the end of the stream.
    pub close_s: f64,
    /// CPU the worker's own serving threads (gRPC) spend per request and per token, on its
    /// cores: its engine's steps wait for it (a CPU worker's; zero for a GPU worker, whose
    /// host has cores to spare).
    /// In a disaggregated deployment's costs the per-request term is the prefill worker's
    /// (net of its one token), the per-token term the decode worker's.
    pub worker_cpu_per_request_s: f64,
    pub worker_cpu_per_token_s: f64,
    /// Disaggregated: CPU the decode worker's serving threads spend per request (the Decode
    /// call, the release at the source; its pull's part is `transfer_cpu_dest_per_byte`'s),
    /// on its cores.
    pub decode_cpu_per_request_s: f64,
    /// The CPU-sharing term: CPU the frontend and the client spend per token and per
    /// request on the cores the workers run on. It exists only where they share cores (this
    /// 2-core machine: workers, frontend and client on the same two); a GPU host gives the
    /// serving processes cores of their own, and its profile leaves it at zero.
    pub shared_cpu_per_token_s: f64,
    pub shared_cpu_per_request_s: f64,
    /// Cores the shared work spreads over (the machine's); 0 when nothing is shared.
    pub shared_cores: f64,
    /// A KV pull while the engine beside it steps (its threads wait for a core the engine
    /// holds): fixed s and bytes/s; 0: as when idle (the measured or arithmetic transfer).
    pub busy_transfer_latency_s: f64,
    pub busy_transfer_bytes_per_s: f64,
    /// CPU a pull takes on the source's and on the puller's cores, s per byte: their
    /// engines' steps wait for it where they share those cores.
    pub transfer_cpu_source_per_byte: f64,
    pub transfer_cpu_dest_per_byte: f64,
    /// How much longer the engines' steps ran under a serving load of mixed prompts than
    /// the grids price them, beyond what the simulator charges them for the serving path's
    /// CPU: the load's real steps' time over its simulated steps', those with prompts and
    /// the decode-only ones (`tandem profile`'s steps load, cli/profile_serving.rs). The
    /// simulator prices this deployment's steps by the grids scaled by them. 0: not
    /// measured (as priced).
    pub prefill_step_level: f64,
    pub decode_step_level: f64,
    /// A step whose engine thread sat idle at least [`RESUMES_AFTER_NS`] before it (it slept;
    /// its core ran the process's other threads meanwhile) runs this much longer than the
    /// levels price it: measured by the same steps load, fitted beside the levels, net of
    /// what the simulator already charges such steps.
    pub engine_resume_s: f64,
}

/// A step starting at least this long after its engine's last ended resumed an idle engine
/// (a step that follows at once starts within the engine thread's turn, a few hundred us).
pub const RESUMES_AFTER_NS: u64 = 500_000;

impl ServingCosts {
    /// The step levels (steps with prompts, decode-only steps) this deployment's steps are
    /// priced at; None when neither was measured.
    pub fn step_levels(&self) -> Option<(f64, f64)> {
        let or_one = |x: f64| if x > 0.0 { x } else { 1.0 };
        (self.prefill_step_level > 0.0 || self.decode_step_level > 0.0).then(|| {
            (
                or_one(self.prefill_step_level),
                or_one(self.decode_step_level),
            )
        })
    }

    /// The client sends -> the request is in the engine.
    pub fn entry_s(&self) -> f64 {
        self.to_frontend_s + self.tokenize_s + self.route_s + self.to_worker_s + self.to_engine_s
    }

    /// Checks that every figure is finite and non-negative; errors name them as fields of
    /// the profile's `field`.
    pub fn validate(&self, field: &str) -> Result<()> {
        let v = serde_json::to_value(self).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        for (k, x) in v.as_object().into_iter().flatten() {
            if !x.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0) {
                return Err(Error::InvalidRequest(format!(
                    "profile: {field}.{k} is not a finite, non-negative number"
                )));
            }
        }
        if self.engine_early_share > 1.0 {
            return Err(Error::InvalidRequest(format!(
                "profile: {field}.engine_early_share is a share, at most 1"
            )));
        }
        Ok(())
    }

    /// The latencies: the mean of each segment over `timelines` (negative means, which
    /// only clock noise between processes gives, count as zero); a step's tokens from the
    /// sends of the tokens of each step. None without a timeline.
    pub fn latencies_of(timelines: &[Timeline]) -> Option<Self> {
        let (n, m) = crate::timeline::mean_segments(timelines);
        if n == 0 {
            return None;
        }
        let (token_out_s, token_out_busy_s, token_gap_s) = sends(timelines);
        let (arrival_gap_s, engine_wake_s, engine_early_share) = bursts(timelines);
        let (engine_gap_s, engine_gap_per_token_s) = step_gaps(timelines, 0.0);
        let s = |i: usize| (m[i] / 1e3).max(0.0);
        let calls: Vec<f64> = timelines
            .iter()
            .filter(|t| t.prefill.is_some())
            .filter_map(|t| Some((*t.relayed.first()?, t.worker.as_ref()?.received)))
            .map(|(relayed, called)| called.saturating_sub(relayed) as f64 / 1e9)
            .collect();
        let decode_call_s = if calls.is_empty() {
            0.0
        } else {
            calls.iter().sum::<f64>() / calls.len() as f64
        };
        Some(ServingCosts {
            to_frontend_s: s(0),
            tokenize_s: s(1),
            route_s: s(2),
            to_worker_s: s(3),
            to_engine_s: s(4),
            token_out_s,
            token_out_busy_s,
            token_gap_s,
            arrival_gap_s,
            engine_wake_s,
            engine_early_share,
            engine_gap_s,
            engine_gap_per_token_s,
            relay_s: s(9),
            decode_call_s,
            chunk_s: s(10),
            to_client_s: s(11),
            close_s: s(16),
            ..Default::default()
        })
    }
}

/// A step starting within this of another's end follows it at once (the engine stepped on).
const BACK_TO_BACK_NS: u64 = 200_000;

/// Of every step that made tokens: the mean delay from its end to its first token's send,
/// after which the engine went idle and after which it stepped on, and the mean gap between
/// its later tokens' sends, s. (One side without samples takes the other's.) The engine
/// stepped on where a request of the step has a later one (its next step may start late:
/// the sending thread can hold the core first), or where another step starts at once.
fn sends(timelines: &[Timeline]) -> (f64, f64, f64) {
    let mut steps: HashMap<(u64, u64), Vec<u64>> = HashMap::new();
    let mut continued: HashSet<(u64, u64)> = HashSet::new();
    let mut starts = Vec::new();
    for t in timelines {
        for w in t.prefill.iter().chain(&t.worker) {
            starts.extend(w.steps.iter().map(|s| s.start));
            if let Some((_, earlier)) = w.steps.split_last() {
                continued.extend(earlier.iter().map(|s| (s.start, s.end)));
            }
            let made = w.steps.iter().filter(|s| s.sampled);
            for (s, &sent) in made.zip(&w.sent) {
                steps.entry((s.start, s.end)).or_default().push(sent);
            }
        }
    }
    starts.sort_unstable();
    let stepped_on = |end: u64| {
        let i = starts.partition_point(|&s| s < end);
        starts.get(i).is_some_and(|&s| s - end <= BACK_TO_BACK_NS)
    };
    let (mut idle, mut busy, mut gaps) = ((0.0, 0), (0.0, 0), (0.0, 0));
    for ((start, end), mut sent) in steps {
        sent.sort_unstable();
        let first = if continued.contains(&(start, end)) || stepped_on(end) {
            &mut busy
        } else {
            &mut idle
        };
        first.0 += sent[0].saturating_sub(end) as f64 / 1e9;
        first.1 += 1;
        for w in sent.windows(2) {
            gaps.0 += (w[1] - w[0]) as f64 / 1e9;
            gaps.1 += 1;
        }
    }
    let mean = |(s, n): (f64, usize)| (n > 0).then(|| s / n as f64);
    let (i, b) = (mean(idle), mean(busy));
    (
        i.or(b).unwrap_or(0.0),
        b.or(i).unwrap_or(0.0),
        mean(gaps).unwrap_or(0.0),
    )
}

/// A request's next step this long after its last has waited for something other than the
/// engine thread's turn between steps (a wake, a command); it does not count as a gap.
const STEP_GAP_MAX_NS: u64 = 2_000_000;

/// The gap between two steps of the engine in a row (those a request ran in one after the
/// other) as a line in the tokens the first one made: (s per gap, s per token), the least
/// squares fit with both terms at least 0. The serving threads send the first step's tokens
/// in the gap too, and the simulator charges their CPU (`cpu_per_token` s a token) to the
/// next step: each gap counts net of it.
pub fn step_gaps(timelines: &[Timeline], cpu_per_token: f64) -> (f64, f64) {
    let mut tokens: HashMap<(u64, u64), usize> = HashMap::new();
    let mut next: HashMap<(u64, u64), u64> = HashMap::new();
    for t in timelines {
        for w in t.prefill.iter().chain(&t.worker) {
            for (i, s) in w.steps.iter().enumerate() {
                *tokens.entry((s.start, s.end)).or_default() += usize::from(s.sampled);
                if let Some(n) = w.steps.get(i + 1) {
                    next.insert((s.start, s.end), n.start.saturating_sub(s.end));
                }
            }
        }
    }
    let points: Vec<(f64, f64)> = next
        .iter()
        .filter(|&(_, &gap)| gap < STEP_GAP_MAX_NS)
        .map(|(k, &gap)| {
            let n = tokens[k] as f64;
            (n, gap as f64 / 1e9 - n * cpu_per_token)
        })
        .collect();
    fit_line(&points)
}

/// The least-squares line y = a + b x through `points`, with a and b at least 0 (a term the
/// fit puts below zero is dropped and the other fitted alone); (0, 0) without points.
pub fn fit_line(points: &[(f64, f64)]) -> (f64, f64) {
    if points.is_empty() {
        return (0.0, 0.0);
    }
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (sxx, sxy) = points.iter().fold((0.0, 0.0), |(a, b), &(x, y)| {
        (a + (x - mx) * (x - mx), b + (x - mx) * (y - my))
    });
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let intercept = my - slope * mx;
    if slope < 0.0 {
        (my.max(0.0), 0.0)
    } else if intercept < 0.0 {
        let (xx, xy) = points
            .iter()
            .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x * x, b + x * y));
        (0.0, if xx > 0.0 { (xy / xx).max(0.0) } else { 0.0 })
    } else {
        (intercept, slope)
    }
}

/// Requests sent within this of a burst's first belong to the burst.
const BURST_NS: u64 = 2_000_000;

/// Of the bursts (requests sent at once): the median gap between their requests' arrivals
/// at the engine where the engine waited for them all (the frontend takes them one after
/// another), the median time from the first one reaching the engine to the engine's step
/// with it, s, and the share of the bursts whose first step left some of them out.
fn bursts(timelines: &[Timeline]) -> (f64, f64, f64) {
    let mut sorted: Vec<&Timeline> = timelines.iter().collect();
    sorted.sort_by_key(|t| t.sent);
    let (mut gaps, mut wakes, mut early, mut counted) = (Vec::new(), Vec::new(), 0, 0);
    let mut rest = sorted.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|t| t.sent - first.sent < BURST_NS)
            .count();
        let (burst, next) = rest.split_at(n);
        rest = next;
        if n < 2 {
            continue;
        }
        let reached: Vec<&WorkerTimes> = burst
            .iter()
            .filter_map(|t| t.prefill.as_ref().or(t.worker.as_ref()))
            .collect();
        let Some(s) = reached
            .iter()
            .min_by_key(|w| w.queued)
            .and_then(|w| Some((w.queued, *w.steps.first()?)))
        else {
            continue;
        };
        wakes.push(s.1.start.saturating_sub(s.0) as f64 / 1e9);
        if reached.len() < 2 {
            continue;
        }
        counted += 1;
        let left_out = reached
            .iter()
            .any(|o| o.steps.first().is_some_and(|f| f.start > s.1.start));
        if left_out {
            // The engine took the core first: the others reached it late, behind its step.
            early += 1;
        } else {
            let (lo, hi) = reached.iter().fold((u64::MAX, 0), |(a, b), w| {
                (a.min(w.queued), b.max(w.queued))
            });
            gaps.push((hi - lo) as f64 / 1e9 / (reached.len() - 1) as f64);
        }
    }
    // Medians: whether the engine thread starts before a burst's later requests reach it
    // is a race on a shared core, and its rare losses (a millisecond behind a step) are not
    // the typical gap.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let share = if counted > 0 {
        early as f64 / counted as f64
    } else {
        0.0
    };
    (median(gaps), median(wakes), share)
}

/// CPU seconds spent per request and per token, from two loads (requests, tokens, CPU
/// seconds) whose tokens per request differ: the line through them, each term at least 0.
pub fn cpu_split(a: (f64, f64, f64), b: (f64, f64, f64)) -> Result<(f64, f64)> {
    let det = a.0 * b.1 - a.1 * b.0;
    if det.abs() < 1e-9 * (a.0 * b.1).abs().max(1.0) {
        return Err(Error::InvalidRequest(
            "the two loads have the same tokens per request: cannot tell per-request from \
             per-token CPU"
                .into(),
        ));
    }
    let per_request = (a.2 * b.1 - a.1 * b.2) / det;
    let per_token = (a.0 * b.2 - a.2 * b.0) / det;
    Ok(match (per_request >= 0.0, per_token >= 0.0) {
        (true, true) => (per_request, per_token),
        // Noise pushed one term below zero: all of it is the other's.
        (false, _) => (0.0, (a.2 + b.2) / (a.1 + b.1)),
        (_, false) => ((a.2 + b.2) / (a.0 + b.0), 0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_splits_into_its_request_and_token_parts() {
        // 2 ms a request, 0.3 ms a token.
        let cpu = |r: f64, t: f64| (r, t, r * 2e-3 + t * 3e-4);
        let (per_r, per_t) = cpu_split(cpu(50.0, 200.0), cpu(50.0, 1600.0)).unwrap();
        assert!((per_r - 2e-3).abs() < 1e-12 && (per_t - 3e-4).abs() < 1e-12);
        assert!(cpu_split(cpu(10.0, 40.0), cpu(20.0, 80.0)).is_err());
    }

    #[test]
    fn a_line_is_fitted_with_its_terms_at_least_zero() {
        let line: Vec<(f64, f64)> = (1..6).map(|x| (x as f64, 0.1 + 0.03 * x as f64)).collect();
        let (a, b) = fit_line(&line);
        assert!(
            (a - 0.1).abs() < 1e-12 && (b - 0.03).abs() < 1e-12,
            "{a} {b}"
        );
        // Falling: the mean alone.
        let (a, b) = fit_line(&[(1.0, 3.0), (2.0, 1.0)]);
        assert!((a - 2.0).abs() < 1e-12 && b == 0.0);
        // Through a negative intercept: the slope through the origin.
        let (a, b) = fit_line(&[(1.0, 1.0), (2.0, 3.0)]);
        assert!(a == 0.0 && (b - 7.0 / 5.0).abs() < 1e-12, "{a} {b}");
        assert_eq!(fit_line(&[]), (0.0, 0.0));
    }

    #[test]
    fn the_decode_call_is_timed_from_the_first_tokens_relay() {
        let ms = 1_000_000;
        let step = |start, end| crate::timeline::StepTimes {
            start,
            end,
            sampled: true,
        };
        let disagg = |call: u64| Timeline {
            sent: 0,
            arrived: ms,
            tokenized: ms,
            routed: ms,
            prefill: Some(WorkerTimes {
                received: 2 * ms,
                queued: 2 * ms,
                steps: vec![step(3 * ms, 10 * ms)],
                sent: vec![11 * ms],
                ..Default::default()
            }),
            worker: Some(WorkerTimes {
                received: 12 * ms + call,
                queued: 20 * ms,
                kv_pull: Some((13 * ms, 20 * ms)),
                steps: vec![step(21 * ms, 23 * ms)],
                sent: vec![24 * ms],
            }),
            relayed: vec![12 * ms, 25 * ms],
            first_chunk: 12 * ms,
            first_received: 13 * ms,
            end: 26 * ms,
        };
        let c = ServingCosts::latencies_of(&[disagg(ms), disagg(3 * ms)]).unwrap();
        assert!((c.decode_call_s - 2e-3).abs() < 1e-12, "{c:?}");
        // The call to the prefill worker is the one a request reaches first.
        assert!((c.to_worker_s - 1e-3).abs() < 1e-12, "{c:?}");
        // No decode call without a prefill worker.
        let mut agg = disagg(ms);
        agg.worker = agg.prefill.take();
        agg.relayed.truncate(1);
        let c = ServingCosts::latencies_of(&[agg]).unwrap();
        assert_eq!(c.decode_call_s, 0.0);
    }

    #[test]
    fn a_bad_figure_is_named() {
        let s = ServingCosts {
            relay_s: -1.0,
            ..Default::default()
        };
        for field in ["serving", "serving_disagg"] {
            let e = s.validate(field).unwrap_err().to_string();
            assert!(e.contains(&format!(" {field}.relay_s")), "{e}");
        }
    }
}
