//! OpenAI-compatible request bodies and errors, and their translation to engine parameters.
//!
//! A body is checked field by field before it is read: a field the server does not implement
//! (`logit_bias`, a JSON `response_format`, ...) is a 400 that names it, never silently ignored.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::engine::SamplingParams;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// The offending field, if one.
    pub param: Option<String>,
    /// Seconds after which a retry may succeed (a `Retry-After` header), for overload.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: param.map(str::to_string),
            retry_after: None,
        }
    }

    /// A failure on our side (a worker died, none is up, ...).
    pub fn server(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// Overload past a bound (`which`): a 503 that says which, to be retried after `secs`.
    pub fn overloaded(which: &str, message: impl Into<String>, secs: u64) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            param: Some(which.to_string()),
            retry_after: Some(secs),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let kind = if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status.as_u16()}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        r
    }
}

/// Fields both endpoints read.
const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "ignore_eos",
    "min_tokens",
    "n",
    "best_of",
    "logprobs",
    // An end-user id for the caller's own records: nothing to do with the output.
    "user",
];

/// Fields only /v1/completions reads.
const COMPLETION_FIELDS: &[&str] = &["prompt", "echo"];

/// Fields only /v1/chat/completions reads.
const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "chat_template_kwargs",
    "response_format",
];

/// Refuses a body with a field this endpoint does not implement (null counts as absent).
fn check_fields(body: &Map<String, Value>, own: &[&str]) -> Result<(), ApiError> {
    for (k, v) in body {
        if v.is_null() || COMMON_FIELDS.contains(&k.as_str()) || own.contains(&k.as_str()) {
            continue;
        }
        let why = match k.as_str() {
            "logit_bias" => "logit_bias is not supported",
            "suffix" => "suffix (insertion) is not supported",
            "response_format" => "response_format is only supported on chat completions",
            "prompt_logprobs" => "prompt_logprobs is not supported",
            "guided_json" | "guided_regex" | "guided_choice" | "guided_grammar"
            | "structured_outputs" => "guided decoding is not supported",
            _ => {
                return Err(ApiError::invalid(
                    Some(k),
                    format!("unsupported field {k:?}: this server does not implement it"),
                ));
            }
        };
        return Err(ApiError::invalid(Some(k), why));
    }
    Ok(())
}

/// A string or a list of strings (`stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A completion prompt: text or token ids, one or a batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids of one prompt.
    Ids(Vec<u32>),
    /// A batch of texts.
    Texts(Vec<String>),
    /// A batch of token-id prompts.
    IdLists(Vec<Vec<u32>>),
}

/// Most prompts one completions request may carry (vLLM's default limit).
pub const MAX_PROMPTS: usize = 1024;

/// Most completions one request may ask for (n, or best_of).
pub const MAX_CHOICES: u32 = 128;

/// Most generations one request may start (prompts × best_of): a small body must not fan
/// out into an unbounded amount of work.
pub const MAX_GENERATIONS: usize = 1024;

/// One prompt of a batch: text, or token ids.
#[derive(Debug, Clone, PartialEq)]
pub enum OnePrompt {
    /// Text, tokenized by the server.
    Text(String),
    /// Token ids as given.
    Ids(Vec<u32>),
}

impl Prompt {
    /// The prompts of the batch, in order.
    pub fn into_list(self) -> Result<Vec<OnePrompt>, ApiError> {
        let list: Vec<OnePrompt> = match self {
            Prompt::Text(t) => vec![OnePrompt::Text(t)],
            Prompt::Ids(ids) => vec![OnePrompt::Ids(ids)],
            Prompt::Texts(v) => v.into_iter().map(OnePrompt::Text).collect(),
            Prompt::IdLists(v) => v.into_iter().map(OnePrompt::Ids).collect(),
        };
        if list.is_empty() {
            return Err(ApiError::invalid(
                Some("prompt"),
                "prompt must not be empty",
            ));
        }
        if list.len() > MAX_PROMPTS {
            return Err(ApiError::invalid(
                Some("prompt"),
                format!(
                    "prompt list length {} exceeds the maximum allowed count of {MAX_PROMPTS}",
                    list.len()
                ),
            ));
        }
        Ok(list)
    }
}

