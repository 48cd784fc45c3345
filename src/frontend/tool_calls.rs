//! The hermes tool-call parser (`--tool-call-parser hermes`, the format of Qwen3's template):
//! `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks in a generation become
//! OpenAI `tool_calls`.
//!
//! As vLLM parses them: the content is the text before the first block (none when it is only
//! whitespace) and text after the blocks is dropped; a final block may be left unclosed; a block
//! that is not JSON with a name turns the whole generation back into content. Streaming sends
//! the content before the first block (holding back what may be a partial tag), then for each
//! call one delta with its name as soon as the name is complete, then its arguments text as
//! the model writes it, less the closing brace of the outer object.

use serde_json::Value;

use super::reasoning::{HeldWhitespace, partial_suffix};

/// Tool-call parsers by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolParserKind {
    /// `<tool_call>` JSON blocks (Hermes, Qwen2.5 and Qwen3).
    Hermes,
}

const START: &str = "<tool_call>";
const END: &str = "</tool_call>";

/// A parsed call: the function's name and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// Function name.
    pub name: String,
    /// Arguments, a JSON text.
    pub arguments: String,
}

/// A streamed piece of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolDelta {
    /// Call `index` begins: its name is known.
    Start {
        /// Position of the call in this generation.
        index: usize,
        /// Function name.
        name: String,
    },
    /// More of call `index`'s arguments text.
    Args {
        /// Position of the call in this generation.
        index: usize,
        /// The new text.
        text: String,
    },
}

/// What a piece of text splits into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolSplit {
    /// Text outside the calls.
    pub content: String,
    /// Pieces of calls.
    pub calls: Vec<ToolDelta>,
}

/// The streaming parser of one generation.
#[derive(Debug, Clone, Default)]
pub struct HermesParser {
    buf: String,
    in_call: bool,
    /// A call has started: content is no longer streamed.
    saw_call: bool,
    /// Calls started so far.
    calls: usize,
    /// Within the current call: where its arguments begin in `buf`, once the name is known.
    args_from: Option<usize>,
    /// Bytes of the current call's arguments already sent.
    args_sent: usize,
    /// Content before any call; whitespace alone is dropped if a call follows.
    content: HeldWhitespace,
}

impl HermesParser {
    /// A parser at the start of a generation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether any call has begun.
    pub fn has_calls(&self) -> bool {
        self.calls > 0 || self.args_from.is_some()
    }

    /// Parses the next piece of generated text.
    pub fn push(&mut self, text: &str) -> ToolSplit {
        self.buf.push_str(text);
        let mut out = ToolSplit::default();
        loop {
            if !self.in_call {
                if let Some(at) = self.buf.find(START) {
                    if !self.saw_call {
                        let before: String = self.buf.drain(..at).collect();
                        self.content.push(&before, &mut out.content);
                        self.content.drop_held();
                    } else {
                        self.buf.drain(..at);
                    }
                    self.buf.drain(..START.len());
                    (self.in_call, self.saw_call) = (true, true);
                    (self.args_from, self.args_sent) = (None, 0);
                    continue;
                }
                let ready = self.buf.len() - partial_suffix(&self.buf, &[START]);
                let text: String = self.buf.drain(..ready).collect();
                if !self.saw_call {
                    self.content.push(&text, &mut out.content);
                }
                return out;
            }
            if self.args_from.is_none()
                && let Some((name, from)) = header(&self.buf)
            {
                out.calls.push(ToolDelta::Start {
                    index: self.calls,
                    name,
                });
                self.args_from = Some(from);
            }
            match self.buf.find(END) {
                Some(at) => {
                    self.close(at, &mut out);
                    self.buf.drain(..at + END.len());
                }
                None => {
                    if let Some(from) = self.args_from {
                        let avail = &self.buf[from..];
                        let safe = avail.len() - partial_suffix(avail, &[END]);
                        // The outer object's closing brace (and what precedes it) may be next.
                        let safe = avail[..safe]
                            .trim_end_matches(|c: char| c.is_whitespace() || c == '}')
                            .len();
                        if safe > self.args_sent {
                            out.calls.push(ToolDelta::Args {
                                index: self.calls,
                                text: avail[self.args_sent..safe].to_string(),
                            });
                            self.args_sent = safe;
                        }
                    }
                    return out;
                }
            }
        }
    }

