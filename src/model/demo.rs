//! The built-in demo model: a tiny Qwen3 (about 3.9M parameters, a 2,048-token byte-level BPE
//! vocabulary) trained on the King James Bible by scripts/train_demo.py, compiled into the
//! binary from models/tandem-demo so that it needs no download. It answers in readable
//! (archaic) English; it knows nothing else.

use crate::config::{GenerationConfig, ModelConfig};
use crate::error::Result;
use crate::model::WeightSource;
use crate::tokenizer::Tokenizer;

/// The name it is served under.
pub const NAME: &str = "tandem-demo";

const CONFIG_JSON: &str = include_str!("../../models/tandem-demo/config.json");
const GENERATION_CONFIG_JSON: &str =
    include_str!("../../models/tandem-demo/generation_config.json");
const TOKENIZER_JSON: &str = include_str!("../../models/tandem-demo/tokenizer.json");
/// Its chat template (ChatML in Qwen3's conventions: tools, tool calls, think blocks).
pub const CHAT_TEMPLATE: &str = include_str!("../../models/tandem-demo/chat_template.jinja");
static WEIGHTS: &[u8] = include_bytes!("../../models/tandem-demo/model.safetensors");

/// Its config.json.
pub fn config() -> Result<ModelConfig> {
    ModelConfig::from_json(CONFIG_JSON)
}

/// Its generation_config.json.
pub fn generation_config() -> Result<GenerationConfig> {
    GenerationConfig::from_json(GENERATION_CONFIG_JSON)
}

/// Its tokenizer.
pub fn tokenizer() -> Result<Tokenizer> {
    Tokenizer::from_json(TOKENIZER_JSON)
}

/// Its weights (bf16, read in place from the binary).
pub fn weights() -> Result<WeightSource> {
    WeightSource::from_static("tandem-demo/model.safetensors", WEIGHTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_files_agree() {
        let cfg = config().unwrap();
        let tok = tokenizer().unwrap();
        assert_eq!(cfg.vocab_size, 2048);
        assert!(cfg.num_parameters() > 3_000_000 && cfg.num_parameters() < 5_000_000);
        for t in [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<think>",
            "</tool_call>",
        ] {
            assert!(
                tok.token_to_id(t)
                    .is_some_and(|i| (i as usize) < cfg.vocab_size),
                "{t}"
            );
        }
        let eos = generation_config().unwrap().eos_token_ids;
        assert!(eos.contains(&tok.token_to_id("<|im_end|>").unwrap()));
        let text = "In the beginning God created the heaven and the earth.";
        assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);
    }
}
