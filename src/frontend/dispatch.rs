//! One request's trip through the router to a worker and back as text deltas: worker choice
//! with failover, incremental detokenization, stop strings, latency metrics, and cleanup
//! (a dropped receiver cancels the gRPC stream, which aborts the request on the worker).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::http::StatusCode;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::Streaming;
use tonic::transport::Channel;

use super::metrics::Metrics;
use super::openai::ApiError;
use crate::engine::SamplingParams;
use crate::engine::text::TextStream;
use crate::router::{Router, WorkerHandle};
use crate::timeline::Timeline;
use crate::tokenizer::Tokenizer;
use crate::wire::convert::{sampling_to_proto, worker_times_of};
use crate::wire::proto;
use crate::wire::proto::worker_client::WorkerClient;

/// One generated token as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Text released by this token (may be empty while a character or stop string is pending).
    pub text: String,
    /// The token id.
    pub token: u32,
    /// Its logprob, when requested.
    pub logprob: Option<f32>,
    /// Top logprobs, when requested.
    pub top_logprobs: Vec<(u32, f32)>,
}

/// What the generation task sends to the HTTP handler.
#[derive(Debug)]
pub enum Event {
    /// A token (and the text it released).
    Token(Delta),
    /// The end: finish reason, prompt tokens, cached prompt tokens, completion tokens, and any
    /// text still held back.
    Done {
        finish: String,
        prompt_tokens: usize,
        cached_tokens: usize,
        completion_tokens: usize,
        tail: String,
        /// The request's clock points so far, when it asked for them (and did not move
        /// between workers mid-generation).
        timeline: Option<Box<Timeline>>,
    },
    /// The worker failed mid-stream.
    Failed(ApiError),
}

/// Shared state of the frontend.
pub struct Frontend {
    /// The served model name.
    pub model: String,
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    /// Chat template.
    pub template: super::chat::ChatTemplate,
    /// Worker choice: aggregated workers, or the prefill pool when `decode` is set.
    pub router: Router,
    /// The decode pool of a disaggregated deployment.
    pub decode: Option<Router>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// How requests are read and answered.
    pub api: super::openai::ApiOptions,
    /// Requests waiting for their first token (bounded by `api.queue`).
    pub queued: std::sync::atomic::AtomicUsize,
    next_id: AtomicU64,
}

/// How far a relayed generation has got (across the workers it may move between).
struct Progress {
    text: TextStream,
    /// Prompt and cached prompt tokens, as the first worker to answer counts them.
    prompt_tokens: usize,
    cached_tokens: usize,
    /// Tokens sent to the client so far.
    tokens: Vec<u32>,
    n: usize,
    last: Instant,
    started: Instant,
    /// The request's clock points, when asked for; `sent` are the current worker's.
    timeline: Option<Box<Timeline>>,
    sent: Vec<u64>,
}

impl Progress {
    fn new(params: &SamplingParams, started: Instant, timeline: Option<Box<Timeline>>) -> Self {
        Progress {
            timeline,
            sent: Vec::new(),
            text: TextStream::new(params.stop.clone()),
            prompt_tokens: 0,
            cached_tokens: 0,
            tokens: Vec::new(),
            n: 0,
            last: started,
            started,
        }
    }
}

/// Times a generation may move to another worker after its worker died mid-stream.
const MIGRATIONS: usize = 2;

/// Whether a relay goes on after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    More,
    Done,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relayed {
    /// With the request's end, a failure the client was told of, or the client gone.
    Done,
    /// Its worker failed: the request may go on elsewhere (from scratch before its first
    /// token, from the tokens it has after).
    Failed,
}

/// Releases the router's in-flight accounting of a request when it ends.
struct InFlight {
    worker: Arc<WorkerHandle>,
    blocks: usize,
    /// When the worker was picked (ns since the Unix epoch).
    routed: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.worker.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.worker
            .active_blocks
            .fetch_sub(self.blocks, Ordering::Relaxed);
    }
}

fn is_worker_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
    )
}

impl Frontend {
    /// A frontend over `router` (and a decode pool, for disaggregated serving).
    pub fn new(
        model: String,
        tokenizer: Tokenizer,
        template: super::chat::ChatTemplate,
        router: Router,
        decode: Option<Router>,
        api: super::openai::ApiOptions,
    ) -> Self {
        Frontend {
            model,
            tokenizer,
            template,
            router,
            decode,
            metrics: Metrics::new(),
            api,
            queued: std::sync::atomic::AtomicUsize::new(0),
            next_id: AtomicU64::new(rand::random::<u32>() as u64),
        }
    }