/// Fields common to completions and chat completions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CommonParams {
    /// The served model name.
    pub model: String,
    /// Most tokens to generate.
    pub max_tokens: Option<i64>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k (extension; -1 or 0 is off).
    pub top_k: Option<i64>,
    /// Min-p (extension).
    pub min_p: Option<f32>,
    /// Seed (choice i of n gets seed + i).
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<OneOrMany>,
    /// Stop token ids (extension).
    pub stop_token_ids: Option<Vec<u32>>,
    /// Stream with server-sent events.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Presence penalty.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (extension).
    pub repetition_penalty: Option<f32>,
    /// Keep generating past EOS (extension, for benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
    /// Fewest tokens before EOS or a stop token id may end the output (extension, as vLLM).
    pub min_tokens: Option<u64>,
    /// Completions per prompt.
    pub n: Option<u32>,
    /// Completions generated per prompt, of which the `n` most likely are returned.
    pub best_of: Option<u32>,
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with usage.
    #[serde(default)]
    pub include_usage: bool,
}

/// POST /v1/completions.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    /// The prompt(s).
    pub prompt: Prompt,
    /// Top logprobs per token.
    pub logprobs: Option<u32>,
    /// Put the prompt before the completion in the text.
    #[serde(default)]
    pub echo: bool,
    /// The rest.
    #[serde(flatten)]
    pub common: CommonParams,
}

/// Roles a chat message may have.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// POST /v1/chat/completions. Messages stay JSON: the template reads their fields (content,
/// tool_calls, tool_call_id, name, reasoning_content) as OpenAI sends them.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Value>,
    /// Newer name of max_tokens.
    pub max_completion_tokens: Option<i64>,
    /// Return logprobs.
    #[serde(default)]
    pub logprobs: bool,
    /// Top logprobs per token (with logprobs).
    pub top_logprobs: Option<u32>,
    /// Tools the model may call.
    pub tools: Option<Vec<Value>>,
    /// "none", "auto", "required" or a named function.
    pub tool_choice: Option<Value>,
    /// False keeps only the first call.
    pub parallel_tool_calls: Option<bool>,
    /// Variables for the chat template (e.g. `enable_thinking`).
    pub chat_template_kwargs: Option<Map<String, Value>>,
    /// Only `{"type": "text"}` (structured output needs guided decoding).
    pub response_format: Option<Value>,
    /// The rest.
    #[serde(flatten)]
    pub common: CommonParams,
}

/// Parses a JSON body of `T`, answering malformed JSON and unsupported fields with a 400.
fn parse_checked<T: serde::de::DeserializeOwned>(body: &[u8], own: &[&str]) -> Result<T, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("malformed request body: {e}")))?;
    let Value::Object(map) = &v else {
        return Err(ApiError::invalid(
            None,
            "the request body must be a JSON object",
        ));
    };
    check_fields(map, own)?;
    serde_json::from_value(v)
        .map_err(|e| ApiError::invalid(None, format!("malformed request body: {e}")))
}

/// Parses a completions body.
pub fn parse_completion(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    parse_checked(body, COMPLETION_FIELDS)
}

/// Parses a chat completions body and checks its messages and tool fields.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let mut req: ChatRequest = parse_checked(body, CHAT_FIELDS)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid(
            Some("messages"),
            "messages must not be empty",
        ));
    }
    for m in &mut req.messages {
        normalize_message(m)?;
    }
    if let Some(f) = &req.response_format
        && f.get("type").and_then(Value::as_str) != Some("text")
    {
        return Err(ApiError::invalid(
            Some("response_format"),
            "response_format other than {\"type\": \"text\"} needs guided decoding, which this \
             server does not implement",
        ));
    }
    if req.tools.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid(
            Some("tools"),
            "`tools` must not be an empty array. Either provide at least one tool or omit the \
             field entirely.",
        ));
    }
    if req.tool_choice.is_some() && req.tools.is_none() {
        return Err(ApiError::invalid(
            Some("tool_choice"),
            "When using `tool_choice`, `tools` must be set.",
        ));
    }
    Ok(req)
}

