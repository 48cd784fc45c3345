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
    use tandem::wire::proto::LoadResponse;

    fn lib_path() -> String {
        nixl_libs().display().to_string()
    }

    fn worker(role: &str, transport: &str) -> Proc {
        worker_tp(role, transport, "1")
    }

    /// A demo worker of `tp` ranks that checks every pull against the source's digests.
    fn worker_tp(role: &str, transport: &str, tp: &str) -> Proc {
        worker_with(role, transport, &["--tp", tp, "--kv-verify"], &[])
    }

    fn worker_with(role: &str, transport: &str, extra: &[&str], env: &[(&str, &str)]) -> Proc {
        let lib = lib_path();
        let mut args = vec!["worker", "--role", role, "--kv-transport", transport];
        args.extend_from_slice(extra);
        args.extend_from_slice(DEMO);
        let mut env = env.to_vec();
        env.push(("LD_LIBRARY_PATH", &lib));
        spawn_with_env(&args, &env)
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

    /// A decode worker's pulls: all, through NIXL, NIXL reads that fell back to the KV
    /// socket, and pulls verified byte for byte.
    fn counts(l: &LoadResponse) -> (u64, u64, u64, u64) {
        (
            l.kv_pulls,
            l.kv_pulls_nixl,
            l.kv_nixl_fallbacks,
            l.kv_pulls_verified,
        )
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
        // Every pull went through NIXL, none fell back, each one's KV was byte for byte the
        // source's, and the prefill worker released every hold.
        let l = pulls(&d.addr, 4).await;
        assert_eq!(counts(&l), (4, 4, 0, 4), "{l:?}");
        assert!(l.kv_pulled_bytes > 0);
        let mut pc = client(&p.addr).await;
        assert_eq!(common::grpc::used_when_idle(&mut pc, 0).await, 0);
        assert_eq!(
            load(&p.addr).await.kv_served_bytes,
            0,
            "nothing went over the KV socket"
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
        assert_eq!(counts(&l), (1, 1, 0, 1), "{l:?}");
    }

    /// The interface of the default route (what a NIXL agent confined to it cannot reach
    /// loopback addresses through).
    fn default_route_interface() -> String {
        let routes = std::fs::read_to_string("/proc/net/route").unwrap();
        routes
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&"00000000"))
            .map(|f| f[0].to_string())
            .expect("a default route")
    }

    /// NIXL agents that cannot reach each other (both on UCX's TCP, the source's only on
    /// loopback, the puller's only on the default route's interface, which loopback addresses
    /// are not routed through): the read fails and the pull falls back to the KV socket,
    /// counted, and the request completes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agent_that_cannot_reach_the_source_falls_back_to_tcp() {
        let timeout = ["--kv-transfer-timeout", "5", "--kv-verify"];
        let out = default_route_interface();
        let p = worker_with(
            "prefill",
            "nixl",
            &timeout,
            &[("UCX_TLS", "tcp,self"), ("UCX_NET_DEVICES", "lo")],
        );
        let d = worker_with(
            "decode",
            "nixl",
            &timeout,
            &[("UCX_TLS", "tcp,self"), ("UCX_NET_DEVICES", &out)],
        );
        let (_fe, dis) = frontend(&p, &d);
        wait_health(&dis, 200).await;
        let v = complete(&dis, &(0..40).collect::<Vec<u32>>()).await;
        assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
        let l = pulls(&d.addr, 1).await;
        assert_eq!(counts(&l), (1, 0, 1, 1), "{l:?}");
        assert!(load(&p.addr).await.kv_served_bytes > 0);
    }

    /// A source that stops answering mid-transfer (SIGSTOP): the NIXL read times out and is
    /// cancelled, the KV socket times out too, the request fails with DATA_LOSS, and both
    /// sides free their blocks (the source when its hold expires); the next pull, once the
    /// source runs again, reads through NIXL afresh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_transfer_times_out_and_both_sides_free_their_blocks() {
        use super::common::grpc::{greedy, request, used_when_idle};
        use tandem::wire::proto::DecodeRequest;
        // UCX over TCP needs the source's progress: a stopped source stalls the read (shared
        // memory and cma would read it regardless).
        let env = [("UCX_TLS", "tcp,self")];
        let flags = ["--kv-transfer-timeout", "2", "--kv-hold-timeout", "4"];
        let (p, d) = (
            worker_with("prefill", "nixl", &flags, &env),
            worker_with("decode", "nixl", &flags, &env),
        );
        let (mut pc, mut dc) = (client(&p.addr).await, client(&d.addr).await);
        let prompt: Vec<u32> = (0..70).map(|t| (t * 3 + 1) % 256).collect();
        let decode_of = |pre: tandem::wire::proto::PrefillResponse, id: &str| DecodeRequest {
            request: Some(request(id, prompt.clone(), greedy(3))),
            first_token: pre.first_token,
            source_addr: pre.transfer_addr,
            source_engine_id: pre.engine_id,
            source_block_ids: pre.block_ids,
        };
        let run = |dc: &mut tandem::wire::proto::worker_client::WorkerClient<_>, r| {
            let mut dc = dc.clone();
            async move {
                let mut s = dc.decode(r).await?.into_inner();
                while s.message().await?.is_some() {}
                Ok::<_, tonic::Status>(())
            }
        };
        // A first pull: the decode worker knows the source's layout and agent from here on.
        let pre = pc
            .prefill(request("warm", prompt.clone(), greedy(3)))
            .await
            .unwrap()
            .into_inner();
        run(&mut dc, decode_of(pre, "warm")).await.unwrap();
        let pre = pc
            .prefill(request("stalled", prompt.clone(), greedy(3)))
            .await
            .unwrap()
            .into_inner();
        let held = pre.block_ids.len() as u64;
        let pid = p.child.id() as libc::pid_t;
        let signal = |sig| {
            // SAFETY: kill(2) on our own child's pid.
            assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        };
        signal(libc::SIGSTOP);
        let started = std::time::Instant::now();
        let err = run(&mut dc, decode_of(pre, "stalled")).await.unwrap_err();
        let took = started.elapsed();
        signal(libc::SIGCONT);
        assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
        // The stopped source stalls the read (NIXL, then the KV socket it falls back to), or,
        // where the read got through before the stop took hold, the release that must vouch
        // for it: either way the decode worker gives up within its timeout.
        let read_stalled = err.message().contains("--kv-transfer-timeout");
        assert!(
            read_stalled || err.message().contains("the release at"),
            "{err:?}"
        );
        assert!(took < Duration::from_secs(20), "gave up after {took:?}");
        let l = load(&d.addr).await;
        let expected = if read_stalled { (1, 1, 1) } else { (2, 2, 0) };
        assert_eq!(
            (l.kv_pulls, l.kv_pulls_nixl, l.kv_nixl_fallbacks),
            expected,
            "{l:?}"
        );
        assert_eq!(used_when_idle(&mut dc, 0).await, 0);
        // The source still holds the blocks until its hold expires, then frees them.
        assert!(load(&p.addr).await.used_blocks <= held);
        assert_eq!(used_when_idle(&mut pc, 0).await, 0);
        // And it serves the next pull through NIXL again.
        let pre = pc
            .prefill(request("after", prompt.clone(), greedy(3)))
            .await
            .unwrap()
            .into_inner();
        run(&mut dc, decode_of(pre, "after")).await.unwrap();
        // One more pull through NIXL than after the stall: which of its two ends it met
        // decides how many it counted (seen in CI: the read got through, then this one).
        let l = pulls(&d.addr, expected.0 + 1).await;
        assert_eq!(
            (l.kv_pulls, l.kv_pulls_nixl),
            (expected.0 + 1, expected.1 + 1),
            "{l:?}"
        );
        assert_eq!(used_when_idle(&mut pc, 0).await, 0);
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
            .get_kv_layout(tandem::wire::proto::KvLayoutRequest {})
            .await
            .unwrap()
            .into_inner();
        layout.nixl.expect("a NIXL worker offers NIXL").agent_name
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_source_killed_mid_read_fails_the_request_and_a_restarted_one_is_read_afresh() {
        use super::common::grpc::{greedy, request, used_when_idle};
        use tandem::wire::proto::DecodeRequest;
        let (mut p, d) = (qwen_kv_worker("prefill"), qwen_kv_worker("decode"));
        let prompt: Vec<u32> = (0..512).map(|t| (t * 7 + 1) % 256).collect();
        let decode_of = |pre: tandem::wire::proto::PrefillResponse, id: &str| DecodeRequest {
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
            err.message().starts_with(tandem::wire::KV_SOURCE_LOST),
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
