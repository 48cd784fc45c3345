//! gRPC helpers for tests against tandem workers.

use std::time::Duration;

use tandem::server::proto::worker_client::WorkerClient;
use tandem::server::proto::{GenerateRequest, LoadRequest, SamplingParams};
use tonic::transport::Channel;

/// A client of the worker at `addr`.
pub async fn client(addr: &str) -> WorkerClient<Channel> {
    WorkerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
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
    }
}

/// The worker's used blocks once nothing runs or waits.
pub async fn used_when_idle(c: &mut WorkerClient<Channel>) -> u64 {
    for _ in 0..300 {
        let l = c.load(LoadRequest {}).await.unwrap().into_inner();
        if l.running == 0 && l.waiting == 0 {
            return l.used_blocks;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the worker never went idle");
}
