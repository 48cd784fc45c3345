//! Model configuration (Hugging Face config.json and generation_config.json).

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// Rotary embedding variant of a model.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE with `rope_theta`.
    None,
    /// YaRN context extension (as Qwen3 uses for 131072 tokens).
    Yarn {
        /// Scale of the context extension.
        factor: f64,
        /// Context length the model was trained on.
        original_max_position_embeddings: usize,
        /// Rotations above which dimensions are extrapolated (default 32).
        beta_fast: f64,
        /// Rotations below which dimensions are interpolated (default 1).
        beta_slow: f64,
        /// Explicit attention (cos/sin) scale; derived from `factor` (and the mscales) when absent.
        attention_factor: Option<f64>,
        /// DeepSeek-style `(mscale, mscale_all_dim)` for the derived attention scale.
        mscale: Option<(f64, f64)>,
        /// Whether the correction range is rounded to whole dimensions (default true).
        truncate: bool,
    },
}

/// The parts of a Qwen3 config.json tandem uses, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Per-head width (may differ from hidden / heads).
    pub head_dim: usize,
    /// Rows of the embedding and lm_head.
    pub vocab_size: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE variant.
    pub rope_scaling: RopeScaling,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Longest position the model supports.
    pub max_position_embeddings: usize,
    /// lm_head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// EOS ids named by config.json (generation_config.json may add more).
    pub eos_token_ids: Vec<u32>,
    /// The dtype the checkpoint declares (informational; weights are read per tensor).
    pub torch_dtype: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    eos_token_id: Option<Value>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    use_sliding_window: bool,
}

impl ModelConfig {
    /// Reads and validates `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses and validates the text of a config.json.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("malformed config.json: {e}")))?;
        let arch_ok = raw
            .architectures
            .as_ref()
            .is_some_and(|a| a.iter().any(|s| s == "Qwen3ForCausalLM"))
            || (raw.architectures.is_none() && raw.model_type.as_deref() == Some("qwen3"));
        if !arch_ok {
            return Err(Error::Config(format!(
                "unsupported architecture {:?} (model_type {:?}): tandem runs dense Qwen3 (Qwen3ForCausalLM)",
                raw.architectures.unwrap_or_default(),
                raw.model_type.unwrap_or_default()
            )));
        }
        if raw.attention_bias {
            return Err(Error::Config(
                "attention_bias = true is not supported by Qwen3".into(),
            ));
        }
        if raw.use_sliding_window {
            return Err(Error::Config(
                "use_sliding_window = true is not supported".into(),
            ));
        }
        let heads = raw.num_attention_heads;
        let kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / heads.max(1));
        for (name, v) in [
            ("hidden_size", raw.hidden_size),
            ("intermediate_size", raw.intermediate_size),
            ("num_hidden_layers", raw.num_hidden_layers),
            ("num_attention_heads", heads),
            ("num_key_value_heads", kv_heads),
            ("head_dim", head_dim),
            ("vocab_size", raw.vocab_size),
            ("max_position_embeddings", raw.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be positive")));
            }
        }
        if !heads.is_multiple_of(kv_heads) {
            return Err(Error::Config(format!(
                "num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
            )));
        }
        if !head_dim.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "head_dim {head_dim} must be even for RoPE"
            )));
        }
        // transformers 5 moved rope_theta and the scaling dict into `rope_parameters`.
        let rope_params = raw.rope_parameters.as_ref().filter(|v| v.is_object());
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                rope_params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10000.0);
        let scaling = raw
            .rope_scaling
            .as_ref()
            .filter(|v| !v.is_null())
            .or(rope_params);
        let rope_scaling = match scaling {
            None => RopeScaling::None,
            Some(v) => parse_rope_scaling(v, raw.max_position_embeddings)?,
        };
        Ok(ModelConfig {
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            rope_theta,
            rope_scaling,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings,
            eos_token_ids: parse_ids(raw.eos_token_id.as_ref()),
            torch_dtype: raw.torch_dtype.or(raw.dtype),
        })
    }

    /// Parameters of the model (for reporting and memory sizing).
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let d = self.head_dim;
        let attn = h * d * (2 * self.num_attention_heads + 2 * self.num_key_value_heads) + 2 * d;
        let mlp = 3 * h * self.intermediate_size;
        let per_layer = attn + mlp + 2 * h;
        let embed = self.vocab_size * h * if self.tie_word_embeddings { 1 } else { 2 };
        self.num_hidden_layers * per_layer + embed + h
    }
}

