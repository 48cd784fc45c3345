"""The official openai client against NVIDIA Dynamo's frontend serving tandem workers through
python/tandem_dynamo, beside tandem's own frontend over the same worker processes.

    dynamo_serving.py agg|rr|disagg DYNAMO_URL TANDEM_URL MODEL WORKER...

agg: Dynamo's KV router over two aggregated workers: greedy tokens equal tandem's frontend's
(completions and chat, streaming and not, logprobs), a conversation's later turns hit the
cache of the worker that holds their prefix, min_tokens reaches the engine, a cancelled
stream is aborted in the engine (its counters say so), an unsupported field is a 400.
rr: round-robin over the same: equal tokens, and both workers serve.
disagg: Dynamo's prefill router over a prefill and a decode worker: equal tokens, the first
token itself only, and no blocks held at the prefill worker afterwards, also when the client
leaves before the answer. Asserts, then prints "ok" and a JSON summary."""
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
from openai import BadRequestError, OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from tandem_dynamo.worker import Worker  # noqa: E402

mode, dyn_url, tandem_url, model, *workers = sys.argv[1:]
dyn = OpenAI(base_url=f"{dyn_url}/v1", api_key="unused", max_retries=0)
own = OpenAI(base_url=f"{tandem_url}/v1", api_key="unused", max_retries=0)
THINKING_OFF = {"chat_template_kwargs": {"enable_thinking": False}}
summary = {}


def loads():
    async def one(a):
        return await Worker(a).load()

    async def every():
        return await asyncio.gather(*(one(a) for a in workers))

    return asyncio.run(every())


def settle(pred, what, timeout=15.0):
    """Waits until pred(loads()) holds."""
    deadline = time.time() + timeout
    while True:
        ls = loads()
        if pred(ls):
            return ls
        if time.time() > deadline:
            raise AssertionError(f"{what}: {[str(l).replace(chr(10), ' ') for l in ls]}")
        time.sleep(0.2)


def completion(client, prompt, stream=False, **kw):
    args = dict(model=model, prompt=prompt, max_tokens=12, temperature=0, **kw)
    if not stream:
        r = client.completions.create(**args)
        return r.choices[0].text, r.usage.prompt_tokens, r.usage.completion_tokens
    text, usage = "", None
    for c in client.completions.create(stream=True, stream_options={"include_usage": True},
                                       **args):
        text += "".join(ch.text for ch in c.choices)
        usage = c.usage or usage
    return text, usage.prompt_tokens, usage.completion_tokens


def chat(client, messages, stream=False, **kw):
    args = dict(model=model, messages=messages, max_tokens=12, temperature=0,
                extra_body=THINKING_OFF, **kw)
    if not stream:
        r = client.chat.completions.create(**args)
        return r.choices[0].message.content, r.usage
    text, usage = "", None
    for c in client.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                            **args):
        text += "".join(ch.delta.content or "" for ch in c.choices)
        usage = c.usage or usage
    return text, usage


PROMPTS = ["And the LORD said", "In the beginning God created", "Blessed are the meek"]


def same_tokens():
    """Greedy answers through Dynamo equal tandem's own frontend's."""
    for p in PROMPTS:
        for stream in (False, True):
            a, b = completion(dyn, p, stream), completion(own, p, stream)
            assert a == b, (p, stream, a, b)
    msgs = [{"role": "user", "content": "Who was Moses?"}]
    for stream in (False, True):
        (a, ua), (b, ub) = chat(dyn, msgs, stream), chat(own, msgs, stream)
        assert (a, ua.prompt_tokens) == (b, ub.prompt_tokens), (stream, a, b, ua, ub)
    summary["tokens"] = completion(dyn, PROMPTS[0])[0]


if mode in ("agg", "rr"):
    before = loads()
    same_tokens()
    lp = [c.completions.create(model=model, prompt=PROMPTS[0], max_tokens=4, temperature=0,
                               logprobs=2).choices[0].logprobs for c in (dyn, own)]
    assert lp[0].tokens == lp[1].tokens, lp
    for x, y in zip(lp[0].token_logprobs, lp[1].token_logprobs):
        assert abs(x - y) < 1e-4, lp
    after = loads()
    served = [a.generated_tokens - b.generated_tokens for a, b in zip(after, before)]
    summary["served"] = served
    if mode == "rr":
        assert all(s > 0 for s in served), f"round-robin left a worker idle: {served}"

