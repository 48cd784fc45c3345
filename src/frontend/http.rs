//! The OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /v1/models,
//! /tokenize, /detokenize, /health and /metrics.
//!
//! A request becomes one generation per (prompt, choice): `best_of` of them per prompt, each
//! its own request to the router (choice i with seed + i). They run at once; whole answers
//! keep the `n` most likely per prompt (by cumulative logprob), streams interleave chunks of
//! every choice as they come.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::chat::ChatInput;
use super::dispatch::{Delta, Event, Frontend};
use super::openai::{
    ApiError, ChatRequest, CommonParams, MAX_GENERATIONS, OnePrompt, parse_body, parse_chat,
    parse_completion,
};
use super::response::{
    ChatParsing, ChatStream, Kind, chat_message, finish_reason, logprobs_json, usage,
};
use crate::engine::SamplingParams;
use crate::timeline::Timeline;

/// Completions' `max_tokens` when the request gives none (OpenAI's and vLLM's default).
const COMPLETION_DEFAULT_MAX_TOKENS: usize = 16;

/// A request with this header (any value) is timed: a streamed completion of one generation
/// ends, before `[DONE]`, with a chunk whose [`TIMELINE_FIELD`] holds its clock points
/// ([`Timeline`]; the client's own are zero).
pub const TIMELINE_HEADER: &str = "x-tandem-timeline";

/// The field of the last chunk that holds a timed request's clock points.
pub const TIMELINE_FIELD: &str = "tandem_timeline";

/// The HTTP application. With an API key, every route but /health, /ping (liveness: the
/// process answers, whatever its workers do) and /metrics (probes and scrapers) wants
/// `Authorization: Bearer KEY`.
pub fn app(fe: Arc<Frontend>) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/reset_prefix_cache", post(reset_prefix_cache))
        .route_layer(axum::middleware::from_fn_with_state(fe.clone(), authorize));
    axum::Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/ping", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(fe.api.max_body_bytes))
        .with_state(fe)
}

/// Lets a request through when the server has no key, or the request carries it (compared in
/// constant time); otherwise a 401 in OpenAI's shape.
async fn authorize(
    State(fe): State<Arc<Frontend>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(key) = &fe.api.api_key else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        key.as_bytes(),
    )) {
        return next.run(req).await;
    }
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "Incorrect or missing API key: send Authorization: Bearer <key>".into(),
        param: None,
        retry_after: None,
    }
    .into_response()
}