/// Parses any other JSON body (no field check).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(None, format!("malformed request body: {e}")))
}

/// Checks one message and puts it in the shape templates read: content as text (text parts
/// joined), `developer` as `system`, tool-call arguments as objects (as vLLM passes them).
fn normalize_message(m: &mut Value) -> Result<(), ApiError> {
    let bad = |msg: String| ApiError::invalid(Some("messages"), msg);
    let Value::Object(obj) = m else {
        return Err(bad("each message must be an object".into()));
    };
    let role = match obj.get("role") {
        Some(Value::String(r)) if ROLES.contains(&r.as_str()) => r.clone(),
        Some(Value::String(r)) => {
            return Err(bad(format!(
                "unknown role {r:?}: messages have role system, developer, user, assistant or tool"
            )));
        }
        _ => return Err(bad("every message needs a role".into())),
    };
    if role == "developer" {
        obj.insert("role".into(), "system".into());
    }
    let text = match obj.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(p.get("text").and_then(Value::as_str).unwrap_or("")),
                    other => {
                        return Err(bad(format!(
                            "content parts of type {other:?} are not supported"
                        )));
                    }
                }
            }
            Some(texts.join("\n"))
        }
        Some(_) => return Err(bad("content must be a string or a list of parts".into())),
    };
    let needs_content = role != "assistant";
    match text {
        Some(t) => {
            obj.insert("content".into(), Value::String(t));
        }
        None if needs_content => return Err(bad(format!("a {role} message needs content"))),
        None => {
            obj.insert("content".into(), Value::String(String::new()));
        }
    }
    if let Some(Value::Array(calls)) = obj.get_mut("tool_calls") {
        for c in calls {
            let Some(f) = c.get_mut("function").and_then(Value::as_object_mut) else {
                return Err(bad("a tool call needs a function".into()));
            };
            let args = match f.get("arguments") {
                Some(Value::String(s)) if s.trim().is_empty() => json!({}),
                Some(Value::String(s)) => serde_json::from_str(s)
                    .map_err(|e| bad(format!("tool call arguments are not JSON: {e}")))?,
                Some(v @ Value::Object(_)) => v.clone(),
                None | Some(Value::Null) => json!({}),
                Some(_) => return Err(bad("tool call arguments must be a JSON object".into())),
            };
            f.insert("arguments".into(), args);
        }
    }
    Ok(())
}

/// How the server reads and answers requests (frontend flags).
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Sampling defaults (the model's generation_config.json).
    pub defaults: Defaults,
    /// `--reasoning-parser`.
    pub reasoning: Option<super::reasoning::ReasoningParserKind>,
    /// `--tool-call-parser`.
    pub tool_parser: Option<super::tool_calls::ToolParserKind>,
    /// `--default-chat-template-kwargs`, under each request's `chat_template_kwargs`.
    pub template_kwargs: Map<String, Value>,
    /// How many requests may wait for their first token, and for how long.
    pub queue: QueueBounds,
    /// `--max-request-body-bytes`.
    pub max_body_bytes: usize,
    /// `--api-key`: the bearer token every API call must carry (probes and scrapers excepted).
    pub api_key: Option<String>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            defaults: Defaults::default(),
            reasoning: None,
            tool_parser: None,
            template_kwargs: Map::new(),
            queue: QueueBounds::default(),
            max_body_bytes: 8 << 20,
            api_key: None,
        }
    }
}

