//! HTTP helpers for tests against a tandem frontend.

use std::time::Duration;

/// Waits until GET /health answers `status`.
pub async fn wait_health(base: &str, status: u16) {
    for _ in 0..500 {
        if let Ok(r) = reqwest::get(format!("{base}/health")).await
            && r.status().as_u16() == status
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{base}/health never answered {status}");
}

/// POSTs `body` to /v1/completions and returns the answer, which must be a 200.
pub async fn completion(base: &str, body: &serde_json::Value) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The text of GET /metrics.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Blocks the KV router has indexed, over all workers (from /metrics).
pub async fn indexed_blocks(base: &str) -> u64 {
    let text = metrics_text(base).await;
    text.lines()
        .filter(|l| {
            l.starts_with("tandem:worker{") && l.contains("quantity=\"router_indexed_blocks\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the router has indexed at least `at_least` blocks.
pub async fn wait_indexed(base: &str, at_least: u64) {
    for _ in 0..500 {
        if indexed_blocks(base).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the router never indexed {at_least} blocks");
}

/// POSTs `body` to `base + path` and returns the response body as a byte stream.
pub async fn post_stream(
    base: &str,
    path: &str,
    body: &serde_json::Value,
) -> impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + use<> {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    resp.bytes_stream()
}
