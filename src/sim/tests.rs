//! The simulated cluster on small traces: every request ends, blocks come back, the
//! timeline follows the profile, and routing behaves as in the servers.

use std::sync::Arc;
use std::time::Duration;

use super::cluster::{ClusterConfig, SimOutcome, Topology, simulate};
use super::profile::Profile;
use crate::config::EngineConfig;
use crate::engine::SeqWork;
use crate::replay::trace::TraceRequest;
use crate::router::Policy;

fn engine(num_blocks: usize) -> EngineConfig {
    EngineConfig {
        block_size: 16,
        num_blocks,
        max_model_len: 8192,
        max_num_seqs: 64,
        max_num_batched_tokens: 2048,
        long_prefill_token_threshold: 0,
        enable_prefix_caching: true,
        vocab_size: 1000,
        kv_hold_timeout: Duration::from_secs(30),
        host_kv_blocks: 0,
    }
}

fn config(topology: Topology, policy: Policy, num_blocks: usize) -> ClusterConfig {
    ClusterConfig {
        name: "t".into(),
        topology,
        policy,
        engine: engine(num_blocks),
        prefill_engine: None,
        decode_engine: None,
        speedup: 1.0,
        vocab: 1000,
        trace_block: 512,
        seed: 7,
        timelines: false,
    }
}

/// `convs` conversations of `turns` turns each: turn t repeats the conversation's earlier
/// blocks and adds one, every 5 s; each conversation opens with shared block 0.
fn conversations(convs: u64, turns: u64, gap_ms: u64) -> Vec<TraceRequest> {
    let mut out = Vec::new();
    for t in 0..turns {
        for c in 0..convs {
            let ids: Vec<u64> = std::iter::once(0)
                .chain((0..=t).map(|k| 1000 * (c + 1) + k))
                .collect();
            out.push(TraceRequest {
                timestamp: t * 5000 + c * gap_ms,
                input_length: 512 * ids.len() - 100,
                output_length: 1 + ((c + t) as usize * 7) % 20,
                hash_ids: ids,
            });
        }
    }
    out.sort_by_key(|r| r.timestamp);
    out
}

/// A run of `topology` (KV-aware routing) with every request's clock points, all of it done.
fn timed(topology: Topology, profile: &Arc<Profile>, trace: &[TraceRequest]) -> SimOutcome {
    let mut cfg = config(topology, Policy::kv(0.0), 4096);
    cfg.timelines = true;
    let o = simulate(&cfg, profile.clone(), trace).unwrap();
    assert_complete(&o, trace);
    o
}

fn run(cfg: &ClusterConfig, trace: &[TraceRequest]) -> SimOutcome {
    simulate(cfg, Arc::new(Profile::default_qwen3_32b_tp2_h200()), trace).unwrap()
}

fn assert_complete(o: &SimOutcome, trace: &[TraceRequest]) {
    assert_eq!(o.records.len(), trace.len());
    for (r, t) in o.records.iter().zip(trace) {
        assert_eq!(r.error, None, "{r:?}");
        assert_eq!(r.output_tokens, t.output_length, "{r:?}");
        assert!(
            r.ttft_ms.unwrap() > 0.0 && r.ttft_ms <= r.latency_ms,
            "{r:?}"
        );
    }
}

#[test]
fn every_request_ends_in_every_deployment() {
    let trace = conversations(6, 4, 300);
    let agg = Topology::Aggregated { workers: 3 };
    let kv = Policy::kv(0.0);
    for (topology, policy) in [
        (agg, Policy::RoundRobin),
        (agg, kv),
        (agg, Policy::kv(1.0)),
        (
            Topology::Disaggregated {
                prefill: 2,
                decode: 1,
            },
            kv,
        ),
    ] {
        // simulate() fails if any worker ends with a block still in use.
        let o = run(&config(topology, policy, 4096), &trace);
        assert_complete(&o, &trace);
        let decoded = trace.iter().filter(|r| r.output_length > 1).count() as u64;
        let expect = if matches!(topology, Topology::Disaggregated { .. }) {
            decoded
        } else {
            0
        };
        assert_eq!(o.transfers, expect, "{topology:?}");
    }
}