/// Bounds of overload: requests wait in the workers' queues (where the scheduler admits them
/// as capacity frees), and the frontend counts those without a first token yet. Past either
/// bound a request gets a 503 that names it, with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueBounds {
    /// `--max-queued-requests`: requests waiting for their first token at once.
    pub max_queued: usize,
    /// `--queue-timeout`: how long one may wait for it.
    pub timeout: std::time::Duration,
}

impl Default for QueueBounds {
    fn default() -> Self {
        QueueBounds {
            max_queued: 4096,
            timeout: std::time::Duration::from_secs(600),
        }
    }
}

/// Sampling defaults from the model's generation_config.json, as vLLM applies them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults(pub SamplingParams);

impl CommonParams {
    /// Completions per prompt and sequences generated per prompt (n, best_of).
    pub fn choices(&self, defaults: &Defaults) -> Result<(usize, usize), ApiError> {
        let n = self.n.unwrap_or(1);
        let best_of = self.best_of.unwrap_or(n);
        if n < 1 {
            return Err(ApiError::invalid(
                Some("n"),
                format!("n must be at least 1, got {n}."),
            ));
        }
        if best_of < n {
            return Err(ApiError::invalid(
                Some("best_of"),
                format!(
                    "best_of must be greater than or equal to n, got n={n} and best_of={best_of}."
                ),
            ));
        }
        if best_of > MAX_CHOICES {
            return Err(ApiError::invalid(
                Some(if self.best_of.is_some() {
                    "best_of"
                } else {
                    "n"
                }),
                format!("at most {MAX_CHOICES} completions per prompt, got {best_of}"),
            ));
        }
        if best_of > 1 && self.temperature.unwrap_or(defaults.0.temperature) < 1e-5 {
            return Err(ApiError::invalid(
                Some("n"),
                format!("n must be 1 when using greedy sampling, got {best_of}."),
            ));
        }
        if self.stream && best_of != n {
            return Err(ApiError::invalid(
                Some("best_of"),
                "best_of must equal n when streaming",
            ));
        }
        if self.stream_options.is_some() && !self.stream {
            return Err(ApiError::invalid(
                Some("stream_options"),
                "Stream options can only be defined when `stream=True`.",
            ));
        }
        Ok((n as usize, best_of as usize))
    }