fn parse_rope_scaling(v: &Value, max_pos: usize) -> Result<RopeScaling> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    match kind {
        "default" => Ok(RopeScaling::None),
        "yarn" => {
            let factor = f("factor")
                .ok_or_else(|| Error::Config("yarn rope_scaling needs a factor".into()))?;
            if !(factor >= 1.0 && factor.is_finite()) {
                return Err(Error::Config(format!("yarn factor {factor} must be >= 1")));
            }
            let original = v
                .get("original_max_position_embeddings")
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .unwrap_or(max_pos);
            Ok(RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast: f("beta_fast").unwrap_or(32.0),
                beta_slow: f("beta_slow").unwrap_or(1.0),
                attention_factor: f("attention_factor"),
                mscale: f("mscale")
                    .zip(f("mscale_all_dim"))
                    .filter(|(a, b)| *a != 0.0 && *b != 0.0),
                truncate: v.get("truncate").and_then(Value::as_bool).unwrap_or(true),
            })
        }
        other => Err(Error::Config(format!(
            "rope scaling type {other:?} is not supported (supported: default, yarn)"
        ))),
    }
}

fn parse_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Defaults from generation_config.json: EOS ids and the model's recommended sampling.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// Every id that ends generation.
    pub eos_token_ids: Vec<u32>,
    /// Default temperature (None: greedy unless the request says otherwise).
    pub temperature: Option<f32>,
    /// Default top-k.
    pub top_k: Option<usize>,
    /// Default top-p.
    pub top_p: Option<f32>,
    /// Default min-p.
    pub min_p: Option<f32>,
    /// Default repetition penalty.
    pub repetition_penalty: Option<f32>,
}

impl GenerationConfig {
    /// Reads `dir/generation_config.json` if present; a missing file gives the defaults.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses the text of a generation_config.json.
    pub fn from_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("malformed JSON: {e}")))?;
        let f = |k: &str| v.get(k).and_then(Value::as_f64).map(|x| x as f32);
        let do_sample = v.get("do_sample").and_then(Value::as_bool).unwrap_or(false);
        Ok(GenerationConfig {
            eos_token_ids: parse_ids(v.get("eos_token_id")),
            // Without do_sample, transformers decodes greedily whatever the temperature says.
            temperature: if do_sample {
                f("temperature")
            } else {
                Some(0.0)
            },
            top_k: v.get("top_k").and_then(Value::as_u64).map(|x| x as usize),
            top_p: f("top_p"),
            min_p: f("min_p"),
            repetition_penalty: f("repetition_penalty"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN3_32B: &str = r#"{"architectures":["Qwen3ForCausalLM"],"attention_bias":false,
      "bos_token_id":151643,"eos_token_id":151645,"head_dim":128,"hidden_size":5120,
      "intermediate_size":25600,"max_position_embeddings":40960,"model_type":"qwen3",
      "num_attention_heads":64,"num_hidden_layers":64,"num_key_value_heads":8,
      "rms_norm_eps":1e-06,"rope_scaling":{"rope_type":"yarn","factor":4.0,
      "original_max_position_embeddings":32768},"rope_theta":1000000,
      "tie_word_embeddings":false,"torch_dtype":"bfloat16","vocab_size":151936}"#;

    #[test]
    fn parses_qwen3_32b_with_yarn() {
        let c = ModelConfig::from_json(QWEN3_32B).unwrap();
        assert_eq!(c.num_key_value_heads, 8);
        assert_eq!(c.eos_token_ids, vec![151645]);
        assert!(
            matches!(c.rope_scaling, RopeScaling::Yarn { factor, original_max_position_embeddings: 32768, .. } if factor == 4.0)
        );
        // 32.76e9 parameters (embedding, 64 layers, lm_head; the model card rounds to 32.8B).
        assert_eq!(c.num_parameters() / 10_000_000, 3276);
    }

    #[test]
    fn rejects_bad_configs() {
        let bad_arch = QWEN3_32B.replace("Qwen3ForCausalLM", "LlamaForCausalLM");
        let e = ModelConfig::from_json(&bad_arch).unwrap_err().to_string();
        assert!(e.contains("unsupported architecture"), "{e}");
        let e = ModelConfig::from_json("{not json").unwrap_err().to_string();
        assert!(e.contains("malformed config.json"), "{e}");
        let missing = QWEN3_32B.replace("\"hidden_size\":5120,", "");
        let e = ModelConfig::from_json(&missing).unwrap_err().to_string();
        assert!(e.contains("hidden_size"), "{e}");
        let dyn_rope = QWEN3_32B.replace("\"yarn\"", "\"dynamic\"");
        let e = ModelConfig::from_json(&dyn_rope).unwrap_err().to_string();
        assert!(e.contains("dynamic"), "{e}");
        let gqa = QWEN3_32B.replace("\"num_key_value_heads\":8", "\"num_key_value_heads\":7");
        assert!(ModelConfig::from_json(&gqa).is_err());
    }

    #[test]
    fn generation_config_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            GenerationConfig::from_dir(dir.path()).unwrap(),
            GenerationConfig::default()
        );
        let write = |s: &str| std::fs::write(dir.path().join("generation_config.json"), s).unwrap();
        write(
            r#"{"do_sample": true, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "eos_token_id": [151645, 151643]}"#,
        );
        let g = GenerationConfig::from_dir(dir.path()).unwrap();
        assert_eq!(
            (g.temperature, g.top_k, g.eos_token_ids.len()),
            (Some(0.6), Some(20), 2)
        );
        write(r#"{"temperature": 0.6}"#);
        assert_eq!(
            GenerationConfig::from_dir(dir.path()).unwrap().temperature,
            Some(0.0),
            "no do_sample: greedy"
        );
        write("{");
        assert!(
            GenerationConfig::from_dir(dir.path())
                .unwrap_err()
                .to_string()
                .contains("malformed")
        );
    }

    #[test]
    fn reads_transformers5_rope_parameters() {
        let v5 = QWEN3_32B
            .replace("\"rope_scaling\"", "\"rope_parameters\"")
            .replace("\"rope_theta\":1000000,", "")
            .replace("\"factor\":4.0,", "\"factor\":4.0,\"rope_theta\":1000000,");
        let c = ModelConfig::from_json(&v5).unwrap();
        assert_eq!(c.rope_theta, 1e6);
        assert!(matches!(c.rope_scaling, RopeScaling::Yarn { .. }));
    }
}

