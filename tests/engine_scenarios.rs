//! Engine behaviour on the demo model: aborts at any point, KV events, stop conditions,
//! reproducible seeded sampling, executor failures and dropped clients. After every scenario
//! every block not held by the prefix cache is free and every reference count is zero.

mod common;

use std::sync::mpsc::channel;
use std::time::Duration;

use common::drain;
use tandem::config::EngineConfig;
use tandem::engine::hooks::{Hooked, Hooks};
use tandem::engine::sampler::Sampled;
use tandem::engine::{
    EngineCore, EngineHandle, Executor, FinishReason, Request, SamplingParams, StepBatch,
};
use tandem::kv::hash::extend_sequence_hashes;
use tandem::kv::{EventDetail, KvEvent};
use tandem::loader::{ModelSpec, load_cpu};
use tandem::{Error, Result};

fn demo(
    block_size: usize,
    blocks: usize,
    budget: usize,
) -> EngineCore<tandem::engine::ModelExecutor<tandem::backend::CpuBackend>> {
    let c = tandem::model::demo::config().unwrap();
    // K and V of every layer, f32 on the CPU backend.
    let bytes =
        blocks * 2 * c.num_hidden_layers * block_size * c.num_key_value_heads * c.head_dim * 4;
    let spec = ModelSpec {
        block_size,
        kv_cache_bytes: bytes,
        max_model_len: Some(256),
        max_num_batched_tokens: budget,
        ..ModelSpec::default()
    };
    load_cpu(&spec).unwrap().engine
}

fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (i * 7 + salt * 13) % 256).collect()
}

fn req(id: u64, prompt: Vec<u32>, params: SamplingParams) -> Request {
    Request { id, prompt, params }
}

#[test]
fn abort_at_any_point_frees_everything() {
    for abort_after in 0..12 {
        let mut e = demo(8, 64, 24);
        e.add_request(req(
            1,
            prompt(70, 1),
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(6)
            },
        ))
        .unwrap();
        e.add_request(req(
            2,
            prompt(5, 2),
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(20)
            },
        ))
        .unwrap();
        e.add_request(req(
            3,
            prompt(30, 3),
            SamplingParams {
                ignore_eos: true,
                temperature: 0.8,
                ..SamplingParams::greedy(4)
            },
        ))
        .unwrap();
        let mut finished_1 = false;
        for _ in 0..abort_after {
            let out = e.step().map_err(|f| f.error).unwrap();
            finished_1 |= out.iter().any(|o| o.id == 1 && o.finish.is_some());
            e.check_invariants().unwrap();
        }
        let aborted = e.num_aborted();
        assert_eq!(
            e.abort(1),
            !finished_1,
            "after {abort_after} steps: abort finds request 1 exactly while it is live"
        );
        assert_eq!(e.num_aborted(), aborted + u64::from(!finished_1));
        if abort_after == 0 {
            assert!(e.abort(2), "request 2 is live before any step");
        }
        assert!(!e.abort(1), "a second abort finds nothing");
        drain(&mut e);
        e.check_invariants().unwrap();
    }
}

#[test]
fn kv_events_describe_the_cache() {
    let mut e = demo(16, 40, 4096);
    let (tx, rx) = channel();
    e.set_event_sink(tx, EventDetail::Full);
    let p = prompt(40, 5);
    e.add_request(req(
        1,
        p.clone(),
        SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(1)
        },
    ))
    .unwrap();
    drain(&mut e);
    let events: Vec<KvEvent> = rx.try_iter().collect();
    let mut hashes = Vec::new();
    extend_sequence_hashes(&mut hashes, &p, 16);
    assert_eq!(
        events,
        vec![KvEvent::BlockStored {
            block_hashes: hashes.clone(),
            parent_block_hash: None,
            token_ids: p[..32].to_vec(),
            block_size: 16,
            medium: tandem::kv::Medium::Gpu,
        }]
    );
    // The same prompt again hits both blocks; a longer one extends the chain from them.
    let mut longer = p.clone();
    longer.extend(prompt(30, 6));
    e.add_request(req(
        2,
        longer.clone(),
        SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(1)
        },
    ))
    .unwrap();
    drain(&mut e);
    let events: Vec<KvEvent> = rx.try_iter().collect();
    let mut long_hashes = Vec::new();
    extend_sequence_hashes(&mut long_hashes, &longer, 16);
    assert_eq!(
        events,
        vec![KvEvent::BlockStored {
            block_hashes: long_hashes[2..4].to_vec(),
            parent_block_hash: Some(hashes[1]),
            token_ids: longer[32..64].to_vec(),
            block_size: 16,
            medium: tandem::kv::Medium::Gpu,
        }]
    );
    assert_eq!(e.kv_stats().hit_tokens, 32);
    // Filling the pool with other prompts evicts cached blocks, least recently used first.
    for i in 0..10 {
        e.add_request(req(
            10 + i,
            prompt(100, 20 + i as u32),
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(1)
            },
        ))
        .unwrap();
        drain(&mut e);
    }
    let events: Vec<KvEvent> = rx.try_iter().collect();
    assert!(events.iter().any(|ev| matches!(ev, KvEvent::BlockRemoved { block_hashes, .. } if block_hashes.contains(&hashes[1]))), "{events:?}");
    assert!(e.reset_prefix_cache());
    assert_eq!(rx.try_iter().last(), Some(KvEvent::AllBlocksCleared));
}

