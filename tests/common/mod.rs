//! Helpers shared by the integration tests: fixtures, a logits-recording executor, error metrics.
#![allow(dead_code)]

pub mod bf16;
pub mod cli_flags;
pub mod grpc;
pub mod http;
pub mod pki;
pub mod procs;
pub mod python;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use tandem::backend::{CpuBackend, ThreadComm};
use tandem::config::{EngineConfig, ModelConfig};
use tandem::engine::sampler::{Sampled, sample};
use tandem::engine::{
    EngineCore, Executor, ExecutorConfig, ModelExecutor, Request, RequestId, SamplingParams,
    StepBatch,
};
use tandem::model::WeightSource;

/// Path of a committed fixture model.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// What transformers computed for a fixture.
pub struct Expected {
    pub prompts: Vec<Vec<u32>>,
    pub greedy: Vec<Vec<u32>>,
    /// logits[p][s]: next-token logits after prompt p and s greedy tokens.
    pub logits: Vec<Vec<Vec<f32>>>,
}

pub fn expected(name: &str) -> Expected {
    let base = fixture(name).display().to_string();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{base}.expected.json")).unwrap())
            .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<Vec<u32>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p.as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    };
    let prompts = ids(&meta["prompts"]);
    let greedy = ids(&meta["greedy_tokens"]);
    let bytes = std::fs::read(format!("{base}.expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let logits = (0..prompts.len())
        .map(|i| {
            let t = st.tensor(&format!("logits.{i}")).unwrap();
            let vocab = t.shape()[1];
            let vals: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            vals.chunks(vocab).map(<[f32]>::to_vec).collect()
        })
        .collect();
    Expected {
        prompts,
        greedy,
        logits,
    }
}

/// One line of a Mooncake trace (AIPerf's mooncake_trace fields).
pub fn trace_line(ts: u64, input: usize, output: usize, ids: &[u64]) -> String {
    format!(
        "{{\"timestamp\": {ts}, \"input_length\": {input}, \"output_length\": {output}, \"hash_ids\": {ids:?}}}"
    )
}

/// max |a - b| / max |b|: the error relative to the row's scale.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    diff / b.iter().map(|y| y.abs()).fold(0.0, f32::max)
}

/// Wraps the real executor and keeps every logits row, keyed by (request, output index).
pub struct Recording {
    pub inner: ModelExecutor<CpuBackend>,
    pub logits: HashMap<(RequestId, usize), Vec<f32>>,
}

impl Executor for Recording {
    fn execute(&mut self, batch: &StepBatch<'_>) -> tandem::Result<Vec<Sampled>> {
        let logits = self.inner.forward_logits(&batch.input, &batch.copies)?;
        let mut out = Vec::new();
        for (i, (ctx, &id)) in batch.samples.iter().zip(&batch.sample_ids).enumerate() {
            let row = logits.row(i).to_vec();
            let prev = self.logits.insert((id, ctx.output.len()), row.clone());
            assert!(
                prev.is_none(),
                "request {id} sampled position {} twice",
                ctx.output.len()
            );
            out.push(sample(&mut row.clone(), ctx));
        }
        Ok(out)
    }

    fn copy_kv(&mut self, copies: &[tandem::kv::KvCopy]) -> tandem::Result<()> {
        self.inner.copy_kv(copies)
    }

    fn copy_seconds(&self) -> f64 {
        self.inner.copy_seconds()
    }
}

/// Engine settings of a test.
#[derive(Clone, Copy)]
pub struct Setup {
    pub tp: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    pub max_model_len: usize,
    pub budget: usize,
    pub prefix_caching: bool,
    /// Slots of the host KV tier (0: none).
    pub host_blocks: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            tp: 1,
            block_size: 16,
            num_blocks: 64,
            max_model_len: 256,
            budget: 4096,
            prefix_caching: true,
            host_blocks: 0,
        }
    }
}

pub fn engine_for(cfg: &ModelConfig, src: WeightSource, s: Setup) -> EngineCore<Recording> {
    let comm = Arc::new(ThreadComm::new(s.tp));
    let inner = ModelExecutor::load(
        cfg,
        Arc::new(src),
        ExecutorConfig {
            tp_size: s.tp,
            num_blocks: s.num_blocks,
            block_size: s.block_size,
            max_model_len: s.max_model_len,
            host_blocks: s.host_blocks,
            progress: false,
        },
        |rank| CpuBackend::with_comm(rank, comm.clone()),
    )
    .unwrap();
    let mut ecfg = EngineConfig::for_model(cfg, s.num_blocks);
    ecfg.block_size = s.block_size;
    ecfg.max_model_len = s.max_model_len;
    ecfg.max_num_batched_tokens = s.budget;
    ecfg.enable_prefix_caching = s.prefix_caching;
    ecfg.host_kv_blocks = s.host_blocks;
    EngineCore::new(
        ecfg,
        Recording {
            inner,
            logits: HashMap::new(),
        },
        cfg.eos_token_ids.clone(),
    )
    .unwrap()
}