    /// Ends the current call, whose body is `buf[..end]`.
    fn close(&mut self, end: usize, out: &mut ToolSplit) {
        let body = &self.buf[..end];
        match self.args_from {
            Some(from) => {
                let args = args_text(&body[from..]);
                if args.len() > self.args_sent {
                    out.calls.push(ToolDelta::Args {
                        index: self.calls,
                        text: args[self.args_sent..].to_string(),
                    });
                }
                self.calls += 1;
            }
            None => match parse_call(body) {
                Some(call) => {
                    out.calls.push(ToolDelta::Start {
                        index: self.calls,
                        name: call.name,
                    });
                    out.calls.push(ToolDelta::Args {
                        index: self.calls,
                        text: call.arguments,
                    });
                    self.calls += 1;
                }
                None => tracing::warn!(body, "a tool call block is not a JSON call; dropped"),
            },
        }
        self.in_call = false;
        self.args_from = None;
    }

    /// Ends the generation: a last call left open is closed; held-back text is released.
    pub fn finish(&mut self) -> ToolSplit {
        let mut out = ToolSplit::default();
        if self.in_call {
            let end = self.buf.len();
            self.close(end, &mut out);
        } else if !self.saw_call {
            out.content = self.content.take_held() + &self.buf;
        }
        self.buf.clear();
        out
    }

    /// Parses a whole generation (the non-streaming answer): content and calls.
    pub fn parse_all(text: &str) -> (Option<String>, Vec<ToolCall>) {
        let Some(first) = text.find(START) else {
            return (Some(text.to_string()), Vec::new());
        };
        let mut calls = Vec::new();
        let mut rest = &text[first..];
        while let Some(at) = rest.find(START) {
            let body = &rest[at + START.len()..];
            let (body, next) = match body.find(END) {
                Some(end) => (&body[..end], &body[end + END.len()..]),
                None => (body, ""),
            };
            match parse_call(body) {
                Some(c) => calls.push(c),
                None => return (Some(text.to_string()), Vec::new()),
            }
            rest = next;
        }
        let content = &text[..first];
        let content = (!content.trim().is_empty()).then(|| content.to_string());
        (content, calls)
    }
}

/// `{"name": "...", "arguments": ` at the start of `body`: the name and where the arguments
/// begin; None until all of it has arrived (or when the call is written another way).
fn header(body: &str) -> Option<(String, usize)> {
    let mut at = skip_ws(body, 0);
    at = expect(body, at, "{")?;
    at = expect(body, skip_ws(body, at), "\"name\"")?;
    at = expect(body, skip_ws(body, at), ":")?;
    at = skip_ws(body, at);
    let end = string_end(body, at)?;
    let name: String = serde_json::from_str(&body[at..end]).ok()?;
    at = expect(body, skip_ws(body, end), ",")?;
    at = expect(body, skip_ws(body, at), "\"arguments\"")?;
    at = expect(body, skip_ws(body, at), ":")?;
    let at = skip_ws(body, at);
    // The arguments themselves must have begun, so that the whitespace before them is known.
    (at < body.len()).then_some((name, at))
}

fn skip_ws(s: &str, at: usize) -> usize {
    at + s[at..].len() - s[at..].trim_start().len()
}

fn expect(s: &str, at: usize, lit: &str) -> Option<usize> {
    s[at..].starts_with(lit).then_some(at + lit.len())
}

