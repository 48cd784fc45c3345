//! Broken model directories, impossible settings and invalid requests end in errors that name
//! the problem, never in a panic.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::fixture;
use safetensors::tensor::{Dtype, TensorView};
use tandem::engine::{Request, SamplingParams};
use tandem::loader::{ModelSpec, load_cpu};

/// A copy of the tiny fixture in a temp dir, for breaking.
fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("tiny-qwen3")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> String {
    let spec = ModelSpec {
        model: Some(PathBuf::from(dir)),
        kv_cache_bytes: 64 << 20,
        ..ModelSpec::default()
    };
    match load_cpu(&spec) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrites model.safetensors with `edit` applied to its tensors (name -> (dtype, shape, bytes)).
fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn broken_model_directories() {
    let missing_dir = load_err(Path::new("/nonexistent/model"));
    assert!(missing_dir.contains("does not exist"), "{missing_dir}");

    let d = copy_fixture();
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json"), "{e}");

    let d = copy_fixture();
    std::fs::write(d.path().join("config.json"), "{\"hidden_size\": 64,").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("malformed config.json"), "{e}");

    let d = copy_fixture();
    let cfg = std::fs::read_to_string(d.path().join("config.json")).unwrap();
    std::fs::write(
        d.path().join("config.json"),
        cfg.replace("Qwen3ForCausalLM", "MixtralForCausalLM"),
    )
    .unwrap();
    let e = load_err(d.path());
    assert!(
        e.contains("unsupported architecture") && e.contains("MixtralForCausalLM"),
        "{e}"
    );

    let d = copy_fixture();
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("no *.safetensors"), "{e}");

    let d = copy_fixture();
    rewrite_weights(d.path(), |t| {
        t.remove("model.layers.1.mlp.down_proj.weight");
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.layers.1.mlp.down_proj.weight") && e.contains("not found"),
        "{e}"
    );

    let d = copy_fixture();
    rewrite_weights(d.path(), |t| {
        let w = t.get_mut("model.layers.0.self_attn.q_proj.weight").unwrap();
        w.1 = vec![w.1[1], w.1[0]];
    });
    let e = load_err(d.path());
    assert!(e.contains("q_proj.weight") && e.contains("shape"), "{e}");

    let d = copy_fixture();
    rewrite_weights(d.path(), |t| {
        let w = t.get_mut("model.norm.weight").unwrap();
        w.0 = Dtype::I32;
    });
    let e = load_err(d.path());
    assert!(
        e.contains("model.norm.weight") && e.contains("I32") && e.contains("bf16, f16 and f32"),
        "{e}"
    );

    let d = copy_fixture();
    let w = d.path().join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.safetensors"), "{e}");

    let d = copy_fixture();
    std::fs::write(d.path().join("tokenizer.json"), "{oops").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("tokenizer"), "{e}");
}

#[test]
fn impossible_settings() {
    let too_small = ModelSpec {
        kv_cache_bytes: 1 << 16,
        ..ModelSpec::default()
    };
    let e = load_cpu(&too_small).err().unwrap().to_string();
    assert!(e.contains("cannot hold one sequence"), "{e}");
    let tp3 = ModelSpec {
        tp_size: 3,
        ..ModelSpec::default()
    };
    let e = load_cpu(&tp3).err().unwrap().to_string();
    assert!(e.contains("tensor parallel size 3"), "{e}");
    let long = ModelSpec {
        max_model_len: Some(1 << 20),
        ..ModelSpec::default()
    };
    let e = load_cpu(&long).err().unwrap().to_string();
    assert!(e.contains("max_position_embeddings"), "{e}");
}

#[test]
fn invalid_requests() {
    let spec = ModelSpec {
        max_model_len: Some(64),
        kv_cache_bytes: 16 << 20,
        ..ModelSpec::default()
    };
    let mut e = load_cpu(&spec).unwrap().engine;
    let cases = [
        (vec![1; 64], SamplingParams::greedy(1), "max_model_len"),
        (vec![], SamplingParams::greedy(1), "empty"),
        (
            vec![1, 100_000],
            SamplingParams::greedy(1),
            "outside the vocabulary",
        ),
        (
            vec![1],
            SamplingParams {
                temperature: -1.0,
                ..Default::default()
            },
            "temperature",
        ),
        (
            vec![1],
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            "top_p",
        ),
        (
            vec![1],
            SamplingParams {
                max_tokens: 0,
                ..Default::default()
            },
            "max_tokens",
        ),
    ];
    for (i, (prompt, params, want)) in cases.into_iter().enumerate() {
        let err = e
            .add_request(Request {
                id: i as u64,
                prompt,
                params,
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err} should mention {want}");
    }
    e.add_request(Request {
        id: 99,
        prompt: vec![1, 2],
        params: SamplingParams::greedy(1),
    })
    .unwrap();
    let dup = e
        .add_request(Request {
            id: 99,
            prompt: vec![1, 2],
            params: SamplingParams::greedy(1),
        })
        .unwrap_err();
    assert!(dup.to_string().contains("already in use"));
    assert!(!e.has_work() || e.num_requests() == (0, 1));
}
