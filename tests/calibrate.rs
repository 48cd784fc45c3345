//! The simulator against the real system, at a reduced size (the full check is a benchmark,
//! BENCHMARKS.md): `tandem calibrate` profiles a CPU worker, runs both reference deployments
//! for real and simulated, and must produce its error table; the planner's sweep; and the
//! profile and trace flags' bad input.

mod common;

use common::procs::run;
use serde_json::Value;
use tandem::replay::metrics::RequestRecord;
use tandem::timeline::TTFT_SEGMENTS;

/// A small calibration: a small KV cache and context, one real run, a coarse profile.
const SMALL: [&str; 15] = [
    "calibrate",
    "--block-size",
    "16",
    "--kv-cache-gib",
    "0.05",
    "--max-model-len",
    "1024",
    "--runs",
    "1",
    "--points",
    "2",
    "--profile-repeats",
    "1",
    "--speedup",
    "2",
];

/// Its trace slice: 30 requests, scaled down.
const SLICE: [&str; 8] = [
    "--max-requests",
    "30",
    "--length-scale",
    "0.03125",
    "--max-input-tokens",
    "600",
    "--max-output-tokens",
    "12",
];

fn json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn calibrate_measures_simulates_and_tabulates_both_deployments() {
    let dir = tempfile::tempdir().unwrap();
    // Two passes of the profile, merged.
    let mut small = SMALL;
    let k = small
        .iter()
        .position(|&a| a == "--profile-repeats")
        .unwrap();
    small[k + 1] = "2";
    let (ok, stdout, stderr) =
        run(&[&small[..], &SLICE, &["--out", dir.path().to_str().unwrap()]].concat());
    assert!(ok, "{stdout}\n{stderr}");
    for metric in [
        "TTFT mean (ms)",
        "ITL p90 (ms)",
        "latency p50 (ms)",
        "goodput",
        "hit rate",
    ] {
        assert!(stdout.contains(metric), "{metric} missing:\n{stdout}");
    }
    // Where the time goes: every segment, real against simulated, both deployments.
    for line in [
        "where the time goes",
        "engine queue",
        "decode: KV pull",
        "= TTFT",
        "= latency",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
    let report = json(&dir.path().join("calibrate.json"));
    // The real steps priced by the profile, by kind; the simulated ones beside them.
    assert!(
        stdout.contains("steps against the profile's price"),
        "{stdout}"
    );
    for d in ["agg-rr", "disagg-kv"] {
        for side in ["real", "simulated"] {
            let all = &report["steps"][d][side]["all"]["all"];
            assert!(all["steps"].as_u64().unwrap() > 0, "{d} {side}: {all}");
            assert!(all["median_duration_over_price"].as_f64().unwrap() > 0.0);
        }
    }
    // The diagnosis: each deployment's steps at its real steps' level over its simulated
    // ones, by the two kinds that split every step, and the table again at that level.
    for d in ["agg-rr", "disagg-kv"] {
        for (kind, factor) in [("with prompts", "prefill"), ("decodes only", "decode")] {
            let median =
                |side: &str| report["steps"][d][side][kind]["all"]["duration_over_price"].as_f64();
            let want = match (median("real"), median("simulated")) {
                (Some(r), Some(s)) => r / s,
                _ => 1.0,
            };
            let got = report["steps_over_simulated"][d][factor].as_f64().unwrap();
            assert!(
                (got / want - 1.0).abs() < 1e-9,
                "{d} {kind}: {got} against {want}"
            );
        }
    }
    assert!(stdout.contains("at the real runs' step level"), "{stdout}");
    // The steps fitted as levels plus a fixed cost after an idle engine, real and simulated.
    assert!(stdout.contains("steps after an idle engine"), "{stdout}");
    for d in ["agg-rr", "disagg-kv"] {
        for side in ["real", "simulated"] {
            let f = &report["steps_fit"][d][side];
            assert!(f["resumed"].as_u64().unwrap() > 0, "{d} {side}: {f}");
            assert!(f["resume_s"].as_f64().unwrap() >= 0.0, "{d} {side}: {f}");
        }
    }
    // The profile passes timed the steps under serving on each deployment's steps load.
    assert!(stdout.contains("steps under serving"), "{stdout}");
    assert_eq!(report["rows_at_step_level"].as_array().unwrap().len(), 11);
    // The machine's speed, read before and after each of the 2 passes and each of the 2
    // real runs, and the table again with the profile at the runs' speed.
    let refs = json(&dir.path().join("references.json"));
    assert_eq!(refs["passes"].as_array().unwrap().len(), 4, "{refs}");
    assert_eq!(refs["runs"].as_array().unwrap().len(), 4, "{refs}");
    assert!(stderr.contains("reference steps (median ms"), "{stderr}");
    let level = &report["runs_over_profile_speed"];
    for k in ["prefill", "decode"] {
        let x = level[k].as_f64().unwrap();
        assert!(x.is_finite() && x > 0.0, "{level}");
    }
    assert!(stdout.contains("at the runs' speed"), "{stdout}");
    assert_eq!(report["rows_at_runs_speed"].as_array().unwrap().len(), 11);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 11, "{report}");
    for r in rows {
        for d in ["agg-rr", "disagg-kv"] {
            let real = r[d]["real"].as_f64().unwrap();
            let sim = r[d]["simulated"].as_f64().unwrap();
            assert!(
                real.is_finite() && real >= 0.0 && sim.is_finite() && sim >= 0.0,
                "{r}"
            );
        }
        assert!(["yes", "no", "noise"].contains(&r["ab_direction_agrees"].as_str().unwrap()));
    }
    // Latencies are positive, real and simulated (the metrics were read, not defaulted).
    assert!(rows[0]["agg-rr"]["real"].as_f64().unwrap() > 0.0);
    assert!(rows[0]["disagg-kv"]["simulated"].as_f64().unwrap() > 0.0);
    // The measured profile it wrote is one `tandem simulate --profile` reads: the median of
    // its two passes (their mean), point by point.
    let profile = dir.path().join("profile.json");
    let p = json(&profile);
    assert!(stderr.contains("2 profile passes priced"), "{stderr}");
    let passes: Vec<Value> = (1..=2)
        .map(|k| json(&dir.path().join(format!("profile_pass_{k}.json"))))
        .collect();
    let seconds = |v: &Value, grid: &str| -> Vec<f64> {
        v["measured"][grid]["seconds"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    for grid in ["prefill", "decode", "mixed"] {
        let (a, b, m) = (
            seconds(&passes[0], grid),
            seconds(&passes[1], grid),
            seconds(&p, grid),
        );
        assert_eq!(m.len(), a.len());
        for i in 0..m.len() {
            let mean = (a[i] + b[i]) / 2.0;
            assert!(
                (m[i] / mean - 1.0).abs() < 1e-9,
                "{grid}: {a:?} {b:?} {m:?}"
            );
        }
    }
    assert!(p["name"].as_str().unwrap().ends_with("median of 2 passes"));
    assert!(
        p["measured"]["prefill"]["seconds"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    let (ok, stdout, stderr) = run(&[
        "simulate",
        "--profile",
        profile.to_str().unwrap(),
        "--max-requests",
        "20",
        "--block-size",
        "16",
        "--max-model-len",
        "1024",
        "--workers",
        "2",
        "--prefill",
        "1",
        "--decode",
        "1",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("measured by tandem profile"), "{stderr}");

    let segments = &report["segments_ms"];
    for d in ["agg-rr", "disagg-kv"] {
        for side in ["real", "simulated"] {
            assert!(
                segments[d][side]["timelines"].as_u64().unwrap() > 0,
                "{segments}"
            );
        }
    }
    assert!(
        segments["disagg-kv"]["real"]["decode: KV pull"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    // Each request's segments add up to the TTFT and latency its client measured, real and
    // simulated.
    for file in [
        "agg-rr_real_1.jsonl",
        "disagg-kv_real_1.jsonl",
        "agg-rr_sim_1.jsonl",
        "disagg-kv_sim_1.jsonl",
    ] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let mut timed = 0;
        for line in text.lines() {
            let rec: RequestRecord = serde_json::from_str(line).unwrap();
            let (Some(t), Some(ttft), Some(latency)) = (&rec.timeline, rec.ttft_ms, rec.latency_ms)
            else {
                continue;
            };
            let s = t.segments().unwrap_or_else(|| panic!("{file}: {line}"));
            let sum: f64 = s[..TTFT_SEGMENTS].iter().sum();
            assert!(
                (sum - ttft).abs() < 1.0,
                "{file}: TTFT {ttft} vs {sum}: {s:?}"
            );
            let sum: f64 = s.iter().sum();
            assert!(
                (sum - latency).abs() < 1.0,
                "{file}: latency {latency} vs {sum}"
            );
            timed += 1;
        }
        assert!(timed > 0, "{file} has no timelines");
    }
    // The serving path was measured: its latencies and CPU terms.
    let serving = &p["serving"];
    for k in [
        "to_worker_s",
        "relay_s",
        "worker_cpu_per_token_s",
        "shared_cpu_per_token_s",
        "prefill_step_level",
        "decode_step_level",
    ] {
        assert!(serving[k].as_f64().unwrap() > 0.0, "{k}: {serving}");
    }
    assert!(
        serving["engine_gap_s"].as_f64().unwrap() >= 0.0,
        "{serving}"
    );
    for s in [serving, &p["serving_disagg"]] {
        assert!(s["engine_resume_s"].as_f64().unwrap() >= 0.0, "{s}");
    }
    // And on the disaggregated deployment, with the decode call and the roles' CPU.
    let disagg = &p["serving_disagg"];
    for k in [
        "to_worker_s",
        "decode_call_s",
        "worker_cpu_per_request_s",
        "worker_cpu_per_token_s",
        "shared_cpu_per_request_s",
        "prefill_step_level",
        "decode_step_level",
    ] {
        assert!(disagg[k].as_f64().unwrap() > 0.0, "{k}: {disagg}");
    }

    // The simulator alone reruns against the recorded real runs: the same table.
    let again = tempfile::tempdir().unwrap();
    let rerun = |slice: &[&str]| {
        run(&[
            &SMALL[..],
            slice,
            // Without --profile: that calibration's own, its passes merged again.
            &[
                "--real-from",
                dir.path().to_str().unwrap(),
                "--out",
                again.path().to_str().unwrap(),
            ],
        ]
        .concat())
    };
    let (ok, stdout, stderr) = rerun(&SLICE);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(!stderr.contains("calibrate: real"), "{stderr}");
    let second = json(&again.path().join("calibrate.json"));
    // With the references that calibration recorded.
    assert_eq!(
        second["runs_over_profile_speed"],
        report["runs_over_profile_speed"]
    );
    for (a, b) in rows.iter().zip(second["rows"].as_array().unwrap()) {
        if a["metric"].as_str().unwrap().starts_with("goodput") {
            continue;
        }
        for d in ["agg-rr", "disagg-kv"] {
            for side in ["real", "simulated"] {
                let (x, y) = (a[d][side].as_f64().unwrap(), b[d][side].as_f64().unwrap());
                assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
    // Records of another slice are refused, by name.
    let mut other = SLICE;
    other[1] = "20";
    let (ok, _, stderr) = rerun(&other);
    assert!(!ok && stderr.contains("same slice"), "{stderr}");
}

#[test]
fn the_sweep_ranks_every_split_and_agrees_with_the_ab() {
    let dir = tempfile::tempdir().unwrap();
    let (ab, plan) = (dir.path().join("ab"), dir.path().join("plan"));
    let common = ["--max-requests", "400"];
    let (ok, stdout, stderr) = run(&[
        &[
            "simulate",
            "--deployment",
            "both",
            "--out",
            ab.to_str().unwrap(),
        ][..],
        &common,
    ]
    .concat());
    assert!(ok, "{stdout}\n{stderr}");
    let (ok, stdout, stderr) = run(&[
        &["simulate", "--sweep", "--out", plan.to_str().unwrap()][..],
        &common,
    ]
    .concat());
    assert!(ok, "{stdout}\n{stderr}");
    // 16 GPUs at TP2: agg 8 and the 7 splits, each under two routers.
    let ranked = json(&plan.join("plan.json"))["ranked"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(ranked.len(), 16, "{stdout}");
    let goodput = |v: &Value| v["goodput"]["avg"].as_f64().unwrap_or(0.0);
    assert!(
        ranked
            .windows(2)
            .all(|w| goodput(&w[0]["metrics"]) >= goodput(&w[1]["metrics"])),
        "not ranked by goodput"
    );
    // The reference deployments' rows are the A/B's figures.
    let ab = json(&ab.join("ab.json"));
    for (name, label) in [
        ("baseline", "TP2 agg 8 round-robin"),
        ("disagg", "TP2 6P:2D kv"),
    ] {
        let arm = ab["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap();
        let row = ranked.iter().find(|r| r["deployment"] == label).unwrap();
        assert_eq!(arm["summary"], row["metrics"], "{label}");
    }
    for svg in ["plan_goodput.svg", "plan_ttft.svg", "plan_itl.svg"] {
        let s = std::fs::read_to_string(plan.join(svg)).unwrap();
        assert!(s.starts_with("<svg") && s.contains("6P:2D"), "{svg}");
    }
}

#[test]
fn bad_profiles_sweeps_and_trace_block_sizes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // A measured profile with an empty grid, one whose sizes do not increase, one with a
    // time that is not finite: each refused, the field named.
    let out = dir.path().to_str().unwrap();
    let (ok, _, stderr) = run(&[
        &SMALL[..],
        &[
            "--max-requests",
            "1",
            "--out",
            out,
            "--profile",
            "/nonexistent/profile.json",
        ],
    ]
    .concat());
    assert!(!ok && stderr.contains("profile.json"), "{stderr}");
    let good = tandem::sim::Profile::default_qwen3_32b_tp2_h200();
    let mut v = serde_json::to_value(&good).unwrap();
    let grid = |x: Vec<f64>, secs: Vec<Vec<f64>>| {
        serde_json::json!({"x_name": "tokens", "x": x, "y_name": "cached", "y": [0.0],
                           "seconds": secs})
    };
    v["measured"] = serde_json::json!({
        "measured_on": "test",
        "prefill": grid(vec![1.0, 2.0], vec![vec![0.001], vec![0.002]]),
        "decode": grid(vec![1.0, 2.0], vec![vec![0.001], vec![0.002]]),
        "mixed": grid(vec![1.0, 2.0], vec![vec![0.001], vec![0.002]]),
        "mixed_context": 64.0,
        "transfer_latency_s": 0.001,
        "transfer_bytes_per_s": 1e9,
    });
    let path = dir.path().join("p.json");
    // `tandem simulate` on `profile`, written to `path`: (success, stderr).
    let simulate_with = |profile: &Value| {
        std::fs::write(&path, serde_json::to_string(profile).unwrap()).unwrap();
        let (ok, _, stderr) = run(&[
            "simulate",
            "--profile",
            path.to_str().unwrap(),
            "--max-requests",
            "5",
        ]);
        (ok, stderr)
    };
    for (field, value, says) in [
        ("prefill", grid(vec![], vec![]), "axis is empty"),
        (
            "decode",
            grid(vec![2.0, 1.0], vec![vec![0.001], vec![0.002]]),
            "does not increase",
        ),
        (
            "mixed",
            grid(vec![1.0, 2.0], vec![vec![0.001], vec![-1.0]]),
            "not finite and positive",
        ),
    ] {
        let mut bad = v.clone();
        bad["measured"][field] = value;
        let (ok, stderr) = simulate_with(&bad);
        assert!(!ok && stderr.contains(says), "{field}: {stderr}");
    }
    // The well-formed one is accepted.
    let (ok, stderr) = simulate_with(&v);
    assert!(ok, "{stderr}");
    // A sweep whose TP size leaves no split, or does not divide the GPUs, is named, not run.
    let (ok, stdout, stderr) = run(&[
        "simulate",
        "--sweep",
        "--gpus",
        "2",
        "--tp",
        "2,3",
        "--max-requests",
        "20",
        "--out",
        dir.path().join("plan").to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("skipped: TP2 disaggregated"), "{stdout}");
    assert!(stdout.contains("skipped: TP3"), "{stdout}");
    let (ok, _, stderr) = run(&["simulate", "--sweep", "--gpus", "0", "--max-requests", "5"]);
    assert!(!ok && stderr.contains("nothing to plan"), "{stderr}");
    // A trace block size of 0, and one the trace's lengths do not fit.
    let (ok, _, stderr) = run(&["simulate", "--trace-block-size", "0", "--max-requests", "5"]);
    assert!(!ok && stderr.contains("--trace-block-size"), "{stderr}");
    let (ok, _, stderr) = run(&[
        "replay",
        "--trace-block-size",
        "0",
        "--url",
        "http://127.0.0.1:9",
    ]);
    assert!(!ok && stderr.contains("--trace-block-size"), "{stderr}");
    let (ok, _, stderr) = run(&["simulate", "--trace-block-size", "1", "--max-requests", "5"]);
    assert!(!ok && stderr.contains("block"), "{stderr}");
}