    /// Engine sampling parameters for a prompt of `prompt_len` tokens under `max_model_len`;
    /// `max_tokens` (named `field` in errors) defaults to `default_max` or what fits.
    pub fn sampling(
        &self,
        defaults: &Defaults,
        (max_tokens, field): (Option<i64>, &str),
        default_max: Option<usize>,
        logprobs: Option<u32>,
        (prompt_len, max_model_len): (usize, usize),
    ) -> Result<SamplingParams, ApiError> {
        let room = max_model_len.saturating_sub(prompt_len);
        if prompt_len >= max_model_len {
            return Err(ApiError::invalid(
                Some("prompt"),
                format!(
                    "This model's maximum context length is {max_model_len} tokens. However, \
                     your request has {prompt_len} input tokens. Please reduce the length of \
                     the input messages."
                ),
            ));
        }
        let max_tokens = match max_tokens {
            None => default_max.unwrap_or(room).min(room).max(1),
            Some(m) if m < 1 => {
                return Err(ApiError::invalid(
                    Some(field),
                    format!("max_tokens must be at least 1, got {m}."),
                ));
            }
            Some(m) if m as u64 > room as u64 => {
                return Err(ApiError::invalid(
                    Some(field),
                    format!(
                        "'max_tokens' or 'max_completion_tokens' is too large: {m}. This \
                         model's maximum context length is {max_model_len} tokens and your \
                         request has {prompt_len} input tokens ({m} > {max_model_len} - \
                         {prompt_len})."
                    ),
                ));
            }
            Some(m) => m as usize,
        };
        let top_k = match self.top_k {
            None => defaults.0.top_k,
            Some(k) if k < -1 => {
                return Err(ApiError::invalid(
                    Some("top_k"),
                    format!("top_k must be 0 (disable), or at least 1, got {k}."),
                ));
            }
            Some(k) => k.max(0) as usize,
        };
        let d = &defaults.0;
        let p = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k,
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            seed: self.seed,
            repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            max_tokens,
            stop_token_ids: self.stop_token_ids.clone().unwrap_or_default(),
            min_tokens: self.min_tokens.unwrap_or(0).min(usize::MAX as u64) as usize,
            stop: self
                .stop
                .clone()
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            ignore_eos: self.ignore_eos,
            logprobs: logprobs.map(|n| n as usize),
        };
        p.validate().map_err(|e| {
            let msg = e.to_string();
            let param = [
                "min_tokens",
                "temperature",
                "top_p",
                "min_p",
                "repetition_penalty",
                "presence_penalty",
                "frequency_penalty",
                "logprobs",
                "stop",
            ]
            .into_iter()
            .find(|f| msg.contains(f));
            ApiError::invalid(param, msg)
        })?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_fields_are_named() {
        for (body, field) in [
            (
                json!({"model": "m", "prompt": "x", "logit_bias": {"1": 5}}),
                "logit_bias",
            ),
            (
                json!({"model": "m", "prompt": "x", "suffix": "y"}),
                "suffix",
            ),
            (
                json!({"model": "m", "prompt": "x", "frobnicate": 1}),
                "frobnicate",
            ),
        ] {
            let e = parse_completion(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{e:?}");
            assert!(e.message.contains(field), "{e:?}");
        }
        let schema = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}});
        let e = parse_chat(schema.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format"));
        // Null is absent; {"type": "text"} is what the server does anyway.
        let ok = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "logit_bias": null, "response_format": {"type": "text"}});
        parse_chat(ok.to_string().as_bytes()).unwrap();
    }

    #[test]
    fn messages_are_checked_and_normalized() {
        let body = json!({"model": "m", "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function",
                "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "2"}]});
        let r = parse_chat(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.messages[0]["role"], "system");
        assert_eq!(r.messages[0]["content"], "a\nb");
        assert_eq!(
            r.messages[1]["tool_calls"][0]["function"]["arguments"]["x"],
            1
        );
        for bad in [
            json!([{"role": "wizard", "content": "x"}]),
            json!([{"content": "x"}]),
            json!([{"role": "user"}]),
            json!([{"role": "user", "content": [{"type": "image_url"}]}]),
        ] {
            let body = json!({"model": "m", "messages": bad});
            let e = parse_chat(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("messages"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn limits_read_as_vllm_words_them() {
        let c = CommonParams::default();
        let d = Defaults::default();
        let e = c
            .sampling(&d, (Some(100), "max_tokens"), None, None, (30, 64))
            .unwrap_err();
        assert!(
            e.message.contains("too large: 100") && e.message.contains("(100 > 64 - 30)"),
            "{e:?}"
        );
        assert!(
            c.sampling(&d, (None, "max_tokens"), None, None, (64, 64))
                .is_err()
        );
        let p = c
            .sampling(&d, (None, "max_tokens"), Some(16), None, (60, 64))
            .unwrap();
        assert_eq!(p.max_tokens, 4);
        let k = CommonParams {
            top_k: Some(-2),
            ..Default::default()
        };
        let e = k
            .sampling(&d, (None, "max_tokens"), None, None, (1, 64))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_k"));
        for k in [-1, 0] {
            let c = CommonParams {
                top_k: Some(k),
                ..Default::default()
            };
            assert_eq!(
                c.sampling(&d, (None, "max_tokens"), None, None, (1, 64))
                    .unwrap()
                    .top_k,
                0
            );
        }
        let greedy = CommonParams {
            n: Some(2),
            temperature: Some(0.0),
            ..Default::default()
        };
        assert!(greedy.choices(&d).is_err());
        let stream = CommonParams {
            n: Some(1),
            best_of: Some(3),
            stream: true,
            ..Default::default()
        };
        assert_eq!(
            stream.choices(&d).unwrap_err().param.as_deref(),
            Some("best_of")
        );
    }
}
