//! What an operator watches and who may call: the frontend's and the workers' Prometheus
//! series (every one the shipped Grafana dashboard queries exists on a running deployment),
//! and the API key (401 without it, the probes' paths open).

mod common;

use std::collections::BTreeSet;

use common::http::{metrics_text, wait_health};
use common::procs::{demo_worker, free_port, spawn};
use serde_json::{Value, json};

/// Every `tandem:` series a dashboard expression names.
fn dashboard_series() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/tandem-dashboard.json"
    );
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("tandem:") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                names.insert(name);
            }
        }
    }
    names
}

/// The series of an exposition text (names of its sample lines).
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_reads_exists() {
    let (pm, dm) = (free_port(), free_port());
    let p = demo_worker(&["--role", "prefill", "--metrics-port", &pm.to_string()]);
    let d = demo_worker(&[
        "--role",
        "decode",
        "--no-prefix-caching",
        "--metrics-port",
        &dm.to_string(),
    ]);
    let workers = [p.addr.clone(), d.addr.clone()];
    let fe = spawn(&[
        "frontend",
        "--port",
        "0",
        "--prefill-workers",
        &workers[0],
        "--decode-workers",
        &workers[1],
    ]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    let body = json!({"model": "tandem-demo", "prompt": (0..40).collect::<Vec<u32>>(),
        "max_tokens": 6, "temperature": 0, "ignore_eos": true});
    for _ in 0..2 {
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/completions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut have = series(&metrics_text(&base).await);
    for port in [pm, dm] {
        have.extend(series(
            &metrics_text(&format!("http://127.0.0.1:{port}")).await,
        ));
    }
    let want = dashboard_series();
    assert!(want.len() >= 15, "{want:?}");
    let missing: Vec<_> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "the dashboard reads series nobody exports: {missing:?}"
    );
    // The numbers mean what they say: the decode worker pulled the prompts' KV twice, the
    // prefill worker served it, and both requests' tokens are counted.
    let decode = metrics_text(&format!("http://127.0.0.1:{dm}")).await;
    assert!(decode.contains("tandem:kv_transfers_total 2"), "{decode}");
    let prefill = metrics_text(&format!("http://127.0.0.1:{pm}")).await;
    assert!(
        prefill.contains("tandem:prompt_tokens_total 80"),
        "{prefill}"
    );
    assert!(
        metrics_text(&base)
            .await
            .contains("tandem:generation_tokens_total{model=\"tandem-demo\"} 12")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_guards_the_api_and_leaves_the_probes_open() {
    let key = "s3cret-key-for-the-test";
    let w = demo_worker(&[]);
    let fe = spawn(&[
        "frontend",
        "--port",
        "0",
        "--workers",
        &w.addr,
        "--api-key",
        key,
    ]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    let http = reqwest::Client::new();
    let body = json!({"model": "tandem-demo", "prompt": "In the beginning", "max_tokens": 2});
    let send = |auth: Option<String>| {
        let mut r = http.post(format!("{base}/v1/completions")).json(&body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for auth in [
        None,
        Some("Bearer wrong-key-of-the-same-len".into()),
        Some("Bearer short".into()),
        Some(format!("Basic {key}")),
    ] {
        let r = send(auth.clone()).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], 401, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("API key"));
    }
    let r = send(Some(format!("Bearer {key}"))).await.unwrap();
    assert_eq!(r.status(), 200);
    // The other API routes want it too.
    let models = http.get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(models.status(), 401);
    for path in ["/health", "/ping", "/metrics"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} needs no key");
    }
    // tandem replay sends the key it is given.
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    std::fs::write(&trace, common::trace_line(0, 30, 3, &[0])).unwrap();
    let (ok, stdout, stderr) = common::procs::run(&[
        "replay",
        "--trace",
        trace.to_str().unwrap(),
        "--url",
        &base,
        "--api-key",
        key,
    ]);
    assert!(ok && stdout.contains("1 (0)"), "{stdout}\n{stderr}");
}
