//! The simulator's serving-path model against a toy of known cost: workers whose every step
//! costs 40 ms of CPU on the engine thread and whose every token costs 5 ms of CPU on the
//! gRPC thread that sends it (hidden test hooks), on the same pinned core. `tandem profile`
//! must recover both within 5%, and `tandem calibrate` must find the simulator, run on that
//! profile, within 5% of real runs of both reference deployments.

mod common;

use common::procs::run;
use serde_json::Value;

const STEP_CPU_MS: f64 = 40.0;
const TOKEN_CPU_MS: f64 = 5.0;
/// The workers' model flags, the toy's and the model's own profile alike.
const MODEL: [&str; 6] = [
    "--block-size",
    "16",
    "--kv-cache-gib",
    "0.05",
    "--max-model-len",
    "1024",
];
/// Every prompt's length: the first point of the profile's prefill grid.
const PROMPT: u64 = 2;

fn json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_known_serving_path_is_measured_and_reproduced() {
    // A slow spell of a shared machine under a profile sample can put a calibration off by
    // itself: a second one is allowed, and must meet every bound.
    if let Err(first) = calibrate_the_toy() {
        eprintln!("the first calibration missed: {first}\nagain");
        if let Err(second) = calibrate_the_toy() {
            panic!("{second}");
        }
    }
}

/// The demo model's own decode step of one sequence, ms, with the toy's flags but no hooks.
fn own_decode_step_ms(dir: &std::path::Path) -> f64 {
    let out = dir.join("own.json");
    let flags = ["--cpus", "0", "--points", "2", "--no-serving", "--out"];
    let (ok, stdout, stderr) =
        run(&[&["profile"][..], &MODEL, &flags, &[out.to_str().unwrap()]].concat());
    assert!(ok, "{stdout}\n{stderr}");
    json(&out)["measured"]["decode"]["seconds"][0][0]
        .as_f64()
        .unwrap()
        * 1e3
}

/// One calibration of the toy; why it misses a bound, if it does.
fn calibrate_the_toy() -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    // Requests 500 ms apart, each its own prompt of 2 tokens: the known costs make up the
    // latencies, not the order in which a burst's requests reach the workers, nor the demo
    // model's own prefill. With prompts of 2 to 4 blocks that prefill was a third of the first
    // step, and the profile priced it 5-8% off, either way, in a third of CI runs: the grid is
    // coarse there and the model far from linear (16 tokens cost about what 40 do), and a
    // prefill after the worker idled runs slower than the profile's back-to-back steps (40
    // tokens: 4 ms slower after 2 s idle than after 0.7 s). 2 tokens is the grid's first
    // point (asserted below), and the workers idle 100 ms between requests.
    let trace = dir.path().join("trace.jsonl");
    let lines: Vec<String> = (0..16u64)
        .map(|i| {
            format!(
                r#"{{"timestamp": {}, "input_length": {PROMPT}, "output_length": 8, "hash_ids": [{i}]}}"#,
                i * 500,
            )
        })
        .collect();
    std::fs::write(&trace, lines.join("\n")).unwrap();
    let out = dir.path().join("out");
    let args = [
        // Two runs of each side: a real prefill step varies by a few percent from run to
        // run, which is most of the bound.
        "--runs",
        "2",
        // A coarse grid keeps the profile short; its first prefill point is the prompts'.
        "--points",
        "3",
        // Three passes of the profile, the median a point: one sample of a decode step of one
        // came out at 67 ms instead of 41 once, a slow spell caught whole.
        "--profile-repeats",
        "3",
        // No steps load: its level is of prompts of hundreds of tokens, the toy's are 2, and
        // its 64 requests of 40 ms steps would double the test's time. tests/calibrate.rs
        // measures the level.
        "--steps-bursts",
        "0",
        "--trace",
        trace.to_str().unwrap(),
        "--trace-block-size",
        "16",
        "--debug-step-cpu-us",
        &((STEP_CPU_MS * 1e3) as u64).to_string(),
        "--debug-token-cpu-us",
        &((TOKEN_CPU_MS * 1e3) as u64).to_string(),
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, stdout, stderr) = run(&[&["calibrate"][..], &MODEL, &args].concat());
    assert!(ok, "{stdout}\n{stderr}");

    // The profile recovers both costs: a decode step of one sequence is the step's CPU on top
    // of the demo model's own decode step (0.7 to 0.9 ms on one machine this test ran on, 1.1 to
    // 2.3 ms on another: measured, not assumed), the worker's CPU per token the token's.
    let p = json(&out.join("profile.json"));
    let step_ms = p["measured"]["decode"]["seconds"][0][0].as_f64().unwrap() * 1e3;
    let own_ms = own_decode_step_ms(dir.path());
    if ((step_ms - own_ms) / STEP_CPU_MS - 1.0).abs() >= 0.05 {
        return Err(format!(
            "a decode step of one: {step_ms} ms, the model's own {own_ms} ms"
        ));
    }
    let prefill_points = p["measured"]["prefill"]["x"].as_array().unwrap();
    assert!(
        prefill_points
            .iter()
            .any(|x| x.as_f64() == Some(PROMPT as f64)),
        "the profile's prefill grid {prefill_points:?} has no point at the prompts' length"
    );
    let token_ms = p["serving"]["worker_cpu_per_token_s"].as_f64().unwrap() * 1e3;
    if (token_ms / TOKEN_CPU_MS - 1.0).abs() >= 0.05 {
        return Err(format!("the worker's CPU per token: {token_ms} ms"));
    }

    // The simulator on that profile reproduces the real runs.
    let report = json(&out.join("calibrate.json"));
    for r in report["rows"].as_array().unwrap() {
        let metric = r["metric"].as_str().unwrap();
        if !["TTFT mean (ms)", "latency mean (ms)", "ITL mean (ms)"].contains(&metric) {
            continue;
        }
        for d in ["agg-rr", "disagg-kv"] {
            let e = r[d]["error_pct"].as_f64().unwrap();
            if e.abs() > 5.0 {
                return Err(format!("{d} {metric}: {e:+.1}%\n{stdout}"));
            }
        }
    }
    eprintln!("{stdout}");
    Ok(())
}
