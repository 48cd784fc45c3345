"""The official openai client against the OpenAI surface vLLM gives Qwen3 users: n and
best_of, batched prompts, echo, thinking on and off, reasoning content, tool calls, streaming
and not, /tokenize and /detokenize, and a named 400 for every unsupported field.

    openai_surface.py DEMO_URL SCRIPTED_URL MODEL

DEMO_URL serves the demo model with --reasoning-parser qwen3; SCRIPTED_URL the same with
--tool-call-parser hermes and a worker whose every answer is SCRIPT (below). Asserts, then
prints "ok" and a JSON summary."""
import json
import sys

import httpx
from openai import BadRequestError, OpenAI

demo_url, scripted_url, model = sys.argv[1:4]
demo = OpenAI(base_url=f"{demo_url}/v1", api_key="unused")
scripted = OpenAI(base_url=f"{scripted_url}/v1", api_key="unused")
REASONING = "\nThe user wants the weather in Paris.\n"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]
summary = {}


def chat_stream(client, **kw):
    chunks = list(client.chat.completions.create(model=model, stream=True, **kw))
    return chunks, [c for c in chunks if c.choices]


# --- n and best_of -------------------------------------------------------------------------
r = demo.completions.create(model=model, prompt="And the LORD said", n=3, max_tokens=8,
                            temperature=1.0, seed=7)
assert [c.index for c in r.choices] == [0, 1, 2], r
assert r.usage.prompt_tokens == len(httpx.post(f"{demo_url}/tokenize", json={
    "prompt": "And the LORD said"}).json()["tokens"]), r.usage
assert 3 <= r.usage.completion_tokens <= 24, r.usage
# Choice i is seeded with seed + i: the same request gives the same choices.
again = demo.completions.create(model=model, prompt="And the LORD said", n=3, max_tokens=8,
                                temperature=1.0, seed=7)
assert [c.text for c in r.choices] == [c.text for c in again.choices]
assert len({c.text for c in r.choices}) > 1, "n choices are different samples"

best = demo.completions.create(model=model, prompt="In the beginning", n=2, best_of=4,
                               max_tokens=6, temperature=1.0, seed=3, logprobs=0)
assert len(best.choices) == 2
sums = [sum(c.logprobs.token_logprobs) for c in best.choices]
assert sums[0] >= sums[1], sums
chat_n = demo.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                      n=2, max_tokens=6, temperature=1.0, seed=1)
assert [c.index for c in chat_n.choices] == [0, 1]
chat_best = demo.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hi"}], n=1, max_tokens=6,
    temperature=1.0, extra_body={"best_of": 3})
assert len(chat_best.choices) == 1

_, streamed = chat_stream(demo, messages=[{"role": "user", "content": "Hi"}], n=2,
                          max_tokens=6, temperature=1.0, seed=1)
texts = ["", ""]
finishes = [None, None]
for c in streamed:
    ch = c.choices[0]
    texts[ch.index] += ch.delta.content or ""
    finishes[ch.index] = ch.finish_reason or finishes[ch.index]
assert texts == [c.message.content for c in chat_n.choices], (texts, chat_n)
assert finishes == ["length", "length"]
summary["n"] = texts

# --- a batch of prompts: strings, token ids ------------------------------------------------
batch = demo.completions.create(model=model, prompt=["In the beginning", "And Jesus said"],
                                n=2, max_tokens=4, temperature=0.8, seed=5)
assert [c.index for c in batch.choices] == [0, 1, 2, 3]
ids = httpx.post(f"{demo_url}/tokenize", json={"prompt": "In the beginning"}).json()["tokens"]
by_ids = demo.completions.create(model=model, prompt=[ids, ids], max_tokens=4, temperature=0)
by_text = demo.completions.create(model=model, prompt="In the beginning", max_tokens=4,
                                  temperature=0)
