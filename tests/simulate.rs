//! `tandem simulate` as users run it: the reference trace through simulated deployments, the
//! A/B outputs, bad input, and agreement with a real `tandem serve` on the same small trace.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use common::http::wait_health;
use common::procs::{run, spawn};
use common::trace_line;
use serde_json::Value;
use tandem::replay::trace::{TraceRequest, reference};

/// The whole-trace simulations keep a core busy for seconds: the real-server test runs alone,
/// so that its workers answer their health checks in time.
static ALONE: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn simulate(args: &[&str]) -> (bool, String, String) {
    run(&[&["simulate"], args].concat())
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Blocks an unbounded prefix cache serves in trace order: each request's leading run of full
/// 512-token blocks seen before as full blocks, less one when that is the whole prompt (its
/// last token is always computed, to sample from).
fn reusable_blocks(trace: &[TraceRequest]) -> (usize, usize) {
    let mut seen = HashSet::new();
    let (mut hits, mut refs) = (0, 0);
    for r in trace {
        let (n, ids) = (r.input_length, &r.hash_ids);
        let full = n / 512;
        let mut k = ids[..full].iter().take_while(|h| seen.contains(*h)).count();
        if k * 512 == n {
            k -= 1;
        }
        hits += k;
        refs += ids.len();
        seen.extend(ids[..full].iter().copied());
    }
    (hits, refs)
}

#[test]
fn one_worker_with_an_unbounded_cache_reuses_what_the_trace_repeats() {
    let _alone = alone();
    let (hits, refs) = reusable_blocks(&reference().unwrap());
    // The trace README: 36.64% of block references repeat an earlier block. A prefix cache of
    // whole blocks serves all but 118 of them (partial last blocks, whole-prompt hits).
    assert_eq!(refs, 288_500);
    assert!((hits as f64 / refs as f64 - 0.3664).abs() < 0.0005);
    let dir = tempfile::tempdir().unwrap();
    // Arrivals 1000× slower than the trace: each request finishes before the next one, so
    // the cache sees the trace's order.
    let (ok, stdout, stderr) = simulate(&[
        "--deployment",
        "baseline",
        "--workers",
        "1",
        "--block-size",
        "512",
        "--kv-blocks",
        "300000",
        "--speedup",
        "0.001",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("prefix hit rate"), "{stdout}");
    let recs = records(&dir.path().join("baseline_requests.jsonl"));
    assert_eq!(recs.len(), 12_031);
    assert!(recs.iter().all(|r| r["error"].is_null()));
    let cached: u64 = recs
        .iter()
        .map(|r| r["cached_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(cached, hits as u64 * 512);
}

#[test]
fn the_ab_prints_a_table_and_writes_json_and_plots() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = simulate(&[
        "--max-requests",
        "1500",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    for row in [
        "TTFT p99 (ms)",
        "ITL p50 (ms)",
        "goodput (req/s)",
        "prefix hit rate (%)",
    ] {
        assert!(stdout.contains(row), "{stdout}");
    }
    assert!(stdout.contains("baseline") && stdout.contains("disagg"));
    let ab: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ab.json")).unwrap())
            .unwrap();
    let deps = ab["deployments"].as_array().unwrap();
    assert_eq!(deps.len(), 2);
    for d in deps {
        let s = &d["summary"];
        assert_eq!(s["request_count"]["avg"], 1500, "{d}");
        assert!(s["time_to_first_token"]["p50"].as_f64().unwrap() > 0.0);
        assert!(s["goodput"]["avg"].as_f64().is_some());
    }
    assert_eq!(deps[0]["transfers"], 0);
    assert!(deps[1]["transfers"].as_u64().unwrap() > 1400);
    // The profile that produced the run is part of it (and loads back as a profile).
    let profile = dir.path().join("profile.json");
    std::fs::write(&profile, ab["profile"].to_string()).unwrap();
    for svg in ["ttft_cdf.svg", "itl_cdf.svg"] {
        let s = std::fs::read_to_string(dir.path().join(svg)).unwrap();
        // A curve and a legend entry per deployment.
        assert!(s.starts_with("<svg"), "{svg}");
        assert!(s.matches("<polyline").count() >= 2, "{svg}");
        for d in deps {
            let name = d["name"].as_str().unwrap();
            assert!(s.contains(&format!("\n{name}\n</text>")), "{svg}: {name}");
        }
    }
    let (ok, _, stderr) = simulate(&[
        "--max-requests",
        "20",
        "--deployment",
        "disagg",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
}

#[test]
fn bad_input_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{}\nnot json\n", trace_line(0, 10, 2, &[0]))).unwrap();
    let (ok, _, stderr) = simulate(&["--trace", bad.to_str().unwrap()]);
    assert!(!ok && stderr.contains("line 2"), "{stderr}");
    let profile = dir.path().join("p.json");
    std::fs::write(&profile, "{\"name\": 1}").unwrap();
    for (args, says) in [
        (vec!["--speedup", "0"], "--speedup"),
        (vec!["--workers", "0"], "must be positive"),
        (vec!["--goodput", "ttft:3"], "goodput"),
        (vec!["--profile", profile.to_str().unwrap()], "profile"),
        (vec!["--kv-blocks", "10"], "max_model_len"),
    ] {
        // Without --trace: the built-in reference trace.
        let (ok, _, stderr) = simulate(&args);
        assert!(!ok && stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// A small trace in the Mooncake format that the demo model can serve: conversations whose
/// turns repeat their earlier blocks, one request every 500 ms.
fn small_trace() -> String {
    let mut lines = Vec::new();
    for turn in 0..3u64 {
        for conv in 0..4u64 {
            let ids: Vec<u64> = std::iter::once(0)
                .chain((0..turn).map(|t| 100 * (conv + 1) + t))
                .collect();
            let i = turn * 4 + conv;
            lines.push(trace_line(
                i * 500,
                512 * turn as usize + 300,
                3 + (i % 5) as usize,
                &ids,
            ));
        }
    }
    lines.join("\n")
}

#[test]
fn simulated_and_real_runs_agree_on_counts_and_hits() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.jsonl");
    std::fs::write(&trace, small_trace()).unwrap();
    let trace = trace.to_str().unwrap();
    // The same engine settings on both sides: 2 workers, blocks of 16 tokens. Round-robin makes
    // the same choices whatever the timing (a debug build on a busy CI machine serves slower
    // than any simulated profile), so each conversation stays on its worker on both sides.
    let s = spawn(&[
        "serve",
        "--port",
        "0",
        "--workers",
        "2",
        "--router",
        "round-robin",
        "--block-size",
        "16",
        "--max-model-len",
        "2048",
        "--kv-cache-gib",
        "0.2",
    ]);
    let base = format!("http://{}", s.addr);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(wait_health(&base, 200));
    let real_out = dir.path().join("real");
    let (ok, _, stderr) = run(&[
        "replay",
        "--trace",
        trace,
        "--url",
        &base,
        "--vocab",
        "256",
        "--out",
        real_out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let sim_out = dir.path().join("sim");
    let (ok, _, stderr) = simulate(&[
        "--trace",
        trace,
        "--deployment",
        "baseline",
        "--workers",
        "2",
        "--baseline-router",
        "round-robin",
        "--block-size",
        "16",
        "--max-model-len",
        "2048",
        "--kv-blocks",
        "4096",
        "--vocab",
        "256",
        "--out",
        sim_out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let real = records(&real_out.join("profile_export.jsonl"));
    let sim = records(&sim_out.join("baseline_requests.jsonl"));
    assert_eq!(real.len(), sim.len());
    let sum = |rs: &[Value], k: &str| -> u64 { rs.iter().map(|r| r[k].as_u64().unwrap()).sum() };
    assert!(real.iter().chain(&sim).all(|r| r["error"].is_null()));
    assert_eq!(sum(&real, "output_tokens"), sum(&sim, "output_tokens"));
    // A request's prefix was computed long before it arrives, on both sides: the same hits,
    // request by request.
    let cached = |rs: &[Value]| -> Vec<u64> {
        rs.iter()
            .map(|r| r["cached_tokens"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(cached(&real), cached(&sim));
    assert!(sum(&sim, "cached_tokens") > 0);
}

/// The DeepSeek-V3.2 preset end to end on a slice of its synthesized trace: both DEP8
/// deployments, the table and outputs, and the sweep over the 4 workers' splits.
#[test]
fn the_deepseek_preset_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ab");
    let (ok, stdout, stderr) = simulate(&[
        "--preset",
        "deepseek-v32-gb200",
        "--max-requests",
        "150",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("DEP8 on GB200"), "{stderr}");
    assert!(
        stdout.contains("TTFT p90") && stdout.contains("goodput"),
        "{stdout}"
    );
    let ab: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ab.json")).unwrap()).unwrap();
    assert_eq!(ab["profile"]["attention_dp"], 8);
    for arm in ["baseline", "disagg"] {
        let recs = records(&out.join(format!("{arm}_requests.jsonl")));
        assert_eq!(recs.len(), 150);
        assert!(recs.iter().all(|r| r["error"].is_null()), "{arm}");
    }
    // The baseline keeps no prefix cache (the recipe turns block reuse off); disagg's
    // prefill workers do, and the synthesized conversations come back to them.
    let hits = |arm: &str| {
        records(&out.join(format!("{arm}_requests.jsonl")))
            .iter()
            .map(|r| r["cached_tokens"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(hits("baseline"), 0);
    assert!(hits("disagg") > 0);
    let plan = dir.path().join("plan");
    let (ok, stdout, stderr) = simulate(&[
        "--preset",
        "deepseek-v32-gb200",
        "--max-requests",
        "60",
        "--sweep",
        "--out",
        plan.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    for split in ["agg 4", "3P:1D", "2P:2D", "1P:3D"] {
        assert!(stdout.contains(split), "{split}: {stdout}");
    }
    // A flag the preset sets cannot be given beside it.
    let (ok, _, stderr) = simulate(&["--preset", "deepseek-v32-gb200", "--workers", "3"]);
    assert!(!ok && stderr.contains("--workers"), "{stderr}");
    // A trace the recipe already derived is lengthened again, past the recipe's cap: the
    // error says what the preset does with --trace.
    let derived = dir.path().join("derived.jsonl");
    let (ok, _, stderr) = run(&[
        "trace",
        "synthesize",
        "--prefix-len-multiplier",
        "16",
        "--prompt-len-multiplier",
        "10",
        "--max-isl",
        "110000",
        "--num-requests",
        "200",
        "--out",
        derived.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = simulate(&[
        "--preset",
        "deepseek-v32-gb200",
        "--trace",
        derived.to_str().unwrap(),
        "--max-requests",
        "50",
    ]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("derives its trace from --trace")
            && stderr.contains("not one already derived")
            && stderr.contains("--max-isl"),
        "{stderr}"
    );
}

#[test]
fn model_configs_and_dp_sizes_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, r#"{"hidden_size": 1024, "vocab_size": 32000}"#).unwrap();
    let (ok, _, stderr) = simulate(&["--model-config", cfg.to_str().unwrap()]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("num_key_value_heads") && stderr.contains("n_routed_experts"),
        "{stderr}"
    );
    let ds =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/deepseek-v3.2-nvfp4/config.json");
    let ds = ds.to_str().unwrap();
    let (ok, _, stderr) = simulate(&["--model-config", ds, "--tp", "8", "--attention-dp", "3"]);
    assert!(!ok && stderr.contains("does not divide"), "{stderr}");
    let (ok, _, stderr) = simulate(&["--model-config", ds, "--tp", "8", "--attention-dp", "4"]);
    assert!(!ok && stderr.contains("DEP"), "{stderr}");
    let (ok, _, stderr) = simulate(&["--attention-dp", "2"]);
    assert!(!ok && stderr.contains("--model-config"), "{stderr}");
    // The same config as flags runs: DEP8 on GB200.
    let (ok, _, stderr) = simulate(&[
        "--model-config",
        ds,
        "--gpu",
        "gb200",
        "--tp",
        "8",
        "--attention-dp",
        "8",
        "--workers",
        "2",
        "--prefill",
        "1",
        "--decode",
        "1",
        "--max-requests",
        "40",
        "--max-model-len",
        "140000",
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("DEP8 on GB200"), "{stderr}");
}