fn created() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| ApiError::server(r.status(), r.body_text()))
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

    /// The chat template's variables: the server's defaults under the request's own.
    fn template_kwargs(&self, req: Option<&Map<String, Value>>) -> Map<String, Value> {
        let mut kw = self.api.template_kwargs.clone();
        if let Some(r) = req {
            kw.extend(r.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        kw
    }
}

/// One generation of a request.
struct Job {
    prompt_index: usize,
    prompt: Vec<u32>,
    params: SamplingParams,
}

/// What a request asks for, once parsed.
struct Plan {
    kind: Kind,
    jobs: Vec<Job>,
    /// Completions returned per prompt.
    n: usize,
    /// Generations per prompt.
    best_of: usize,
    /// Text put before each choice of a prompt (`echo`).
    echo: Vec<String>,
    /// Whether the client asked for logprobs.
    logprobs: bool,
    chat: ChatParsing,
    stream: bool,
    include_usage: bool,
    /// The request's clock points so far, when it asked for them (a streamed request of one
    /// generation with the [`TIMELINE_HEADER`]).
    timeline: Option<Box<Timeline>>,
}

/// One generation's whole result.
struct Outcome {
    text: String,
    deltas: Vec<Delta>,
    finish: String,
    prompt_tokens: usize,
    cached_tokens: usize,
    completion_tokens: usize,
}

impl Outcome {
    fn cumulative_logprob(&self) -> f64 {
        self.deltas
            .iter()
            .map(|d| d.logprob.unwrap_or(0.0) as f64)
            .sum()
    }
}

/// The jobs of `prompts`: `best_of` generations each, choice i seeded with seed + i.
fn jobs_for(prompts: Vec<(Vec<u32>, SamplingParams)>, best_of: usize, n: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (p, (prompt, params)) in prompts.into_iter().enumerate() {
        for i in 0..best_of {
            let mut params = params.clone();
            params.seed = params.seed.map(|s| s.wrapping_add(i as u64));
            // Ranking best_of candidates needs each token's logprob.
            if best_of > n && params.logprobs.is_none() {
                params.logprobs = Some(0);
            }
            jobs.push(Job {
                prompt_index: p,
                prompt: prompt.clone(),
                params,
            });
        }
    }
    jobs
}

/// Starts every job; on a refusal the ones already started are dropped (and cancelled).
async fn start(
    fe: &Arc<Frontend>,
    id: &str,
    jobs: &[Job],
    mut timeline: Option<Box<Timeline>>,
) -> Result<Vec<mpsc::Receiver<Event>>, ApiError> {
    let mut rxs = Vec::with_capacity(jobs.len());
    for (i, j) in jobs.iter().enumerate() {
        let sub = if jobs.len() == 1 {
            id.to_string()
        } else {
            format!("{id}-{i}")
        };
        let t = timeline.take().filter(|_| jobs.len() == 1);
        rxs.push(
            fe.generate(sub, j.prompt.clone(), j.params.clone(), t)
                .await?,
        );
    }
    Ok(rxs)
}

/// A generation whose first event has arrived, and the rest of it.
struct Started {
    first: Event,
    rest: mpsc::Receiver<Event>,
}

impl Started {
    fn into_stream(self) -> impl futures::Stream<Item = Event> {
        futures::stream::once(async { self.first }).chain(ReceiverStream::new(self.rest))
    }
}

/// A request waiting for its first tokens, counted against `--max-queued-requests`.
struct Queued<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admits a request within `--max-queued-requests`.
fn admit(fe: &Frontend) -> Result<Queued<'_>, ApiError> {
    let max = fe.api.queue.max_queued;
    let before = fe.queued.fetch_add(1, Ordering::AcqRel);
    let guard = Queued(&fe.queued);
    if before >= max {
        fe.count("overloaded");
        return Err(ApiError::overloaded(
            "max_queued_requests",
            format!(
                "{before} requests are already waiting for their first token \
                 (--max-queued-requests {max}); retry later"
            ),
            1,
        ));
    }
    Ok(guard)
}

/// Waits for every generation's first event, within `--queue-timeout`; past it they are all
/// dropped (and so cancelled on their workers).
async fn first_events(
    fe: &Frontend,
    rxs: Vec<mpsc::Receiver<Event>>,
) -> Result<Vec<Started>, ApiError> {
    let timeout = fe.api.queue.timeout;
    let firsts = futures::future::join_all(rxs.into_iter().map(|mut rx| async move {
        let first = rx.recv().await;
        (first, rx)
    }));
    let got = tokio::time::timeout(timeout, firsts).await.map_err(|_| {
        fe.count("queue_timeout");
        ApiError::overloaded(
            "queue_timeout",
            format!(
                "no worker began the request within {:.0} s (--queue-timeout); every worker \
                 is busy, retry later",
                timeout.as_secs_f64()
            ),
            1,
        )
    })?;
    got.into_iter()
        .map(|(first, rest)| match first {
            Some(first) => Ok(Started { first, rest }),
            None => Err(ApiError::server(
                StatusCode::BAD_GATEWAY,
                "the generation ended without a result",
            )),
        })
        .collect()
}

