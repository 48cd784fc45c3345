//! gRPC helpers for tests against tandem workers.

use std::time::Duration;

use tandem::wire::proto::worker_client::WorkerClient;
use tandem::wire::proto::{GenerateRequest, LoadRequest, LoadResponse, SamplingParams};
use tonic::transport::Channel;

/// A client of the worker at `addr`.
pub async fn client(addr: &str) -> WorkerClient<Channel> {
    WorkerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

/// The Load answer of the worker at `addr`.
#[allow(dead_code)]
pub async fn load(addr: &str) -> LoadResponse {
    client(addr)
        .await
        .load(LoadRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Greedy sampling of exactly `max_tokens` tokens.
pub fn greedy(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        top_p: 1.0,
        repetition_penalty: 1.0,
        max_tokens,
        ignore_eos: true,
        ..Default::default()
    }
}

/// A Generate (or Prefill) request.
pub fn request(id: &str, prompt: Vec<u32>, sampling: SamplingParams) -> GenerateRequest {
    GenerateRequest {
        request_id: id.into(),
        prompt_token_ids: prompt,
        sampling: Some(sampling),
        timeline: false,
    }
}

/// The worker's used blocks once nothing runs or waits, polled until they are `want` (Load
/// reads the stats the engine publishes between commands and steps, so they trail the last
/// command a moment: a cancelled reservation is freed just after the RPC that cancelled it
/// returns). Whatever is in use when the time is up is returned.
pub async fn used_when_idle(c: &mut WorkerClient<Channel>, want: u64) -> u64 {
    let mut last = None;
    for _ in 0..300 {
        let l = c.load(LoadRequest {}).await.unwrap().into_inner();
        if l.running == 0 && l.waiting == 0 {
            if l.used_blocks == want {
                return want;
            }
            last = Some(l.used_blocks);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last.expect("the worker never went idle")
}
