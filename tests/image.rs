//! The container image: docker/Dockerfile and .dockerignore, checked by reading them (Docker
//! cannot run here): hadolint (Docker's syntax and its best practices), sources that exist, a
//! cuda build on CUDA 13 images, the binary as the entrypoint of a non-root runtime stage, and a
//! default command the binary parses.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::cli_flags::check_command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Dockerfile's logical lines (continuations joined, comments dropped).
fn dockerfile() -> Vec<String> {
    logical_lines("docker/Dockerfile")
}

/// A Dockerfile's logical lines (continuations joined, comments dropped).
fn logical_lines(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let mut lines = Vec::new();
    let mut cur = String::new();
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                lines.push(std::mem::take(&mut cur));
            }
        }
    }
    lines
}

/// A .dockerignore's patterns (comments and blank lines dropped).
fn ignore_patterns(file: &str) -> Vec<String> {
    std::fs::read_to_string(root().join(file))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// ENTRYPOINT and CMD of the final stage, as exec-form arrays.
fn dockerfile_entry() -> (Vec<String>, Vec<String>) {
    let exec_form = |prefix: &str| -> Vec<String> {
        let l = dockerfile()
            .into_iter()
            .rev()
            .find(|l| l.starts_with(prefix))
            .unwrap();
        serde_json::from_str(l[prefix.len()..].trim()).expect("exec form (a JSON array)")
    };
    (exec_form("ENTRYPOINT"), exec_form("CMD"))
}

#[test]
fn the_image_builds_tandem_with_cuda_and_runs_it() {
    let lines = dockerfile();
    let mut stages: Vec<String> = Vec::new();
    let mut args = BTreeMap::new();
    let mut final_copies = Vec::new();
    for l in &lines {
        let words: Vec<&str> = l.split_whitespace().collect();
        match words[0] {
            "ARG" => {
                if let Some((k, v)) = words[1].split_once('=') {
                    args.insert(k.to_string(), v.to_string());
                }
            }
            "FROM" => {
                final_copies.clear();
                stages.push(words.get(3).map_or(String::new(), |s| s.to_string()));
                if stages.len() > 1 {
                    assert!(words[1].contains("${CUDA_VERSION}"), "{l}: a CUDA base");
                }
            }
            "COPY" => {
                let from = words.iter().find_map(|w| w.strip_prefix("--from="));
                match from {
                    Some(stage) => assert!(
                        stages[..stages.len() - 1].iter().any(|s| s == stage),
                        "{l}: no stage {stage}"
                    ),
                    None => {
                        for src in &words[1..words.len() - 1] {
                            assert!(root().join(src).exists(), "{l}: {src} does not exist");
                        }
                    }
                }
                final_copies.push(l.clone());
            }
            _ => {}
        }
    }
    assert!(args["CUDA_VERSION"].starts_with("13."), "CUDA 13 images");
    assert_eq!(args["FEATURES"], "cuda,nixl");
    // The NIXL runtime the nixl feature loads, where the workers' loader finds it.
    assert!(
        final_copies
            .iter()
            .any(|c| c.contains("--from=builder /out/nixl /opt/nixl")),
        "the final stage ships the NIXL runtime"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ENV LD_LIBRARY_PATH=/opt/nixl/.nixl_cu13.mesonpy.libs")),
        "the NIXL runtime is on the loader's path"
    );
    assert!(
        lines.iter().any(|l| l.contains("libclang-dev")),
        "bindgen's libclang in the builder"
    );
    let last_from = lines.iter().rev().find(|l| l.starts_with("FROM")).unwrap();
    assert!(
        last_from.contains("-runtime-"),
        "the final stage is a CUDA runtime image: {last_from}"
    );
    let build = lines
        .iter()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build");
    assert!(
        build.contains("--release") && build.contains("--features \"${FEATURES}\""),
        "{build}"
    );
    assert!(
        build.contains("target/release/tandem /out/tandem"),
        "{build}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("NVCC=/usr/local/cuda/bin/nvcc"))
    );
    let (entry, _) = dockerfile_entry();
    assert_eq!(
        entry.len(),
        1,
        "the entrypoint is the binary alone: {entry:?}"
    );
    assert!(
        final_copies
            .iter()
            .any(|c| c.ends_with(&format!("/out/tandem {}", entry[0]))),
        "the final stage does not put the binary at {}",
        entry[0]
    );
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER"))
        .expect("a USER");
    let uid: u32 = user[4..]
        .trim()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0, "the image runs as a non-root user");
    let build_script = root().join("docker/build.sh");
    assert!(
        std::fs::read_to_string(&build_script)
            .unwrap()
            .contains("docker/Dockerfile")
    );
}