async fn collect(g: Started) -> Result<Outcome, ApiError> {
    let (mut text, mut deltas) = (String::new(), Vec::new());
    let mut events = Box::pin(g.into_stream());
    while let Some(ev) = events.next().await {
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
                ..
            } => {
                text.push_str(&tail);
                return Ok(Outcome {
                    text,
                    deltas,
                    finish,
                    prompt_tokens,
                    cached_tokens,
                    completion_tokens,
                });
            }
            Event::Failed(e) => return Err(e),
        }
    }
    Err(ApiError::server(
        StatusCode::BAD_GATEWAY,
        "the generation ended without a result",
    ))
}

/// Runs a plan and answers it, whole or streamed. The request waits in the workers' queues
/// (counted against `--max-queued-requests`) until every generation has its first event.
async fn run(fe: &Arc<Frontend>, mut plan: Plan) -> Result<Response, ApiError> {
    let id = fe.request_id(match plan.kind {
        Kind::Completion => "cmpl",
        Kind::Chat => "chatcmpl",
    });
    let queued = admit(fe)?;
    let timeline = plan.timeline.take().filter(|_| plan.stream);
    let rxs = start(fe, &id, &plan.jobs, timeline).await?;
    let started = first_events(fe, rxs).await?;
    drop(queued);
    // A generation that failed before its first token fails the request with its status.
    if let Some(e) = started.iter().find_map(|g| match &g.first {
        Event::Failed(e) => Some(e.clone()),
        _ => None,
    }) {
        return Err(e);
    }
    let head = json!({"id": id, "object": plan.kind.object(plan.stream), "created": created(), "model": fe.model});
    if plan.stream {
        return Ok(stream(fe.clone(), plan, head, started));
    }
    let outcomes = futures::future::join_all(started.into_iter().map(collect)).await;
    let outcomes = outcomes.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Json(whole(fe, &plan, head, outcomes)).into_response())
}

/// The whole answer: the n most likely of each prompt's best_of outcomes, in prompt order.
fn whole(fe: &Frontend, plan: &Plan, mut body: Value, outcomes: Vec<Outcome>) -> Value {
    let (mut prompt, mut cached, mut completion) = (0, 0, 0);
    let mut choices = Vec::new();
    let mut it = outcomes.into_iter();
    for p in 0..plan.echo.len().max(1) {
        let mut group: Vec<Outcome> = it.by_ref().take(plan.best_of).collect();
        if let Some(first) = group.first() {
            prompt += first.prompt_tokens;
            cached += first.cached_tokens;
        }
        if plan.best_of > plan.n {
            group.sort_by(|a, b| b.cumulative_logprob().total_cmp(&a.cumulative_logprob()));
            group.truncate(plan.n);
        }
        for o in group {
            completion += o.completion_tokens;
            let index = choices.len();
            let logprobs = if plan.logprobs {
                logprobs_json(plan.kind, &o.deltas, |t| fe.token_text(t))
            } else {
                Value::Null
            };
            choices.push(match plan.kind {
                Kind::Completion => {
                    let text = format!("{}{}", plan.echo.get(p).map_or("", String::as_str), o.text);
                    json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": o.finish})
                }
                Kind::Chat => {
                    let (message, called) = chat_message(plan.chat, &o.text);
                    json!({"index": index, "message": message, "logprobs": logprobs,
                           "finish_reason": finish_reason(&o.finish, called)})
                }
            });
        }
    }
    body["choices"] = Value::Array(choices);
    body["usage"] = usage(prompt, cached, completion);
    body
}