#[test]
fn prompt_hashes_from_a_router_spare_the_hashing_and_never_fake_a_hit() {
    let mut e = demo(16, 32, 256);
    let (tx, rx) = channel();
    e.set_event_sink(tx, EventDetail::Full);
    let one = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(1)
    };
    let p = prompt(40, 3);
    let mut hashes = Vec::new();
    extend_sequence_hashes(&mut hashes, &p, 16);
    assert_eq!(hashes.len(), 2);
    e.add_request(req(1, p.clone(), one.clone())).unwrap();
    e.give_prompt_hashes(1, hashes.clone()).unwrap();
    // Only while it waits, once, and no more hashes than full prompt blocks.
    assert!(e.give_prompt_hashes(1, hashes.clone()).is_err());
    assert!(e.give_prompt_hashes(7, hashes.clone()).is_err());
    e.add_request(req(2, prompt(40, 4), one.clone())).unwrap();
    let mut three = hashes.clone();
    three.push(5);
    assert!(e.give_prompt_hashes(2, three).is_err());
    drain(&mut e);
    let stored: Vec<Vec<u64>> = rx
        .try_iter()
        .filter_map(|ev| match ev {
            KvEvent::BlockStored { block_hashes, .. } => Some(block_hashes),
            _ => None,
        })
        .collect();
    assert_eq!(stored[0], hashes, "the given hashes are the engine's own");
    // The same prompt with them hits; another prompt given them (a caller's mistake) finds
    // the blocks by hash but not their tokens, and computes its own.
    e.add_request(req(3, p.clone(), one.clone())).unwrap();
    e.give_prompt_hashes(3, hashes.clone()).unwrap();
    drain(&mut e);
    assert_eq!(e.kv_stats().hit_tokens, 32);
    e.add_request(req(4, prompt(40, 9), one)).unwrap();
    e.give_prompt_hashes(4, hashes).unwrap();
    drain(&mut e);
    assert_eq!(e.kv_stats().hit_tokens, 32, "no hit on a hash alone");
}

#[test]
fn stop_conditions() {
    let mut e = demo(16, 64, 4096);
    // Greedy output of the demo model is deterministic: learn it, then stop on its third token.
    e.add_request(req(
        1,
        prompt(10, 1),
        SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(5)
        },
    ))
    .unwrap();
    let free_run = drain(&mut e).remove(&1).unwrap();
    assert_eq!(free_run.len(), 5);
    let stop_at = free_run[2];
    let first = free_run.iter().position(|&t| t == stop_at).unwrap();
    e.add_request(req(
        2,
        prompt(10, 1),
        SamplingParams {
            stop_token_ids: vec![stop_at],
            ..SamplingParams::greedy(5)
        },
    ))
    .unwrap();
    let mut last = None;
    while e.has_work() {
        for o in e.step().map_err(|f| f.error).unwrap() {
            last = Some(o);
        }
    }
    let last = last.unwrap();
    assert_eq!(last.finish, Some(FinishReason::Stop));
    assert_eq!(last.token.unwrap().token, free_run[first]);
    // max_model_len ends a request that asks for more than fits.
    e.add_request(req(
        3,
        prompt(250, 2),
        SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(100)
        },
    ))
    .unwrap();
    let out = drain(&mut e);
    assert_eq!(out[&3].len(), 6, "256 - 250 tokens fit");
    e.check_invariants().unwrap();
}

#[test]
fn seeded_sampling_does_not_depend_on_batching() {
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 0.9,
        seed: Some(1234),
        ignore_eos: true,
        ..SamplingParams::greedy(12)
    };
    let mut alone = demo(16, 64, 4096);
    alone
        .add_request(req(1, prompt(20, 9), params.clone()))
        .unwrap();
    let a = drain(&mut alone).remove(&1).unwrap();
    let mut crowd = demo(16, 64, 16);
    for i in 0..4 {
        crowd
            .add_request(req(
                10 + i,
                prompt(30, i as u32),
                SamplingParams {
                    temperature: 0.7,
                    ignore_eos: true,
                    ..SamplingParams::greedy(12)
                },
            ))
            .unwrap();
    }
    crowd.add_request(req(1, prompt(20, 9), params)).unwrap();
    let b = drain(&mut crowd).remove(&1).unwrap();
    assert_eq!(a, b);
}

/// An executor that returns token 1 for everything and fails on its `fail_at`-th call.
struct Flaky {
    calls: usize,
    fail_at: usize,
}

