//! Fuzz targets, as property tests (cargo-fuzz needs a nightly toolchain; this machine and
//! CI have stable): every input a client or a peer can send, and every file a user can point
//! tandem at, must give a value or an error, never a panic, a hang or an unbounded
//! allocation. Each target runs a bounded number of cases (PROPTEST_CASES raises it for a
//! longer run); failures found are kept in tests/fuzz.proptest-regressions and replayed
//! first on every run.

mod common;

use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tandem::frontend::chat::{ChatInput, ChatTemplate};
use tandem::frontend::openai::{Defaults, parse_chat, parse_completion};

/// Any JSON value, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        prop_oneof![Just(f64::MAX), Just(-0.0), Just(1e-300)].prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value for one of the request fields: what the field wants, something near it, or junk.
fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    let typed = match field {
        "prompt" => prop_oneof![
            ".{0,40}".prop_map(Value::from),
            prop::collection::vec(0u32..300_000, 0..40).prop_map(|v| json!(v)),
            prop::collection::vec(prop::collection::vec(0u32..3000, 0..10), 0..4)
                .prop_map(|v| json!(v)),
            prop::collection::vec(".{0,10}", 0..4).prop_map(|v| json!(v)),
        ]
        .boxed(),
        "messages" => prop::collection::vec(
            (
                prop_oneof![
                    Just("user"),
                    Just("system"),
                    Just("assistant"),
                    Just("tool"),
                    Just("developer"),
                    Just("wizard")
                ],
                json_value(),
            )
                .prop_map(|(role, content)| json!({"role": role, "content": content})),
            0..5,
        )
        .prop_map(Value::Array)
        .boxed(),
        "max_tokens"
        | "max_completion_tokens"
        | "n"
        | "best_of"
        | "top_k"
        | "seed"
        | "logprobs"
        | "top_logprobs" => prop_oneof![
            (-5i64..100).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ]
        .boxed(),
        "temperature" | "top_p" | "min_p" | "presence_penalty" | "frequency_penalty"
        | "repetition_penalty" => prop_oneof![
            (-3.0f64..3.0).prop_map(Value::from),
            Just(json!(f64::MAX)),
            Just(json!("0.5")),
        ]
        .boxed(),
        _ => json_value().boxed(),
    };
    prop_oneof![4 => typed, 1 => json_value()].boxed()
}

const FIELDS: &[&str] = &[
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "best_of",
    "logprobs",
    "top_logprobs",
    "echo",
    "tools",
    "tool_choice",
    "chat_template_kwargs",
    "response_format",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "ignore_eos",
    "logit_bias",
    "unknown_field",
];

/// A request body: some of the fields the API knows, with any values.
fn request_body() -> impl Strategy<Value = Value> {
    prop::sample::subsequence(FIELDS, 0..FIELDS.len())
        .prop_flat_map(|fields| {
            fields
                .into_iter()
                .map(|f| field_value(f).prop_map(move |v| (f.to_string(), v)))
                .collect::<Vec<_>>()
        })
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
}