/// Server-sent chunks of every choice, as they come; usage (if asked) after the last.
fn stream(fe: Arc<Frontend>, plan: Plan, head: Value, started: Vec<Started>) -> Response {
    let n = started.len();
    let prompt_of: Vec<usize> = plan.jobs.iter().map(|j| j.prompt_index).collect();
    let merged = futures::stream::select_all(
        started
            .into_iter()
            .enumerate()
            .map(|(i, g)| Box::pin(g.into_stream().map(move |e| (i, e)))),
    );
    let timeline_head = head.clone();
    let chunk = move |choice: Value, usage: Option<Value>| {
        let mut c = head.clone();
        c["choices"] = match choice {
            Value::Null => json!([]),
            ch => json!([ch]),
        };
        if let Some(u) = usage {
            c["usage"] = u;
        }
        SseEvent::default().data(c.to_string())
    };
    let events = async_stream::stream! {
        let mut merged = merged;
        let mut chats: Vec<ChatStream> = (0..n).map(|_| ChatStream::new(plan.chat)).collect();
        let mut echoed = vec![false; n];
        let (mut prompt, mut cached, mut completion, mut done) = (0, 0, 0, 0);
        let mut first_chunk = None;
        if plan.kind == Kind::Chat {
            for i in 0..n {
                let role = json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
                yield Ok::<_, Infallible>(chunk(role, None));
            }
        }
        while let Some((i, ev)) = merged.next().await {
            let p = prompt_of[i];
            match ev {
                Event::Token(d) => {
                    let logprobs = if plan.logprobs {
                        logprobs_json(plan.kind, std::slice::from_ref(&d), |t| fe.token_text(t))
                    } else {
                        Value::Null
                    };
                    let choice = match plan.kind {
                        Kind::Completion => {
                            let mut text = d.text.clone();
                            if !echoed[i] {
                                echoed[i] = true;
                                text = format!("{}{text}", plan.echo.get(p).map_or("", String::as_str));
                            }
                            if text.is_empty() && !plan.logprobs {
                                continue;
                            }
                            json!({"index": i, "text": text, "logprobs": logprobs, "finish_reason": null})
                        }
                        Kind::Chat => {
                            let delta = chats[i].push(&d.text);
                            if delta.is_none() && !plan.logprobs {
                                continue;
                            }
                            json!({"index": i, "delta": delta.unwrap_or_else(|| json!({})), "logprobs": logprobs, "finish_reason": null})
                        }
                    };
                    first_chunk.get_or_insert_with(crate::timeline::now_ns);
                    yield Ok(chunk(choice, None));
                }
                Event::Done { finish, prompt_tokens, cached_tokens, completion_tokens, tail, timeline } => {
                    let mut timeline = timeline;
                    if i % plan.best_of.max(1) == 0 {
                        prompt += prompt_tokens;
                        cached += cached_tokens;
                    }
                    completion += completion_tokens;
                    let choice = match plan.kind {
                        Kind::Completion => {
                            let mut text = tail;
                            if !echoed[i] {
                                echoed[i] = true;
                                text = format!("{}{text}", plan.echo.get(p).map_or("", String::as_str));
                            }
                            json!({"index": i, "text": text, "logprobs": null, "finish_reason": finish})
                        }
                        Kind::Chat => {
                            let c = &mut chats[i];
                            let mut delta = c.push(&tail).unwrap_or_else(|| json!({}));
                            if let Some(rest) = c.finish() {
                                for (k, v) in rest.as_object().into_iter().flatten() {
                                    match (delta.get(k).and_then(Value::as_str), v.as_str()) {
                                        (Some(a), Some(b)) => delta[k] = json!(format!("{a}{b}")),
                                        _ => delta[k] = v.clone(),
                                    }
                                }
                            }
                            let finish = finish_reason(&finish, c.called_tools());
                            json!({"index": i, "delta": delta, "logprobs": null, "finish_reason": finish})
                        }
                    };
                    first_chunk.get_or_insert_with(crate::timeline::now_ns);
                    yield Ok(chunk(choice, None));
                    done += 1;
                    if done == n {
                        if plan.include_usage {
                            yield Ok(chunk(Value::Null, Some(usage(prompt, cached, completion))));
                        }
                        if let Some(mut t) = timeline.take() {
                            t.first_chunk = first_chunk.unwrap_or_default();
                            let mut c = timeline_head.clone();
                            c["choices"] = json!([]);
                            c[TIMELINE_FIELD] = serde_json::to_value(&t).unwrap_or_default();
                            yield Ok(SseEvent::default().data(c.to_string()));
                        }
                        break;
                    }
                }
                Event::Failed(e) => {
                    yield Ok(SseEvent::default().data(e.body().to_string()));
                    break;
                }
            }
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Sse::new(events).into_response()
}

async fn completions(
    State(fe): State<Arc<Frontend>>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = crate::timeline::now_ns();
    let run_it = async {
        let req = parse_completion(&body_of(body)?)?;
        fe.check_model(&req.common.model)?;
        let c = &req.common;
        let (n, best_of) = c.choices(&fe.api.defaults)?;
        if req.echo && req.logprobs.is_some() {
            return Err(ApiError::invalid(
                Some("echo"),
                "echo with logprobs needs the prompt's logprobs, which this server does not \
                 compute",
            ));
        }
        let list = req.prompt.clone().into_list()?;
        if list.len() * best_of > MAX_GENERATIONS {
            return Err(ApiError::invalid(
                Some("prompt"),
                format!(
                    "{} prompts × {best_of} completions each is more than the {MAX_GENERATIONS} \
                     generations one request may start",
                    list.len()
                ),
            ));
        }
        let mut prompts = Vec::new();
        let mut echo = Vec::new();
        for p in list {
            let (ids, text) = match p {
                OnePrompt::Text(t) => (fe.encode(&t)?, t),
                OnePrompt::Ids(ids) => {
                    let text = if req.echo {
                        fe.tokenizer.decode(&ids).unwrap_or_default()
                    } else {
                        String::new()
                    };
                    (ids, text)
                }
            };
            let params = c.sampling(
                &fe.api.defaults,
                (c.max_tokens, "max_tokens"),
                Some(COMPLETION_DEFAULT_MAX_TOKENS),
                req.logprobs,
                (ids.len(), fe.max_model_len()),
            )?;
            echo.push(if req.echo { text } else { String::new() });
            prompts.push((ids, params));
        }
        let plan = Plan {
            kind: Kind::Completion,
            jobs: jobs_for(prompts, best_of, n),
            n,
            best_of,
            echo,
            logprobs: req.logprobs.is_some(),
            chat: ChatParsing::default(),
            stream: c.stream,
            include_usage: c.stream_options.is_some_and(|o| o.include_usage),
            timeline: headers.contains_key(TIMELINE_HEADER).then(|| {
                Box::new(Timeline {
                    arrived,
                    tokenized: crate::timeline::now_ns(),
                    ..Default::default()
                })
            }),
        };
        run(&fe, plan).await
    };
    run_it.await.unwrap_or_else(|e: ApiError| e.into_response())
}

/// How a chat request's output is parsed: reasoning with the server's parser, tool calls
/// when the request has tools and lets the model choose.
fn chat_parsing(
    fe: &Frontend,
    req: &ChatRequest,
    kwargs: &Map<String, Value>,
) -> Result<ChatParsing, ApiError> {
    let thinking = kwargs
        .get("enable_thinking")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut parsing = ChatParsing {
        reasoning: fe.api.reasoning.map(|_| thinking),
        tools: false,
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
    };
    if req.tools.is_some() {
        let choice = req.tool_choice.clone().unwrap_or_else(|| json!("auto"));
        match choice.as_str() {
            Some("none") => {}
            Some("auto") => {
                if fe.api.tool_parser.is_none() {
                    return Err(ApiError::invalid(
                        Some("tool_choice"),
                        "\"auto\" tool choice requires --tool-call-parser to be set",
                    ));
                }
                parsing.tools = true;
            }
            Some("required") => {
                return Err(ApiError::invalid(
                    Some("tool_choice"),
                    "tool_choice \"required\" needs guided decoding, which this server does \
                     not implement; use \"auto\"",
                ));
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    Some("tool_choice"),
                    format!(
                        "Invalid value for `tool_choice`: {other}! Only named tools, \"none\", \
                         \"auto\" or \"required\" are supported."
                    ),
                ));
            }
            None => {
                let name = choice.pointer("/function/name").and_then(Value::as_str);
                let known = name.is_some_and(|n| {
                    req.tools
                        .iter()
                        .flatten()
                        .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(n))
                });
                let msg = if known {
                    "a named tool_choice needs guided decoding, which this server does not \
                     implement; use \"auto\""
                } else {
                    "The tool specified in `tool_choice` does not match any of the specified \
                     `tools`"
                };
                return Err(ApiError::invalid(Some("tool_choice"), msg));
            }
        }
    }
    Ok(parsing)
}