impl Executor for Flaky {
    fn execute(&mut self, batch: &StepBatch<'_>) -> Result<Vec<Sampled>> {
        self.calls += 1;
        if self.calls == self.fail_at {
            return Err(Error::Backend("device lost".into()));
        }
        Ok(batch
            .samples
            .iter()
            .map(|_| Sampled {
                token: 1,
                logprob: None,
                top_logprobs: vec![],
            })
            .collect())
    }
}

#[test]
fn executor_failure_ends_the_steps_requests_and_frees_their_blocks() {
    let cfg = EngineConfig {
        block_size: 4,
        num_blocks: 64,
        max_model_len: 128,
        max_num_seqs: 8,
        max_num_batched_tokens: 64,
        long_prefill_token_threshold: 0,
        enable_prefix_caching: true,
        vocab_size: 100,
        kv_hold_timeout: std::time::Duration::from_secs(30),
        host_kv_blocks: 0,
    };
    let mut e = EngineCore::new(
        cfg,
        Flaky {
            calls: 0,
            fail_at: 3,
        },
        vec![],
    )
    .unwrap();
    e.add_request(req(1, vec![5; 10], SamplingParams::greedy(10)))
        .unwrap();
    e.add_request(req(2, vec![6; 10], SamplingParams::greedy(10)))
        .unwrap();
    e.step().map_err(|f| f.error).unwrap();
    e.step().map_err(|f| f.error).unwrap();
    let f = e.step().unwrap_err();
    assert_eq!(f.failed, vec![1, 2]);
    assert!(f.error.to_string().contains("device lost"));
    assert!(!e.has_work());
    e.check_invariants().unwrap();
    // The failed step was to write request 1's third block (its 12th token): it left the
    // prefix cache, so a prompt that continues request 1 reuses its first two blocks only.
    let mut cont = vec![5; 10];
    cont.extend([1, 1, 9]);
    e.add_request(req(4, cont, SamplingParams::greedy(1)))
        .unwrap();
    let out = e.step().map_err(|f| f.error).unwrap();
    assert_eq!(out[0].cached_tokens, 8, "{out:?}");
    drain(&mut e);
    // The engine keeps serving.
    e.add_request(req(3, vec![7; 3], SamplingParams::greedy(2)))
        .unwrap();
    assert_eq!(drain(&mut e)[&3], vec![1, 1]);
}

#[test]
fn handle_streams_aborts_and_drops_clients() {
    // 5 ms a step: a 200-token request takes a second, far longer than the test waits for
    // an aborted one to end.
    let slow = Hooks {
        step_delay: Duration::from_millis(5),
        ..Hooks::default()
    };
    let handle =
        EngineHandle::spawn(demo(16, 64, 4096).map_executor(|e| Hooked::new(e, slow))).unwrap();
    let mut s = handle
        .submit(req(1, prompt(10, 1), SamplingParams::greedy(3)))
        .unwrap();
    let mut n = 0;
    while let Some(o) = s.blocking_recv() {
        let o = o.unwrap();
        n += 1;
        if o.finish.is_some() {
            break;
        }
    }
    assert!((1..=3).contains(&n));
    // Invalid input is refused at submission.
    assert!(matches!(
        handle.submit(req(2, vec![], SamplingParams::greedy(3))),
        Err(Error::InvalidRequest(_))
    ));
    // A duplicate live id comes back on the stream.
    let mut live = handle
        .submit(req(
            20,
            prompt(10, 4),
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(200)
            },
        ))
        .unwrap();
    live.blocking_recv().unwrap().unwrap();
    let mut dup = handle
        .submit(req(20, prompt(3, 1), SamplingParams::greedy(3)))
        .unwrap();
    assert!(matches!(
        dup.blocking_recv(),
        Some(Err(Error::InvalidRequest(_)))
    ));
    handle.abort(20).unwrap();
    // An explicit abort ends the stream with Abort.
    let mut s = handle
        .submit(req(
            3,
            prompt(10, 2),
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(200)
            },
        ))
        .unwrap();
    s.blocking_recv().unwrap().unwrap();
    handle.abort(3).unwrap();
    let last = std::iter::from_fn(|| s.blocking_recv())
        .last()
        .unwrap()
        .unwrap();
    assert_eq!(last.finish, Some(FinishReason::Abort));
    // A client that goes away loses its request and its blocks, long before it would end.
    // (The stats are published after the engine handles the abort: wait until they show it.)
    let mut before = handle.stats().unwrap();
    for _ in 0..200 {
        if before.running == 0 && before.waiting == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
        before = handle.stats().unwrap();
    }
    let s = handle
        .submit(req(
            4,
            prompt(10, 3),
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(200)
            },
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drop(s);
    let mut idle = false;
    for _ in 0..40 {
        let st = handle.stats().unwrap();
        if st.running == 0 && st.waiting == 0 {
            assert_eq!(st.kv.free_blocks, st.kv.total_blocks);
            assert_eq!(
                st.aborted,
                before.aborted + 1,
                "the request ended by an abort"
            );
            let made = st.generated_tokens - before.generated_tokens;
            assert!(made < 100, "{made} of its 200 tokens were generated");
            idle = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(idle, "the dropped request was not aborted");
}
