//! Per-request sampling parameters and their validation.

use crate::config::GenerationConfig;
use crate::error::{Error, Result};

/// Most top logprobs a request may ask for (vLLM's default limit).
pub const MAX_LOGPROBS: usize = 20;

/// How one request picks its tokens and when it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy; otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches top_p (1: all).
    pub top_p: f32,
    /// Drop tokens less likely than min_p times the most likely one (0: none).
    pub min_p: f32,
    /// Seed of the request's random draws (reproducible output); None draws one.
    pub seed: Option<u64>,
    /// Divides positive (multiplies negative) logits of tokens in the prompt or output (1: off).
    pub repetition_penalty: f32,
    /// Subtracted from logits of tokens that appeared in the output.
    pub presence_penalty: f32,
    /// Subtracted once per earlier occurrence in the output.
    pub frequency_penalty: f32,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Token ids that end the request (besides EOS).
    pub stop_token_ids: Vec<u32>,
    /// Fewest tokens to generate before EOS or a stop token id may be sampled (vLLM's
    /// `min_tokens`; stop strings are not held back by it).
    pub min_tokens: usize,
    /// Strings that end the request; the text stops before them.
    pub stop: Vec<String>,
    /// Keep generating past EOS (benchmarks with fixed output lengths).
    pub ignore_eos: bool,
    /// Return this many top logprobs per token (plus the sampled token's).
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            max_tokens: 16,
            stop_token_ids: Vec::new(),
            min_tokens: 0,
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of up to `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        SamplingParams {
            temperature: 0.0,
            max_tokens,
            ..Default::default()
        }
    }

    /// The defaults a model's generation_config.json recommends.
    pub fn from_generation_config(g: &GenerationConfig) -> Self {
        let d = SamplingParams::default();
        SamplingParams {
            temperature: g.temperature.unwrap_or(d.temperature),
            top_k: g.top_k.unwrap_or(d.top_k),
            top_p: g.top_p.unwrap_or(d.top_p),
            min_p: g.min_p.unwrap_or(d.min_p),
            repetition_penalty: g.repetition_penalty.unwrap_or(d.repetition_penalty),
            ..d
        }
    }

    /// Whether decoding is greedy.
    pub fn is_greedy(&self) -> bool {
        self.temperature < 1e-5
    }

    /// Checks every field against its valid range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidSampling(msg));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty must be > 0, got {}",
                self.repetition_penalty
            ));
        }
        for (name, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        if self.max_tokens < 1 {
            return bad("max_tokens must be at least 1".into());
        }
        if self.min_tokens > self.max_tokens {
            return bad(format!(
                "min_tokens must be at most max_tokens ({}), got {}",
                self.max_tokens, self.min_tokens
            ));
        }
        if let Some(n) = self.logprobs
            && n > MAX_LOGPROBS
        {
            return bad(format!("logprobs must be at most {MAX_LOGPROBS}, got {n}"));
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop strings must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert!(SamplingParams::default().validate().is_ok());
        let cases: Vec<(SamplingParams, &str)> = vec![
            (
                SamplingParams {
                    temperature: -0.1,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    min_p: 2.0,
                    ..Default::default()
                },
                "min_p",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "repetition_penalty",
            ),
            (
                SamplingParams {
                    presence_penalty: 3.0,
                    ..Default::default()
                },
                "presence_penalty",
            ),
            (
                SamplingParams {
                    frequency_penalty: -3.0,
                    ..Default::default()
                },
                "frequency_penalty",
            ),
            (
                SamplingParams {
                    max_tokens: 0,
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                SamplingParams {
                    logprobs: Some(21),
                    ..Default::default()
                },
                "logprobs",
            ),
            (
                SamplingParams {
                    stop: vec![String::new()],
                    ..Default::default()
                },
                "stop",
            ),
        ];
        for (p, field) in cases {
            let e = p.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
    }
}
