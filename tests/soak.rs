//! `tandem soak` at a reduced size (the full run is a benchmark, BENCHMARKS.md): both
//! deployments, their capacity measured, twice that load, a worker killed and restarted and
//! a prefill worker killed during a KV pull; no request may be lost and no block leak.

mod common;

use serde_json::Value;

#[test]
fn a_small_soak_loses_no_request_and_leaks_no_block() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = common::procs::run(&[
        "soak",
        "--max-requests",
        "30",
        "--length-scale",
        "0.03125",
        "--max-input-tokens",
        "1000",
        "--max-output-tokens",
        "24",
        "--block-size",
        "16",
        "--kv-cache-gib",
        "0.1",
        "--max-model-len",
        "2048",
        "--levels",
        "2",
        "--probe-requests",
        "8",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("| agg | 2x") || stdout.contains("| agg | 2.0x"),
        "{stdout}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("soak.json")).unwrap())
            .unwrap();
    let deployments = report.as_array().unwrap();
    assert_eq!(deployments.len(), 2);
    for d in deployments {
        assert!(d["capacity_req_s"].as_f64().unwrap() > 0.0);
        for l in d["levels"].as_array().unwrap() {
            let failed: u64 = l["failed"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum();
            // Every request has a fate: completed, or failed with a cause.
            assert_eq!(
                l["sent"].as_u64().unwrap(),
                l["completed"].as_u64().unwrap() + failed,
                "{l}"
            );
            assert!(l["failed"].get("lost: no answer in time").is_none(), "{l}");
            for b in l["blocks_in_use_after"].as_array().unwrap() {
                assert_eq!(b["blocks"], 0, "{l}");
            }
            assert!(!l["faults"].as_array().unwrap().is_empty(), "{l}");
            assert!(l["peak_rss_mib"]["workers"].as_u64().unwrap() > 0);
        }
    }
}
