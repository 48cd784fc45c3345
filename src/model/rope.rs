//! Rotary embedding tables: plain RoPE and YaRN, computed as transformers computes them.

use crate::backend::HostTensor;
use crate::config::{ModelConfig, RopeScaling};

/// Inverse frequencies (`head_dim / 2` of them) and the cos/sin scale of a config.
pub fn inv_freq_and_scale(cfg: &ModelConfig) -> (Vec<f32>, f32) {
    let dim = cfg.head_dim;
    let base = cfg.rope_theta;
    // transformers computes base ** (arange(0, dim, 2) / dim) in f32.
    let pos_freqs: Vec<f32> = (0..dim / 2)
        .map(|i| (base as f32).powf((2 * i) as f32 / dim as f32))
        .collect();
    match &cfg.rope_scaling {
        RopeScaling::None => (pos_freqs.iter().map(|p| 1.0 / p).collect(), 1.0),
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            attention_factor,
            mscale,
            truncate,
        } => {
            let factor = *factor;
            let orig = *original_max_position_embeddings as f64;
            let get_mscale = |m: f64| {
                if factor <= 1.0 {
                    1.0
                } else {
                    0.1 * m * factor.ln() + 1.0
                }
            };
            let scale = attention_factor.unwrap_or(match mscale {
                Some((m, all)) => get_mscale(*m) / get_mscale(*all),
                None => get_mscale(1.0),
            });
            let correction_dim = |rot: f64| {
                (dim as f64 * (orig / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln())
            };
            let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let high = high.min(dim as f64 - 1.0);
            let span = if low == high { 0.001 } else { high - low } as f32;
            let inv = pos_freqs
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let extrapolated = 1.0 / p;
                    let interpolated = 1.0 / (factor as f32 * p);
                    let ramp = ((i as f32 - low as f32) / span).clamp(0.0, 1.0);
                    let extrapolation_weight = 1.0 - ramp;
                    interpolated * (1.0 - extrapolation_weight)
                        + extrapolated * extrapolation_weight
                })
                .collect();
            (inv, scale as f32)
        }
    }
}

/// The `[max_pos, head_dim]` table the backends read: cos in the first half of each row,
/// sin in the second, both times the YaRN attention scale.
pub fn rope_table(cfg: &ModelConfig, max_pos: usize) -> HostTensor {
    let (inv, scale) = inv_freq_and_scale(cfg);
    let half = inv.len();
    let mut data = vec![0.0f32; max_pos * 2 * half];
    for p in 0..max_pos {
        let row = &mut data[p * 2 * half..(p + 1) * 2 * half];
        for (j, f) in inv.iter().enumerate() {
            // The angle is an f32 product, as in transformers; cos/sin of it in f64 then rounded.
            let angle = (p as f32 * f) as f64;
            row[j] = angle.cos() as f32 * scale;
            row[half + j] = angle.sin() as f32 * scale;
        }
    }
    HostTensor::new(vec![max_pos, 2 * half], data)
}
