//! The Qwen3 reasoning parser (`--reasoning-parser qwen3`): a generation's `<think>…</think>`
//! part goes to `reasoning_content`, the rest to `content`, streamed as deltas.
//!
//! As vLLM's parser does: a generation starts in reasoning unless the chat template was told
//! `enable_thinking: false` (the template then closes an empty think block in the prompt);
//! `<think>` is dropped, `</think>` switches to content and is dropped too; a generation that
//! never closes its think block is all reasoning. Whitespace that opens the content (the
//! `\n\n` after `</think>`) is held back until real content follows.

/// Reasoning parsers by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReasoningParserKind {
    /// Qwen3's `<think>…</think>`.
    Qwen3,
}

const START: &str = "<think>";
const END: &str = "</think>";

/// What one piece of text splits into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// Text inside the think block.
    pub reasoning: String,
    /// Text after it.
    pub content: String,
}

/// The parser of one generation.
#[derive(Debug, Clone)]
pub struct ReasoningParser {
    thinking: bool,
    /// Text not yet released: a possible partial tag, or content that is only whitespace.
    pending: String,
    content: HeldWhitespace,
}

impl ReasoningParser {
    /// A parser for a generation whose prompt had thinking on (`thinking`) or off.
    pub fn new(thinking: bool) -> Self {
        ReasoningParser {
            thinking,
            pending: String::new(),
            content: HeldWhitespace::default(),
        }
    }

    /// Splits the next piece of generated text.
    pub fn push(&mut self, text: &str) -> Split {
        self.pending.push_str(text);
        let mut out = Split::default();
        loop {
            if self.thinking {
                if let Some(at) = self.pending.find(END) {
                    out.reasoning
                        .push_str(&self.pending[..at].replacen(START, "", 1));
                    self.pending.drain(..at + END.len());
                    self.thinking = false;
                    continue;
                }
                // Keep back what may be the start of a tag.
                let keep = partial_suffix(&self.pending, &[START, END]);
                let ready = self.pending.len() - keep;
                let text: String = self.pending.drain(..ready).collect();
                out.reasoning.push_str(&text.replacen(START, "", 1));
                break;
            }
            // A stray close tag in the content is dropped; so is a partial one at the end.
            if let Some(at) = self.pending.find(END) {
                let before: String = self.pending.drain(..at).collect();
                self.pending.drain(..END.len());
                self.emit_content(&before, &mut out);
                continue;
            }
            let keep = partial_suffix(&self.pending, &[END]);
            let ready = self.pending.len() - keep;
            let text: String = self.pending.drain(..ready).collect();
            self.emit_content(&text, &mut out);
            break;
        }
        out
    }

    fn emit_content(&mut self, text: &str, out: &mut Split) {
        self.content.push(text, &mut out.content);
    }

    /// Ends the generation: whatever is still held back (content that is only whitespace is
    /// dropped).
    pub fn finish(&mut self) -> Split {
        let rest = std::mem::take(&mut self.pending);
        let mut out = Split::default();
        if self.thinking {
            out.reasoning = rest.replacen(START, "", 1);
        } else if !rest.is_empty() && !END.starts_with(rest.as_str()) {
            self.emit_content(&rest, &mut out);
        }
        out
    }

    /// Parses a whole generation at once (the non-streaming answer): reasoning, content; each
    /// None when empty.
    pub fn parse_all(thinking: bool, text: &str) -> (Option<String>, Option<String>) {
        let mut p = ReasoningParser::new(thinking);
        let mut s = p.push(text);
        let tail = p.finish();
        s.reasoning.push_str(&tail.reasoning);
        s.content.push_str(&tail.content);
        let some = |t: String| (!t.is_empty()).then_some(t);
        (some(s.reasoning), some(s.content))
    }
}

/// Content whose leading whitespace waits until something else follows it: the `\n\n`
/// after `</think>`, or before a tool call, is no content of its own.
#[derive(Debug, Clone, Default)]
pub struct HeldWhitespace {
    held: String,
    started: bool,
}

impl HeldWhitespace {
    /// Appends `text` to `out`, or holds it while all content so far is whitespace.
    pub fn push(&mut self, text: &str, out: &mut String) {
        if self.started {
            out.push_str(text);
            return;
        }
        self.held.push_str(text);
        if !self.held.trim().is_empty() {
            self.started = true;
            out.push_str(&std::mem::take(&mut self.held));
        }
    }

    /// The whitespace still held (taken).
    pub fn take_held(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Forgets the whitespace held.
    pub fn drop_held(&mut self) {
        self.held.clear();
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of one of `tags`.
pub fn partial_suffix(text: &str, tags: &[&str]) -> usize {
    let mut best = 0;
    for tag in tags {
        for n in (1..tag.len()).rev() {
            if n > best && text.ends_with(&tag[..n]) {
                best = n;
                break;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(thinking: bool, pieces: &[&str]) -> (String, String) {
        let mut p = ReasoningParser::new(thinking);
        let (mut r, mut c) = (String::new(), String::new());
        for piece in pieces {
            let s = p.push(piece);
            r.push_str(&s.reasoning);
            c.push_str(&s.content);
        }
        let s = p.finish();
        (r + &s.reasoning, c + &s.content)
    }

    #[test]
    fn splits_at_the_close_tag_however_the_text_is_cut() {
        let text = "<think>\nLet me see.\n</think>\n\nThe answer is 4.";
        for cut in 1..text.len() {
            if !text.is_char_boundary(cut) {
                continue;
            }
            let (r, c) = stream(true, &[&text[..cut], &text[cut..]]);
            assert_eq!(
                (r.as_str(), c.as_str()),
                ("\nLet me see.\n", "\n\nThe answer is 4."),
                "cut at {cut}"
            );
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(
            stream(true, &pieces),
            ("\nLet me see.\n".into(), "\n\nThe answer is 4.".into())
        );
    }

    #[test]
    fn thinking_off_is_all_content_and_an_unclosed_block_all_reasoning() {
        assert_eq!(
            stream(false, &["Hello", " there"]),
            (String::new(), "Hello there".into())
        );
        assert_eq!(
            stream(true, &["<think>still ", "going"]),
            ("still going".into(), String::new())
        );
        // Without the start tag (templates that open the block in the prompt).
        assert_eq!(
            stream(true, &["plan", "</think>", "done"]),
            ("plan".into(), "done".into())
        );
        // A stray close tag in content is dropped.
        assert_eq!(
            stream(false, &["a</thi", "nk>b"]),
            (String::new(), "ab".into())
        );
        assert_eq!(
            ReasoningParser::parse_all(true, "<think>x</think>\n\n"),
            (Some("x".into()), None)
        );
    }

    #[test]
    fn whitespace_before_the_content_waits_for_the_content() {
        let mut p = ReasoningParser::new(true);
        assert_eq!(p.push("<think>r</think>").reasoning, "r");
        assert_eq!(p.push("\n\n").content, "");
        assert_eq!(p.push("Yes").content, "\n\nYes");
    }
}