    /// Every worker pool: the aggregated (or prefill) pool, then the decode pool.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<crate::router::WorkerPool>> {
        std::iter::once(self.router.pool()).chain(self.decode.as_ref().map(|d| d.pool()))
    }

    /// Longest sequence the workers accept (0 until one has answered).
    pub fn max_model_len(&self) -> usize {
        self.router
            .pool()
            .workers()
            .iter()
            .find_map(|w| w.info())
            .map_or(0, |i| i.max_model_len as usize)
    }

    /// A fresh request id with `prefix`.
    pub fn request_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{:016x}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sends the request to a worker (another one if the first is down) and streams its events.
    /// With a decode pool, the prompt goes to a prefill worker first and the rest to a decode
    /// worker; when no prefill worker is up, decode workers serve whole requests. With
    /// `timeline` (its frontend points so far), the workers time the request and the last
    /// event carries its clock points.
    pub async fn generate(
        self: &Arc<Self>,
        id: String,
        prompt: Vec<u32>,
        params: SamplingParams,
        mut timeline: Option<Box<Timeline>>,
    ) -> Result<mpsc::Receiver<Event>, ApiError> {
        let started = Instant::now();
        let (tx, rx) = mpsc::channel(64);
        let req = proto::GenerateRequest {
            request_id: id,
            prompt_token_ids: prompt,
            sampling: Some(sampling_to_proto(&params)),
            timeline: timeline.is_some(),
        };
        let whole = match &self.decode {
            Some(decode) if !self.router.pool().workers().iter().any(|w| w.is_healthy()) => {
                self.metrics
                    .failovers
                    .with_label_values(&["decode_only"])
                    .inc();
                decode
            }
            Some(_) => {
                // A failed prefill goes to another prefill worker (or the same one, once it
                // has joined the pool again).
                let tries = self.router.pool().workers().len() + 1;
                let (pre, prefilling) = self
                    .call(&self.router, &req, tries, |mut c, r| async move {
                        c.prefill(r).await.map(|r| r.into_inner())
                    })
                    .await?;
                if let Some(t) = &mut timeline {
                    t.routed = prefilling.routed;
                    t.prefill = pre
                        .timeline
                        .as_ref()
                        .map(|w| worker_times_of(w, vec![pre.sent_ns]));
                }
                let this = self.clone();
                drop(prefilling);
                let st = Progress::new(&params, started, timeline);
                tokio::spawn(async move { this.decode_after(pre, req, st, tx).await });
                return Ok(rx);
            }
            None => &self.router,
        };
        let tries = whole.pool().workers().len() + 1;
        let (stream, guard) = self
            .call(whole, &req, tries, |mut c, r| async move {
                c.generate(r).await.map(|r| r.into_inner())
            })
            .await?;
        if let Some(t) = &mut timeline {
            t.routed = guard.routed;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut st = Progress::new(&params, started, timeline);
            let outcome = this
                .relay(&mut st, None, async { Ok((stream, guard)) }, &tx, true)
                .await;
            if outcome == Relayed::Failed {
                let whole = this.decode.as_ref().unwrap_or(&this.router);
                this.migrate(whole, &req, &mut st, &tx).await;
            }
        });
        Ok(rx)
    }

    /// Goes on with a generation whose worker died: on another worker of
    /// `whole`, as a request whose prompt is the original one followed by the tokens the
    /// client already has (computed again: correct for any model), for what is left of
    /// max_tokens. At most [`MIGRATIONS`] times.
    async fn migrate(
        &self,
        whole: &Router,
        req: &proto::GenerateRequest,
        st: &mut Progress,
        tx: &mpsc::Sender<Event>,
    ) {
        let tries = whole.pool().workers().len() + 1;
        // The moved request's points would mix two workers' tokens: it has none.
        st.timeline = None;
        for _ in 0..MIGRATIONS {
            self.metrics.failovers.with_label_values(&["retry"]).inc();
            let mut moved = req.clone();
            moved.request_id = format!("{}-m{}", req.request_id, st.n);
            moved.prompt_token_ids.extend_from_slice(&st.tokens);
            if let Some(s) = &mut moved.sampling {
                s.max_tokens = s.max_tokens.saturating_sub(st.n as u32).max(1);
            }
            tracing::warn!(
                tokens = st.n,
                "the worker died; the generation goes on elsewhere"
            );
            // The dead worker is out of the pool (until it joins again, restarted).
            let reopened = self.call(whole, &moved, tries, |mut c, r| async move {
                c.generate(r).await.map(|r| r.into_inner())
            });
            if self.relay(st, None, reopened, tx, true).await == Relayed::Done {
                return;
            }
        }
        self.count("error");
        let _ = tx
            .send(Event::Failed(ApiError::server(
                StatusCode::BAD_GATEWAY,
                "the generation's workers kept failing",
            )))
            .await;
    }

    /// Calls `rpc` on a worker `router` picks, moving on to another worker when one is down,
    /// at most `attempts` times. The returned guard keeps the router's load count.
    async fn call<T, F, Fut>(
        &self,
        router: &Router,
        req: &proto::GenerateRequest,
        attempts: usize,
        rpc: F,
    ) -> Result<(T, InFlight), ApiError>
    where
        F: Fn(WorkerClient<Channel>, proto::GenerateRequest) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let prompt = &req.prompt_token_ids;
        let bs = router.pool().block_size().unwrap_or(1);
        // A worker that failed this request is skipped, unless it has joined the pool again
        // since (a restarted worker is a new chance).
        let mut failed: Vec<(usize, u64)> = Vec::new();
        let mut failures = Vec::new();
        while failures.len() < attempts.max(1) {
            let workers = router.pool().workers();
            let skip: Vec<usize> = failed
                .iter()
                .filter(|(i, joins)| workers.get(*i).is_some_and(|w| w.joins() == *joins))
                .map(|(i, _)| *i)
                .collect();
            let Some(choice) = router.pick(prompt, &skip) else {
                break;
            };
            if !failures.is_empty() {
                self.metrics.failovers.with_label_values(&["retry"]).inc();
            }
            let worker = router.pool().workers()[choice.worker].clone();
            let blocks = choice.load_blocks(prompt.len().div_ceil(bs));
            worker.in_flight.fetch_add(1, Ordering::Relaxed);
            worker.active_blocks.fetch_add(blocks, Ordering::Relaxed);
            let guard = InFlight {
                worker: worker.clone(),
                blocks,
                routed: crate::timeline::now_ns(),
            };
            match rpc(worker.client.clone(), req.clone()).await {
                Ok(v) => return Ok((v, guard)),
                Err(s) if s.code() == Code::InvalidArgument => {
                    self.count("rejected");
                    return Err(ApiError::invalid(None, s.message().to_string()));
                }
                Err(s) if is_worker_failure(s.code()) => {
                    tracing::warn!(worker = %worker.addr, status = %s, "worker call failed; trying another");
                    failed.push((choice.worker, worker.joins()));
                    worker.mark_dead();
                    failures.push(format!("{}: {}", worker.addr, s.message()));
                }
                Err(s) => {
                    self.count("error");
                    return Err(ApiError::server(
                        StatusCode::BAD_GATEWAY,
                        format!("worker error: {}", s.message()),
                    ));
                }
            }
        }
        self.count("rejected");
        let msg = if failures.is_empty() {
            "no healthy worker is available".to_string()
        } else {
            format!(
                "{} worker(s) failed the request ({})",
                failures.len(),
                failures.join("; ")
            )
        };
        Err(ApiError::server(StatusCode::SERVICE_UNAVAILABLE, msg))
    }

    /// After a prefill: sends the first token at once, then has a decode worker pull the KV
    /// and stream the rest.
    async fn decode_after(
        self: Arc<Self>,
        pre: proto::PrefillResponse,
        req: proto::GenerateRequest,
        mut st: Progress,
        tx: mpsc::Sender<Event>,
    ) {
        // Its time left the worker is in the timeline's prefill part already.
        let first = proto::GenerateResponse {
            token_id: Some(pre.first_token),
            logprob: pre.logprob,
            top_logprobs: pre.top_logprobs.clone(),
            finish_reason: pre.finish_reason.clone(),
            prompt_tokens: pre.prompt_tokens,
            cached_tokens: pre.cached_tokens,
            sent_ns: 0,
            timeline: None,
        };
        let decode = self
            .decode
            .as_ref()
            .expect("disaggregated mode has a decode pool");
        let rest = async {
            if !pre.finish_reason.is_empty() {
                return Err(ApiError::server(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "nothing to decode",
                ));
            }
            // The KV may not be had from its prefill worker (gone, or its hold expired). The
            // client has the first token already: compute the prompt again on another
            // prefill worker and decode on from that same token.
            let mut source = pre.clone();
            let mut lost = String::new();
            for attempt in 0..=MIGRATIONS {
                if attempt > 0 {
                    self.metrics.failovers.with_label_values(&["retry"]).inc();
                    tracing::warn!(%lost, "the KV source failed; computing the prompt again elsewhere");
                    let tries = self.router.pool().workers().len() + 1;
                    let (again, prefilling) = self
                        .call(&self.router, &req, tries, |mut c, r| async move {
                            c.prefill(r).await.map(|r| r.into_inner())
                        })
                        .await?;
                    drop(prefilling);
                    source = again;
                }
                let (stream, guard) = self
                    .open_decode(decode, &req, &source, pre.first_token)
                    .await?;
                match stream {
                    Ok(stream) => return Ok((stream, guard)),
                    Err(s) => lost = s.message().to_string(),
                }
            }
            Err(ApiError::server(
                StatusCode::BAD_GATEWAY,
                format!("worker error: {lost}"),
            ))
        };
        if self.relay(&mut st, Some(first), rest, &tx, true).await == Relayed::Failed {
            // The decode worker died: a decode worker serves the rest whole.
            self.migrate(decode, &req, &mut st, &tx).await;
        }
    }
    /// Opens a Decode of `req` pulling from the prefill `pre`, continuing from `first_token`.
    /// A decode worker that could not get the KV from its source answers Ok(Err(DATA_LOSS)):
    /// that is no failure of the decode worker.
    async fn open_decode(
        &self,
        decode: &Router,
        req: &proto::GenerateRequest,
        pre: &proto::PrefillResponse,
        first_token: u32,
    ) -> Result<
        (
            Result<Streaming<proto::GenerateResponse>, tonic::Status>,
            InFlight,
        ),
        ApiError,
    > {
        let dreq = proto::DecodeRequest {
            request: None,
            first_token,
            source_addr: pre.transfer_addr.clone(),
            source_engine_id: pre.engine_id.clone(),
            source_block_ids: pre.block_ids.clone(),
        };
        self.call(decode, req, 1, |mut c, r| {
            let d = proto::DecodeRequest {
                request: Some(r),
                ..dreq.clone()
            };
            async move {
                match c.decode(d).await {
                    Ok(r) => Ok(Ok(r.into_inner())),
                    Err(s)
                        if s.code() == Code::DataLoss
                            && s.message().starts_with(crate::wire::KV_SOURCE_LOST) =>
                    {
                        Ok(Err(s))
                    }
                    Err(s) => Err(s),
                }
            }
        })
        .await
    }

    /// Relays `first` (a prefill's token, if any), then the worker stream `rest` opens, to the
    /// HTTP handler.
    async fn relay(
        &self,
        st: &mut Progress,
        first: Option<proto::GenerateResponse>,
        rest: impl std::future::Future<
            Output = Result<(Streaming<proto::GenerateResponse>, InFlight), ApiError>,
        >,
        tx: &mpsc::Sender<Event>,
        may_move: bool,
    ) -> Relayed {
        if let Some(f) = first
            && self.forward(st, f, tx).await == Flow::Done
        {
            return Relayed::Done;
        }
        let opened = tokio::select! {
            r = rest => r,
            _ = tx.closed() => { self.count("abort"); return Relayed::Done; }
        };
        let (mut stream, in_flight) = match opened {
            Ok(x) => x,
            Err(e) => {
                self.count("error");
                let _ = tx.send(Event::Failed(e)).await;
                return Relayed::Done;
            }
        };
        let worker = in_flight.worker.clone();
        // Released as soon as the worker is done, before the client hears of it, so that the
        // router's load counts are current for the client's next request.
        let mut in_flight = Some(in_flight);
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                // The client went away: dropping the stream cancels the request on the worker.
                _ = tx.closed() => { self.count("abort"); return Relayed::Done; }
            };
            if !matches!(msg, Ok(Some(ref r)) if r.finish_reason.is_empty()) {
                in_flight.take();
            }
            let (failure, retryable) = match msg {
                Ok(Some(r)) => {
                    if self.forward(st, r, tx).await == Flow::Done {
                        return Relayed::Done;
                    }
                    continue;
                }
                Ok(None) => (
                    "worker ended the stream without finishing".to_string(),
                    true,
                ),
                Err(s) => {
                    let dead = is_worker_failure(s.code());
                    if dead {
                        worker.mark_dead();
                    }
                    (format!("worker failed: {}", s.message()), dead)
                }
            };
            if may_move && retryable {
                tracing::warn!(worker = %worker.addr, %failure, tokens = st.n, "worker failed mid-generation");
                return Relayed::Failed;
            }
            self.count("error");
            let _ = tx
                .send(Event::Failed(ApiError::server(
                    StatusCode::BAD_GATEWAY,
                    failure,
                )))
                .await;
            return Relayed::Done;
        }
    }

    /// Handles one worker response: latency metrics, detokenization, stop strings, the end.
    async fn forward(
        &self,
        st: &mut Progress,
        r: proto::GenerateResponse,
        tx: &mpsc::Sender<Event>,
    ) -> Flow {
        let model = [self.model.as_str()];
        // A migrated generation's later worker sees a longer prompt: the first answer counts.
        if st.n == 0 {
            st.prompt_tokens = st.prompt_tokens.max(r.prompt_tokens as usize);
            st.cached_tokens = st.cached_tokens.max(r.cached_tokens as usize);
        }
        if let Some(t) = &mut st.timeline {
            if r.sent_ns > 0 {
                st.sent.push(r.sent_ns);
            }
            if let Some(w) = &r.timeline {
                t.worker = Some(worker_times_of(w, std::mem::take(&mut st.sent)));
            }
        }
        let mut finish = r.finish_reason;
        if let Some(token) = r.token_id {
            let now = Instant::now();
            if st.n == 0 {
                self.metrics
                    .ttft
                    .with_label_values(&model)
                    .observe((now - st.started).as_secs_f64());
            } else {
                self.metrics
                    .itl
                    .with_label_values(&model)
                    .observe((now - st.last).as_secs_f64());
            }
            (st.n, st.last) = (st.n + 1, now);
            st.tokens.push(token);
            let delta = match st.text.push(&self.tokenizer, token) {
                Ok(d) => d,
                Err(e) => {
                    self.count("error");
                    let _ = tx
                        .send(Event::Failed(ApiError::server(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            e.to_string(),
                        )))
                        .await;
                    return Flow::Done;
                }
            };
            let top_logprobs = r
                .top_logprobs
                .iter()
                .map(|t| (t.token_id, t.logprob))
                .collect();
            if tx
                .send(Event::Token(Delta {
                    text: delta,
                    token,
                    logprob: r.logprob,
                    top_logprobs,
                }))
                .await
                .is_err()
            {
                self.count("abort");
                return Flow::Done;
            }
            if let Some(t) = &mut st.timeline {
                t.relayed.push(crate::timeline::now_ns());
            }
            if st.text.stopped() {
                // Returning drops the worker stream, which cancels the rest of the generation.
                finish = "stop".into();
            }
        }
        if finish.is_empty() {
            return Flow::More;
        }
        let tail = st.text.finish(&self.tokenizer).unwrap_or_default();
        let m = &self.metrics;
        m.e2e
            .with_label_values(&model)
            .observe(st.started.elapsed().as_secs_f64());
        m.prompt_tokens
            .with_label_values(&model)
            .inc_by(st.prompt_tokens as u64);
        m.generation_tokens
            .with_label_values(&model)
            .inc_by(st.n as u64);
        m.prefix_queries
            .with_label_values(&model)
            .inc_by(st.prompt_tokens as u64);
        m.prefix_hits
            .with_label_values(&model)
            .inc_by(st.cached_tokens as u64);
        self.count(&finish);
        let _ = tx
            .send(Event::Done {
                finish,
                prompt_tokens: st.prompt_tokens,
                cached_tokens: st.cached_tokens,
                completion_tokens: st.n,
                tail,
                timeline: st.timeline.take(),
            })
            .await;
        Flow::Done
    }

    /// Counts a request's outcome in /metrics.
    pub fn count(&self, outcome: &str) {
        self.metrics
            .requests
            .with_label_values(&[self.model.as_str(), outcome])
            .inc();
    }
}
