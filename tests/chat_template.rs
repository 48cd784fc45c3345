//! The demo model's chat template, written for tandem in Qwen3's conventions, uses every Jinja
//! feature Qwen3's own template does: namespace(), loop controls, reversed iteration, Python
//! string methods, tool calls and think blocks. tandem (minijinja) must render it exactly as
//! transformers (jinja2) does, for every conversation shape, errors included.

mod common;

use common::python::run_script_with_input;
use serde_json::{Value, json};
use tandem::frontend::chat::{ChatInput, ChatTemplate};

fn cases() -> Vec<Value> {
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather of a city <and its \"quotes\">",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
            "days": {"type": "integer"}}, "required": ["city"]}}}]);
    let call = |city: &str| {
        json!({"id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": city, "days": 2}}})
    };
    vec![
        json!({"messages": [{"role": "user", "content": "Hi"}]}),
        json!({"messages": [{"role": "user", "content": "Hi"}], "kwargs": {"enable_thinking": false}}),
        json!({"messages": [{"role": "user", "content": "Hi"}], "kwargs": {"enable_thinking": true}}),
        json!({"messages": [{"role": "user", "content": "Hi"}], "kwargs": {"add_generation_prompt": false}}),
        json!({"messages": [{"role": "system", "content": "Be brief. "}, {"role": "user", "content": "Hi"}]}),
        // Reasoning of turns before the last query is dropped; after it, kept.
        json!({"messages": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "<think>\nold\n</think>\n\nfirst"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "second", "reasoning_content": "  new thought \n"}],
            "kwargs": {"add_generation_prompt": false}}),
        // Tools in the system turn, a call, two results grouped in one user turn, a reply.
        json!({"tools": tools, "messages": [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [call("Paris"), call("Rome")]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "rain"},
            {"role": "assistant", "content": "Paris is sunny.", "reasoning_content": "compare"},
            {"role": "user", "content": "<tool_response> is not a tool result here"}]}),
        json!({"tools": tools, "messages": [{"role": "user", "content": "x"}],
            "kwargs": {"enable_thinking": false}}),
        json!({"messages": [
            {"role": "assistant", "content": "I", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"raw\": true}"}}]}]}),
        // Errors: a late system message, an unknown role.
        json!({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}),
        json!({"messages": [{"role": "critic", "content": "a"}]}),
    ]
}

fn render(t: &ChatTemplate, case: &Value) -> String {
    let msgs = case["messages"].as_array().unwrap();
    let tools = case.get("tools").and_then(Value::as_array);
    let kwargs = case
        .get("kwargs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    match t.render(&ChatInput {
        messages: msgs,
        tools: tools.map(Vec::as_slice),
        kwargs,
    }) {
        Ok(s) => s,
        Err(e) => format!("ERROR: {e}"),
    }
}

#[test]
fn tandem_renders_the_demo_template_as_transformers_does() {
    let t = ChatTemplate::from_model_dir(None).unwrap();
    let cases = cases();
    let input = json!({"template": tandem::model::demo::CHAT_TEMPLATE, "cases": cases});
    let out = run_script_with_input("render_template.py", &[], &input.to_string());
    let want: Vec<String> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(want.len(), cases.len());
    for (i, (case, want)) in cases.iter().zip(&want).enumerate() {
        let got = render(&t, case);
        if want.starts_with("ERROR") {
            assert!(
                got.starts_with("ERROR"),
                "case {i}: transformers fails ({want}), tandem gives {got:?}"
            );
            let why = if i == 9 {
                "system message"
            } else {
                "unknown role"
            };
            assert!(
                got.contains(why) && want.contains(why),
                "case {i}: {got} / {want}"
            );
        } else {
            assert_eq!(&got, want, "case {i}: {case}");
        }
    }
    // The shapes the server relies on.
    assert!(want[1].ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
    assert!(want[2].ends_with("<|im_start|>assistant\n"));
    assert!(
        !want[5].contains("old") && want[5].contains("<think>\nnew thought\n</think>\n\nsecond")
    );
    assert!(want[6].contains("<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrain\n</tool_response><|im_end|>"));
    assert!(
        want[6].contains(
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\", \"days\": 2}}"
        )
    );
    assert!(want[8].contains("\"arguments\": {\"raw\": true}}"));
}
