//! The replay client: sends a trace's requests on its fixed schedule to an OpenAI-compatible
//! server (streaming completions with max_tokens = output_length and ignore_eos) and measures
//! each one. A server that errors, stalls or drops a request is recorded, never fatal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::metrics::RequestRecord;
use super::trace::{TraceRequest, synthesize};
use crate::error::{Error, Result};

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Server base URL (http://host:port).
    pub url: String,
    /// Model name; asked from /v1/models when None.
    pub model: Option<String>,
    /// Divide the trace's timestamps by this.
    pub speedup: f64,
    /// Synthesized prompt tokens come from ids `0..vocab`; asked from /v1/models when None.
    pub vocab: Option<u32>,
    /// Tokens per hash id of the trace.
    pub trace_block: usize,
    /// Give up on a request after this long.
    pub request_timeout: Duration,
    /// Draw a progress bar.
    pub progress: bool,
    /// Sent as `Authorization: Bearer KEY` (a server started with --api-key).
    pub api_key: Option<String>,
    /// Ask the server for each request's clock points (tandem's frontend gives them; other
    /// servers ignore the header).
    pub timeline: bool,
}

/// Synthesized prompts' vocabulary when the server does not say (Qwen's ordinary tokens).
pub const DEFAULT_VOCAB: u32 = 151_643;

/// What a server's /v1/models says: its first model, and that model's ordinary vocabulary
/// (tandem's `vocab_size` extension; other servers may not say).
pub async fn served_model(client: &reqwest::Client, url: &str) -> Result<(String, Option<u32>)> {
    let v: Value = client
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .map_err(|e| Error::InvalidRequest(format!("cannot reach {url}: {e}")))?
        .json()
        .await
        .map_err(|e| Error::InvalidRequest(format!("{url}/v1/models: {e}")))?;
    let model = v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::InvalidRequest(format!("{url}/v1/models lists no model")))?;
    let vocab = v["data"][0]["vocab_size"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0);
    Ok((model, vocab))
}

/// Replays `reqs`; returns one record per request and the benchmark duration in seconds.
pub async fn replay(
    reqs: &[TraceRequest],
    cfg: &ReplayConfig,
) -> Result<(Vec<RequestRecord>, f64)> {
    if !(cfg.speedup.is_finite() && cfg.speedup > 0.0) {
        return Err(Error::InvalidRequest("--speedup must be positive".into()));
    }
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &cfg.api_key {
        let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| Error::InvalidRequest("the API key is not a valid header value".into()))?;
        v.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, v);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .map_err(|e| Error::InvalidRequest(e.to_string()))?;
    // The model and vocabulary from /v1/models, for what the command line leaves out; with
    // --model given, a server that cannot be asked is an error of every request, not fatal.
    let (model, vocab) = match (&cfg.model, cfg.vocab) {
        (Some(m), Some(v)) => (m.clone(), Some(v)),
        (None, v) => {
            let (m, served) = served_model(&client, &cfg.url).await?;
            (m, v.or(served))
        }
        (Some(m), None) => {
            let served = served_model(&client, &cfg.url).await.ok();
            (m.clone(), served.and_then(|(_, v)| v))
        }
    };
    let vocab = vocab.unwrap_or_else(|| {
        tracing::warn!(
            "{}/v1/models gives no vocab_size: prompts use ids below {DEFAULT_VOCAB} (set --vocab)",
            cfg.url
        );
        DEFAULT_VOCAB
    });
    let bar = if cfg.progress {
        ProgressBar::new(reqs.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("replay {bar:40} {pos}/{len} requests {elapsed} (eta {eta})")
            .expect("static template"),
    );
    let shared = Arc::new((client, model, cfg.clone(), bar.clone()));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(reqs.len());
    for (index, r) in reqs.iter().enumerate() {
        let at = Duration::from_secs_f64(r.timestamp as f64 / 1000.0 / cfg.speedup);
        tokio::time::sleep_until((start + at).into()).await;
        let prompt = synthesize(r, 0, vocab, cfg.trace_block);
        let (shared, output_length) = (shared.clone(), r.output_length);
        tasks.push(tokio::spawn(async move {
            let (client, model, cfg, bar) = &*shared;
            let rec = one(client, model, cfg, index, prompt, output_length, start).await;
            bar.inc(1);
            rec
        }));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for t in tasks {
        records.push(
            t.await
                .map_err(|e| Error::Backend(format!("replay task failed: {e}")))?,
        );
    }
    bar.finish_and_clear();
    Ok((records, start.elapsed().as_secs_f64()))
}

async fn one(
    client: &reqwest::Client,
    model: &str,
    cfg: &ReplayConfig,
    index: usize,
    prompt: Vec<u32>,
    output_length: usize,
    start: Instant,
) -> RequestRecord {
    let sent = Instant::now();
    let mut rec = RequestRecord::sent(index, (sent - start).as_secs_f64() * 1e3, prompt.len());
    let body = json!({"model": model, "prompt": prompt, "max_tokens": output_length, "ignore_eos": true,
        "stream": true, "stream_options": {"include_usage": true}});
    let result = tokio::time::timeout(
        cfg.request_timeout,
        stream(client, &cfg.url, &body, sent, &mut rec, cfg.timeline),
    )
    .await;
    rec.error = match result {
        Err(_) => Some(format!(
            "no complete answer within {:?}",
            cfg.request_timeout
        )),
        Ok(Err(e)) => Some(e),
        Ok(Ok(())) => None,
    };
    rec
}

async fn stream(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    sent: Instant,
    rec: &mut RequestRecord,
    want_timeline: bool,
) -> std::result::Result<(), String> {
    let mut post = client.post(format!("{url}/v1/completions")).json(body);
    if want_timeline {
        post = post.header(crate::frontend::http::TIMELINE_HEADER, "1");
    }
    let resp = post
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            text.chars().take(300).collect::<String>()
        ));
    }
    let mut bytes = resp.bytes_stream();
    let mut buf = String::new();
    let mut first_received = 0;
    let mut done = false;
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| format!("stream broken: {e}"))?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).map_err(|e| format!("bad SSE data: {e}"))?;
            if let Some(err) = v.get("error") {
                return Err(format!(
                    "server error: {}",
                    err["message"].as_str().unwrap_or("unknown")
                ));
            }
            // TTFT: the first chunk that carries a choice (tandem sends one per token).
            if rec.ttft_ms.is_none() && v["choices"].as_array().is_some_and(|c| !c.is_empty()) {
                let now = Instant::now();
                rec.ttft_ms = Some((now - sent).as_secs_f64() * 1e3);
                first_received = crate::timeline::instant_ns(now);
            }
            if let Some(t) = v.get(crate::frontend::http::TIMELINE_FIELD) {
                let t: crate::timeline::Timeline =
                    serde_json::from_value(t.clone()).map_err(|e| format!("bad timeline: {e}"))?;
                rec.timeline = Some(Box::new(t));
            }
            if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                rec.output_tokens = u["completion_tokens"].as_u64().unwrap_or(0) as usize;
                rec.cached_tokens = u["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .unwrap_or(0) as usize;
            }
        }
    }
    let end = Instant::now();
    rec.latency_ms = Some((end - sent).as_secs_f64() * 1e3);
    if let Some(t) = &mut rec.timeline {
        (t.sent, t.first_received) = (crate::timeline::instant_ns(sent), first_received);
        t.end = crate::timeline::instant_ns(end);
    }
    if !done {
        return Err("the server closed the stream before [DONE]".into());
    }
    Ok(())
}