assert [c.text for c in by_ids.choices] == [by_text.choices[0].text] * 2
assert by_ids.usage.prompt_tokens == 2 * len(ids)
stream_batch = list(demo.completions.create(model=model, prompt=[ids, ids],
                                            max_tokens=4, temperature=0, stream=True))
per = {}
for c in stream_batch:
    for ch in c.choices:
        per[ch.index] = per.get(ch.index, "") + ch.text
assert per == {0: by_text.choices[0].text, 1: by_text.choices[0].text}, per

# --- echo ----------------------------------------------------------------------------------
echo = demo.completions.create(model=model, prompt="In the beginning", max_tokens=4,
                               temperature=0, echo=True)
assert echo.choices[0].text == "In the beginning" + by_text.choices[0].text
echo_ids = demo.completions.create(model=model, prompt=ids, max_tokens=4, temperature=0,
                                   echo=True)
assert echo_ids.choices[0].text == echo.choices[0].text
echo_stream = "".join(c.choices[0].text for c in demo.completions.create(
    model=model, prompt="In the beginning", max_tokens=4, temperature=0, echo=True,
    stream=True) if c.choices)
assert echo_stream == echo.choices[0].text

# --- thinking off and on -------------------------------------------------------------------
off = httpx.post(f"{demo_url}/tokenize", json={
    "messages": [{"role": "user", "content": "Hi"}], "return_token_strs": True}).json()
on = httpx.post(f"{demo_url}/tokenize", json={
    "messages": [{"role": "user", "content": "Hi"}],
    "chat_template_kwargs": {"enable_thinking": True}}).json()
detok = lambda t: httpx.post(f"{demo_url}/detokenize", json={"tokens": t}).json()["prompt"]
assert detok(off["tokens"]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
assert detok(on["tokens"]).endswith("<|im_start|>assistant\n"), detok(on["tokens"])
assert off["count"] == len(off["tokens"]) == len(off["token_strs"]) and off["max_model_len"] > 0
plain = demo.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}],
                                     max_tokens=12, temperature=0)
msg = plain.choices[0].message
assert msg.content and getattr(msg, "reasoning_content", None) is None, msg

# --- reasoning content (the scripted worker thinks, then calls a tool) ----------------------
thinking = {"chat_template_kwargs": {"enable_thinking": True}}
r = scripted.chat.completions.create(model=model, max_tokens=100,
                                     messages=[{"role": "user", "content": "Weather in Paris?"}],
                                     extra_body=thinking)
m = r.choices[0].message
assert m.reasoning_content == REASONING, m
# Without tools the call stays text in the content.
assert "<tool_call>" in m.content and r.choices[0].finish_reason == "stop", r
_, chunks = chat_stream(scripted, max_tokens=100, extra_body=thinking,
                        messages=[{"role": "user", "content": "Weather in Paris?"}])
assert chunks[0].choices[0].delta.role == "assistant"
streamed_reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or ""
                             for c in chunks)
assert streamed_reasoning == REASONING, streamed_reasoning

# --- tool calls, whole and streamed ---------------------------------------------------------
ask = [{"role": "user", "content": "Weather in Paris?"}]
r = scripted.chat.completions.create(model=model, messages=ask, tools=TOOLS, max_tokens=100,
                                     extra_body=thinking)
ch = r.choices[0]
assert ch.finish_reason == "tool_calls", ch
assert ch.message.content is None and ch.message.reasoning_content == REASONING, ch.message
(call,) = ch.message.tool_calls
assert call.type == "function" and call.function.name == "get_weather"
assert json.loads(call.function.arguments) == {"city": "Paris"}
assert call.id.startswith("chatcmpl-tool-")

_, chunks = chat_stream(scripted, messages=ask, tools=TOOLS, max_tokens=100, extra_body=thinking)
calls = {}
content = ""
for c in chunks:
    d = c.choices[0].delta
    content += d.content or ""
    for tc in d.tool_calls or []:
        entry = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
        if tc.id:
            assert entry["id"] is None, "the id comes once"
            entry["id"] = tc.id
        if tc.function and tc.function.name:
            entry["name"] = tc.function.name
        if tc.function and tc.function.arguments:
            entry["arguments"] += tc.function.arguments