/// End (exclusive) of the JSON string starting at `at`, once its closing quote has arrived.
fn string_end(s: &str, at: usize) -> Option<usize> {
    let bytes = s.as_bytes();
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The arguments text of a call body that begins at the arguments: without the closing brace
/// of the outer object.
fn args_text(from_args: &str) -> &str {
    let t = from_args.trim_end();
    t.strip_suffix('}').unwrap_or(t).trim_end()
}

/// A whole call body, as JSON: the name and the arguments (re-serialized as Python's
/// json.dumps writes them).
fn parse_call(body: &str) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments")?;
    Some(ToolCall {
        name,
        arguments: super::chat::py_json(args),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": {\"n\": 2}}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";

    /// Streams `pieces`; returns the content and each call's (name, arguments text).
    fn stream(pieces: &[&str]) -> (String, Vec<(String, String)>) {
        let mut p = HermesParser::new();
        let mut content = String::new();
        let mut calls: Vec<(String, String)> = Vec::new();
        let mut apply = |s: ToolSplit| {
            content.push_str(&s.content);
            for d in s.calls {
                match d {
                    ToolDelta::Start { index, name } => {
                        assert_eq!(index, calls.len());
                        calls.push((name, String::new()));
                    }
                    ToolDelta::Args { index, text } => calls[index].1.push_str(&text),
                }
            }
        };
        for piece in pieces {
            apply(p.push(piece));
        }
        apply(p.finish());
        (content, calls)
    }

    #[test]
    fn whole_generations_parse_as_vllm_parses_them() {
        let (content, calls) = HermesParser::parse_all(TEXT);
        assert_eq!(content.as_deref(), Some("Let me check.\n"));
        assert_eq!(
            calls,
            vec![
                ToolCall {
                    name: "get_weather".into(),
                    arguments: "{\"city\": \"Paris\", \"days\": {\"n\": 2}}".into()
                },
                ToolCall {
                    name: "now".into(),
                    arguments: "{}".into()
                }
            ]
        );
        // An unclosed last call still counts; whitespace-only content is none.
        let (c, calls) =
            HermesParser::parse_all("\n<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}}");
        assert_eq!((c, calls.len()), (None, 1));
        // One broken block makes it all content.
        let bad = "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call><tool_call>{oops</tool_call>";
        assert_eq!(
            HermesParser::parse_all(bad),
            (Some(bad.to_string()), Vec::new())
        );
        assert_eq!(
            HermesParser::parse_all("no calls"),
            (Some("no calls".into()), Vec::new())
        );
    }

    #[test]
    fn streams_the_name_first_then_the_arguments_however_the_text_is_cut() {
        let want_calls = vec![
            (
                "get_weather".to_string(),
                "{\"city\": \"Paris\", \"days\": {\"n\": 2}}".to_string(),
            ),
            ("now".to_string(), "{}".to_string()),
        ];
        for cut in 1..TEXT.len() {
            let (content, calls) = stream(&[&TEXT[..cut], &TEXT[cut..]]);
            assert_eq!(content, "Let me check.\n", "cut {cut}");
            assert_eq!(calls, want_calls, "cut {cut}");
        }
        let chars: Vec<String> = TEXT.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(stream(&pieces).1, want_calls);
    }

    #[test]
    fn the_name_arrives_before_the_arguments_end() {
        let mut p = HermesParser::new();
        let s = p.push("<tool_call>{\"name\": \"f\", \"arguments\": {\"q\": \"ab");
        assert_eq!(
            s.calls,
            vec![
                ToolDelta::Start {
                    index: 0,
                    name: "f".into()
                },
                ToolDelta::Args {
                    index: 0,
                    text: "{\"q\": \"ab".into()
                }
            ]
        );
        let s = p.push("c\"}}</tool_call>");
        assert_eq!(
            s.calls,
            vec![ToolDelta::Args {
                index: 0,
                text: "c\"}".into()
            }]
        );
        // Whitespace before a call is no content; before the end of a plain answer it is.
        assert_eq!(
            stream(&["\n\n", "<tool_call>{\"name\": \"f\", \"arguments\": {}}"]).0,
            ""
        );
        assert_eq!(stream(&["a", "\n\n"]).0, "a\n\n");
        assert_eq!(stream(&["\n", "\n"]).0, "\n\n");
        // Another order of keys: sent whole when the block closes.
        let (_, calls) =
            stream(&["<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"g\"}</tool_call>"]);
        assert_eq!(calls, vec![("g".into(), "{\"x\": 1}".into())]);
    }
}
