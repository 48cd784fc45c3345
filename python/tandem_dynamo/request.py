"""Dynamo's PreprocessedRequest to tandem's GenerateRequest, and tandem's answers to Dynamo's
LLMEngineOutput chunks. Pure functions of dicts and protobuf messages.

Field by field, from Dynamo 1.6's protocol (lib/llm/src/protocols/common/preprocessor.rs,
common.rs, llm_backend.rs): what tandem honours is mapped; what it cannot honour is refused
with an Unsupported naming the field, never dropped. Stop strings are not tandem's business:
Dynamo's frontend matches them on the detokenized text and then cancels the stream."""

from dataclasses import dataclass


class Unsupported(ValueError):
    """A request field tandem cannot honour; the message names it."""


# Sampling parameters tandem reads, with the defaults it uses when Dynamo leaves one unset
# (the model's generation_config.json may override them: see Defaults).
_SAMPLING = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}

# Request keys that carry nothing tandem must act on: routing hints for Dynamo's router, the
# model name, a checksum of the model card, annotations the frontend answers itself, and the
# frontend's own pass-through (nvext).
_IGNORED = {
    "model", "mdc_sum", "annotations", "routing", "router_config_override", "extra_args",
    "prefill_result", "token_ids", "stop_conditions", "sampling_options", "output_options",
    "eos_token_ids", "_HEALTH_CHECK",
}


@dataclass
class Defaults:
    """Sampling defaults of the served model (generation_config.json), as tandem's own
    frontend applies them."""

    values: dict

    @staticmethod
    def from_generation_config(cfg: dict) -> "Defaults":
        v = dict(_SAMPLING)
        for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
            if cfg.get(k) is not None:
                v[k] = cfg[k]
        return Defaults(v)


def _unset(v) -> bool:
    return v is None or v == [] or v == {}


def _refuse_set(section: str, d: dict, keys: dict):
    """Refuses keys of `d` whose value is set to something other than what tandem does."""
    for k, allowed in keys.items():
        v = d.get(k)
        if not _unset(v) and not allowed(v):
            raise Unsupported(f"{section}.{k} = {v!r} is not supported by tandem")


def to_generate(req: dict, pb, request_id: str, max_model_len: int, defaults: Defaults):
    """The tandem GenerateRequest (a `pb.GenerateRequest`) for Dynamo request `req`, and the
    EOS ids whose sampling ends it as "eos" rather than "stop"."""
    for k, v in req.items():
        if k not in _IGNORED and not _unset(v):
            raise Unsupported(f"{k} is not supported by tandem")
    prompt = req.get("token_ids") or []
    if not prompt:
        raise Unsupported("token_ids: an empty prompt")
    so = req.get("sampling_options") or {}
    _refuse_set("sampling_options", so, {
        "n": lambda v: v == 1,
        "best_of": lambda v: v == 1,
        "use_beam_search": lambda v: v is False,
        "length_penalty": lambda v: v == 1.0,
        "guided_decoding": lambda v: False,
    })
    known = set(_SAMPLING) | {"n", "best_of", "use_beam_search", "length_penalty",
                              "guided_decoding", "seed", "include_stop_str_in_output"}
    for k, v in so.items():
        if k not in known and not _unset(v):
            raise Unsupported(f"sampling_options.{k} is not supported by tandem")
    oo = req.get("output_options") or {}
    _refuse_set("output_options", oo, {"prompt_logprobs": lambda v: False})
    sc = req.get("stop_conditions") or {}
    _refuse_set("stop_conditions", sc, {"max_thinking_tokens": lambda v: False})
    for k, v in sc.items():
        if k not in {"max_tokens", "stop", "stop_token_ids", "stop_token_ids_visible",
                     "stop_token_ids_hidden", "min_tokens", "ignore_eos",
                     "max_thinking_tokens"} and not _unset(v):
            raise Unsupported(f"stop_conditions.{k} is not supported by tandem")

    ignore_eos = bool(sc.get("ignore_eos"))
    eos = [] if ignore_eos else list(req.get("eos_token_ids") or [])
    stop_ids = []
    for k in ("stop_token_ids", "stop_token_ids_hidden", "stop_token_ids_visible"):
        stop_ids += list(sc.get(k) or [])
    stop_ids = sorted(set(stop_ids + eos))
    room = max_model_len - len(prompt)
    if room < 1:
        raise Unsupported(
            f"token_ids: the prompt's {len(prompt)} tokens leave no room under the "
            f"worker's max_model_len {max_model_len}")
    max_tokens = sc.get("max_tokens")
    max_tokens = room if max_tokens is None else min(int(max_tokens), room)
    value = lambda k: defaults.values[k] if so.get(k) is None else so[k]
    top_k = int(value("top_k"))
    sampling = pb.SamplingParams(
        temperature=float(value("temperature")),
        top_k=max(top_k, 0),
        top_p=float(value("top_p")),
        min_p=float(value("min_p")),
        repetition_penalty=float(value("repetition_penalty")),
        presence_penalty=float(value("presence_penalty")),
        frequency_penalty=float(value("frequency_penalty")),
        max_tokens=max_tokens,
        stop_token_ids=stop_ids,
        ignore_eos=ignore_eos,
        min_tokens=int(sc.get("min_tokens") or 0),
    )
    if so.get("seed") is not None:
        sampling.seed = int(so["seed"]) & (2**64 - 1)
    if oo.get("logprobs") is not None:
        sampling.logprobs = int(oo["logprobs"])
    gen = pb.GenerateRequest(request_id=request_id, prompt_token_ids=prompt, sampling=sampling)
    return gen, set(eos)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict:
    """Dynamo's completion_usage (the OpenAI usage, cached tokens included)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def finish_reason(tandem: str, token, eos: set):
    """Dynamo's finish reason for tandem's ("stop", "length", "abort"; "" while running)."""
    if not tandem:
        return None
    if tandem == "stop":
        return "eos" if token in eos else "stop"
    if tandem == "abort":
        return "cancelled"
    return tandem


def chunk(token, logprob, top, want_logprobs: bool) -> dict:
    """One LLMEngineOutput chunk for one token of tandem's (token id, logprob, top logprobs)."""
    out = {"token_ids": [] if token is None else [token], "index": 0}
    if want_logprobs and token is not None:
        out["log_probs"] = [logprob]
        out["top_logprobs"] = [[
            {"rank": i + 1, "token_id": t.token_id, "token": None, "logprob": t.logprob}
            for i, t in enumerate(top)
        ]]
    return out
