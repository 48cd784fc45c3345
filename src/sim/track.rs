//! A simulated request's clock points: the serving path's costs ([`ServingCosts`]) laid on
//! the steps and transfers the cluster simulates, and, when asked, the same [`Timeline`] a
//! real request's client, frontend and workers write.

use super::serving::ServingCosts;
use crate::engine::Request;
use crate::timeline::{StepTimes, Timeline, WorkerTimes};

const NS: f64 = 1e9;

fn ns(s: f64) -> u64 {
    (s * NS).round() as u64
}

/// The serving path's latencies in ns, and its CPU terms in s.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Path {
    to_frontend: u64,
    tokenize: u64,
    route: u64,
    to_worker: u64,
    to_engine: u64,
    token_out: u64,
    token_out_busy: u64,
    relay: u64,
    chunk: u64,
    to_client: u64,
    close: u64,
    /// Client sent -> request in the engine.
    pub entry: u64,
    /// The frontend has relayed a prefill's first token (it relays it before it calls the
    /// decode worker) -> the decode worker has the Decode call and starts its pull.
    pub decode_call: u64,
    /// The frontend takes a burst's requests this far apart.
    pub arrival_gap: u64,
    /// An idle engine thread starts its step this long after the last request reaching it,
    /// or in this share of the cases right after the first.
    pub engine_wake: u64,
    pub engine_early_share: f64,
    /// The engine thread's turn between two steps, ns: fixed, and per token of the first.
    engine_gap: u64,
    engine_gap_per_token: u64,
    /// Between a step's tokens, ns: they leave one after another.
    token_gap: u64,
    /// CPU per request and per token on the worker's own cores, s (disaggregated: per
    /// request on the prefill worker's, and on the decode worker's).
    pub worker_cpu_per_request: f64,
    pub worker_cpu_per_token: f64,
    pub decode_cpu_per_request: f64,
    /// CPU per token and per request on the shared cores, s; and their number.
    pub shared_cpu_per_token: f64,
    pub shared_cpu_per_request: f64,
    pub shared_cores: f64,
    /// A step after an idle engine runs this much longer, s.
    pub engine_resume: f64,
}

impl Path {
    pub fn of(c: &ServingCosts) -> Self {
        Path {
            to_frontend: ns(c.to_frontend_s),
            tokenize: ns(c.tokenize_s),
            route: ns(c.route_s),
            to_worker: ns(c.to_worker_s),
            to_engine: ns(c.to_engine_s),
            token_out: ns(c.token_out_s),
            token_out_busy: ns(c.token_out_busy_s),
            relay: ns(c.relay_s),
            chunk: ns(c.chunk_s),
            to_client: ns(c.to_client_s),
            close: ns(c.close_s),
            entry: ns(c.to_frontend_s)
                + ns(c.tokenize_s)
                + ns(c.route_s)
                + ns(c.to_worker_s)
                + ns(c.to_engine_s),
            // As measured on a disaggregated deployment, else as the call to a worker is.
            decode_call: ns(if c.decode_call_s > 0.0 {
                c.decode_call_s
            } else {
                c.to_worker_s
            }),
            arrival_gap: ns(c.arrival_gap_s),
            engine_wake: ns(c.engine_wake_s),
            engine_early_share: c.engine_early_share,
            engine_gap: ns(c.engine_gap_s),
            engine_gap_per_token: ns(c.engine_gap_per_token_s),
            token_gap: ns(c.token_gap_s),
            worker_cpu_per_request: c.worker_cpu_per_request_s,
            worker_cpu_per_token: c.worker_cpu_per_token_s,
            decode_cpu_per_request: c.decode_cpu_per_request_s,
            shared_cpu_per_token: c.shared_cpu_per_token_s,
            shared_cpu_per_request: c.shared_cpu_per_request_s,
            shared_cores: c.shared_cores,
            engine_resume: c.engine_resume_s,
        }
    }

    /// How long after a step that made `tokens` tokens the engine's next one starts, ns.
    pub fn engine_gap(&self, tokens: usize) -> u64 {
        self.engine_gap + tokens as u64 * self.engine_gap_per_token
    }
}

