//! Response bodies of the OpenAI API: choices of completions and chat completions, whole or as
//! server-sent chunks, with reasoning and tool calls split out of chat text.

use serde_json::{Value, json};

use super::dispatch::Delta;
use super::reasoning::{ReasoningParser, Split};
use super::tool_calls::{HermesParser, ToolDelta, ToolSplit};

/// The kind of response being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// /v1/completions.
    Completion,
    /// /v1/chat/completions.
    Chat,
}

impl Kind {
    /// The `object` of a response or chunk.
    pub fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
        }
    }
}

/// How chat text is split: the reasoning parser's start state (None: no parser), whether
/// tool calls are parsed, and whether more than one call is kept.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChatParsing {
    /// With a reasoning parser: whether the generation starts inside a think block.
    pub reasoning: Option<bool>,
    /// Parse `<tool_call>` blocks.
    pub tools: bool,
    /// Keep every call (false: only the first, as `parallel_tool_calls: false` asks).
    pub parallel_tool_calls: bool,
}

/// A tool call as the response carries it.
fn tool_call_json(id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

fn tool_call_id() -> String {
    format!("chatcmpl-tool-{:032x}", rand::random::<u128>())
}

/// Streams one chat choice's text as deltas: reasoning, content and tool calls.
pub struct ChatStream {
    parsing: ChatParsing,
    reasoning: Option<ReasoningParser>,
    tools: Option<HermesParser>,
    ids: Vec<String>,
}

impl ChatStream {
    /// A choice at its start.
    pub fn new(parsing: ChatParsing) -> Self {
        ChatStream {
            parsing,
            reasoning: parsing.reasoning.map(ReasoningParser::new),
            tools: parsing.tools.then(HermesParser::new),
            ids: Vec::new(),
        }
    }

    /// Whether a tool call has been sent.
    pub fn called_tools(&self) -> bool {
        !self.ids.is_empty()
    }

    /// The delta object for the next piece of text (None when it carries nothing yet).
    pub fn push(&mut self, text: &str) -> Option<Value> {
        let split = match &mut self.reasoning {
            Some(r) => r.push(text),
            None => Split {
                reasoning: String::new(),
                content: text.to_string(),
            },
        };
        self.delta(split)
    }

    /// The delta object for what the parsers still hold at the end.
    pub fn finish(&mut self) -> Option<Value> {
        let split = self
            .reasoning
            .as_mut()
            .map(ReasoningParser::finish)
            .unwrap_or_default();
        let mut delta = self.delta(split).unwrap_or_else(|| json!({}));
        if let Some(t) = &mut self.tools {
            let tail = t.finish();
            self.merge(&mut delta, tail);
        }
        (delta.as_object().is_some_and(|o| !o.is_empty())).then_some(delta)
    }

    fn delta(&mut self, split: Split) -> Option<Value> {
        let mut d = json!({});
        if !split.reasoning.is_empty() {
            // vLLM's two names for it (`reasoning_content`, and `reasoning` since 0.11.1).
            d["reasoning_content"] = json!(split.reasoning);
            d["reasoning"] = json!(split.reasoning);
        }
        let tools = match &mut self.tools {
            Some(t) => t.push(&split.content),
            None => ToolSplit {
                content: split.content,
                calls: Vec::new(),
            },
        };
        self.merge(&mut d, tools);
        (d.as_object().is_some_and(|o| !o.is_empty())).then_some(d)
    }

    fn merge(&mut self, d: &mut Value, s: ToolSplit) {
        if !s.content.is_empty() {
            let old = d["content"].as_str().unwrap_or("").to_string();
            d["content"] = json!(old + &s.content);
        }
        let mut calls = Vec::new();
        for c in s.calls {
            match c {
                ToolDelta::Start { index, name } => {
                    if index > 0 && !self.parsing.parallel_tool_calls {
                        continue;
                    }
                    let id = tool_call_id();
                    calls.push(json!({"index": index, "id": id, "type": "function",
                        "function": {"name": name, "arguments": ""}}));
                    self.ids.push(id);
                }
                ToolDelta::Args { index, text } => {
                    if index > 0 && !self.parsing.parallel_tool_calls {
                        continue;
                    }
                    // One entry per call and delta: arguments join the entry that named it.
                    match calls.last_mut() {
                        Some(last) if last["index"] == index => {
                            let old = last["function"]["arguments"].as_str().unwrap_or("");
                            last["function"]["arguments"] = json!(format!("{old}{text}"));
                        }
                        _ => calls.push(json!({"index": index, "function": {"arguments": text}})),
                    }
                }
            }
        }
        if !calls.is_empty() {
            d["tool_calls"] = Value::Array(calls);
        }
    }
}

/// The message of a whole chat choice: content, reasoning and tool calls split out of `text`;
/// also whether it called tools.
pub fn chat_message(parsing: ChatParsing, text: &str) -> (Value, bool) {
    let (reasoning, content) = match parsing.reasoning {
        Some(thinking) => ReasoningParser::parse_all(thinking, text),
        None => (None, Some(text.to_string())),
    };
    let mut msg = json!({"role": "assistant", "content": content});
    if parsing.reasoning.is_some() {
        msg["reasoning_content"] = json!(reasoning);
        msg["reasoning"] = json!(reasoning);
    }
    let mut called = false;
    if parsing.tools
        && let Some(c) = &content
    {
        let (content, mut calls) = HermesParser::parse_all(c);
        if !parsing.parallel_tool_calls {
            calls.truncate(1);
        }
        if !calls.is_empty() {
            called = true;
            msg["content"] = json!(content);
            msg["tool_calls"] = calls
                .iter()
                .map(|c| tool_call_json(&tool_call_id(), &c.name, &c.arguments))
                .collect();
        }
    }
    (msg, called)
}

/// The finish reason a client sees: "tool_calls" when a generation that stopped by itself
/// called tools.
pub fn finish_reason(finish: &str, called_tools: bool) -> String {
    if called_tools && finish == "stop" {
        "tool_calls".into()
    } else {
        finish.to_string()
    }
}

/// Logprobs of `deltas` in the shape of `kind` (token texts by `text_of`).
pub fn logprobs_json(kind: Kind, deltas: &[Delta], text_of: impl Fn(u32) -> String) -> Value {
    match kind {
        Kind::Completion => {
            let mut offset = 0;
            let mut offsets = Vec::new();
            for d in deltas {
                offsets.push(offset);
                offset += d.text.len();
            }
            json!({
                "tokens": deltas.iter().map(|d| text_of(d.token)).collect::<Vec<_>>(),
                "token_logprobs": deltas.iter().map(|d| d.logprob).collect::<Vec<_>>(),
                "top_logprobs": deltas.iter().map(|d| d.top_logprobs.iter().map(|(t, l)| (text_of(*t), json!(l))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
                "text_offset": offsets,
            })
        }
        Kind::Chat => {
            let entry = |t: u32, l: f32| {
                let s = text_of(t);
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

/// Usage of a response.
pub fn usage(prompt: usize, cached: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
           "prompt_tokens_details": {"cached_tokens": cached}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_stream_splits_reasoning_content_and_calls() {
        let parsing = ChatParsing {
            reasoning: Some(true),
            tools: true,
            parallel_tool_calls: true,
        };
        let mut s = ChatStream::new(parsing);
        let text = "<think>\nweather?\n</think>\n\nChecking.<tool_call>\n{\"name\": \"w\", \"arguments\": {\"c\": 1}}\n</tool_call>";
        let mut deltas: Vec<Value> = text
            .chars()
            .filter_map(|c| s.push(&c.to_string()))
            .collect();
        deltas.extend(s.finish());
        let cat = |k: &str| -> String {
            deltas
                .iter()
                .filter_map(|d| d[k].as_str())
                .collect::<Vec<_>>()
                .concat()
        };
        assert_eq!(cat("reasoning_content"), "\nweather?\n");
        assert_eq!(cat("content"), "\n\nChecking.");
        let calls: Vec<&Value> = deltas
            .iter()
            .filter_map(|d| d["tool_calls"].as_array())
            .flatten()
            .collect();
        assert_eq!(calls[0]["function"]["name"], "w");
        assert!(
            calls[0]["id"]
                .as_str()
                .unwrap()
                .starts_with("chatcmpl-tool-")
        );
        let args: String = calls
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        assert_eq!(args, "{\"c\": 1}");
        assert!(s.called_tools());
        let (msg, called) = chat_message(parsing, text);
        assert!(called);
        assert_eq!(msg["reasoning_content"], "\nweather?\n");
        assert_eq!(msg["content"], "\n\nChecking.");
        assert_eq!(msg["tool_calls"][0]["function"]["arguments"], "{\"c\": 1}");
        assert_eq!(finish_reason("stop", called), "tool_calls");
        assert_eq!(finish_reason("length", called), "length");
    }
}