#[test]
fn the_timeline_follows_the_profile() {
    let p = Profile::default_qwen3_32b_tp2_h200();
    let req = TraceRequest {
        timestamp: 0,
        input_length: 1000,
        output_length: 4,
        hash_ids: vec![1, 2],
    };
    let ns = |s: f64| (s * 1e9) as u64 as f64 / 1e6;
    let prefill = ns(p.step_time(&[SeqWork {
        new_tokens: 1000,
        context_len: 1000,
    }]));
    let decode = |ctx| {
        ns(p.step_time(&[SeqWork {
            new_tokens: 1,
            context_len: ctx,
        }]))
    };
    let agg = run(
        &config(Topology::Aggregated { workers: 1 }, Policy::RoundRobin, 512),
        std::slice::from_ref(&req),
    );
    let r = &agg.records[0];
    assert!((r.ttft_ms.unwrap() - prefill).abs() < 1e-6);
    let rest = decode(1001) + decode(1002) + decode(1003);
    assert!(
        (r.latency_ms.unwrap() - prefill - rest).abs() < 1e-5,
        "{r:?}"
    );
    // Disaggregated: the same prefill, then the transfer before the first decode step.
    let dis = run(
        &config(
            Topology::Disaggregated {
                prefill: 1,
                decode: 1,
            },
            Policy::kv(0.0),
            512,
        ),
        std::slice::from_ref(&req),
    );
    let d = &dis.records[0];
    assert!((d.ttft_ms.unwrap() - prefill).abs() < 1e-6);
    let transfer = ns(p.transfer_time(1000));
    assert!(
        (d.latency_ms.unwrap() - prefill - transfer - rest).abs() < 1e-5,
        "{d:?}"
    );
}

#[test]
fn kv_routing_keeps_conversations_on_their_cache() {
    // 7 conversations over 4 workers: round-robin sends each turn elsewhere.
    let trace = conversations(7, 5, 200);
    let agg = Topology::Aggregated { workers: 4 };
    let rr = run(&config(agg, Policy::RoundRobin, 4096), &trace);
    let kv = run(&config(agg, Policy::kv(0.0), 4096), &trace);
    let hit = |o: &SimOutcome| {
        let c: usize = o.records.iter().map(|r| r.cached_tokens).sum();
        c as f64 / trace.iter().map(|r| r.input_length).sum::<usize>() as f64
    };
    // Round-robin moves each turn to another worker; the KV router follows the prefix.
    assert!(hit(&kv) > hit(&rr) + 0.2, "{} vs {}", hit(&kv), hit(&rr));
}

#[test]
fn a_tight_cache_preempts_and_still_finishes_deterministically() {
    // A burst of long prompts on one worker whose cache holds little more than one of them.
    let trace: Vec<TraceRequest> = (0..12)
        .map(|i| TraceRequest {
            timestamp: i,
            input_length: 3000,
            output_length: 200,
            hash_ids: (0..6).map(|k| 100 * i + k).collect(),
        })
        .collect();
    let cfg = config(Topology::Aggregated { workers: 1 }, Policy::RoundRobin, 700);
    let a = run(&cfg, &trace);
    assert_complete(&a, &trace);
    assert!(a.preemptions > 0);
    let b = run(&cfg, &trace);
    assert_eq!(a.records, b.records);
    assert_eq!(a.steps, b.steps);
}

#[test]
fn requests_the_engine_refuses_are_errors_not_hangs() {
    let mut trace = conversations(2, 1, 100);
    trace.push(TraceRequest {
        timestamp: 300,
        input_length: 9000,
        output_length: 5,
        hash_ids: (0..18).collect(),
    });
    let o = run(
        &config(
            Topology::Aggregated { workers: 2 },
            Policy::RoundRobin,
            4096,
        ),
        &trace,
    );
    let errors: Vec<_> = o.records.iter().filter(|r| r.error.is_some()).collect();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].error.as_ref().unwrap().contains("max_model_len"));
}