assert content == "", repr(content)
assert list(calls) == [0] and calls[0]["name"] == "get_weather", calls
assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}, calls
assert chunks[-1].choices[0].finish_reason == "tool_calls"

# The conversation goes on: the call and its result are rendered back into the prompt.
follow = [*ask, {"role": "assistant", "content": None, "tool_calls": [
    {"id": call.id, "type": "function", "function": {"name": "get_weather",
                                                     "arguments": call.function.arguments}}]},
          {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
rendered = detok(httpx.post(f"{scripted_url}/tokenize", json={
    "messages": follow, "tools": TOOLS}).json()["tokens"])
assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' \
    in rendered, rendered
assert "<tool_response>\nsunny, 21 C\n</tool_response>" in rendered, rendered
assert '"name": "get_weather"' in rendered.split("<tools>")[1], rendered
r = scripted.chat.completions.create(model=model, messages=follow, tools=TOOLS, max_tokens=100)
assert r.choices[0].finish_reason == "tool_calls"
none = scripted.chat.completions.create(model=model, messages=ask, tools=TOOLS, max_tokens=100,
                                        tool_choice="none", extra_body=thinking)
assert none.choices[0].message.tool_calls in (None, []) and "<tool_call>" in \
    none.choices[0].message.content

# --- min_tokens (vLLM's extension): stop ids and EOS wait until that many tokens are out -----
first = demo.completions.create(model=model, prompt="In the beginning", max_tokens=1,
                                temperature=0).choices[0].text
stop_ids = httpx.post(f"{demo_url}/tokenize", json={"prompt": first}).json()["tokens"]
assert len(stop_ids) == 1, (first, stop_ids)
stopped = demo.completions.create(model=model, prompt="In the beginning", max_tokens=6,
                                  temperature=0, extra_body={"stop_token_ids": stop_ids})
assert (stopped.choices[0].finish_reason, stopped.usage.completion_tokens) == ("stop", 1), stopped
held = demo.completions.create(model=model, prompt="In the beginning", max_tokens=6,
                               temperature=0, extra_body={"stop_token_ids": stop_ids,
                                                          "min_tokens": 3})
assert held.usage.completion_tokens >= 3, held
summary["min_tokens"] = held.choices[0].text

# --- every unsupported field is a 400 that names it ----------------------------------------
named = {}
for field, kw in [
    ("logit_bias", {"logit_bias": {"5": 10}}),
    ("response_format", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object"}}}}),
    ("response_format", {"response_format": {"type": "json_object"}}),
    ("tool_choice", {"tools": TOOLS, "tool_choice": "required"}),
    ("frobnicate", {"extra_body": {"frobnicate": True}}),
    ("top_k", {"extra_body": {"top_k": -5}}),
    ("max_tokens", {"max_tokens": 10 ** 6}),
    ("min_tokens", {"extra_body": {"min_tokens": 9}}),
    ("messages", {"messages": [{"role": "wizard", "content": "x"}]}),
]:
    args = {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4, **kw}
    try:
        demo.chat.completions.create(**args)
        raise AssertionError(f"{field}: accepted")
    except BadRequestError as e:
        err = e.body if isinstance(e.body, dict) else {}
        assert err.get("param") == field, (field, e.body)
        named[field] = err.get("message")
for field, kw in [("suffix", {"suffix": "x"}), ("echo", {"echo": True, "logprobs": 1})]:
    try:
        demo.completions.create(model=model, prompt="x", max_tokens=4, **kw)
        raise AssertionError(f"{field}: accepted")
    except BadRequestError as e:
        assert e.body["param"] == field, e.body
summary["unsupported"] = named
print("ok")
print(json.dumps(summary))
