//! One request's clock points, real or simulated, and where its time went.
//!
//! A real request collects its points in three processes: the client (sent, first chunk,
//! end), the frontend (arrival, tokenized, routed, each token relayed) and each worker it ran
//! on (received, queued, its steps, the KV pull, each token sent). They share one clock, the
//! machine's wall clock in nanoseconds since the Unix epoch; the simulator writes the same
//! points on its own clock. [`Timeline::segments`] cuts the span from sent to first chunk
//! (TTFT) and from first chunk to end (the rest of the latency) into consecutive segments, so
//! that each part sums to its whole exactly.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Now, in ns since the Unix epoch.
pub fn now_ns() -> u64 {
    instant_ns(Instant::now())
}

/// `at`, in ns since the Unix epoch: one reading of the wall clock per process anchors the
/// monotonic clock, so points of one process never run backwards.
pub fn instant_ns(at: Instant) -> u64 {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    let (i0, ns0) = *ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (Instant::now(), wall)
    });
    match at.checked_duration_since(i0) {
        Some(d) => ns0 + d.as_nanos() as u64,
        None => ns0.saturating_sub(i0.duration_since(at).as_nanos() as u64),
    }
}

/// One engine step a request ran in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTimes {
    pub start: u64,
    pub end: u64,
    /// Whether the request got a token from this step (a prompt chunk that does not finish
    /// the prompt gets none).
    pub sampled: bool,
}

/// What one worker saw of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerTimes {
    /// The RPC reached the worker.
    pub received: u64,
    /// The request reached the engine (a decode worker's after its KV pull).
    pub queued: u64,
    /// The KV pull of a decode worker: start, end.
    pub kv_pull: Option<(u64, u64)>,
    /// The steps it ran in, in order.
    pub steps: Vec<StepTimes>,
    /// When the worker sent each token it made, in order.
    pub sent: Vec<u64>,
}

impl WorkerTimes {
    /// End of the steps that made this worker's tokens, in order.
    fn token_steps(&self) -> impl Iterator<Item = &StepTimes> {
        self.steps.iter().filter(|s| s.sampled)
    }
}

/// Every clock point of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The client sent the request.
    pub sent: u64,
    /// The frontend read it.
    pub arrived: u64,
    /// The frontend has its prompt's token ids.
    pub tokenized: u64,
    /// The frontend picked its (first) worker.
    pub routed: u64,
    /// The prefill worker of a disaggregated request.
    pub prefill: Option<WorkerTimes>,
    /// The worker that made the rest (an aggregated worker makes every token).
    pub worker: Option<WorkerTimes>,
    /// The frontend relayed each token, in order (its text released to the client, or held
    /// back, for a stop string or an unfinished character).
    pub relayed: Vec<u64>,
    /// The frontend sent the first chunk with a choice in it.
    pub first_chunk: u64,
    /// The client read the first chunk with a choice (its TTFT ends here).
    pub first_received: u64,
    /// The client read the end of the answer (its latency ends here).
    pub end: u64,
}

/// Names of the segments, in order: the first [`TTFT_SEGMENTS`] sum to TTFT, all of them to
/// the latency.
pub const SEGMENTS: [&str; 17] = [
    "client -> frontend",
    "tokenize",
    "route",
    "gRPC to worker",
    "worker -> engine",
    "engine queue",
    "prefill: in steps",
    "prefill: between steps",
    "first token: step -> sent",
    "first token: worker -> frontend",
    "first token: frontend -> chunk",
    "first chunk -> client",
    "decode: KV pull",
    "decode: in steps",
    "decode: rest",
    "last token: step -> sent",
    "last token: worker -> client end",
];

/// Of [`SEGMENTS`], how many make up TTFT.
pub const TTFT_SEGMENTS: usize = 12;

fn d(a: u64, b: u64) -> f64 {
    (b as f64 - a as f64) / 1e6
}

impl Timeline {
    /// Every token's (step end, worker sent), in order, across the workers that made them.
    fn tokens(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for w in self.prefill.iter().chain(&self.worker) {
            out.extend(w.token_steps().map(|s| s.end).zip(w.sent.iter().copied()));
        }
        out
    }

