//! The built-in demo model: a tiny random Qwen3 that needs no download. It produces random text.

use crate::config::{ModelConfig, RopeScaling};

/// Seed of the demo model's generated weights.
pub const DEMO_SEED: u64 = 0x007A_4DE3;

/// Config of the demo model: 4 layers, grouped-query attention, byte-level vocabulary.
pub fn demo_config() -> ModelConfig {
    ModelConfig {
        hidden_size: 256,
        intermediate_size: 768,
        num_hidden_layers: 4,
        num_attention_heads: 8,
        num_key_value_heads: 2,
        head_dim: 48,
        vocab_size: 259,
        rope_theta: 1_000_000.0,
        rope_scaling: RopeScaling::None,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 4096,
        tie_word_embeddings: true,
        eos_token_ids: vec![crate::tokenizer::IM_END, crate::tokenizer::ENDOFTEXT],
        torch_dtype: Some("float32".into()),
    }
}
