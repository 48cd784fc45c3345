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