    /// The segments of [`SEGMENTS`], ms: None when a point is missing (a request that failed
    /// or moved between workers mid-generation).
    pub fn segments(&self) -> Option<[f64; SEGMENTS.len()]> {
        let first = self.prefill.as_ref().or(self.worker.as_ref())?;
        let tokens = self.tokens();
        let (&(step0, sent0), &(step_n, sent_n)) = (tokens.first()?, tokens.last()?);
        if tokens.len() != self.relayed.len() {
            return None;
        }
        let start = first.steps.first()?.start;
        // The first worker's steps up to and with the one that made the first token.
        let made = first.steps.iter().position(|s| s.sampled)?;
        let in_steps: f64 = first.steps[..=made].iter().map(|s| d(s.start, s.end)).sum();
        let prefill = d(start, step0);
        // The later tokens' steps, on the worker that made them.
        let decode_steps: f64 = match (&self.prefill, &self.worker) {
            (Some(_), Some(w)) => w.steps.iter().map(|s| d(s.start, s.end)).sum(),
            (None, Some(w)) => w.steps[made + 1..].iter().map(|s| d(s.start, s.end)).sum(),
            _ => 0.0,
        };
        let pull = self
            .worker
            .as_ref()
            .and_then(|w| w.kv_pull)
            .map_or(0.0, |(a, b)| d(a, b));
        let decode = if tokens.len() > 1 {
            d(self.first_received, step_n)
        } else {
            0.0
        };
        let (step_n, sent_n, relayed_n) = if tokens.len() > 1 {
            (step_n, sent_n, *self.relayed.last()?)
        } else {
            // One token: the rest is the close of the stream.
            (
                self.first_received,
                self.first_received,
                self.first_received,
            )
        };
        Some([
            d(self.sent, self.arrived),
            d(self.arrived, self.tokenized),
            d(self.tokenized, self.routed),
            d(self.routed, first.received),
            d(first.received, first.queued),
            d(first.queued, start),
            in_steps,
            prefill - in_steps,
            d(step0, sent0),
            d(sent0, self.relayed[0]),
            d(self.relayed[0], self.first_chunk),
            d(self.first_chunk, self.first_received),
            pull,
            decode_steps,
            decode - pull - decode_steps,
            d(step_n, sent_n),
            d(sent_n, relayed_n) + d(relayed_n, self.end),
        ])
    }

    /// TTFT by the timeline's clock, ms.
    pub fn ttft_ms(&self) -> f64 {
        d(self.sent, self.first_received)
    }

    /// Latency by the timeline's clock, ms.
    pub fn latency_ms(&self) -> f64 {
        d(self.sent, self.end)
    }
}

/// The mean of each segment over the timelines that have them, and how many had them.
pub fn mean_segments<'a>(
    timelines: impl IntoIterator<Item = &'a Timeline>,
) -> (usize, [f64; SEGMENTS.len()]) {
    let mut sum = [0.0; SEGMENTS.len()];
    let mut n = 0;
    for s in timelines.into_iter().filter_map(Timeline::segments) {
        for (a, b) in sum.iter_mut().zip(s) {
            *a += b;
        }
        n += 1;
    }
    if n > 0 {
        sum.iter_mut().for_each(|a| *a /= n as f64);
    }
    (n, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(start: u64, end: u64, sampled: bool) -> StepTimes {
        StepTimes {
            start,
            end,
            sampled,
        }
    }

    #[test]
    fn segments_sum_to_ttft_and_latency() {
        let ms = 1_000_000;
        // Aggregated: a two-chunk prefill, then two decode steps.
        let agg = Timeline {
            sent: 0,
            arrived: ms,
            tokenized: 2 * ms,
            routed: 3 * ms,
            prefill: None,
            worker: Some(WorkerTimes {
                received: 4 * ms,
                queued: 5 * ms,
                kv_pull: None,
                steps: vec![
                    step(7 * ms, 10 * ms, false),
                    step(11 * ms, 15 * ms, true),
                    step(16 * ms, 18 * ms, true),
                    step(19 * ms, 21 * ms, true),
                ],
                sent: vec![16 * ms, 19 * ms, 22 * ms],
            }),
            relayed: vec![17 * ms, 20 * ms, 23 * ms],
            first_chunk: 17 * ms,
            first_received: 18 * ms,
            end: 25 * ms,
        };
        let s = agg.segments().unwrap();
        let ttft: f64 = s[..TTFT_SEGMENTS].iter().sum();
        assert!((ttft - agg.ttft_ms()).abs() < 1e-9, "{s:?}");
        assert!((s.iter().sum::<f64>() - agg.latency_ms()).abs() < 1e-9);
        assert_eq!(s[6], 7.0); // prefill: in steps, 3 + 4
        assert_eq!(s[7], 1.0); // the gap between the chunks
        assert_eq!(s[13], 4.0); // decode: in steps, 2 + 2

        // Disaggregated: the decode worker pulls, then makes the rest.
        let mut dis = agg.clone();
        dis.prefill = Some(WorkerTimes {
            steps: vec![step(7 * ms, 15 * ms, true)],
            sent: vec![16 * ms],
            ..agg.worker.clone().unwrap()
        });
        dis.worker = Some(WorkerTimes {
            received: 17 * ms,
            queued: 18 * ms,
            kv_pull: Some((17 * ms, 18 * ms)),
            steps: vec![step(18 * ms, 19 * ms, true), step(19 * ms, 21 * ms, true)],
            sent: vec![19 * ms, 22 * ms],
        });
        let s = dis.segments().unwrap();
        assert!((s[..TTFT_SEGMENTS].iter().sum::<f64>() - dis.ttft_ms()).abs() < 1e-9);
        assert!((s.iter().sum::<f64>() - dis.latency_ms()).abs() < 1e-9);
        assert_eq!((s[12], s[13]), (1.0, 3.0));

        // A token count that does not match the relays (a moved request) has no segments.
        dis.relayed.pop();
        assert!(dis.segments().is_none());
    }

    #[test]
    fn instants_map_onto_the_wall_clock_in_order() {
        let a = Instant::now();
        let b = a + std::time::Duration::from_millis(3);
        assert_eq!(instant_ns(b) - instant_ns(a), 3_000_000);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(now_ns().abs_diff(wall) < 50_000_000);
    }
}