if mode == "agg":
    # A conversation's later turns go where its prefix is cached: Dynamo's router reads
    # tandem's KV events.
    hits = []
    for topic in ("the house of David", "the prophet Samuel", "Joseph in Egypt"):
        msgs = [{"role": "user", "content": f"Tell me of {topic}, and of all that was done in "
                                            "those days by the children of Israel."}]
        for turn in range(3):
            text, u = chat(dyn, msgs)
            if turn > 0:
                hits.append(u.prompt_tokens_details.cached_tokens)
            msgs += [{"role": "assistant", "content": text},
                     {"role": "user", "content": "And what came after?"}]
    assert all(h > 0 for h in hits), f"later turns missed the cache: {hits}"
    summary["cached_tokens_of_later_turns"] = hits

    # min_tokens holds back the stop id the model would emit first.
    first = dyn.completions.create(model=model, prompt=PROMPTS[0], max_tokens=1,
                                   temperature=0).choices[0].text
    stop_ids = httpx.post(f"{tandem_url}/tokenize", json={"prompt": first}).json()["tokens"]
    assert len(stop_ids) == 1, stop_ids
    plain = dyn.completions.create(model=model, prompt=PROMPTS[0], max_tokens=6, temperature=0,
                                   extra_body={"stop_token_ids": stop_ids})
    held = dyn.completions.create(model=model, prompt=PROMPTS[0], max_tokens=6, temperature=0,
                                  extra_body={"stop_token_ids": stop_ids, "min_tokens": 3})
    assert plain.usage.completion_tokens <= 1, plain
    assert held.usage.completion_tokens >= 3, held

    # A client that leaves mid-stream: the engine aborts the request and frees its blocks.
    aborted = sum(l.aborted_requests for l in loads())
    with httpx.stream("POST", f"{dyn_url}/v1/completions", timeout=30, json={
            "model": model, "prompt": PROMPTS[1], "max_tokens": 400, "temperature": 0,
            "ignore_eos": True, "stream": True}) as r:
        chunks = 0
        for line in r.iter_lines():
            chunks += line.startswith("data:")
            if chunks == 3:
                break
    settle(lambda ls: sum(l.aborted_requests for l in ls) == aborted + 1
           and all(l.running == 0 and l.used_blocks == 0 for l in ls),
           "the cancelled stream was not aborted in the engine")

    # A field tandem cannot honour is refused (Dynamo's frontend shows a bare 400; the
    # bridge's log names the field).
    try:
        dyn.completions.create(model=model, prompt="x", max_tokens=2, temperature=1.0, n=2)
        raise AssertionError("n=2 accepted")
    except BadRequestError as e:
        summary["refused"] = str(e)

if mode == "disagg":
    prefill, decode = workers
    same_tokens()
    one = dyn.completions.create(model=model, prompt=PROMPTS[2], max_tokens=1, temperature=0)
    assert one.usage.completion_tokens == 1, one
    settle(lambda ls: ls[0].used_blocks == 0 and ls[1].used_blocks == 0,
           "blocks held after the requests")
    pulls = loads()[1].kv_pulls
    assert pulls > 0, "the decode worker pulled no KV"
    # A client that leaves before its answer: whatever leg it left in, no blocks stay held
    # (the prefill worker's hold times out, --kv-hold-timeout).
    try:
        httpx.post(f"{dyn_url}/v1/completions", timeout=0.05, json={
            "model": model, "prompt": PROMPTS[0] * 8, "max_tokens": 50, "temperature": 0})
    except httpx.TimeoutException:
        pass
    settle(lambda ls: all(l.used_blocks == 0 and l.running == 0 for l in ls),
           "blocks held after a client left between the legs", timeout=20)
    summary["kv_pulls"] = pulls

print("ok")
print(json.dumps(summary))