/// The prompt of a chat request, rendered with the template.
fn render_chat(
    fe: &Frontend,
    messages: &[Value],
    tools: Option<&[Value]>,
    kwargs: Map<String, Value>,
) -> Result<String, ApiError> {
    fe.template
        .render(&ChatInput {
            messages,
            tools,
            kwargs,
        })
        .map_err(|e| ApiError::invalid(Some("messages"), e.to_string()))
}

async fn chat(State(fe): State<Arc<Frontend>>, body: Result<Bytes, BytesRejection>) -> Response {
    let run_it = async {
        let req = parse_chat(&body_of(body)?)?;
        let c: &CommonParams = &req.common;
        fe.check_model(&c.model)?;
        let (n, best_of) = c.choices(&fe.api.defaults)?;
        let kwargs = fe.template_kwargs(req.chat_template_kwargs.as_ref());
        let parsing = chat_parsing(&fe, &req, &kwargs)?;
        let text = render_chat(&fe, &req.messages, req.tools.as_deref(), kwargs)?;
        let prompt = fe.encode(&text)?;
        let logprobs = req.logprobs.then(|| req.top_logprobs.unwrap_or(0));
        let field = if req.max_completion_tokens.is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        let params = c.sampling(
            &fe.api.defaults,
            (req.max_completion_tokens.or(c.max_tokens), field),
            None,
            logprobs,
            (prompt.len(), fe.max_model_len()),
        )?;
        let plan = Plan {
            kind: Kind::Chat,
            jobs: jobs_for(vec![(prompt, params)], best_of, n),
            n,
            best_of,
            echo: vec![String::new()],
            logprobs: req.logprobs,
            chat: parsing,
            stream: c.stream,
            include_usage: c.stream_options.is_some_and(|o| o.include_usage),
            timeline: None,
        };
        run(&fe, plan).await
    };
    run_it.await.unwrap_or_else(|e: ApiError| e.into_response())
}

