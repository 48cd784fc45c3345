#!/usr/bin/env python3
"""Creates the tiny random Qwen3 fixtures of tests/fixtures with transformers itself, and the
logits transformers computes for a few prompts (the reference tandem is tested against).

    python3 -m venv /tmp/v && /tmp/v/bin/pip install torch transformers safetensors
    /tmp/v/bin/python scripts/make_fixtures.py tests/fixtures

Two models:
- tiny-qwen3:      plain RoPE, untied embeddings, f32 weights in one model.safetensors
- tiny-qwen3-yarn: YaRN (factor 4 over 64 original positions), tied embeddings, bf16 weights
                   sharded over two files with model.safetensors.index.json
Both have grouped-query attention (4 query heads, 2 KV heads) and head_dim 24 != 64 / 4.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

VOCAB = 259  # 256 byte tokens + <|endoftext|>, <|im_start|>, <|im_end|>
STEPS = 8    # greedy decode steps recorded after each prompt


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def tokenizer_json():
    b2u = bytes_to_unicode()
    special = lambda i, c: {"id": i, "content": c, "single_word": False, "lstrip": False,
                            "rstrip": False, "normalized": False, "special": True}
    bl = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(256, "<|endoftext|>"), special(257, "<|im_start|>"), special(258, "<|im_end|>")],
        "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", **bl}, "post_processor": None,
        "decoder": {"type": "ByteLevel", **bl},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {b2u[b]: b for b in range(256)}, "merges": []},
    }


def build(seed, **overrides):
    torch.manual_seed(seed)
    cfg = Qwen3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, rms_norm_eps=1e-6,
        eos_token_id=258, bos_token_id=256, attn_implementation="eager", **overrides)
    model = Qwen3ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms: around 1, but not 1, so that they are exercised
                p.copy_(0.5 + torch.rand_like(p))
            else:  # larger than the 0.02 init, so that attention is far from uniform
                p.normal_(0.0, 0.15)
    return model


def prompts(seed):
    g = torch.Generator().manual_seed(seed)
    rand = lambda n: torch.randint(0, 256, (n,), generator=g).tolist()
    long = rand(100)
    return [rand(5), rand(17), rand(48), long, long[:48] + rand(13), long[:32] + rand(40)]


def record(model, prompt_list):
    """Greedy decode of every prompt, recomputing the whole sequence each step (no KV cache):
    logits[s] are the next-token logits after the prompt and s generated tokens."""
    logits, tokens = [], []
    with torch.no_grad():
        for p in prompt_list:
            ids = list(p)
            rows = []
            for _ in range(STEPS):
                out = model(torch.tensor([ids])).logits[0, -1].float()
                rows.append(out)
                ids.append(int(out.argmax()))
            logits.append(torch.stack(rows))
            tokens.append(ids[len(p):])
    return logits, tokens


def write_expected(model, base, prompt_list):
    """Records transformers' greedy logits of every prompt into BASE.expected.{safetensors,json}
    (what tests/common reads); returns the logits and greedy tokens."""
    logits, tokens = record(model, prompt_list)
    save_file({f"logits.{i}": l.contiguous() for i, l in enumerate(logits)},
              base + ".expected.safetensors")
    with open(base + ".expected.json", "w") as f:
        json.dump({"prompts": prompt_list, "greedy_tokens": tokens, "steps": STEPS,
                   "transformers": __import__("transformers").__version__,
                   "torch": torch.__version__}, f)
    return logits, tokens


def save(model, out_dir, prompt_list, dtype, shards):
    os.makedirs(out_dir, exist_ok=True)
    if dtype == torch.bfloat16:
        # Round the weights to bf16 first: the reference then computes with exactly the values
        # the bf16 files hold, in f32.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    model.config.architectures = ["Qwen3ForCausalLM"]
    model.config.save_pretrained(out_dir)
    model.generation_config.save_pretrained(out_dir)
    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    names = sorted(state)
    if shards == 1:
        save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        per = (len(names) + shards - 1) // shards
        for i in range(shards):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: state[n] for n in names[i * per:(i + 1) * per]}
            save_file(part, os.path.join(out_dir, fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in part})
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(), f, ensure_ascii=False)
    logits, tokens = write_expected(model, out_dir, prompt_list)
    scale = max(float(l.abs().max()) for l in logits)
    print(f"{out_dir}: {len(prompt_list)} prompts, max |logit| {scale:.2f}")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures"
    plain = build(1, max_position_embeddings=512, rope_theta=10000.0, tie_word_embeddings=False)
    save(plain, os.path.join(out, "tiny-qwen3"), prompts(11), torch.float32, 1)
    yarn = build(2, max_position_embeddings=256, rope_theta=10000.0, tie_word_embeddings=True,
                 rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                  "original_max_position_embeddings": 64})
    yarn_prompts = prompts(12)
    g = torch.Generator().manual_seed(13)
    yarn_prompts.append(torch.randint(0, 256, (200,), generator=g).tolist())  # beyond 64 positions
    save(yarn, os.path.join(out, "tiny-qwen3-yarn"), yarn_prompts, torch.bfloat16, 2)


if __name__ == "__main__":
    main()
