//! Tokenizer loading (tokenizer.json through the `tokenizers` crate), a byte-level tokenizer
//! (the test fixtures'), and incremental detokenization.

use std::path::Path;

use crate::error::{Error, Result};

/// `<|endoftext|>` in the byte-level tokenizer (after the 256 byte tokens, as in Qwen's layout).
pub const ENDOFTEXT: u32 = 256;
/// `<|im_start|>` in the byte-level tokenizer.
pub const IM_START: u32 = 257;
/// `<|im_end|>` in the byte-level tokenizer.
pub const IM_END: u32 = 258;

/// A text tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer(vocab {})", self.inner.get_vocab_size(true))
    }
}

/// GPT-2's map from bytes to printable characters, which byte-level BPE vocabularies use.
pub fn byte_to_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).expect("valid code point")
}

impl Tokenizer {
    /// Loads a Hugging Face tokenizer.json.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Tokenizer { inner })
    }

    /// Parses the text of a tokenizer.json.
    pub fn from_json(json: &str) -> Result<Self> {
        let inner = json
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| Error::Tokenizer(format!("malformed tokenizer.json: {e}")))?;
        Ok(Tokenizer { inner })
    }

    /// A byte-level tokenizer (the test fixtures' vocabulary): one token per byte, plus Qwen's first three special tokens.
    pub fn byte_level() -> Self {
        let json = byte_level_json();
        let inner = json
            .parse::<tokenizers::Tokenizer>()
            .expect("built-in tokenizer is valid");
        Tokenizer { inner }
    }

    /// Token ids of `text` (special-token strings are recognized; nothing is added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Text of `ids` with special tokens kept (as /detokenize answers).
    pub fn decode_with_special(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The vocabulary piece of a token id (e.g. `Ġhello`), if it has one.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Tokens in the vocabulary, added (special and markup) tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Tokens of the base vocabulary, without added tokens: the ids ordinary text encodes to.
    pub fn ordinary_vocab_size(&self) -> usize {
        self.inner.get_vocab_size(false)
    }

    /// Id of a token string, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// The tokenizer.json of [`Tokenizer::byte_level`] (also written next to test fixtures).
pub fn byte_level_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = (0..=255u8)
        .map(|b| (byte_to_char(b).to_string(), b.into()))
        .collect();
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(ENDOFTEXT, "<|endoftext|>"), special(IM_START, "<|im_start|>"),
            special(IM_END, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    })
    .to_string()
}

/// Turns a growing list of token ids into text deltas, never splitting a UTF-8 character.
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// Appends `id` and returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = tok.decode(&self.ids[self.prefix_offset..])?;
        // A trailing U+FFFD means the last token may end inside a multi-byte character: wait,
        // but not past 4 tokens (the longest UTF-8 character), when the bytes are just invalid.
        let pending = self.ids.len() - self.read_offset;
        if full.len() <= prefix.len() || (full.ends_with('\u{FFFD}') && pending < 4) {
            return Ok(String::new());
        }
        Ok(self.advance(&full, prefix.len()))
    }

    /// Returns whatever text is still held back (call when generation ends).
    pub fn flush(&mut self, tok: &Tokenizer) -> Result<String> {
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = tok.decode(&self.ids[self.prefix_offset..])?;
        Ok(if full.len() > prefix.len() {
            self.advance(&full, prefix.len())
        } else {
            String::new()
        })
    }

    fn advance(&mut self, full: &str, from: usize) -> String {
        // Decoding more tokens can rewrite earlier text (rare); never emit half a character.
        let mut from = from;
        while !full.is_char_boundary(from) {
            from -= 1;
        }
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        full[from..].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_round_trips_and_streams_whole_characters() {
        let t = Tokenizer::byte_level();
        let text = "héllo, 世界 🙂!";
        let ids = t.encode(text).unwrap();
        assert_eq!(ids.len(), text.len(), "one token per byte");
        assert_eq!(ids[0], b'h' as u32);
        assert_eq!(t.decode(&ids).unwrap(), text);
        let mut dec = IncrementalDecoder::default();
        let mut out = String::new();
        for &id in &ids {
            let d = dec.push(&t, id).unwrap();
            assert!(!d.contains('\u{FFFD}'));
            out.push_str(&d);
        }
        assert_eq!(out, text);
        // Invalid UTF-8 (lone lead bytes) still comes out, as U+FFFD, after at most 4 tokens.
        let mut dec = IncrementalDecoder::default();
        let mut out: String = (0..6).map(|_| dec.push(&t, 0xF0).unwrap()).collect();
        assert!(out.contains('\u{FFFD}'));
        out.push_str(&dec.flush(&t).unwrap());
        assert_eq!(out, t.decode(&[0xF0; 6]).unwrap());
        assert_eq!(t.encode("<|im_end|>").unwrap(), vec![IM_END]);
        assert_eq!(t.decode(&[b'a' as u32, IM_END]).unwrap(), "a");
    }
}