/// POST /tokenize: a prompt, or messages through the chat template.
#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    #[serde(default)]
    model: Option<String>,
    prompt: Option<String>,
    messages: Option<Vec<Value>>,
    tools: Option<Vec<Value>>,
    chat_template_kwargs: Option<Map<String, Value>>,
    #[serde(default = "yes")]
    add_generation_prompt: bool,
    #[serde(default)]
    return_token_strs: bool,
}

fn yes() -> bool {
    true
}

async fn tokenize(
    State(fe): State<Arc<Frontend>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run_it = async {
        let req: TokenizeRequest = parse_body(&body_of(body)?)?;
        if let Some(m) = &req.model {
            fe.check_model(m)?;
        }
        let text = match (&req.prompt, &req.messages) {
            (Some(p), None) => p.clone(),
            (None, Some(msgs)) => {
                // The same checks and shape as a chat request's messages.
                let body = json!({"model": fe.model, "messages": msgs});
                let parsed = parse_chat(body.to_string().as_bytes())?;
                let mut kwargs = fe.template_kwargs(req.chat_template_kwargs.as_ref());
                kwargs.insert(
                    "add_generation_prompt".into(),
                    req.add_generation_prompt.into(),
                );
                render_chat(&fe, &parsed.messages, req.tools.as_deref(), kwargs)?
            }
            _ => {
                return Err(ApiError::invalid(
                    Some("prompt"),
                    "give either prompt or messages",
                ));
            }
        };
        let tokens = fe.encode(&text)?;
        let strs = req.return_token_strs.then(|| {
            tokens
                .iter()
                .map(|&t| fe.tokenizer.id_to_token(t).unwrap_or_default())
                .collect::<Vec<_>>()
        });
        Ok(Json(
            json!({"count": tokens.len(), "max_model_len": fe.max_model_len(),
            "tokens": tokens, "token_strs": strs}),
        )
        .into_response())
    };
    run_it.await.unwrap_or_else(|e: ApiError| e.into_response())
}

