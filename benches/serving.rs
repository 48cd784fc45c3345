//! Serving benchmarks (`cargo bench --bench serving`): router decision time with 16 workers and
//! 1M indexed blocks, KV event ingestion into the router's index, and the frontend's overhead
//! per streamed token against the same worker called directly.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tandem::kv::KvEvent;
use tandem::kv::hash::extend_sequence_hashes;
use tandem::router::index::KvIndex;
use tandem::router::{Policy, Router, WorkerPool};
use tandem::wire::proto::worker_client::WorkerClient;
use tandem::wire::proto::{GenerateRequest, ModelInfoResponse, SamplingParams};

const BS: usize = 64;
const WORKERS: usize = 16;
const BLOCKS: usize = 1 << 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Conversations of 64 blocks each, spread over the workers: 1M blocks in all.
fn events() -> Vec<(usize, KvEvent)> {
    let convs = BLOCKS / 64;
    (0..convs)
        .map(|c| {
            let tokens: Vec<u32> = (0..64 * BS as u32)
                .map(|t| t.wrapping_mul(2_654_435_761).wrapping_add(c as u32 * 7919) % 151_000)
                .collect();
            let mut hashes = Vec::new();
            extend_sequence_hashes(&mut hashes, &tokens, BS);
            (
                c % WORKERS,
                KvEvent::BlockStored {
                    block_hashes: hashes,
                    parent_block_hash: None,
                    token_ids: tokens,
                    block_size: BS,
                    medium: tandem::kv::Medium::Gpu,
                },
            )
        })
        .collect()
}

fn router_benches(rt: &tokio::runtime::Runtime) {
    let evs = events();
    let mut index = KvIndex::new(WORKERS);
    let t = Instant::now();
    for (w, e) in &evs {
        index.apply(*w, 0, e);
    }
    let dt = t.elapsed();
    println!(
        "kv_event_ingestion: {BLOCKS} blocks in {:.1} ms = {:.2} M blocks/s",
        dt.as_secs_f64() * 1e3,
        BLOCKS as f64 / dt.as_secs_f64() / 1e6
    );

    let _guard = rt.enter();
    let addrs: Vec<String> = (0..WORKERS)
        .map(|i| format!("127.0.0.1:{}", 1 + i))
        .collect();
    let pool = WorkerPool::new(&addrs).unwrap();
    for w in &pool.workers() {
        w.mark_healthy();
        w.set_info(ModelInfoResponse {
            block_size: BS as u32,
            ..Default::default()
        });
    }
    *pool.index.write().unwrap() = index;
    let router = Router::new(Policy::kv(0.0), pool);
    // Prompts of 8k tokens: half continue an indexed conversation (deep hit), half are new.
    let prompts: Vec<Vec<u32>> = (0..64)
        .map(|i| match &evs[i * 97 % evs.len()].1 {
            KvEvent::BlockStored { token_ids, .. } if i % 2 == 0 => token_ids[..128 * BS / 2]
                .iter()
                .chain(token_ids[..128 * BS / 2].iter())
                .copied()
                .collect(),
            _ => (0..128 * BS as u32)
                .map(|t| t ^ (i as u32 * 31337))
                .collect(),
        })
        .collect();
    let mut times = Vec::with_capacity(20_000);
    for k in 0..20_000 {
        let p = &prompts[k % prompts.len()];
        let t = Instant::now();
        std::hint::black_box(router.pick(p, &[]));
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "router_decision (16 workers, {BLOCKS} blocks indexed, 8192-token prompts incl. hashing): p50 {:.1} us, p99 {:.1} us",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6
    );
}

struct Proc(std::process::Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    spawn_env(args, &[])
}

fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let l = lines.next().expect("process exited").unwrap();
        if let Some(a) = l.split("listening on ").nth(1) {
            break a.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Proc(child, addr)
}

