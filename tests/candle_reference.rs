//! tandem against candle-transformers' qwen3 on the same fixture weights (a second,
//! independent implementation): prefill and every decode step through candle's KV cache.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen3::{Config, ModelForCausalLM};
use common::*;
use tandem::config::ModelConfig;

#[test]
fn matches_candle_qwen3() {
    let dir = fixture("tiny-qwen3");
    let cfg = ModelConfig::from_dir(&dir).unwrap();
    let ccfg = Config {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_hidden_layers: cfg.num_hidden_layers,
        num_attention_heads: cfg.num_attention_heads,
        head_dim: cfg.head_dim,
        attention_bias: false,
        num_key_value_heads: cfg.num_key_value_heads,
        max_position_embeddings: cfg.max_position_embeddings,
        sliding_window: None,
        max_window_layers: cfg.num_hidden_layers,
        tie_word_embeddings: cfg.tie_word_embeddings,
        rope_theta: cfg.rope_theta,
        rms_norm_eps: cfg.rms_norm_eps,
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    };
    let files = vec![dir.join("model.safetensors")];
    // SAFETY: the fixture file is not modified while mapped.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap() };
    let exp = expected("tiny-qwen3");
    let mut engine = fixture_engine("tiny-qwen3", Setup::default());
    let reqs: Vec<_> = exp
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64, p.clone(), exp.greedy[i].len()))
        .collect();
    let out = run_greedy(&mut engine, &reqs);
    for (i, prompt) in exp.prompts.iter().enumerate() {
        let mut model = ModelForCausalLM::new(&ccfg, vb.clone()).unwrap();
        let mut input = prompt.clone();
        let mut offset = 0;
        for (step, &next) in out[&(i as u64)].iter().enumerate() {
            let t = Tensor::new(input.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let logits: Vec<f32> = model
                .forward(&t, offset)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let ours = &engine.executor_mut().logits[&(i as u64, step)];
            let e = rel_err(ours, &logits);
            assert!(
                e < 1e-4,
                "prompt {i} step {step}: relative error {e:e} against candle"
            );
            offset += input.len();
            input = vec![next];
        }
    }
}
