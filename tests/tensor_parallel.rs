//! Tensor parallelism on the CPU (ranks as threads): TP2 and TP4 give TP1's logits and tokens.

mod common;

use common::*;
use tandem::config::ModelConfig;
use tandem::model::WeightSource;

fn config() -> ModelConfig {
    // 8 query and 4 KV heads allow TP 1, 2 and 4; a vocabulary of 301 splits unevenly.
    ModelConfig::from_json(
        r#"{"architectures":["Qwen3ForCausalLM"],"hidden_size":96,"intermediate_size":192,
        "num_hidden_layers":2,"num_attention_heads":8,"num_key_value_heads":4,"head_dim":32,
        "vocab_size":301,"max_position_embeddings":512,"rope_theta":1000000.0,
        "tie_word_embeddings":false}"#,
    )
    .unwrap()
}

#[test]
fn tp2_and_tp4_equal_tp1() {
    let cfg = config();
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|i| {
            (0..(11 + 23 * i))
                .map(|t| ((t * 37 + i * 101) % 301) as u32)
                .collect()
        })
        .collect();
    let reqs: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64, p.clone(), 6))
        .collect();
    let mut results = Vec::new();
    for tp in [1, 2, 4] {
        let mut engine = engine_for(
            &cfg,
            WeightSource::dummy(42),
            Setup {
                tp,
                budget: 32,
                ..Setup::default()
            },
        );
        let tokens = run_greedy(&mut engine, &reqs);
        results.push((tp, tokens, engine.executor_mut().logits.clone()));
    }
    let (_, base_tokens, base_logits) = &results[0];
    for (tp, tokens, logits) in &results[1..] {
        assert_eq!(tokens, base_tokens, "TP{tp} tokens differ from TP1");
        for (key, want) in base_logits {
            let e = rel_err(&logits[key], want);
            assert!(e < 1e-5, "TP{tp} {key:?}: relative error {e:e}");
        }
    }
}

#[test]
fn tp_size_that_does_not_divide_the_heads_is_refused() {
    let cfg = config();
    let err = tandem::model::TpRank::validate(3, &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tensor parallel size 3"), "{err}");
}
