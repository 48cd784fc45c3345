//! Prefill on one engine, decode on another: the prompt's KV moves between them through the
//! executors (byte for byte), and greedy output equals one engine doing both. Holds end on
//! release or timeout, reservations on cancel, and nothing leaks.

mod common;

use std::time::{Duration, Instant};

use common::drain;
use tandem::backend::CpuBackend;
use tandem::engine::{EngineCore, ModelExecutor, Request, SamplingParams};
use tandem::loader::{ModelSpec, load_cpu};

fn engine(tp: usize, fixture: bool) -> EngineCore<ModelExecutor<CpuBackend>> {
    engine_with(tp, fixture, 256)
}

fn engine_with(
    tp: usize,
    fixture: bool,
    max_num_seqs: usize,
) -> EngineCore<ModelExecutor<CpuBackend>> {
    let model = fixture.then(|| common::fixture("tiny-qwen3"));
    let spec = ModelSpec {
        model,
        tp_size: tp,
        block_size: 16,
        max_model_len: Some(256),
        kv_cache_bytes: 16 << 20,
        max_num_seqs,
        ..ModelSpec::default()
    };
    load_cpu(&spec).unwrap().engine
}

fn greedy(n: usize) -> SamplingParams {
    SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(n)
    }
}

/// Runs a prefill request to its first token; returns (first token, held blocks).
fn prefill(
    e: &mut EngineCore<ModelExecutor<CpuBackend>>,
    id: u64,
    prompt: &[u32],
) -> (u32, Vec<u32>) {
    e.add_prefill_request(Request {
        id,
        prompt: prompt.to_vec(),
        params: greedy(1),
    })
    .unwrap();
    let mut out = None;
    while e.has_work() {
        for o in e.step().map_err(|f| f.error).unwrap() {
            out = Some(o);
        }
    }
    let o = out.unwrap();
    (o.token.unwrap().token, o.held_blocks.unwrap())
}

#[test]
fn disaggregated_greedy_equals_aggregated_and_kv_is_identical() {
    for (tp, fixture) in [(1, true), (2, true), (1, false)] {
        let prompts: Vec<Vec<u32>> = (0..3)
            .map(|i| {
                (0..(20 + 17 * i))
                    .map(|t| ((t * 13 + i * 7) % 250) as u32)
                    .collect()
            })
            .collect();
        let mut agg = engine(tp, fixture);
        let reqs: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64, p.clone(), 8))
            .collect();
        let want = common::run_greedy(&mut agg, &reqs);
        let (mut p, mut d) = (engine(tp, fixture), engine(tp, fixture));
        for (i, prompt) in prompts.iter().enumerate() {
            let id = 100 + i as u64;
            let (first, held) = prefill(&mut p, id, prompt);
            let data = p.read_held(id, &held).unwrap();
            assert_eq!(data.len(), tp, "one shard per rank");
            let local = d.reserve_kv(id, prompt.len()).unwrap();
            assert_eq!(local.len(), held.len());
            d.write_reserved(id, &data).unwrap();
            // What landed is byte-identical to the source.
            assert_eq!(
                tandem::engine::Executor::read_kv_blocks(d.executor_mut(), &local).unwrap(),
                data
            );
            assert!(p.release_held(id));
            // The first token counts towards max_tokens: the decode request carries the original 8.
            d.commit_prefilled(
                Request {
                    id,
                    prompt: prompt.clone(),
                    params: greedy(8),
                },
                first,
            )
            .unwrap();
            let rest = drain(&mut d).remove(&id).unwrap();
            let mut got = vec![first];
            got.extend(rest);
            assert_eq!(
                got,
                want[&(i as u64)],
                "tp {tp} fixture {fixture} prompt {i}"
            );
        }
        p.check_invariants().unwrap();
        d.check_invariants().unwrap();
    }
}

#[test]
fn holds_expire_reservations_cancel_and_reads_are_checked() {
    let mut p = engine(1, false);
    let prompt: Vec<u32> = (0..40).collect();
    let (_, held) = prefill(&mut p, 1, &prompt);
    assert!(p.check_invariants().is_ok());
    assert!(p.read_held(2, &held).is_err(), "unknown request");
    assert!(
        p.read_held(1, &[held[0], 9999]).is_err(),
        "a block it does not hold"
    );
    assert_eq!(p.expire_held(Instant::now()), 0);
    assert_eq!(p.expire_held(Instant::now() + Duration::from_secs(31)), 1);
    assert!(!p.release_held(1));
    p.check_invariants().unwrap();
    // An abort also ends a hold.
    prefill(&mut p, 3, &prompt);
    assert!(p.abort(3));
    p.check_invariants().unwrap();

    let mut d = engine(1, false);
    d.reserve_kv(5, 40).unwrap();
    assert!(d.reserve_kv(5, 40).is_err(), "duplicate id");
    assert!(d.reserve_kv(6, 256).is_err(), "over max_model_len");
    assert!(d.write_reserved(5, &[vec![0u8; 3]]).is_err(), "wrong size");
    assert!(d.cancel_reserved(5));
    d.check_invariants().unwrap();
    d.reserve_kv(7, 40).unwrap();
    let wrong = Request {
        id: 7,
        prompt: vec![1; 80],
        params: greedy(2),
    };
    assert!(
        d.commit_prefilled(wrong, 3).is_err(),
        "the reservation is for 40 tokens"
    );
    d.check_invariants().unwrap();
}

#[test]
fn pulled_requests_beyond_max_num_seqs_wait_with_their_blocks() {
    let prompts: Vec<Vec<u32>> = (0..5)
        .map(|i| {
            (0..(30 + 9 * i))
                .map(|t| ((t * 7 + i * 31) % 250) as u32)
                .collect()
        })
        .collect();
    let mut agg = engine(1, true);
    let reqs: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64, p.clone(), 6))
        .collect();
    let want = common::run_greedy(&mut agg, &reqs);
    // A decode engine that runs two sequences at once gets five pulled requests together.
    let (mut p, mut d) = (engine(1, true), engine_with(1, true, 2));
    for (i, prompt) in prompts.iter().enumerate() {
        let id = i as u64;
        let (first, held) = prefill(&mut p, id, prompt);
        let data = p.read_held(id, &held).unwrap();
        d.reserve_kv(id, prompt.len()).unwrap();
        d.write_reserved(id, &data).unwrap();
        assert!(p.release_held(id));
        d.commit_prefilled(
            Request {
                id,
                prompt: prompt.clone(),
                params: greedy(6),
            },
            first,
        )
        .unwrap();
    }
    let used_before = d.kv_stats().total_blocks - d.kv_stats().free_blocks;
    assert!(
        used_before > 0,
        "the waiting requests hold their pulled blocks"
    );
    let mut out: std::collections::HashMap<u64, Vec<u32>> = std::collections::HashMap::new();
    let mut most_running = 0;
    while d.has_work() {
        for o in d.step().map_err(|f| f.error).unwrap() {
            out.entry(o.id)
                .or_default()
                .extend(o.token.map(|t| t.token));
        }
        most_running = most_running.max(d.num_requests().0);
        d.check_invariants().unwrap();
    }
    assert_eq!(most_running, 2, "never more than max_num_seqs run");
    for i in 0..prompts.len() as u64 {
        assert_eq!(out[&i][..], want[&i][1..], "request {i}");
    }
    d.check_invariants().unwrap();
}