#[test]
fn data_parallel_ranks_keep_their_own_caches_and_step_together() {
    // Two workers of four attention ranks each.
    let mut p = Profile::default_qwen3_32b_tp2_h200();
    p.attention_dp = 4;
    let p = Arc::new(p);
    // 7 conversations over 8 ranks, so round-robin does not send a conversation's turns
    // to one rank by chance.
    let trace = conversations(7, 4, 300);
    let agg = Topology::Aggregated { workers: 2 };
    let run_dp = |policy| simulate(&config(agg, policy, 4096), p.clone(), &trace).unwrap();
    let kv = run_dp(Policy::kv(0.0));
    assert_complete(&kv, &trace);
    // The KV router sends every later turn to the rank holding the earlier ones: at least
    // the earlier turns' whole blocks come from the cache.
    for (r, t) in kv.records.iter().zip(&trace) {
        let turn = t.hash_ids.len() - 2;
        assert!(r.cached_tokens >= 512 * turn, "{r:?} {t:?}");
    }
    // Round-robin over the 8 ranks scatters the turns: far fewer hits.
    let rr = run_dp(Policy::RoundRobin);
    assert_complete(&rr, &trace);
    let hits = |o: &SimOutcome| o.records.iter().map(|r| r.cached_tokens).sum::<usize>();
    assert!(hits(&rr) * 2 < hits(&kv), "{} vs {}", hits(&rr), hits(&kv));
    // Ranks step in lockstep: one step per worker-step, not per rank, so with requests
    // arriving 10 ms apart a DP worker takes fewer steps than as many independent workers.
    let busy = conversations(7, 4, 10);
    let kv = Policy::kv(0.0);
    let dp = simulate(&config(agg, kv, 4096), p.clone(), &busy).unwrap();
    assert_complete(&dp, &busy);
    let eight = simulate(
        &config(Topology::Aggregated { workers: 8 }, kv, 4096),
        Arc::new(Profile::default_qwen3_32b_tp2_h200()),
        &busy,
    )
    .unwrap();
    assert!(dp.steps < eight.steps, "{} vs {}", dp.steps, eight.steps);
}

#[test]
fn an_unbounded_host_tier_serves_every_cacheable_token_of_the_trace() {
    // One worker whose device tier holds ~4% of the slice's blocks, behind a host tier that
    // holds all of them: every token a prefix cache of infinite size could serve in trace
    // order is served, and without the tier far fewer are.
    let trace: Vec<TraceRequest> = crate::replay::trace::reference()
        .unwrap()
        .into_iter()
        .take(1500)
        .collect();
    let cacheable = crate::replay::trace::stats(&trace, 512).cached_token_fraction;
    let hit_rate = |host_blocks: usize| {
        let mut cfg = config(
            Topology::Aggregated { workers: 1 },
            Policy::RoundRobin,
            1_000,
        );
        cfg.engine.block_size = 64;
        cfg.engine.max_model_len = 131_072;
        cfg.engine.max_num_batched_tokens = 8192;
        cfg.engine.num_blocks = 131_072 / 64 + 64;
        cfg.engine.host_kv_blocks = host_blocks;
        cfg.vocab = 151_643;
        cfg.engine.vocab_size = 151_643;
        let o = run(&cfg, &trace);
        assert_complete(&o, &trace);
        let cached: usize = o.records.iter().map(|r| r.cached_tokens).sum();
        let input: usize = o.records.iter().map(|r| r.input_tokens).sum();
        cached as f64 / input as f64
    };
    let with = hit_rate(400_000);
    assert!((with - cacheable).abs() < 0.005, "{with} vs {cacheable}");
    let without = hit_rate(0);
    assert!(without < 0.8 * with, "{without} vs {with}");
}

/// A profile whose serving path costs something in every term.
fn with_serving() -> Profile {
    let mut p = Profile::default_qwen3_32b_tp2_h200();
    p.serving = super::serving::ServingCosts {
        to_frontend_s: 1e-3,
        tokenize_s: 2e-4,
        route_s: 1e-4,
        to_worker_s: 5e-4,
        to_engine_s: 2e-4,
        token_out_s: 1e-3,
        token_out_busy_s: 1e-3,
        token_gap_s: 3e-4,
        relay_s: 4e-4,
        chunk_s: 5e-5,
        to_client_s: 2e-4,
        close_s: 3e-4,
        ..Default::default()
    };
    p
}

#[test]
fn simulated_timelines_add_up_and_carry_the_serving_path() {
    let trace = conversations(6, 4, 300);
    let profile = Arc::new(with_serving());
    for topology in [
        Topology::Aggregated { workers: 2 },
        Topology::Disaggregated {
            prefill: 1,
            decode: 1,
        },
    ] {
        let o = timed(topology, &profile, &trace);
        for r in &o.records {
            let t = r.timeline.as_ref().expect("asked for");
            let s = t.segments().unwrap_or_else(|| panic!("{t:?}"));
            let ttft: f64 = s[..crate::timeline::TTFT_SEGMENTS].iter().sum();
            assert!((ttft - r.ttft_ms.unwrap()).abs() < 1e-3, "{s:?} {r:?}");
            assert!((s.iter().sum::<f64>() - r.latency_ms.unwrap()).abs() < 1e-3);
            // The fixed latencies land in their own segments.
            for (i, ms) in [(0, 1.0), (1, 0.2), (2, 0.1), (3, 0.5), (4, 0.2), (9, 0.4)] {
                assert!((s[i] - ms).abs() < 1e-6, "segment {i}: {s:?}");
            }
            // A step's first token leaves after token_out, later ones a gap apart each.
            assert!(
                s[8] >= 1.0 - 1e-6 && ((s[8] - 1.0) / 0.3).fract().abs() < 1e-6,
                "{s:?}"
            );
        }
    }
}

