//! The OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /v1/models,
//! /health and /metrics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::dispatch::{Delta, Event, Frontend};
use super::openai::{ApiError, ChatRequest, CompletionRequest, Prompt, parse_body};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The HTTP application.
pub fn app(fe: Arc<Frontend>) -> axum::Router {
    axum::Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(fe)
}

fn created() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| ApiError {
        status: r.status(),
        message: r.body_text(),
        param: None,
    })
}

impl Frontend {
    fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.model {
            Ok(())
        } else {
            Err(ApiError::invalid(
                Some("model"),
                format!(
                    "the model {model:?} does not exist; this server serves {:?}",
                    self.model
                ),
            ))
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer
            .encode(text)
            .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))
    }

    fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id]).unwrap_or_default()
    }
}

/// The kind of response being built.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

/// Builds response objects of one request.
struct Shape {
    fe: Arc<Frontend>,
    kind: Kind,
    id: String,
    created: u64,
    logprobs: bool,
    include_usage: bool,
}

impl Shape {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }

    fn logprobs_json(&self, deltas: &[Delta]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let fe = &self.fe;
        match self.kind {
            Kind::Completion => {
                let mut offset = 0;
                let mut offsets = Vec::new();
                for d in deltas {
                    offsets.push(offset);
                    offset += d.text.len();
                }
                json!({
                    "tokens": deltas.iter().map(|d| fe.token_text(d.token)).collect::<Vec<_>>(),
                    "token_logprobs": deltas.iter().map(|d| d.logprob).collect::<Vec<_>>(),
                    "top_logprobs": deltas.iter().map(|d| d.top_logprobs.iter().map(|(t, l)| (fe.token_text(*t), json!(l))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
                    "text_offset": offsets,
                })
            }
            Kind::Chat => {
                let entry = |t: u32, l: f32| {
                    let s = fe.token_text(t);
                    json!({"token": s, "logprob": l, "bytes": s.as_bytes()})
                };
                json!({"content": deltas.iter().map(|d| {
                    let mut e = entry(d.token, d.logprob.unwrap_or(f32::NAN));
                    e["top_logprobs"] = d.top_logprobs.iter().map(|&(t, l)| entry(t, l)).collect();
                    e
                }).collect::<Vec<_>>()})
            }
        }
    }

    fn choice(
        &self,
        text: &str,
        deltas: &[Delta],
        finish: Option<&str>,
        chunk: bool,
        first: bool,
    ) -> Value {
        let logprobs = self.logprobs_json(deltas);
        match self.kind {
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish})
            }
            Kind::Chat if chunk => {
                let mut delta = json!({"content": text});
                if first {
                    delta["role"] = json!("assistant");
                }
                json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Kind::Chat => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs, "finish_reason": finish})
            }
        }
    }

    fn envelope(&self, choices: Value, chunk: bool, usage: Option<Value>) -> Value {
        let mut v = json!({"id": self.id, "object": self.object(chunk), "created": self.created, "model": self.fe.model, "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }
}

fn usage(prompt: usize, cached: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

async fn respond(shape: Shape, mut rx: mpsc::Receiver<Event>, stream: bool) -> Response {
    if !stream {
        let (mut text, mut deltas) = (String::new(), Vec::new());
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token(d) => {
                    text.push_str(&d.text);
                    deltas.push(d);
                }
                Event::Done {
                    finish,
                    prompt_tokens,
                    cached_tokens,
                    completion_tokens,
                    tail,
                } => {
                    text.push_str(&tail);
                    let choice = shape.choice(&text, &deltas, Some(&finish), false, true);
                    let u = usage(prompt_tokens, cached_tokens, completion_tokens);
                    return Json(shape.envelope(json!([choice]), false, Some(u))).into_response();
                }
                Event::Failed(e) => return e.into_response(),
            }
        }
        return ApiError::server(
            StatusCode::BAD_GATEWAY,
            "the generation ended without a result",
        )
        .into_response();
    }
    let events = async_stream::stream! {
        let mut first = true;
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Token(d) => {
                    if d.text.is_empty() && !shape.logprobs && !first {
                        continue;
                    }
                    let choice = shape.choice(&d.text, std::slice::from_ref(&d), None, true, first);
                    first = false;
                    yield Ok::<_, Infallible>(SseEvent::default().data(shape.envelope(json!([choice]), true, None).to_string()));
                }
                Event::Done { finish, prompt_tokens, cached_tokens, completion_tokens, tail } => {
                    let choice = shape.choice(&tail, &[], Some(&finish), true, first);
                    yield Ok(SseEvent::default().data(shape.envelope(json!([choice]), true, None).to_string()));
                    if shape.include_usage {
                        let u = usage(prompt_tokens, cached_tokens, completion_tokens);
                        yield Ok(SseEvent::default().data(shape.envelope(json!([]), true, Some(u)).to_string()));
                    }
                    break;
                }
                Event::Failed(e) => {
                    let kind = "server_error";
                    let body = json!({"error": {"message": e.message, "type": kind, "param": null, "code": e.status.as_u16()}});
                    yield Ok(SseEvent::default().data(body.to_string()));
                    break;
                }
            }
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(events).into_response()
}

/// Generates and answers in the shape of `kind` (streamed or whole, as the request asked).
async fn run(
    fe: &Arc<Frontend>,
    kind: Kind,
    prompt: Vec<u32>,
    params: crate::engine::SamplingParams,
    logprobs: bool,
    common: &super::openai::CommonParams,
) -> Result<Response, ApiError> {
    let id = fe.request_id(match kind {
        Kind::Completion => "cmpl",
        Kind::Chat => "chatcmpl",
    });
    let rx = fe.generate(id.clone(), prompt, params).await?;
    let include_usage = common.stream_options.is_some_and(|o| o.include_usage);
    let shape = Shape {
        fe: fe.clone(),
        kind,
        id,
        created: created(),
        logprobs,
        include_usage,
    };
    Ok(respond(shape, rx, common.stream).await)
}

async fn completions(
    State(fe): State<Arc<Frontend>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run = async {
        let req: CompletionRequest = parse_body(&body_of(body)?)?;
        fe.check_model(&req.common.model)?;
        if req.echo {
            return Err(ApiError::invalid(Some("echo"), "echo is not supported"));
        }
        let prompt = match &req.prompt {
            Prompt::Text(t) => fe.encode(t)?,
            Prompt::Ids(ids) => ids.clone(),
            Prompt::Texts(v) if v.len() == 1 => fe.encode(&v[0])?,
            Prompt::Texts(_) => {
                return Err(ApiError::invalid(
                    Some("prompt"),
                    "send one prompt per request",
                ));
            }
        };
        let room = fe.max_model_len().saturating_sub(prompt.len());
        let params = req
            .common
            .sampling(req.common.max_tokens, req.logprobs, room)?;
        run(
            &fe,
            Kind::Completion,
            prompt,
            params,
            req.logprobs.is_some(),
            &req.common,
        )
        .await
    };
    run.await.unwrap_or_else(|e: ApiError| e.into_response())
}

async fn chat(State(fe): State<Arc<Frontend>>, body: Result<Bytes, BytesRejection>) -> Response {
    let run = async {
        let req: ChatRequest = parse_body(&body_of(body)?)?;
        fe.check_model(&req.common.model)?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid(
                Some("messages"),
                "messages must not be empty",
            ));
        }
        let msgs = req
            .messages
            .iter()
            .map(|m| Ok((m.role.clone(), m.text()?)))
            .collect::<Result<Vec<_>, ApiError>>()?;
        let text = fe
            .template
            .render(&msgs)
            .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))?;
        let prompt = fe.encode(&text)?;
        let room = fe.max_model_len().saturating_sub(prompt.len());
        let logprobs = req.logprobs.then(|| req.top_logprobs.unwrap_or(0));
        let params = req.common.sampling(
            req.max_completion_tokens.or(req.common.max_tokens),
            logprobs,
            room,
        )?;
        run(&fe, Kind::Chat, prompt, params, req.logprobs, &req.common).await
    };
    run.await.unwrap_or_else(|e: ApiError| e.into_response())
}

