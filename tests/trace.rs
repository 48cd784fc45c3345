//! The reference trace the binary carries (data/traces/), loaded and checked against the
//! figures of the published Mooncake conversation trace.

use std::path::PathBuf;

use tandem::replay::trace::{load, reference, stats};

#[test]
fn loader_matches_the_published_trace_figures() {
    let reqs = reference().unwrap();
    // The same file read from disk, through the .xz path of `--trace`.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/traces/mooncake_conversation_trace.jsonl.xz");
    assert_eq!(load(&path, 512).unwrap(), reqs);
    let s = stats(&reqs, 512);
    assert_eq!(s.requests, 12_031);
    assert_eq!(s.duration_ms, 3_536_999);
    assert!(
        (s.input.0 - 12_035.06).abs() < 0.01,
        "mean input {}",
        s.input.0
    );
    assert_eq!((s.input.1, s.input.3), (6_909, 126_195));
    assert!(
        (s.input.2 as f64 - 85_400.0).abs() / 85_400.0 < 0.01,
        "p99 input {}",
        s.input.2
    );
    assert!((s.output.0 - 342.62).abs() < 0.01 && s.output.1 == 2_000);
    assert_eq!(reqs.iter().filter(|r| r.output_length == 1).count(), 72);
    assert_eq!((s.block_refs, s.unique_blocks), (288_500, 182_790));
    assert!(
        (s.repeat_fraction - 0.3664).abs() < 5e-5,
        "repeats {}",
        s.repeat_fraction
    );
    assert!(
        (s.cached_token_fraction - 0.3736).abs() < 5e-5,
        "cached tokens {}",
        s.cached_token_fraction
    );
    assert!(reqs.iter().all(|r| r.hash_ids[0] == 0));
}

/// `tandem trace synthesize` with the DeepSeek-V3.2 recipe's arguments reproduces the
/// statistics its synthesized trace was published with: ISL mean 39,186 (12,801–109,459),
/// OSL mean 344, block hit rate 44.1%, shared-prefix ratio 57.2%.
#[test]
fn synthesis_reproduces_the_recipe_trace_figures() {
    use tandem::replay::synth::{SynthOptions, Synthesizer, prefix_stats};
    let src = reference().unwrap();
    let opts = |seed| SynthOptions {
        requests: 10_000,
        block: 512,
        prefix_len_multiplier: 16.0,
        prompt_len_multiplier: 10.0,
        osl_multiplier: 1.0,
        max_isl: Some(110_000),
        speedup: 1.0,
        seed,
    };
    let near = |got: f64, want: f64, rel: f64| (got - want).abs() <= rel * want;
    for seed in 0..3 {
        let out = Synthesizer::new(&src, opts(seed)).unwrap().run();
        assert_eq!(out.len(), 10_000);
        let s = prefix_stats(&out, 512);
        assert!(
            near(s.isl.0, 39_186.0, 0.03),
            "seed {seed}: ISL mean {}",
            s.isl.0
        );
        // The shortest request is one shared block × 16 and one unique block × 10.
        assert_eq!(s.isl.1, 12_801, "seed {seed}");
        assert!(
            s.isl.2 <= 110_000 && s.isl.2 > 105_000,
            "seed {seed}: {}",
            s.isl.2
        );
        assert!(near(s.osl, 344.0, 0.03), "seed {seed}: OSL mean {}", s.osl);
        assert!(
            near(s.hit_rate, 0.441, 0.05),
            "seed {seed}: hit rate {}",
            s.hit_rate
        );
        assert!(
            near(s.shared_prefix_ratio, 0.572, 0.03),
            "seed {seed}: shared-prefix ratio {}",
            s.shared_prefix_ratio
        );
        for r in &out {
            assert_eq!(r.hash_ids.len(), r.input_length.div_ceil(512));
        }
    }
    // Identity: multipliers of 1 keep the source's figures (its ISL mean within a few %).
    let same = Synthesizer::new(
        &src,
        SynthOptions {
            prefix_len_multiplier: 1.0,
            prompt_len_multiplier: 1.0,
            max_isl: None,
            requests: 12_031,
            ..opts(0)
        },
    )
    .unwrap()
    .run();
    let s = prefix_stats(&same, 512);
    assert!(near(s.isl.0, 12_035.0, 0.05), "ISL mean {}", s.isl.0);
}