#[test]
fn the_build_context_holds_what_cargo_reads() {
    let patterns = ignore_patterns(".dockerignore");
    assert_eq!(
        patterns.first().map(String::as_str),
        Some("*"),
        "an allowlist: everything is left out first"
    );
    let allowed: BTreeSet<&str> = patterns[1..]
        .iter()
        .map(|p| {
            p.strip_prefix('!')
                .expect("only re-includes after *")
                .trim_end_matches('/')
        })
        .collect();
    let mut needed = vec![
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src",
        "proto",
        "benches",
    ];
    // The cuda feature's build.rs compiles kernels/*.cu.
    if root().join("kernels").exists() {
        needed.push("kernels");
    }
    for n in needed {
        assert!(allowed.contains(n), ".dockerignore leaves out {n}");
        assert!(root().join(n).exists(), "{n} is missing");
    }
    // The [[bench]] targets the manifest names must be in the context too.
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for l in manifest.lines().filter(|l| l.starts_with("name = ")) {
        let name = l.trim_start_matches("name = ").trim_matches('"');
        if name != "tandem" {
            assert!(
                root().join(format!("benches/{name}.rs")).exists(),
                "bench {name}"
            );
        }
    }
}

#[test]
fn the_default_command_parses() {
    let (_, cmd) = dockerfile_entry();
    check_command("docker/Dockerfile CMD", &cmd);
}

#[test]
fn hadolint_passes() {
    for file in ["docker/Dockerfile", "docker/Dockerfile.dynamo"] {
        let out = std::process::Command::new(common::python::venv_program("hadolint"))
            .arg(root().join(file))
            .output()
            .expect("hadolint runs");
        assert!(
            out.status.success(),
            "hadolint {file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The image of Dynamo's frontend and the bridge (docker/Dockerfile.dynamo): the Dynamo the
/// tests run, the bridge and the proto it compiles in its build context, the bridge as the
/// entrypoint of a non-root user.
#[test]
fn the_dynamo_image_runs_the_bridge_on_the_tested_dynamo() {
    let lines = logical_lines("docker/Dockerfile.dynamo");
    let reqs =
        std::fs::read_to_string(root().join("python/tandem_dynamo/requirements.txt")).unwrap();
    let pinned = reqs
        .lines()
        .find_map(|l| l.strip_prefix("ai-dynamo-runtime=="))
        .expect("requirements.txt pins ai-dynamo-runtime");
    let arg = lines
        .iter()
        .find_map(|l| l.strip_prefix("ARG DYNAMO_VERSION="))
        .expect("ARG DYNAMO_VERSION");
    assert_eq!(arg, pinned, "the image's Dynamo is the one the tests run");
    // Its own context: an allowlist that lets in what it copies.
    let patterns = ignore_patterns("docker/Dockerfile.dynamo.dockerignore");
    let allowed: BTreeSet<&str> = patterns
        .iter()
        .filter_map(|l| l.strip_prefix('!'))
        .map(|p| p.trim_end_matches('/'))
        .collect();
    assert!(patterns.iter().any(|l| l == "*"), "an allowlist");
    let mut copied = 0;
    for l in lines.iter().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = l.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            let src = src.trim_end_matches('/');
            let top = src.split('/').next().unwrap();
            assert!(allowed.contains(top), "{src} is outside the context");
            assert!(root().join(src).exists(), "{src} is missing");
            copied += 1;
        }
    }
    assert!(copied >= 3, "requirements, python/ and proto/");
    // The bridge finds proto/ beside python/ (python/tandem_dynamo/worker.py).
    assert!(lines.contains(&"COPY python/ /opt/tandem/python/".to_string()));
    assert!(lines.contains(&"COPY proto/ /opt/tandem/proto/".to_string()));
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap();
    assert!(
        user.split(':')
            .all(|id| id.parse::<u32>().is_ok_and(|n| n > 0)),
        "{user}"
    );
    let entry = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .unwrap();
    let entry: Vec<String> = serde_json::from_str(entry).unwrap();
    assert_eq!(entry, ["python", "-m", "tandem_dynamo"]);
}