async fn direct(addr: &str, n: u32) -> Duration {
    let mut c = WorkerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let sampling = SamplingParams {
        top_p: 1.0,
        repetition_penalty: 1.0,
        max_tokens: n,
        ignore_eos: true,
        ..Default::default()
    };
    let t = Instant::now();
    let mut s = c
        .generate(GenerateRequest {
            request_id: format!("b{}", rand_id()),
            prompt_token_ids: vec![1, 2, 3],
            sampling: Some(sampling),
            timeline: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while let Some(r) = s.message().await.unwrap() {
        got += r.token_id.is_some() as u32;
    }
    assert_eq!(got, n);
    t.elapsed()
}

async fn through_frontend(base: &str, n: u32) -> Duration {
    let body = serde_json::json!({"model": "tandem-demo", "prompt": [1, 2, 3], "max_tokens": n, "temperature": 0, "ignore_eos": true, "stream": true});
    let t = Instant::now();
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut s = resp.bytes_stream();
    let mut text = String::new();
    while let Some(b) = s.next().await {
        text.push_str(&String::from_utf8_lossy(&b.unwrap()));
    }
    assert!(text.contains("[DONE]"));
    t.elapsed()
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn frontend_overhead(rt: &tokio::runtime::Runtime) {
    let n = 400;
    let w = spawn(&[
        "worker",
        "--max-model-len",
        "1024",
        "--kv-cache-gib",
        "0.1",
        "--block-size",
        "16",
    ]);
    let fe = spawn(&["frontend", "--port", "0", "--workers", &w.1]);
    let base = format!("http://{}", fe.1);
    rt.block_on(async {
        for _ in 0..100 {
            if reqwest::get(format!("{base}/health")).await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (mut d, mut f) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            d.push(direct(&w.1, n).await);
            f.push(through_frontend(&base, n).await);
        }
        d.sort();
        f.sort();
        let per = |x: Duration| x.as_secs_f64() * 1e6 / n as f64;
        let (dm, fm) = (per(d[3]), per(f[3]));
        println!("frontend_overhead ({n} streamed tokens, demo model, medians of 7): worker direct {dm:.1} us/token, through frontend {fm:.1} us/token, overhead {:.1} us/token", fm - dm);
    });
}

/// A model directory (config.json only, for dummy weights) with Qwen3-32B's KV shape and tiny
/// everything else, so that a CPU prefill stays quick.
fn qwen_kv_model() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3-32b-kv")
}

/// The NIXL runtime the tests install into the test venv (tests/common/python.rs), if there.
fn nixl_libs() -> Option<String> {
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/.nixl_cu13.mesonpy.libs"))
        .find(|p| p.join("libnixl_capi.so").exists())
        .map(|p| p.display().to_string())
}

/// A decode worker's pulls of 256 MiB of Qwen3-32B's KV geometry (512 tokens, f32) from a
/// prefill worker, both real processes, over each transport, timed by the decode worker
/// itself (`kv_pull_seconds`: reservation to data in place), beside a memcpy of the same
/// bytes in this process.
fn kv_transports(rt: &tokio::runtime::Runtime) {
    use tandem::wire::proto::{DecodeRequest, KvLayoutRequest, LoadRequest};
    let dir = qwen_kv_model();
    let d = dir.to_str().unwrap().to_string();
    let libs = nixl_libs();
    let mut transports = vec!["tcp"];
    if cfg!(feature = "nixl") && libs.is_some() {
        transports.push("nixl");
    } else {
        println!(
            "kv_transports: NIXL skipped (build with --features nixl and run the kv_nixl tests once to install its runtime)"
        );
    }
    let tokens = 512u32;
    let bytes = tokens as usize * 64 * 2 * 8 * 128 * 4;
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let mut mc = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
        mc.push(t.elapsed());
    }
    mc.sort();
    let memcpy = bytes as f64 / mc[2].as_secs_f64() / 1e9;
    drop((src, dst));
    let env: Vec<(&str, &str)> = libs
        .iter()
        .map(|l| ("LD_LIBRARY_PATH", l.as_str()))
        .collect();
    // More worker flags for an experiment, e.g. "--nixl-ucx-param ucx_error_handling_mode=none".
    let extra = std::env::var("TANDEM_BENCH_WORKER_ARGS").unwrap_or_default();
    for transport in transports {
        let worker = |role: &str| {
            let mut args = vec![
                "worker",
                "--model",
                &d,
                "--load-format",
                "dummy",
                "--block-size",
                "64",
                "--kv-cache-gib",
                "0.6",
                "--max-model-len",
                "1024",
                "--role",
                role,
                "--kv-transport",
                transport,
            ];
            args.extend(extra.split_whitespace());
            spawn_env(&args, &env)
        };
        let (p, dw) = (worker("prefill"), worker("decode"));
        rt.block_on(async {
            let mut pc = WorkerClient::connect(format!("http://{}", p.1)).await.unwrap();
            let mut dc = WorkerClient::connect(format!("http://{}", dw.1)).await.unwrap();
            let layout = pc.get_kv_layout(KvLayoutRequest {}).await.unwrap().into_inner();
            let mut secs = Vec::new();
            // Three pulls first: they write every page of the decode worker's 0.6 GiB cache
            // once (a fresh cache is untouched memory, faulted in by its first writer), the
            // steady state of a worker that has served a while.
            for i in 0..8 {
                let sampling = SamplingParams { top_p: 1.0, repetition_penalty: 1.0, max_tokens: 2, ignore_eos: true, ..Default::default() };
                let req = GenerateRequest { request_id: format!("b{i}"), prompt_token_ids: (0..tokens).map(|t| (t * 7 + i) % 256).collect(), sampling: Some(sampling), timeline: false };
                let pre = pc.prefill(req.clone()).await.unwrap().into_inner();
                let before = dc.load(LoadRequest {}).await.unwrap().into_inner();
                let mut out = dc
                    .decode(DecodeRequest { request: Some(req), first_token: pre.first_token, source_addr: p.1.clone(), source_engine_id: layout.engine_id.clone(), source_block_ids: pre.block_ids.clone() })
                    .await
                    .unwrap()
                    .into_inner();
                while out.next().await.is_some() {}
                let after = dc.load(LoadRequest {}).await.unwrap().into_inner();
                assert_eq!(after.kv_pulled_bytes - before.kv_pulled_bytes, bytes as u64);
                assert_eq!(after.kv_pulls_nixl - before.kv_pulls_nixl, u64::from(transport == "nixl"));
                if i >= 3 {
                    secs.push(after.kv_pull_seconds - before.kv_pull_seconds);
                }
            }
            println!("kv_transport_{transport}: pulls of {:.1?} ms", secs.iter().map(|s| s * 1e3).collect::<Vec<_>>());
            secs.sort_by(f64::total_cmp);
            let gbps = bytes as f64 / secs[2] / 1e9;
            // A 12k-token prompt of Qwen3-32B in bf16 (what the GPU backend holds): 256 KiB a token.
            let mean_prompt = 12_035.0 * 256.0 * 1024.0;
            println!(
                "kv_transport_{transport} ({tokens} tokens of Qwen3-32B KV, f32: {} MiB, decode worker's pull time, median of 5): {:.1} ms = {gbps:.2} GB/s; memcpy of the same bytes {memcpy:.2} GB/s; ratio {:.2}; a 12,035-token prompt's {:.2} GiB at this rate: {:.2} s",
                bytes >> 20,
                secs[2] * 1e3,
                gbps / memcpy,
                mean_prompt / (1u64 << 30) as f64,
                mean_prompt / 1e9 / gbps,
            );
        });
    }
}

fn main() {
    // `cargo test --benches` runs benches with --test: keep that quick.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    // `cargo bench --bench serving -- NAME` runs the benches whose name contains NAME.
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    type Bench = fn(&tokio::runtime::Runtime);
    let benches: [(&str, Bench); 3] = [
        ("router", router_benches),
        ("frontend_overhead", frontend_overhead),
        ("kv_transports", kv_transports),
    ];
    for (name, bench) in benches {
        if name.contains(&filter) {
            bench(&rt);
        }
    }
}