/// The fixture name of the built-in demo model (its weights are compiled into tandem; its
/// reference logits sit with the fixtures').
pub const DEMO_FIXTURE: &str = "tandem-demo";

/// An engine over a fixture model's real weights (or the demo model's).
pub fn fixture_engine(name: &str, s: Setup) -> EngineCore<Recording> {
    if name == DEMO_FIXTURE {
        let cfg = tandem::model::demo::config().unwrap();
        return engine_for(&cfg, tandem::model::demo::weights().unwrap(), s);
    }
    let dir = fixture(name);
    let cfg = ModelConfig::from_dir(&dir).unwrap();
    engine_for(&cfg, WeightSource::open(&dir).unwrap(), s)
}

/// A fixture model's (or the demo model's) config and weights.
pub fn model_source(name: &str) -> (ModelConfig, WeightSource) {
    if name == DEMO_FIXTURE {
        return (
            tandem::model::demo::config().unwrap(),
            tandem::model::demo::weights().unwrap(),
        );
    }
    let dir = fixture(name);
    (
        ModelConfig::from_dir(&dir).unwrap(),
        WeightSource::open(&dir).unwrap(),
    )
}

/// A TP1 engine over a fixture model (or the demo model) on `backend`.
pub fn engine_on<B: tandem::backend::Backend>(
    name: &str,
    s: &Setup,
    backend: B,
) -> EngineCore<ModelExecutor<B>> {
    let (cfg, src) = model_source(name);
    let slot = std::sync::Mutex::new(Some(backend));
    let exec = ModelExecutor::load(
        &cfg,
        Arc::new(src),
        ExecutorConfig {
            tp_size: 1,
            num_blocks: s.num_blocks,
            block_size: s.block_size,
            max_model_len: s.max_model_len,
            host_blocks: s.host_blocks,
            progress: false,
        },
        move |_| slot.lock().unwrap().take().expect("one rank"),
    );
    let exec = match exec {
        Ok(e) => e,
        Err(e) => panic!("loading {name}: {e}"),
    };
    let mut ecfg = EngineConfig::for_model(&cfg, s.num_blocks);
    ecfg.block_size = s.block_size;
    ecfg.max_model_len = s.max_model_len;
    ecfg.max_num_batched_tokens = s.budget;
    ecfg.enable_prefix_caching = s.prefix_caching;
    ecfg.host_kv_blocks = s.host_blocks;
    EngineCore::new(ecfg, exec, cfg.eos_token_ids.clone()).unwrap()
}

/// Runs requests (id, prompt, max_tokens greedy, EOS ignored) to completion; returns each
/// request's tokens. Checks the KV invariants after every step and that all blocks are free at the end.
pub fn run_greedy<E: Executor>(
    engine: &mut EngineCore<E>,
    reqs: &[(RequestId, Vec<u32>, usize)],
) -> HashMap<RequestId, Vec<u32>> {
    for (id, prompt, n) in reqs {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(*n)
        };
        engine
            .add_request(Request {
                id: *id,
                prompt: prompt.clone(),
                params,
            })
            .unwrap();
    }
    drain(engine)
}

/// Steps until idle; returns each request's tokens.
pub fn drain<E: Executor>(engine: &mut EngineCore<E>) -> HashMap<RequestId, Vec<u32>> {
    let mut out: HashMap<RequestId, Vec<u32>> = HashMap::new();
    let mut steps = 0;
    while engine.has_work() {
        for o in engine.step().map_err(|f| f.error).unwrap() {
            if let Some(t) = o.token {
                out.entry(o.id).or_default().push(t.token);
            }
        }
        engine.check_invariants().unwrap();
        steps += 1;
        assert!(steps < 100_000, "engine does not finish");
    }
    engine.check_invariants().unwrap();
    out
}

/// Next-token logits after `prompt` and each prefix of `tokens` (one prefill each, written
/// over blocks 0, 1, ... of the engine's cache: call it once the engine's requests are done,
/// since it clobbers what the prefix cache holds there).
pub fn step_logits<B: tandem::backend::Backend>(
    e: &mut EngineCore<ModelExecutor<B>>,
    prompt: &[u32],
    tokens: &[u32],
    block_size: usize,
) -> Vec<Vec<f32>> {
    use tandem::backend::{AttentionMeta, AttnSeq};
    (0..tokens.len())
        .map(|s| {
            let mut t = prompt.to_vec();
            t.extend_from_slice(&tokens[..s]);
            let n = t.len();
            let input = tandem::backend::ModelInput {
                tokens: t,
                positions: (0..n as u32).collect(),
                slots: (0..n as u32).collect(),
                attn: AttentionMeta {
                    block_size,
                    seqs: vec![AttnSeq {
                        query_start: 0,
                        query_len: n,
                        context_len: n,
                        block_table: (0..n.div_ceil(block_size) as u32).collect(),
                    }],
                },
                logit_rows: vec![n - 1],
            };
            e.executor_mut().forward_logits(&input, &[]).unwrap().data
        })
        .collect()
}
