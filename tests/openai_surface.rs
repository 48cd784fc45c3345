//! The OpenAI surface vLLM gives Qwen3 users, through the official openai client against real
//! `tandem serve` processes: n and best_of, batched prompts, echo, thinking on and off,
//! reasoning content, tool calls (from a worker whose executor answers a known tool call
//! through the Executor seam), streaming and not, /tokenize and /detokenize, and a named 400
//! for every unsupported field (tests/python/openai_surface.py holds the assertions).

mod common;

use common::http::wait_health;
use common::procs;
use common::python::run_script;

/// What the scripted worker answers every request with: a think block, then a tool call.
const SCRIPT: &str = "<think>\nThe user wants the weather in Paris.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_gets_what_vllm_gives_qwen3_users() {
    let (_demo, demo) = procs::serve(&["--reasoning-parser", "qwen3"]);
    let (_scripted, scripted) = procs::serve(&[
        "--reasoning-parser",
        "qwen3",
        "--tool-call-parser",
        "hermes",
        "--enable-auto-tool-choice",
        "--debug-output-text",
        SCRIPT,
    ]);
    wait_health(&demo, 200).await;
    wait_health(&scripted, 200).await;
    let out = tokio::task::spawn_blocking(move || {
        run_script("openai_surface.py", &[&demo, &scripted, "tandem-demo"])
    })
    .await
    .unwrap();
    assert!(out.starts_with("ok"), "{out}");
}