/// One simulated request.
#[derive(Default)]
pub(super) struct Track {
    pub send: u64,
    /// The client reads its first chunk.
    pub first: Option<u64>,
    /// The client reads the end of the stream.
    pub end: u64,
    /// (worker, blocks) the router counts against a worker while the request is there.
    pub charge: Option<(usize, usize)>,
    /// The prompt and its block hashes, kept for the decode worker (disaggregated only).
    pub prompt: Vec<u32>,
    pub hashes: Vec<u64>,
    pub first_token: u32,
    pub transfer: Option<(usize, usize)>,
    /// Routed, on its way to this engine, with the block hashes its router computed.
    pub pending: Option<(usize, Request, Vec<u64>)>,
    pub timeline: Option<Box<Timeline>>,
}

impl Track {
    /// A request the client sends at `send` and the frontend takes `stagger` later (after
    /// the burst's earlier ones), to a worker of the prefill role or not.
    pub fn new((send, stagger): (u64, u64), path: &Path, timed: bool, prefill_role: bool) -> Self {
        let timeline = timed.then(|| {
            let arrived = send + stagger + path.to_frontend;
            let routed = arrived + path.tokenize + path.route;
            let received = routed + path.to_worker;
            let worker = Some(WorkerTimes {
                received,
                queued: received + path.to_engine,
                ..Default::default()
            });
            let mut t = Timeline {
                sent: send,
                arrived,
                tokenized: arrived + path.tokenize,
                routed,
                ..Default::default()
            };
            if prefill_role {
                t.prefill = worker;
            } else {
                t.worker = worker;
            }
            Box::new(t)
        });
        Track {
            send,
            timeline,
            ..Default::default()
        }
    }

    /// The worker part of the timeline: the prefill worker's, or the one making the rest.
    fn part(&mut self, prefill_role: bool) -> Option<&mut WorkerTimes> {
        let t = self.timeline.as_mut()?;
        if prefill_role {
            t.prefill.as_mut()
        } else {
            t.worker.as_mut()
        }
    }

    /// It ran in a step from `start` to `end`, and got a token from it or not.
    pub fn step(&mut self, prefill_role: bool, start: u64, end: u64, sampled: bool) {
        if let Some(w) = self.part(prefill_role) {
            w.steps.push(StepTimes {
                start,
                end,
                sampled,
            });
        }
    }

    /// A token of the step that ended at `step_end` goes out to the client, after `before`
    /// others of the step: the worker's serving thread sends them one after another, sooner
    /// when its engine goes idle than when it steps on (`stepping_on`) beside it. Returns
    /// when the frontend has relayed it.
    pub fn token(
        &mut self,
        prefill_role: bool,
        (step_end, stepping_on): (u64, bool),
        before: usize,
        path: &Path,
    ) -> u64 {
        let out = if stepping_on {
            path.token_out_busy
        } else {
            path.token_out
        };
        let sent = step_end + out + before as u64 * path.token_gap;
        let relayed = sent + path.relay;
        if let Some(w) = self.part(prefill_role) {
            w.sent.push(sent);
        }
        let first = self.first.is_none();
        if first {
            self.first = Some(relayed + path.chunk + path.to_client);
        }
        self.end = relayed + path.close;
        if let Some(t) = &mut self.timeline {
            t.relayed.push(relayed);
            if first {
                t.first_chunk = relayed + path.chunk;
                t.first_received = relayed + path.chunk + path.to_client;
            }
            t.end = self.end;
        }
        relayed
    }

    /// The decode worker got the Decode call.
    pub fn pull_called(&mut self, t: u64) {
        if let Some(tl) = &mut self.timeline {
            tl.worker = Some(WorkerTimes {
                received: t,
                ..Default::default()
            });
        }
    }

    /// Its pull started (the blocks reserved).
    pub fn pull_began(&mut self, t: u64) {
        if let Some(w) = self.part(false) {
            w.kv_pull = Some((t, t));
        }
    }

    /// Its pull ended: the request is in the decode worker's engine.
    pub fn pull_ended(&mut self, t: u64) {
        if let Some(w) = self.part(false) {
            if let Some((_, end)) = &mut w.kv_pull {
                *end = t;
            }
            w.queued = t;
        }
    }
}