async fn models(State(fe): State<Arc<Frontend>>) -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": fe.model, "object": "model", "created": created(),
        "owned_by": "tandem", "max_model_len": fe.max_model_len()}]}),
    )
}

async fn health(State(fe): State<Arc<Frontend>>) -> Response {
    let workers: Vec<Value> = fe
        .pools()
        .flat_map(|p| p.workers())
        .filter(|w| !w.is_retired())
        .map(|w| json!({"addr": w.addr, "healthy": w.is_healthy(), "role": w.info().map(|i| i.role.clone())}))
        .collect();
    let all = fe.pools().all(|p| p.all_healthy());
    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"workers": workers}))).into_response()
}

async fn metrics(State(fe): State<Arc<Frontend>>) -> String {
    for pool in fe.pools() {
        let workers = pool.workers();
        let indexed: Vec<usize> = match pool.index.read() {
            Ok(ix) => (0..workers.len()).map(|i| ix.num_blocks(i)).collect(),
            Err(_) => vec![0; workers.len()],
        };
        for (w, indexed) in workers.iter().zip(indexed) {
            let l = w.load.lock().map(|l| *l).unwrap_or_default();
            let set = |q: &str, v: i64| {
                fe.metrics
                    .worker
                    .with_label_values(&[w.addr.as_str(), q])
                    .set(v)
            };
            set("running", l.running as i64);
            set("waiting", l.waiting as i64);
            set("used_blocks", l.used_blocks as i64);
            set("total_blocks", l.total_blocks as i64);
            set("queued_prefill_tokens", l.queued_prefill_tokens as i64);
            set("healthy", w.is_healthy() as i64);
            set(
                "router_in_flight",
                w.in_flight.load(std::sync::atomic::Ordering::Relaxed) as i64,
            );
            set("router_indexed_blocks", indexed as i64);
        }
    }
    fe.metrics.render()
}