#[test]
fn serving_cpu_on_the_workers_cores_slows_their_steps() {
    let trace = conversations(6, 4, 300);
    let cfg = config(
        Topology::Aggregated { workers: 2 },
        Policy::RoundRobin,
        4096,
    );
    let itl = |p: Profile| {
        let o = simulate(&cfg, Arc::new(p), &trace).unwrap();
        let itls: Vec<f64> = o.records.iter().filter_map(|r| r.itl_ms()).collect();
        itls.iter().sum::<f64>() / itls.len() as f64
    };
    let base = itl(Profile::default_qwen3_32b_tp2_h200());
    let mut p = Profile::default_qwen3_32b_tp2_h200();
    // 5 ms of the worker's own CPU per token sent, 2 ms more of the frontend's spread over
    // two shared cores: a step after one that made b tokens waits about 5b + b ms more.
    p.serving.worker_cpu_per_token_s = 5e-3;
    p.serving.shared_cpu_per_token_s = 2e-3;
    p.serving.shared_cores = 2.0;
    let slowed = itl(p);
    assert!(slowed > base + 3.0, "{base} -> {slowed}");
}

#[test]
fn the_engine_turn_between_steps_puts_the_next_one_off() {
    let trace = conversations(6, 4, 300);
    let mut cfg = config(
        Topology::Disaggregated {
            prefill: 1,
            decode: 1,
        },
        Policy::kv(0.0),
        4096,
    );
    cfg.timelines = true;
    let gaps = |p: Profile| {
        let o = simulate(&cfg, Arc::new(p), &trace).unwrap();
        assert_complete(&o, &trace);
        let mut gaps = Vec::new();
        for r in &o.records {
            let t = r.timeline.as_ref().expect("asked for");
            // The decode worker's steps, each of which made a token of every request in it.
            let Some(w) = &t.worker else { continue };
            gaps.extend(w.steps.windows(2).map(|s| s[1].start - s[0].end));
        }
        gaps
    };
    assert!(gaps(with_serving()).iter().all(|&g| g == 0));
    // 2 ms a step and 0.5 ms a token of the step before: a request's next step, with the
    // engine stepping on, starts at least 2.5 ms after its last.
    let mut p = with_serving();
    p.serving.engine_gap_s = 2e-3;
    p.serving.engine_gap_per_token_s = 5e-4;
    let g = gaps(p);
    assert!(!g.is_empty() && g.iter().all(|&g| g >= 2_500_000), "{g:?}");
}

#[test]
fn a_disaggregated_deployment_takes_its_own_serving_path() {
    let trace = conversations(6, 4, 300);
    // The disaggregated path's call to the prefill worker costs 3 ms, the decode call
    // 1.5 ms; the aggregated path's call 0.5 ms and no decode call of its own.
    let mut p = with_serving();
    p.serving_disagg = Some(super::serving::ServingCosts {
        to_worker_s: 3e-3,
        decode_call_s: 1.5e-3,
        ..p.serving
    });
    let profile = Arc::new(p);
    let run = |topology| {
        let o = timed(topology, &profile, &trace);
        o.records
            .into_iter()
            .map(|r| *r.timeline.expect("asked for"))
            .collect::<Vec<_>>()
    };
    for t in run(Topology::Aggregated { workers: 2 }) {
        let s = t.segments().unwrap();
        assert!((s[3] - 0.5).abs() < 1e-6, "{s:?}");
    }
    let mut handed_off = 0;
    for t in run(Topology::Disaggregated {
        prefill: 1,
        decode: 1,
    }) {
        let s = t.segments().unwrap();
        assert!((s[3] - 3.0).abs() < 1e-6, "{s:?}");
        // The decode worker has the call 1.5 ms after the first token's relay.
        if let (Some(w), Some(&relayed)) = (&t.worker, t.relayed.first()) {
            assert_eq!(w.received - relayed, 1_500_000, "{t:?}");
            handed_off += 1;
        }
    }
    assert!(handed_off > 0);
}

