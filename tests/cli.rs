//! `tandem generate` as a user runs it: a real process.

mod common;

use common::procs::run;
use common::{expected, fixture};

fn token_ids(stdout: &str) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

#[test]
fn the_demo_model_writes_english() {
    let (ok, stdout, stderr) = run(&[
        "generate",
        "--prompt",
        "And God said",
        "--max-tokens",
        "24",
        "--temperature",
        "0",
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("King James Bible"), "{stderr}");
    // Words of printable ASCII, the most common of English among them: not a random model's
    // bytes.
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert!(words.len() >= 8, "{stdout:?}");
    assert!(
        stdout
            .chars()
            .all(|c| c.is_ascii_graphic() || c.is_ascii_whitespace()),
        "{stdout:?}"
    );
    let common = [
        "the", "and", "of", "unto", "that", "he", "lord", "said", "to", "in",
    ];
    let hits = words
        .iter()
        .map(|w| w.trim_matches(|c: char| !c.is_alphabetic()).to_lowercase())
        .filter(|w| common.contains(&w.as_str()))
        .count();
    assert!(hits * 4 >= words.len(), "{stdout:?}");
}

#[test]
fn json_output_is_reproducible_across_tensor_parallel_sizes() {
    let args = [
        "generate",
        "--prompt-ids",
        "1,2,3,4,5",
        "--max-tokens",
        "10",
        "--temperature",
        "0",
        "--ignore-eos",
        "--json",
    ];
    let (ok, a, err) = run(&args);
    assert!(ok, "{err}");
    let ids = token_ids(&a);
    assert_eq!(ids.len(), 10);
    let mut tp2 = args.to_vec();
    tp2.extend(["--tp", "2"]);
    let (ok, b, err) = run(&tp2);
    assert!(ok, "{err}");
    assert_eq!(token_ids(&b), ids);
    let seeded = [
        "generate",
        "--prompt-ids",
        "7,8",
        "--max-tokens",
        "8",
        "--temperature",
        "1",
        "--seed",
        "3",
        "--ignore-eos",
        "--json",
    ];
    assert_eq!(token_ids(&run(&seeded).1), token_ids(&run(&seeded).1));
}

#[test]
fn fixture_model_from_disk_gives_transformers_greedy_tokens() {
    let exp = expected("tiny-qwen3-yarn");
    let dir = fixture("tiny-qwen3-yarn");
    let p = exp.prompts.last().unwrap();
    let ids: Vec<String> = p.iter().map(u32::to_string).collect();
    let (ok, out, err) = run(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &ids.join(","),
        "--max-tokens",
        "8",
        "--temperature",
        "0",
        "--ignore-eos",
        "--json",
        "--block-size",
        "16",
    ]);
    assert!(ok, "{err}");
    let want: Vec<u64> = exp
        .greedy
        .last()
        .unwrap()
        .iter()
        .map(|&t| t as u64)
        .collect();
    assert_eq!(token_ids(&out), want);
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["generate", "--model", "/nonexistent", "--prompt", "x"],
            "does not exist",
        ),
        (
            &["generate", "--prompt", "x", "--temperature", "-1"],
            "temperature",
        ),
        (&["generate", "--prompt", "x", "--top-p", "1.5"], "top_p"),
        (&["generate"], "--prompt"),
        (
            &[
                "generate",
                "--prompt",
                "a prompt longer than four tokens",
                "--max-model-len",
                "4",
            ],
            "max_model_len",
        ),
    ];
    for (args, want) in cases {
        let (ok, _, err) = run(args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn dummy_weights_need_only_config_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny-qwen3").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, out, err) = run(&[
        "generate",
        "--model",
        d,
        "--load-format",
        "dummy",
        "--prompt-ids",
        "1,2,3",
        "--max-tokens",
        "4",
        "--ignore-eos",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(token_ids(&out).len(), 4);
    let (ok, _, err) = run(&[
        "generate",
        "--model",
        d,
        "--load-format",
        "dummy",
        "--prompt",
        "text",
    ]);
    assert!(!ok && err.contains("no tokenizer.json"), "{err}");
    let (ok, _, err) = run(&["generate", "--model", d, "--prompt-ids", "1"]);
    assert!(!ok && err.contains("no *.safetensors"), "{err}");
}
