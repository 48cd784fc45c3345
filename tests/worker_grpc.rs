//! The worker's gRPC service, as a real process on loopback.

mod common;

use common::grpc::{client, greedy, request, used_when_idle};
use common::procs::demo_worker;
use tandem::wire::proto::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_load_events_abort_and_cancel() {
    // 20 ms a step: a 400-token request would run for 8 s, past every wait below, unless
    // it is aborted.
    let w = demo_worker(&["--debug-step-delay-ms", "20"]);
    let mut c = client(&w.addr).await;
    let info = c
        .model_info(ModelInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.block_size, info.max_model_len, info.model.as_str()),
        (16, 512, "tandem-demo")
    );
    assert!(c.health(HealthRequest {}).await.unwrap().into_inner().ready);

    // Greedy generation equals `tandem generate` on the same model.
    let prompt: Vec<u32> = (0..40).map(|i| (i * 7) % 256).collect();
    let mut s = c
        .generate(request("a", prompt.clone(), greedy(6)))
        .await
        .unwrap()
        .into_inner();
    let mut tokens = Vec::new();
    let mut last = None;
    while let Some(r) = s.message().await.unwrap() {
        tokens.extend(r.token_id);
        last = Some(r);
    }
    let last = last.unwrap();
    assert_eq!(
        (last.finish_reason.as_str(), last.prompt_tokens),
        ("length", 40)
    );
    let ids: Vec<String> = prompt.iter().map(u32::to_string).collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "generate",
            "--prompt-ids",
            &ids.join(","),
            "--max-tokens",
            "6",
            "--temperature",
            "0",
            "--ignore-eos",
            "--json",
            "--block-size",
            "16",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<u32> = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(tokens, want);

    // A new subscriber gets a snapshot holding the prompt's two full blocks (and more as they fill).
    let mut ev = c
        .subscribe_kv_events(SubscribeKvEventsRequest { resume_after: None })
        .await
        .unwrap()
        .into_inner();
    let snap = ev.message().await.unwrap().unwrap();
    assert!(snap.snapshot);
    let mut hashes = Vec::new();
    tandem::kv::hash::extend_sequence_hashes(&mut hashes, &prompt, 16);
    let stored: Vec<u64> = snap
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Some(kv_event::Event::Stored(s)) => Some(s.block_hashes.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        hashes.iter().all(|h| stored.contains(h)),
        "{stored:?} lacks {hashes:?}"
    );
    // Live events follow, numbered after the snapshot.
    let mut s = c
        .generate(request("b", (0..33).map(|i| 100 + i).collect(), greedy(1)))
        .await
        .unwrap()
        .into_inner();
    while s.message().await.unwrap().is_some() {}
    let live = ev.message().await.unwrap().unwrap();
    assert!(!live.snapshot && live.sequence > snap.sequence);
    // Resuming after the snapshot replays exactly what came after it.
    let mut again = c
        .subscribe_kv_events(SubscribeKvEventsRequest {
            resume_after: Some(snap.sequence),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.message().await.unwrap().unwrap(), live);

    // A cancelled stream aborts its request and frees its blocks, long before the 400 tokens
    // it asked for (20 ms a step here).
    let before = c.load(LoadRequest {}).await.unwrap().into_inner();
    let mut s = c
        .generate(request("c", (0..50).collect(), greedy(400)))
        .await
        .unwrap()
        .into_inner();
    s.message().await.unwrap().unwrap();
    drop(s);
    assert_eq!(used_when_idle(&mut c, 0).await, 0);
    let after = c.load(LoadRequest {}).await.unwrap().into_inner();
    assert_eq!(after.aborted_requests, before.aborted_requests + 1);
    let made = after.generated_tokens - before.generated_tokens;
    assert!(made < 100, "{made} of 400 tokens were generated");

    // Abort by id ends the stream with finish_reason "abort".
    let mut s = c
        .generate(request("d", (0..50).collect(), greedy(400)))
        .await
        .unwrap()
        .into_inner();
    s.message().await.unwrap().unwrap();
    assert!(
        c.abort(AbortRequest {
            request_id: "d".into()
        })
        .await
        .unwrap()
        .into_inner()
        .found
    );
    let mut finish = String::new();
    while let Some(r) = s.message().await.unwrap() {
        finish = r.finish_reason;
    }
    assert_eq!(finish, "abort");
    assert!(
        !c.abort(AbortRequest {
            request_id: "d".into()
        })
        .await
        .unwrap()
        .into_inner()
        .found
    );
    assert_eq!(used_when_idle(&mut c, 0).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_invalid_argument() {
    let w = demo_worker(&[]);
    let mut c = client(&w.addr).await;
    let cases = [
        request(
            "t",
            vec![1, 2],
            SamplingParams {
                temperature: -1.0,
                ..greedy(4)
            },
        ),
        request(
            "p",
            vec![1, 2],
            SamplingParams {
                top_p: 1.5,
                ..greedy(4)
            },
        ),
        request(
            "m",
            vec![1, 2],
            SamplingParams {
                max_tokens: 0,
                ..greedy(4)
            },
        ),
        request("long", vec![1; 600], greedy(4)),
        request("empty", vec![], greedy(4)),
        request("vocab", vec![1, 9999], greedy(4)),
        GenerateRequest {
            request_id: "nosampling".into(),
            prompt_token_ids: vec![1],
            sampling: None,
            timeline: false,
        },
    ];
    for req in cases {
        let id = req.request_id.clone();
        let status = c
            .generate(req)
            .await
            .err()
            .unwrap_or_else(|| panic!("{id} should fail"));
        assert_eq!(status.code(), Code::InvalidArgument, "{id}: {status:?}");
    }
    // A duplicate live id is refused.
    let mut s = c
        .generate(request("dup", vec![1, 2, 3], greedy(300)))
        .await
        .unwrap()
        .into_inner();
    s.message().await.unwrap().unwrap();
    assert_eq!(
        c.generate(request("dup", vec![1], greedy(1)))
            .await
            .err()
            .unwrap()
            .code(),
        Code::AlreadyExists
    );
    drop(s);
    assert_eq!(used_when_idle(&mut c, 0).await, 0);
}