/// How an engine runs: KV cache geometry and scheduling limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the pool.
    pub num_blocks: usize,
    /// Longest sequence (prompt + output).
    pub max_model_len: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Token budget of one step.
    pub max_num_batched_tokens: usize,
    /// Most prefill tokens per sequence per step (0: only the budget limits).
    pub long_prefill_token_threshold: usize,
    /// Reuse cached prefixes across requests.
    pub enable_prefix_caching: bool,
    /// Rows of the model's vocabulary (token ids must be below it).
    pub vocab_size: usize,
    /// How long a prefill worker holds a finished prompt's blocks for a decode worker to pull.
    pub kv_hold_timeout: std::time::Duration,
    /// Blocks of the host KV tier that evicted blocks go to (0: none; needs prefix caching).
    pub host_kv_blocks: usize,
}

impl EngineConfig {
    /// Defaults for a model: block size 64, 256 sequences, 8192 tokens per step.
    pub fn for_model(model: &ModelConfig, num_blocks: usize) -> Self {
        EngineConfig {
            block_size: 64,
            num_blocks,
            max_model_len: model.max_position_embeddings,
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            long_prefill_token_threshold: 0,
            enable_prefix_caching: true,
            vocab_size: model.vocab_size,
            kv_hold_timeout: std::time::Duration::from_secs(30),
            host_kv_blocks: 0,
        }
    }

    /// Checks that the limits can work together; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::EngineConfig(m));
        if self.block_size == 0
            || self.max_num_seqs == 0
            || self.max_num_batched_tokens == 0
            || self.max_model_len < 2
        {
            return bad("block_size, max_num_seqs and max_num_batched_tokens must be positive, max_model_len at least 2".into());
        }
        if self.host_kv_blocks > 0 && !self.enable_prefix_caching {
            return bad(
                "a host KV tier holds evicted prefix-cache blocks: it needs prefix caching on"
                    .into(),
            );
        }
        // One sequence at its longest must fit alone, or preemption could not guarantee progress.
        if self.num_blocks * self.block_size < self.max_model_len {
            return bad(format!(
                "{} blocks of {} tokens cannot hold one sequence of max_model_len {}; give the KV cache more memory or lower max_model_len",
                self.num_blocks, self.block_size, self.max_model_len
            ));
        }
        Ok(())
    }
}
