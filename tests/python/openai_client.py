"""The official openai client against a tandem server: streams a chat completion and a
completion, and makes one non-streaming call of each. Prints a JSON summary."""
import json
import sys

from openai import BadRequestError, OpenAI

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"{base}/v1", api_key="unused")

assert [m.id for m in client.models.list().data] == [model]

chunks = list(client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, stream=True,
    stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
chat_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
usage = chunks[-1].usage

comp_chunks = list(client.completions.create(
    model=model, prompt="Once upon a time", max_tokens=6, stream=True, temperature=0,
    extra_body={"ignore_eos": True}))
comp_text = "".join(c.choices[0].text for c in comp_chunks)

full = client.completions.create(model=model, prompt="Once upon a time", max_tokens=6, temperature=0,
                                 logprobs=2, extra_body={"ignore_eos": True})
chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                      max_completion_tokens=4, logprobs=True, top_logprobs=2)
try:
    client.completions.create(model=model, prompt="x", max_tokens=4, temperature=-1)
    bad = "accepted"
except BadRequestError as e:
    bad = e.body["message"] if isinstance(e.body, dict) else str(e.body)

print(json.dumps({
    "chat_chunks": len(chunks), "chat_text": chat_text, "chat_finish": finish,
    "chat_usage": usage.completion_tokens if usage else None,
    "completion_chunks": len(comp_chunks), "completion_text": comp_text,
    "full_text": full.choices[0].text, "full_logprobs": len(full.choices[0].logprobs.token_logprobs),
    "full_usage": full.usage.completion_tokens, "chat_logprobs": len(chat.choices[0].logprobs.content),
    "bad_request": bad,
}))
