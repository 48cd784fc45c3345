//! One request's trip through the router to a worker and back as text deltas: worker choice
//! with failover, incremental detokenization, stop strings, latency metrics, and cleanup
//! (a dropped receiver cancels the gRPC stream, which aborts the request on the worker).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::http::StatusCode;
use tokio::sync::mpsc;
use tonic::Code;

use super::openai::ApiError;
use super::proto;
use super::worker::sampling_to_proto;
use crate::engine::SamplingParams;
use crate::engine::text::TextStream;
use crate::router::{Router, WorkerHandle};
use crate::server::metrics::Metrics;
use crate::tokenizer::Tokenizer;

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
    /// Worker choice.
    pub router: Router,
    /// Prometheus metrics.
    pub metrics: Metrics,
    next_id: AtomicU64,
}

/// Releases the router's in-flight accounting of a request when it ends.
struct InFlight {
    worker: Arc<WorkerHandle>,
    blocks: usize,
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
    /// A frontend over `router`.
    pub fn new(
        model: String,
        tokenizer: Tokenizer,
        template: super::chat::ChatTemplate,
        router: Router,
    ) -> Self {
        Frontend {
            model,
            tokenizer,
            template,
            router,
            metrics: Metrics::new(),
            next_id: AtomicU64::new(rand::random::<u32>() as u64),
        }
    }

    /// Longest sequence the workers accept (0 until one has answered).
    pub fn max_model_len(&self) -> usize {
        self.router
            .pool()
            .workers
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
    pub async fn generate(
        self: &Arc<Self>,
        id: String,
        prompt: Vec<u32>,
        params: SamplingParams,
    ) -> Result<mpsc::Receiver<Event>, ApiError> {
        let started = Instant::now();
        let bs = self.router.pool().block_size().unwrap_or(1);
        let mut tried = Vec::new();
        let (stream, guard) = loop {
            let Some(choice) = self.router.pick(&prompt, &tried) else {
                self.count("rejected");
                return Err(ApiError::server(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy worker is available",
                ));
            };
            let worker = self.router.pool().workers[choice.worker].clone();
            let blocks = prompt.len().div_ceil(bs);
            worker.in_flight.fetch_add(1, Ordering::Relaxed);
            worker.active_blocks.fetch_add(blocks, Ordering::Relaxed);
            let guard = InFlight {
                worker: worker.clone(),
                blocks,
            };
            let req = proto::GenerateRequest {
                request_id: id.clone(),
                prompt_token_ids: prompt.clone(),
                sampling: Some(sampling_to_proto(&params)),
            };
            match worker.client.clone().generate(req).await {
                Ok(resp) => break (resp.into_inner(), guard),
                Err(s) if s.code() == Code::InvalidArgument => {
                    self.count("rejected");
                    return Err(ApiError::invalid(None, s.message().to_string()));
                }
                Err(s) if is_worker_failure(s.code()) => {
                    tracing::warn!(worker = %worker.addr, status = %s, "worker call failed; trying another");
                    worker.mark_dead();
                    tried.push(choice.worker);
                }
                Err(s) => {
                    self.count("error");
                    return Err(ApiError::server(
                        StatusCode::BAD_GATEWAY,
                        format!("worker error: {}", s.message()),
                    ));
                }
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move { this.relay(stream, guard, params, tx, started).await });
        Ok(rx)
    }

    async fn relay(
        &self,
        mut stream: tonic::Streaming<proto::GenerateResponse>,
        in_flight: InFlight,
        params: SamplingParams,
        tx: mpsc::Sender<Event>,
        started: Instant,
    ) {
        let worker = in_flight.worker.clone();
        // Released as soon as the worker is done, before the client hears of it, so that the
        // router's load counts are current for the client's next request.
        let mut in_flight = Some(in_flight);
        let model = [self.model.as_str()];
        let mut text = TextStream::new(params.stop.clone());
        let (mut n, mut last) = (0usize, started);
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                // The client went away: dropping the stream cancels the request on the worker.
                _ = tx.closed() => { self.count("abort"); return; }
            };
            if !matches!(msg, Ok(Some(ref r)) if r.finish_reason.is_empty()) {
                in_flight.take();
            }
            let r = match msg {
                Ok(Some(r)) => r,
                Ok(None) => {
                    let _ = tx
                        .send(Event::Failed(ApiError::server(
                            StatusCode::BAD_GATEWAY,
                            "worker ended the stream without finishing",
                        )))
                        .await;
                    self.count("error");
                    return;
                }
                Err(s) => {
                    if is_worker_failure(s.code()) {
                        worker.mark_dead();
                    }
                    let _ = tx
                        .send(Event::Failed(ApiError::server(
                            StatusCode::BAD_GATEWAY,
                            format!("worker failed: {}", s.message()),
                        )))
                        .await;
                    self.count("error");
                    return;
                }
            };
            let (prompt_tokens, cached) = (r.prompt_tokens as usize, r.cached_tokens as usize);
            let mut finish = r.finish_reason.clone();
            if let Some(token) = r.token_id {
                let now = Instant::now();
                if n == 0 {
                    self.metrics
                        .ttft
                        .with_label_values(&model)
                        .observe((now - started).as_secs_f64());
                } else {
                    self.metrics
                        .itl
                        .with_label_values(&model)
                        .observe((now - last).as_secs_f64());
                }
                (n, last) = (n + 1, now);
                let delta = match text.push(&self.tokenizer, token) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = tx
                            .send(Event::Failed(ApiError::server(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                e.to_string(),
                            )))
                            .await;
                        self.count("error");
                        return;
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
                    return;
                }
                if text.stopped() {
                    // Dropping the stream below cancels the rest of the generation.
                    finish = "stop".into();
                    in_flight.take();
                }
            }
            if !finish.is_empty() {
                let tail = text.finish(&self.tokenizer).unwrap_or_default();
                self.metrics
                    .e2e
                    .with_label_values(&model)
                    .observe(started.elapsed().as_secs_f64());
                self.count(&finish);
                let _ = tx
                    .send(Event::Done {
                        finish,
                        prompt_tokens,
                        cached_tokens: cached,
                        completion_tokens: n,
                        tail,
                    })
                    .await;
                return;
            }
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .requests
            .with_label_values(&[self.model.as_str(), outcome])
            .inc();
    }
}