#[test]
fn the_decode_workers_cpu_per_request_slows_its_steps() {
    // Requests 5 ms apart: the decode worker takes most on while it steps.
    let trace = conversations(12, 4, 5);
    let cfg = config(
        Topology::Disaggregated {
            prefill: 1,
            decode: 1,
        },
        Policy::kv(0.0),
        4096,
    );
    let itl = |p: Profile| {
        let o = simulate(&cfg, Arc::new(p), &trace).unwrap();
        assert_complete(&o, &trace);
        let itls: Vec<f64> = o.records.iter().filter_map(|r| r.itl_ms()).collect();
        itls.iter().sum::<f64>() / itls.len() as f64
    };
    let mut p = Profile::default_qwen3_32b_tp2_h200();
    p.serving_disagg = Some(Default::default());
    let base = itl(p.clone());
    // 20 ms of the decode worker's CPU for each request it takes on, paid by its next step.
    p.serving_disagg = Some(super::serving::ServingCosts {
        decode_cpu_per_request_s: 20e-3,
        ..Default::default()
    });
    let slowed = itl(p);
    assert!(slowed > base + 1.0, "{base} -> {slowed}");
}

#[test]
fn a_deployments_step_levels_scale_its_own_steps() {
    // The disaggregated path's steps measured 1.5x (with prompts) and 2x (decodes only)
    // their price under serving; the aggregated path's were not measured.
    let trace = conversations(6, 4, 300);
    let mut p = crate::sim::median::tests::pass(1.0);
    let priced = Arc::new(p.clone());
    if let Some(d) = &mut p.serving_disagg {
        (d.prefill_step_level, d.decode_step_level) = (1.5, 2.0);
    }
    let levelled = Arc::new(p);
    // Each step's duration over its price, for the steps with prompts and the decode-only
    // ones.
    let ratios = |topology| {
        let o = timed(topology, &levelled, &trace);
        let (mut prompts, mut decodes) = (Vec::new(), Vec::new());
        for s in crate::sim::seen::seen_steps(&o.records) {
            if !s.known || s.work.is_empty() {
                continue;
            }
            let r = (s.end - s.start) as f64 / 1e9 / priced.step_time(&s.work);
            if s.prompts() > 0 {
                prompts.push(r);
            } else {
                decodes.push(r);
            }
        }
        assert!(!prompts.is_empty() && !decodes.is_empty());
        (prompts, decodes)
    };
    let near = |v: &[f64], x: f64| v.iter().all(|r| (r - x).abs() < 1e-4);
    let (prompts, decodes) = ratios(Topology::Disaggregated {
        prefill: 1,
        decode: 1,
    });
    assert!(near(&prompts, 1.5), "{prompts:?}");
    assert!(near(&decodes, 2.0), "{decodes:?}");
    let (prompts, decodes) = ratios(Topology::Aggregated { workers: 2 });
    assert!(
        near(&prompts, 1.0) && near(&decodes, 1.0),
        "{prompts:?} {decodes:?}"
    );
}

#[test]
fn a_step_after_an_idle_engine_pays_the_cost_of_resuming() {
    let trace = conversations(6, 4, 300);
    let mut p = crate::sim::median::tests::pass(1.0);
    let priced = Arc::new(p.clone());
    for s in std::iter::once(&mut p.serving).chain(p.serving_disagg.as_mut()) {
        s.engine_resume_s = 3e-3;
    }
    let resuming = Arc::new(p);
    for topology in [
        Topology::Aggregated { workers: 1 },
        Topology::Disaggregated {
            prefill: 1,
            decode: 1,
        },
    ] {
        let o = timed(topology, &resuming, &trace);
        // Read by the rule the real steps are measured by: each engine's steps by its lane.
        let steps = crate::sim::seen::seen_steps(&o.records);
        let idle = crate::sim::seen::idle_before(&steps);
        let (mut resumed, mut on) = (0, 0);
        for (s, idle) in steps.iter().zip(idle) {
            if !s.known || s.work.is_empty() {
                continue;
            }
            let extra = (s.end - s.start) as f64 / 1e9 - priced.step_time(&s.work);
            if idle.is_none_or(|i| i >= super::serving::RESUMES_AFTER_NS) {
                resumed += 1;
                assert!((extra - 3e-3).abs() < 1e-6, "{topology:?}: {extra}");
            } else {
                on += 1;
                assert!(extra.abs() < 1e-6, "{topology:?}: {extra}");
            }
        }
        assert!(resumed > 0 && on > 0, "{topology:?}: {resumed} {on}");
    }
}
