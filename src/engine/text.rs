//! Text of a generation: incremental detokenization with stop strings.

use crate::error::Result;
use crate::tokenizer::{IncrementalDecoder, Tokenizer};

/// Turns a request's tokens into releasable text, holding back what could still become a
/// stop string.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    decoder: IncrementalDecoder,
    stop: Vec<String>,
    text: String,
    released: usize,
    stopped: bool,
}

impl TextStream {
    /// A stream that ends at the first of `stop` (the stop string itself is not output).
    pub fn new(stop: Vec<String>) -> Self {
        TextStream {
            stop,
            ..Default::default()
        }
    }

    /// Whether a stop string has ended the text.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The whole text released so far.
    pub fn text(&self) -> &str {
        &self.text[..self.released]
    }

    /// Adds a token and returns the text that can be released now.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        if self.stopped {
            return Ok(String::new());
        }
        let delta = self.decoder.push(tok, id)?;
        let max_stop = self.stop.iter().map(String::len).max().unwrap_or(0);
        let search_from = floor_boundary(&self.text, self.released.saturating_sub(max_stop));
        self.text.push_str(&delta);
        let hit = self
            .stop
            .iter()
            .filter_map(|s| self.text[search_from..].find(s.as_str()))
            .min();
        if let Some(at) = hit {
            self.text.truncate(search_from + at);
            self.stopped = true;
            return Ok(self.release(self.text.len()));
        }
        // Keep the last max_stop - 1 bytes: they may be the start of a stop string.
        let safe = floor_boundary(
            &self.text,
            self.text.len().saturating_sub(max_stop.saturating_sub(1)),
        );
        Ok(self.release(safe.max(self.released)))
    }

    /// Releases whatever was held back (call when the request ends without a stop string).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String> {
        if !self.stopped {
            let rest = self.decoder.flush(tok)?;
            self.text.push_str(&rest);
        }
        Ok(self.release(self.text.len()))
    }

    fn release(&mut self, upto: usize) -> String {
        let out = self.text[self.released..upto].to_string();
        self.released = upto;
        out
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stop: &[&str], text: &str) -> (String, bool) {
        let tok = Tokenizer::byte_level();
        let mut s = TextStream::new(stop.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for id in tok.encode(text).unwrap() {
            out.push_str(&s.push(&tok, id).unwrap());
        }
        out.push_str(&s.finish(&tok).unwrap());
        assert_eq!(out, s.text());
        (out, s.stopped())
    }

    #[test]
    fn stops_before_the_stop_string() {
        assert_eq!(run(&["END", "é!"], "abc é! xyz END"), ("abc ".into(), true));
        assert_eq!(run(&["END"], "abc EN xyz"), ("abc EN xyz".into(), false));
        assert_eq!(run(&[], "日本語"), ("日本語".into(), false));
    }
}
