//! KV transfer through NVIDIA NIXL (`--kv-transport nixl`) between real worker processes on
//! loopback, with the NIXL runtime of the nixl-cu13 wheel (installed into the test venv; the
//! harness puts it on the workers' LD_LIBRARY_PATH). Built with `--features nixl` (`.ci/run`
//! runs it); without the feature, asking for NIXL is refused at start.

mod common;

#[cfg(not(feature = "nixl"))]
#[test]
fn without_the_feature_nixl_is_refused_at_start() {
    let (ok, _, stderr) = common::procs::run(&["worker", "--kv-transport", "nixl", "--port", "0"]);
    assert!(!ok);
    assert!(stderr.contains("built without NIXL"), "{stderr}");
}

#[cfg(feature = "nixl")]
mod with_nixl {
    use std::time::Duration;

    use super::common;
    use super::common::grpc::{client, load};
    use super::common::http::{completion, wait_health, wait_indexed};
    use super::common::procs::{DEMO, Proc, disagg_frontend, serve, spawn_with_env};
    use super::common::python::nixl_libs;
    use serde_json::{Value, json};
    use tandem::server::proto::LoadResponse;

    fn lib_path() -> String {
        nixl_libs().display().to_string()
    }

    fn worker(role: &str, transport: &str) -> Proc {
        worker_tp(role, transport, "1")
    }

    fn worker_tp(role: &str, transport: &str, tp: &str) -> Proc {
        let lib = lib_path();
        let mut args = vec![
            "worker",
            "--role",
            role,
            "--kv-transport",
            transport,
            "--tp",
            tp,
        ];
        args.extend_from_slice(DEMO);
        spawn_with_env(&args, &[("LD_LIBRARY_PATH", &lib)])
    }

    fn frontend(p: &Proc, d: &Proc) -> (Proc, String) {
        let fe = disagg_frontend(&[&p.addr], &d.addr, &["--router", "kv"]);
        let base = format!("http://{}", fe.addr);
        (fe, base)
    }

    async fn complete(base: &str, prompt: &[u32]) -> Value {
        let body = json!({"model": "tandem-demo", "prompt": prompt, "max_tokens": 8,
            "temperature": 0, "ignore_eos": true, "logprobs": 1});
        completion(base, &body).await
    }

    fn text(v: &Value) -> String {
        v["choices"][0]["text"].as_str().unwrap().to_string()
    }