fn demo_template() -> &'static ChatTemplate {
    static T: OnceLock<ChatTemplate> = OnceLock::new();
    T.get_or_init(|| ChatTemplate::from_model_dir(None).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// OpenAI request bodies: parsed, checked and turned into sampling parameters, or a 400.
    #[test]
    fn request_bodies_become_parameters_or_errors(body in request_body(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let d = Defaults::default();
        let text = body.to_string();
        if let Ok(r) = parse_completion(text.as_bytes())
            && let Ok(list) = r.prompt.clone().into_list()
        {
            for _ in list {
                let _ = r.common.choices(&d);
                let _ = r.common.sampling(&d, (r.common.max_tokens, "max_tokens"), Some(16), r.logprobs, (5, 512));
            }
        }
        if let Ok(r) = parse_chat(text.as_bytes()) {
            let _ = r.common.choices(&d);
            let _ = r.common.sampling(&d, (r.max_completion_tokens, "max_tokens"), None, r.top_logprobs, (30, 512));
            // Whatever the messages hold, the template renders them or says why not.
            let _ = demo_template().render(&ChatInput {
                messages: &r.messages,
                tools: r.tools.as_deref(),
                kwargs: r.chat_template_kwargs.clone().unwrap_or_default(),
            });
        }
        let _ = parse_completion(&raw);
        let _ = parse_chat(&raw);
    }

    /// Chat templates with hostile messages (roles, contents and tool calls of any shape):
    /// rendered or refused, within the template's fuel.
    #[test]
    fn hostile_messages_render_or_fail_cleanly(msgs in prop::collection::vec(json_value(), 0..6), tools in prop::option::of(prop::collection::vec(json_value(), 0..3)), kwargs in prop::collection::btree_map(".{0,12}", json_value(), 0..3)) {
        let kwargs: Map<String, Value> = kwargs.into_iter().collect();
        let _ = demo_template().render(&ChatInput { messages: &msgs, tools: tools.as_deref(), kwargs });
    }

    /// The Mooncake trace loader: any text is a trace or a line-numbered error.
    #[test]
    fn traces_load_or_name_their_bad_lines(lines in prop::collection::vec(prop_oneof![
        ".{0,60}",
        (0u64..10_000, 0usize..5000, 0usize..3000, prop::collection::vec(0u64..50, 0..12))
            .prop_map(|(t, i, o, ids)| common::trace_line(t, i, o, &ids)),
        json_value().prop_map(|v| v.to_string()),
    ], 0..8), block in prop_oneof![Just(512usize), 0usize..700], length in prop_oneof![Just(1.0f64), Just(1.0 / 32.0), -1.0f64..4.0], caps in (prop::option::of(0usize..600), prop::option::of(0usize..50))) {
        use tandem::replay::trace::{Scaling, parse, scale, stats, synthesize};
        let text = lines.join("\n");
        if let Ok(reqs) = parse(&text, block) {
            let _ = stats(&reqs, block);
            for r in reqs.iter().take(3) {
                prop_assert_eq!(synthesize(r, 0, 2000, block).len(), r.input_length);
            }
            let s = Scaling { length, max_input: caps.0, max_output: caps.1, ..Scaling::default() };
            if let Ok((scaled, b)) = scale(&reqs, block, &s) {
                // What scaling makes is a valid trace of its new block size.
                let text: Vec<String> = scaled.iter().map(|r| serde_json::to_string(r).unwrap()).collect();
                prop_assert_eq!(parse(&text.join("\n"), b).unwrap(), scaled);
            }
        }
    }

    /// config.json, generation_config.json and tokenizer_config.json of any content.
    #[test]
    fn model_configs_parse_or_fail_cleanly(v in json_value(), dims in prop::collection::btree_map(prop::sample::select(vec![
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings", "rope_theta",
        "rms_norm_eps", "tie_word_embeddings", "rope_scaling", "eos_token_id"]), json_value(), 0..13)) {
        let mut cfg = json!({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"});
        for (k, val) in dims {
            cfg[k] = val;
        }
        let _ = tandem::config::ModelConfig::from_json(&cfg.to_string());
        let _ = tandem::config::ModelConfig::from_json(&v.to_string());
        let _ = tandem::config::GenerationConfig::from_json(&v.to_string());
        let dir = tempfile::tempdir().unwrap();
        let tc = json!({"chat_template": v});
        std::fs::write(dir.path().join("tokenizer_config.json"), tc.to_string()).unwrap();
        if let Ok(t) = ChatTemplate::from_model_dir(Some(dir.path())) {
            let _ = t.render_text(&[("user".into(), "hi".into())]);
        }
    }

    /// safetensors files of any header and size: opened and read, or refused.
    #[test]
    fn safetensors_headers_open_or_fail_cleanly(header in json_value(), declared in prop_oneof![Just(None), (0u64..1 << 40).prop_map(Some)], body in prop::collection::vec(any::<u8>(), 0..256)) {
        let h = header.to_string();
        let mut bytes = declared.unwrap_or(h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(&body);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), &bytes).unwrap();
        if let Ok(src) = tandem::model::WeightSource::open(dir.path()) {
            for name in ["w", "model.embed_tokens.weight"] {
                let _ = src.get(name, &[2, 3], tandem::model::Shard::Full);
            }
        }
    }

    /// KV events from the wire into the router's index: any sequence of stores, removals and
    /// clears keeps the index's counts equal to what it holds.
    #[test]
    fn kv_events_keep_the_index_consistent(events in prop::collection::vec((0usize..3, 0u8..4, any::<bool>(), prop::collection::vec(0u64..40, 0..6)), 0..60)) {
        use tandem::wire::proto::{self, kv_event::Event};
        let mut ix = tandem::router::index::KvIndex::new(3);
        let mut model: Vec<std::collections::BTreeSet<(u64, tandem::kv::Medium)>> = vec![Default::default(); 3];
        for (w, kind, host, hashes) in events {
            let medium = if host { "CPU" } else { "GPU" }.to_string();
            let e = proto::KvEvent { event: match kind {
                0 | 1 => Some(Event::Stored(proto::BlockStored { block_hashes: hashes.clone(), parent_block_hash: None, token_ids: vec![1; hashes.len() * 4], block_size: 4, medium })),
                2 => Some(Event::Removed(proto::BlockRemoved { block_hashes: hashes.clone(), medium })),
                _ => if hashes.len() % 3 == 0 { Some(Event::Cleared(proto::AllBlocksCleared {})) } else { None },
            }};
            let Some(ev) = tandem::router::pool::event_of(e) else { continue };
            ix.apply(w, 0, &ev);
            match ev {
                tandem::kv::KvEvent::BlockStored { block_hashes, medium, .. } => model[w].extend(block_hashes.into_iter().map(|h| (h, medium))),
                tandem::kv::KvEvent::BlockRemoved { block_hashes, medium } => for h in block_hashes { model[w].remove(&(h, medium)); },
                tandem::kv::KvEvent::AllBlocksCleared => model[w].clear(),
            }
            for (i, m) in model.iter().enumerate() {
                prop_assert_eq!(ix.num_blocks(i), m.len());
            }
        }
    }

    /// The ZMQ encoder writes msgpack that decodes to vLLM's event layout for any batch.
    #[test]
    fn zmq_batches_decode_as_vllm_lays_them_out(hashes in prop::collection::vec(any::<u64>(), 1..8), parent in prop::option::of(any::<u64>()), seq in any::<u64>()) {
        let events = vec![
            tandem::kv::KvEvent::BlockStored { block_hashes: hashes.clone(), parent_block_hash: parent, token_ids: vec![3; hashes.len() * 2], block_size: 2, medium: tandem::kv::Medium::Gpu },
            tandem::kv::KvEvent::BlockRemoved { block_hashes: hashes.clone(), medium: tandem::kv::Medium::Gpu },
            tandem::kv::KvEvent::AllBlocksCleared,
        ];
        let b = tandem::worker::kv_hub::EventBatch { sequence: seq, timestamp: 1.5, events, snapshot: false };
        let bytes = tandem::worker::zmq_events::encode_batch(&b);
        let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
        let arr = v.as_array().unwrap();
        prop_assert_eq!(arr.len(), 3);
        let evs = arr[1].as_array().unwrap();
        prop_assert_eq!(evs[0].as_array().unwrap()[0].as_str(), Some("BlockStored"));
        prop_assert_eq!(evs[0].as_array().unwrap()[1].as_array().unwrap().len(), hashes.len());
        prop_assert_eq!(evs[1].as_array().unwrap()[0].as_str(), Some("BlockRemoved"));
        prop_assert_eq!(evs[2].as_array().unwrap()[0].as_str(), Some("AllBlocksCleared"));
    }
}

/// The worker's gRPC service, in this process over the demo engine, fed worker.proto
/// messages decoded from arbitrary bytes and built from arbitrary fields.
mod worker_messages {
    use super::*;
    use prost::Message;
    use tandem::wire::proto::worker_server::Worker;
    use tandem::wire::proto::*;
    use tonic::Request;

    fn service() -> &'static (
        tokio::runtime::Runtime,
        tandem::worker::service::WorkerService,
    ) {
        static S: OnceLock<(
            tokio::runtime::Runtime,
            tandem::worker::service::WorkerService,
        )> = OnceLock::new();
        S.get_or_init(|| {
            let spec = tandem::loader::ModelSpec {
                block_size: 16,
                kv_cache_bytes: 1 << 22,
                max_model_len: Some(128),
                ..Default::default()
            };
            let loaded = tandem::loader::load_cpu(&spec).unwrap();
            let engine = Arc::new(tandem::engine::EngineHandle::spawn(loaded.engine).unwrap());
            let rt = tokio::runtime::Runtime::new().unwrap();
            let svc = tandem::worker::service::WorkerService::new(
                engine,
                Arc::new(tandem::worker::kv_hub::KvEventHub::new()),
                ModelInfoResponse::default(),
                KvLayout::default(),
                "127.0.0.1:1".into(),
            );
            (rt, svc)
        })
    }

    /// Responses the fuzzed generations streamed (the target must reach the engine).
    static GENERATED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// (temperature, top_k, top_p, min_p, repetition, presence, max_tokens, logprobs).
    type Drawn = (f32, u32, f32, f32, f32, f32, u32, Option<u32>);

    fn params(
        (temperature, top_k, top_p, min_p, rep, pen, max_tokens, logprobs): Drawn,
    ) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            seed: Some(1),
            repetition_penalty: rep,
            presence_penalty: pen,
            frequency_penalty: -pen,
            max_tokens,
            stop_token_ids: vec![],
            ignore_eos: true,
            logprobs,
            min_tokens: max_tokens / 2,
        }
    }

    /// Parameters the engine accepts: half the target's messages carry these, so that
    /// generations run, the rest carry anything.
    fn valid_sampling() -> impl Strategy<Value = SamplingParams> {
        (
            0.0f32..2.0,
            0u32..50,
            0.05f32..=1.0,
            0.0f32..0.5,
            0.5f32..2.0,
            -2.0f32..2.0,
            1u32..24,
            prop::option::of(0u32..5),
        )
            .prop_map(params)
    }

    fn sampling() -> impl Strategy<Value = SamplingParams> {
        (
            prop_oneof![
                Just(0.0f32),
                -1.0f32..3.0,
                Just(f32::NAN),
                Just(f32::INFINITY)
            ],
            0u32..3000,
            prop_oneof![Just(1.0f32), -1.0f32..2.0],
            -0.5f32..1.5,
            prop_oneof![Just(1.0f32), -1.0f32..3.0],
            -3.0f32..3.0,
            0u32..40,
            prop::option::of(0u32..30),
        )
            .prop_map(params)
    }

    static TARGET_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    #[test]
    fn worker_rpcs_answer_any_message() {
        // Set on unwinding too, so that a failing target does not leave its sibling waiting.
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                TARGET_DONE.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        let _done = Done;
        fuzz_worker_rpcs();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

        fn fuzz_worker_rpcs(bytes in prop::collection::vec(any::<u8>(), 0..80), prompt in prop_oneof![prop::collection::vec(0u32..2048, 1..80), prop::collection::vec(0u32..2100, 0..140)], sp in prop_oneof![valid_sampling().prop_map(Some), prop::option::of(sampling())], blocks in prop::collection::vec(0u32..100_000, 0..8), id in prop_oneof!["[a-z]{1,6}", ".{0,6}"]) {
            let (rt, svc) = service();
            rt.block_on(async {
                // Bytes off the wire: decoded or refused by prost, then served.
                if let Ok(m) = GenerateRequest::decode(&bytes[..])
                    && let Ok(r) = svc.generate(Request::new(m)).await
                {
                    let mut s = r.into_inner();
                    while let Some(Ok(_)) = futures::StreamExt::next(&mut s).await {}
                }
                let _ = DecodeRequest::decode(&bytes[..]);
                let _ = PullKvRequest::decode(&bytes[..]);
                // Well-formed messages with any values.
                let req = GenerateRequest { request_id: id.clone(), prompt_token_ids: prompt.clone(), sampling: sp, timeline: false };
                if let Ok(r) = svc.generate(Request::new(req.clone())).await {
                    let mut s = r.into_inner();
                    while let Some(Ok(_)) = futures::StreamExt::next(&mut s).await {
                        GENERATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if let Ok(p) = svc.prefill(Request::new(req.clone())).await {
                    let _ = svc.release_kv(Request::new(ReleaseKvRequest { request_id: id.clone() })).await;
                    prop_assert!(p.into_inner().prompt_tokens as usize == prompt.len());
                }
                let _ = svc.kv_digest(Request::new(KvDigestRequest { request_id: id.clone(), block_ids: blocks.clone() })).await;
                let _ = svc.decode(Request::new(DecodeRequest { request: Some(req), first_token: 1, source_addr: "127.0.0.1:1".into(), source_engine_id: String::new(), source_block_ids: blocks })).await;
                let _ = svc.abort(Request::new(AbortRequest { request_id: id })).await;
                Ok(())
            })?;
        }
    }

    #[test]
    fn after_the_fuzzing_nothing_is_left_held() {
        // The target's messages reach the engine, and the service, once idle, holds no
        // blocks. (Tests of a binary run in parallel: this one waits for the target.)
        while !TARGET_DONE.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            GENERATED.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "no fuzzed request ran"
        );
        let (rt, svc) = service();
        rt.block_on(async {
            for _ in 0..500 {
                let l = svc
                    .load(Request::new(LoadRequest {}))
                    .await
                    .unwrap()
                    .into_inner();
                if l.running == 0 && l.waiting == 0 && l.used_blocks == 0 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the worker keeps blocks");
        });
    }
}