/// POST /detokenize.
#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    #[serde(default)]
    model: Option<String>,
    tokens: Vec<u32>,
}

async fn detokenize(
    State(fe): State<Arc<Frontend>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let run_it = async {
        let req: DetokenizeRequest = parse_body(&body_of(body)?)?;
        if let Some(m) = &req.model {
            fe.check_model(m)?;
        }
        if let Some(t) = req
            .tokens
            .iter()
            .find(|&&t| t as usize >= fe.tokenizer.vocab_size())
        {
            return Err(ApiError::invalid(
                Some("tokens"),
                format!(
                    "token id {t} is outside the vocabulary of {}",
                    fe.tokenizer.vocab_size()
                ),
            ));
        }
        let text = fe
            .tokenizer
            .decode_with_special(&req.tokens)
            .map_err(|e| ApiError::invalid(Some("tokens"), e.to_string()))?;
        Ok(Json(json!({"prompt": text})).into_response())
    };
    run_it.await.unwrap_or_else(|e: ApiError| e.into_response())
}

/// POST /reset_prefix_cache (as vLLM's): every worker drops its prefix cache; a worker with
/// requests holding blocks refuses (reset false).
async fn reset_prefix_cache(State(fe): State<Arc<Frontend>>) -> Response {
    let mut workers = Vec::new();
    for w in fe
        .pools()
        .flat_map(|p| p.workers())
        .filter(|w| !w.is_retired())
    {
        let mut c = w.client.clone();
        let reset = c
            .reset_prefix_cache(crate::wire::proto::ResetPrefixCacheRequest {})
            .await
            .map(|r| r.into_inner().reset);
        workers.push(match reset {
            Ok(r) => json!({"addr": w.addr, "reset": r}),
            Err(s) => json!({"addr": w.addr, "reset": false, "error": s.message()}),
        });
    }
    let all = workers.iter().all(|w| w["reset"] == true);
    let status = if all {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (status, Json(json!({"workers": workers}))).into_response()
}

async fn models(State(fe): State<Arc<Frontend>>) -> Json<Value> {
    // vocab_size (an extension): the ordinary tokens, for clients that synthesize prompts.
    Json(
        json!({"object": "list", "data": [{"id": fe.model, "object": "model", "created": created(),
        "owned_by": "tandem", "max_model_len": fe.max_model_len(),
        "vocab_size": fe.tokenizer.ordinary_vocab_size()}]}),
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
    let m = &fe.metrics;
    m.queued.set(fe.queued.load(Ordering::Relaxed) as i64);
    for pool in fe.pools() {
        let workers = pool.workers();
        let indexed: Vec<usize> = match pool.index.read() {
            Ok(ix) => (0..workers.len()).map(|i| ix.num_blocks(i)).collect(),
            Err(_) => vec![0; workers.len()],
        };
        for (w, indexed) in workers.iter().zip(indexed) {
            let l = w.load.lock().map(|l| *l).unwrap_or_default();
            let addr = [w.addr.as_str()];
            m.running.with_label_values(&addr).set(l.running as i64);
            m.waiting.with_label_values(&addr).set(l.waiting as i64);
            m.kv_usage
                .with_label_values(&addr)
                .set(l.used_blocks as f64 / l.total_blocks.max(1) as f64);
            let set = |q: &str, v: i64| m.worker.with_label_values(&[w.addr.as_str(), q]).set(v);
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
    m.render()
}