    /// Waits until the decode worker has counted `n` pulls (its counters land just after the
    /// response).
    async fn pulls(d: &str, n: u64) -> LoadResponse {
        for _ in 0..100 {
            let l = load(d).await;
            if l.kv_pulls >= n {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        load(d).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disaggregated_output_over_nixl_equals_aggregated() {
        let (_agg, agg) = serve(&["--workers", "1"]);
        let (p, d) = (worker("prefill", "nixl"), worker("decode", "nixl"));
        let (_fe, dis) = frontend(&p, &d);
        wait_health(&agg, 200).await;
        wait_health(&dis, 200).await;
        let base: Vec<u32> = (0..80).map(|i| (i * 7 + 3) % 256).collect();
        for i in 0..3usize {
            let mut prompt = base[..40 + 12 * i].to_vec();
            prompt.extend([250, 251]);
            let (a, b) = (complete(&agg, &prompt).await, complete(&dis, &prompt).await);
            assert_eq!(text(&a), text(&b), "prompt {i}: {a} vs {b}");
        }
        // A prefix hit on the prefill worker: its cached blocks are read in place too.
        wait_indexed(&dis, 4).await;
        let prompt = [base[..72].to_vec(), vec![250, 251]].concat();
        let (a, b) = (complete(&agg, &prompt).await, complete(&dis, &prompt).await);
        assert!(
            b["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap()
                > 0,
            "{b}"
        );
        assert_eq!(text(&a), text(&b));
        // Every pull went through NIXL, none fell back, and the prefill worker released
        // every hold.
        let l = pulls(&d.addr, 4).await;
        assert_eq!(
            (l.kv_pulls, l.kv_pulls_nixl, l.kv_nixl_fallbacks),
            (4, 4, 0)
        );
        assert!(l.kv_pulled_bytes > 0);
        let mut pc = client(&p.addr).await;
        assert_eq!(common::grpc::used_when_idle(&mut pc, 0).await, 0);
        assert_eq!(
            load(&p.addr).await.kv_served_bytes,
            0,
            "nothing went over PullKv"
        );
    }

    /// Two tensor-parallel ranks per worker: each rank's blocks are read from the source's
    /// same rank.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tensor_parallel_workers_read_rank_to_rank() {
        let (_agg, agg) = serve(&["--workers", "1", "--tp", "2"]);
        let (p, d) = (
            worker_tp("prefill", "nixl", "2"),
            worker_tp("decode", "nixl", "2"),
        );
        let (_fe, dis) = frontend(&p, &d);
        wait_health(&agg, 200).await;
        wait_health(&dis, 200).await;
        let prompt: Vec<u32> = (0..52).map(|i| (i * 11 + 5) % 256).collect();
        let (a, b) = (complete(&agg, &prompt).await, complete(&dis, &prompt).await);
        assert_eq!(text(&a), text(&b), "{a} vs {b}");
        let l = pulls(&d.addr, 1).await;
        assert_eq!(
            (l.kv_pulls, l.kv_pulls_nixl, l.kv_nixl_fallbacks),
            (1, 1, 0)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tcp_only_source_is_pulled_over_tcp() {
        let (p, d) = (worker("prefill", "tcp"), worker("decode", "nixl"));
        let (_fe, dis) = frontend(&p, &d);
        wait_health(&dis, 200).await;
        let v = complete(&dis, &(0..40).collect::<Vec<u32>>()).await;
        assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
        let l = pulls(&d.addr, 1).await;
        assert_eq!(
            (l.kv_pulls, l.kv_pulls_nixl, l.kv_nixl_fallbacks),
            (1, 0, 0)
        );
        assert!(load(&p.addr).await.kv_served_bytes > 0);
    }

    /// A worker over tests/fixtures/qwen3-32b-kv (Qwen3-32B's KV geometry, tiny layers): a
    /// 512-token prompt is 256 MiB of KV, a read long enough to kill its source in the middle
    /// of.
    fn qwen_kv_worker(role: &str) -> Proc {
        let lib = lib_path();
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/qwen3-32b-kv");
        spawn_with_env(
            &[
                "worker",
                "--role",
                role,
                "--kv-transport",
                "nixl",
                "--model",
                model,
                "--load-format",
                "dummy",
                "--block-size",
                "64",
                "--kv-cache-gib",
                "0.6",
                "--max-model-len",
                "1024",
                "--kv-hold-timeout",
                "60",
            ],
            &[("LD_LIBRARY_PATH", &lib)],
        )
    }

    /// The NIXL agent name the worker at `addr` offers in its layout.
    async fn agent_of(addr: &str) -> String {
        let layout = client(addr)
            .await
            .get_kv_layout(tandem::server::proto::KvLayoutRequest {})
            .await
            .unwrap()
            .into_inner();
        layout.nixl.expect("a NIXL worker offers NIXL").agent_name
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_killed_mid_read_fails_the_request_and_a_restarted_one_is_read_afresh() {
        use super::common::grpc::{greedy, request, used_when_idle};
        use tandem::server::proto::DecodeRequest;
        let (mut p, d) = (qwen_kv_worker("prefill"), qwen_kv_worker("decode"));
        let prompt: Vec<u32> = (0..512).map(|t| (t * 7 + 1) % 256).collect();
        let decode_of = |pre: tandem::server::proto::PrefillResponse, id: &str| DecodeRequest {
            request: Some(request(id, prompt.clone(), greedy(2))),
            first_token: pre.first_token,
            source_addr: pre.transfer_addr,
            source_engine_id: pre.engine_id,
            source_block_ids: pre.block_ids,
        };
        let mut pc = client(&p.addr).await;
        let first_agent = agent_of(&p.addr).await;
        let pre = pc
            .prefill(request("doomed", prompt.clone(), greedy(2)))
            .await
            .unwrap()
            .into_inner();
        let daddr = d.addr.clone();
        let decode = decode_of(pre, "doomed");
        let pulling = tokio::spawn(async move {
            let mut dc = client(&daddr).await;
            dc.decode(decode).await.map(|_| ())
        });
        // Kill the source as soon as the decode worker starts pulling.
        let mut seen = false;
        for _ in 0..15_000 {
            if load(&d.addr).await.kv_pulls_in_flight > 0 {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(seen, "the decode worker never started the pull");
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        let err = pulling.await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
        assert!(
            err.message()
                .starts_with(tandem::server::transfer::KV_SOURCE_LOST),
            "{err:?}"
        );
        // The failed read fell back to TCP, which found no source either; the reservation
        // went back to the pool.
        let l = load(&d.addr).await;
        assert_eq!((l.kv_pulls, l.kv_nixl_fallbacks), (0, 1), "{l:?}");
        let mut dc = client(&d.addr).await;
        assert_eq!(used_when_idle(&mut dc, 0).await, 0);

        // A restarted source is a new agent: the decode worker loads its metadata and reads
        // from it, never through the dead one's.
        let p2 = qwen_kv_worker("prefill");
        let mut pc = client(&p2.addr).await;
        assert_ne!(agent_of(&p2.addr).await, first_agent);
        let pre = pc
            .prefill(request("again", prompt.clone(), greedy(2)))
            .await
            .unwrap()
            .into_inner();
        let mut s = dc
            .decode(decode_of(pre, "again"))
            .await
            .unwrap()
            .into_inner();
        let mut tokens = 0;
        while let Some(r) = s.message().await.unwrap() {
            tokens += usize::from(r.token_id.is_some());
        }
        assert_eq!(tokens, 1, "the token after the prefill's");
        let l = pulls(&d.addr, 1).await;
        assert_eq!(
            (l.kv_pulls, l.kv_pulls_nixl, l.kv_nixl_fallbacks),
            (1, 1, 1)
        );
        assert_eq!(used_when_idle(&mut dc, 0).await, 0);
        assert_eq!(used_when_idle(&mut pc, 0).await, 0);
    }

    #[test]
    fn without_the_runtime_the_worker_says_what_to_install() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["worker", "--kv-transport", "nixl", "--port", "0"])
            .args(DEMO)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // An error exit, not the stub's abort.
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("NIXL runtime cannot be loaded") && stderr.contains("nixl-cu13"),
            "{stderr}"
        );
    }
}
