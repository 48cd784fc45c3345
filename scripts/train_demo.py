#!/usr/bin/env python3
"""Trains tandem's built-in demo model: a tiny Qwen3 (same architecture as the real ones, about
3.9 million parameters) with a 2,048-token byte-level BPE vocabulary, on the King James Bible,
so that `tandem serve` with no --model answers in readable English.

The text is public domain and comes from a registry package: Debian's `bible-kjv` (its
`bible` program prints the verses of `bible-kjv-text`):

    apt-get install -y bible-kjv
    python3 -m venv /tmp/v && /tmp/v/bin/pip install torch transformers safetensors tokenizers
    /tmp/v/bin/python scripts/train_demo.py models/tandem-demo      # --minutes 25 by default

It writes config.json, generation_config.json, tokenizer.json, tokenizer_config.json and
model.safetensors (bf16) into the directory, next to the chat template already there
(chat_template.jinja, which the training data is rendered with), and transformers' own logits
for a few prompts (tests/fixtures/tandem-demo.expected.*) that tests/reference_logits.rs checks
tandem against. Training is on the CPU, two threads, stopped by the clock: the weights depend
on the machine's speed, the rest of the recipe is seeded.
"""
import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import time

import jinja2
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import write_expected  # noqa: E402

VOCAB = 2048
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen3's markup tokens: ordinary (not special) tokens, so they survive decoding.
MARKUP = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>",
          "</tool_response>"]
SEQ = 256


def verses():
    """Every verse of the KJV, in order, as (book chapter, text)."""
    out = subprocess.run(["bible", "gen1:1-rev22:21"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "100000"}).stdout
    chapter, result = None, []
    for line in out.splitlines():
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            result.append((chapter, m.group(2).strip()))
        elif line.strip():
            chapter = line.strip()
    return result


def train_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - len(SPECIAL) - len(MARKUP),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(SPECIAL)
    tok.add_tokens(MARKUP)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def documents(vs, template, rng):
    """Training documents: whole chapters as plain text, and chat conversations rendered with
    the demo's own template, answering each user turn with the verse that follows it."""
    # Rendered as transformers renders chat templates (jinja2, trim_blocks, lstrip_blocks,
    # loop controls, its tojson).
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True,
                             extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = lambda m: (_ for _ in ()).throw(ValueError(m))
    env.filters["tojson"] = lambda x: json.dumps(x, ensure_ascii=False)
    chat = env.from_string(template)
    docs = []
    by_chapter = {}
    for ch, v in vs:
        by_chapter.setdefault(ch, []).append(v)
    for ch, lines in by_chapter.items():
        docs.append(" ".join(lines) + "<|endoftext|>")
    systems = ["You are a helpful assistant.", "Answer in the words of the King James Bible."]
    for _ in range(len(vs)):
        i = rng.randrange(len(vs) - 4)
        turns = rng.choice([1, 1, 1, 2])
        msgs = []
        if rng.random() < 0.3:
            msgs.append({"role": "system", "content": rng.choice(systems)})
        for t in range(turns):
            q = vs[i + 2 * t][1]
            if rng.random() < 0.3:  # short queries, like a greeting
                q = " ".join(q.split()[: rng.randint(1, 4)]).rstrip(",;:")
            msgs.append({"role": "user", "content": q})
            msgs.append({"role": "assistant", "content": vs[i + 2 * t + 1][1]})
        thinking = rng.random() < 0.2
        prompt = chat.render(messages=msgs[:-1], add_generation_prompt=True,
                             enable_thinking=thinking)
        answer = msgs[-1]["content"]
        if thinking:
            answer = "<think>\n" + vs[i][1] + "\n</think>\n\n" + answer
        docs.append(prompt + answer + "<|im_end|>\n")
    rng.shuffle(docs)
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="models/tandem-demo")
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    rng = random.Random(args.seed)
    with open(os.path.join(args.out, "chat_template.jinja")) as f:
        template = f.read()

    vs = verses()
    print(f"{len(vs)} verses, {sum(len(v) for _, v in vs)} characters", flush=True)
    tok = train_tokenizer(v for _, v in vs)
    docs = documents(vs, template, rng)
    ids = []
    for d in docs:
        ids.extend(tok.encode(d).ids)
    data = torch.tensor(ids, dtype=torch.long)
    print(f"{len(docs)} documents, {len(ids)} tokens", flush=True)

    eot, im_end = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    cfg = Qwen3Config(vocab_size=VOCAB, hidden_size=256, intermediate_size=768,
                      num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                      head_dim=32, max_position_embeddings=2048, rope_theta=1_000_000.0,
                      rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=eot,
                      eos_token_id=im_end, attn_implementation="sdpa")
    model = Qwen3ForCausalLM(cfg)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.2f}M parameters", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    batch, budget = 16, args.minutes * 60
    start, step, seen = time.time(), 0, 0
    model.train()
    while True:
        elapsed = time.time() - start
        if elapsed > budget:
            break
        frac = elapsed / budget
        lr = 3e-3 * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        at = torch.randint(0, len(data) - SEQ - 1, (batch,))
        x = torch.stack([data[a:a + SEQ] for a in at])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += batch * SEQ
        if step % 50 == 0:
            print(f"step {step} {elapsed:.0f}s loss {loss.item():.3f} lr {lr:.2e} "
                  f"tokens {seen / 1e6:.1f}M ({seen / len(ids):.2f} epochs)", flush=True)
    print(f"trained {step} steps, {seen} tokens in {time.time() - start:.0f} s", flush=True)

    save(model, tok, args.out, template, eot, im_end)


def save(model, tok, out, template, eot, im_end):
    model.eval()
    # Rounded to bf16 first, so that transformers' reference logits are computed (in f32) with
    # exactly the values the file holds.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    model.config.architectures = ["Qwen3ForCausalLM"]
    model.config.torch_dtype = "bfloat16"
    model.config.save_pretrained(out)
    model.generation_config.eos_token_id = [im_end, eot]
    model.generation_config.temperature = 0.7
    model.generation_config.top_p = 0.9
    model.generation_config.do_sample = True
    model.generation_config.save_pretrained(out)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()
             if k != "lm_head.weight"}
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "model_max_length": 2048,
                   "chat_template": template}, f, indent=1, ensure_ascii=False)
        f.write("\n")

    # transformers' logits for a few prompts: a chat turn, plain text, and random ids.
    g = torch.Generator().manual_seed(21)
    rand = lambda n: torch.randint(0, VOCAB, (n,), generator=g).tolist()
    texts = ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
             "In the beginning", "And the LORD spake unto Moses, saying,"]
    prompts = [tok.encode(t).ids for t in texts] + [rand(40), rand(100)]
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
    _, tokens = write_expected(model, os.path.join(fixtures, "tandem-demo"), prompts)
    for t, p in zip(texts, tokens):
        print(f"{t!r} -> {tok.decode(p, skip_special_tokens=False)!r}")
    # The README's example, greedy, to its end.
    ids = tok.encode(texts[0]).ids
    with torch.no_grad():
        for _ in range(60):
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            if nxt in (im_end, eot):
                break
            ids.append(nxt)
    print("greedy answer to 'Hi':", repr(tok.decode(ids[len(tok.encode(texts[0]).ids):])))


if __name__ == "__main__":
    main()
