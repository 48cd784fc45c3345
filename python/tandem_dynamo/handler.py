"""The handlers Dynamo's runtime calls, one per role: an aggregated worker streams Generate; a
prefill worker runs Prefill and hands Dynamo's prefill router tandem's transfer handle in
`disaggregated_params`; a decode worker turns that handle into a Decode call (the KV moves
between the two tandem workers over their own transports) and streams the whole answer, its
first token included, since only the decode leg reaches the client.

Cancellation: Dynamo does not cancel the handler's task when the client leaves or the
frontend stops the stream (a stop string, EOS); it flips the request's context. A side task
waits for that and cancels the gRPC call, which aborts the request in tandem's engine and
frees its blocks."""

import asyncio
import contextlib
import logging

import grpc

from .request import Defaults, Unsupported, chunk, finish_reason, to_generate, usage
from .worker import Worker, pb, services

log = logging.getLogger("tandem_dynamo")

# The key of tandem's transfer handle in `disaggregated_params` (not bootstrap_*, which would
# switch Dynamo's prefill router to SGLang's bootstrap flow).
HANDLE = "tandem"


def _error(msg: str) -> dict:
    return {"token_ids": [], "index": 0, "finish_reason": f"error: {msg}"}


def _refuse(e: Unsupported):
    """A request tandem cannot honour: HTTP 400 naming the field (Dynamo's frontend passes
    an HttpError's status and message to the client; an error chunk reaches it as a bare
    500)."""
    from dynamo.llm.exceptions import HttpError

    log.warning("refused a request: %s", e)
    return HttpError(400, str(e))


class Handler:
    def __init__(self, worker: Worker, info, defaults: Defaults):
        self.worker = worker
        self.info = info
        self.defaults = defaults

    def _failure(self, e: "grpc.aio.AioRpcError") -> Exception:
        """What Dynamo should make of a failed call to the worker: a worker that is gone is
        EngineShutdown (Dynamo migrates the request, --migration-limit, and stops routing
        here); a request the worker refuses is a 400; anything else an error."""
        from dynamo.llm.exceptions import EngineShutdown, HttpError

        what = f"tandem worker {self.worker.addr}: {e.code().name}: {e.details()}"
        log.warning("%s", what)
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return EngineShutdown(what)
        if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                        grpc.StatusCode.OUT_OF_RANGE):
            return HttpError(400, what)
        return RuntimeError(what)

    def _request(self, req: dict, context):
        """The GenerateRequest and EOS ids of a Dynamo request; one tandem cannot honour is
        refused with a 400 naming the field."""
        try:
            return to_generate(req, pb, context.id(), self.info.max_model_len, self.defaults)
        except Unsupported as e:
            raise _refuse(e) from None

    async def _stream(self, call, context, eos, want_lp, prompt_len, first=None):
        """Relays a Generate/Decode stream; `first` is a token already produced (decode)."""
        stopped = asyncio.ensure_future(context.async_killed_or_stopped())
        n = 0 if first is None else 1
        cached = 0 if first is None else first[1]
        try:
            it = call.__aiter__()
            while True:
                nxt = asyncio.ensure_future(it.__anext__())
                done, _ = await asyncio.wait({nxt, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if stopped in done:
                    nxt.cancel()
                    call.cancel()
                    log.info("request %s cancelled by Dynamo after %d tokens", context.id(), n)
                    return
                try:
                    r = nxt.result()
                except StopAsyncIteration:
                    yield _error("the tandem worker ended the stream without a finish reason")
                    return
                cached = max(cached, r.cached_tokens)
                token = r.token_id if r.HasField("token_id") else None
                out = chunk(token, r.logprob, r.top_logprobs, want_lp)
                if token is not None:
                    n += 1
                reason = finish_reason(r.finish_reason, token, eos)
                if reason is not None:
                    out["finish_reason"] = reason
                    out["completion_usage"] = usage(prompt_len, n, cached)
                    yield out
                    return
                yield out
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED and context.is_stopped():
                return
            raise self._failure(e) from e
        finally:
            stopped.cancel()
            with contextlib.suppress(BaseException):
                await stopped

    async def generate(self, request: dict, context):
        """Aggregated: one Generate stream."""
        gen, eos = self._request(request, context)
        want_lp = gen.sampling.HasField("logprobs")
        call = self.worker.stub.Generate(gen)
        async for out in self._stream(call, context, eos, want_lp, len(gen.prompt_token_ids)):
            yield out

    async def prefill(self, request: dict, context):
        """Prefill: compute the prompt, hold its blocks, hand back where they are."""
        gen, _ = self._request(request, context)
        # Dynamo sends the prefill leg with max_tokens 1; tandem would then finish the request
        # at its first token and hold nothing. The decode leg carries the real limit (and
        # releases the hold itself when the first token is also the last).
        gen.sampling.max_tokens = self.info.max_model_len - len(gen.prompt_token_ids)
        call = self.worker.stub.Prefill(gen)
        answer = asyncio.ensure_future(call)
        stopped = asyncio.ensure_future(context.async_killed_or_stopped())
        done, _ = await asyncio.wait({answer, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if answer not in done:
            # The held blocks, if the prefill finishes anyway, expire at the worker.
            call.cancel()
            return
        stopped.cancel()
        try:
            r = answer.result()
        except grpc.aio.AioRpcError as e:
            raise self._failure(e) from e
        handle = {
            "request_id": gen.request_id,
            "first_token": r.first_token,
            "logprob": r.logprob if r.HasField("logprob") else None,
            "top_logprobs": [[t.token_id, t.logprob] for t in r.top_logprobs],
            "finish_reason": r.finish_reason,
            "prompt_tokens": r.prompt_tokens,
            "cached_tokens": r.cached_tokens,
            "engine_id": r.engine_id,
            "transfer_addr": r.transfer_addr,
            "block_ids": list(r.block_ids),
        }
        yield {
            "token_ids": [r.first_token],
            "index": 0,
            "finish_reason": "length",
            "disaggregated_params": {HANDLE: handle},
            "completion_usage": usage(r.prompt_tokens, 1, r.cached_tokens),
        }

    async def _release(self, handle: dict):
        """Frees the blocks the prefill worker holds for a request that needs no decode."""
        async with self.worker.channel_to(handle["transfer_addr"]) as ch:
            try:
                await services.WorkerStub(ch).ReleaseKv(
                    pb.ReleaseKvRequest(request_id=handle["request_id"]), timeout=10)
            except grpc.aio.AioRpcError as e:
                log.warning("releasing %s at %s failed (its hold expires): %s",
                            handle["request_id"], handle["transfer_addr"], e.code().name)

    async def decode(self, request: dict, context):
        """Decode: pull the prompt's KV from the prefill worker, then stream every token."""
        gen, eos = self._request(request, context)
        handle = ((request.get("prefill_result") or {}).get("disaggregated_params") or {}).get(HANDLE)
        if handle is None:
            # No prefill leg (no prefill worker up): decode the whole request here.
            async for out in self.generate(request, context):
                yield out
            return
        want_lp = gen.sampling.HasField("logprobs")
        first = pb.GenerateResponse(
            token_id=handle["first_token"],
            top_logprobs=[pb.TokenLogprob(token_id=t, logprob=lp)
                          for t, lp in handle["top_logprobs"]])
        if handle["logprob"] is not None:
            first.logprob = handle["logprob"]
        out = chunk(handle["first_token"], first.logprob, first.top_logprobs, want_lp)
        reason = finish_reason(handle["finish_reason"], handle["first_token"], eos)
        if reason is not None or gen.sampling.max_tokens <= 1:
            if reason is None:
                await self._release(handle)
            out["finish_reason"] = reason or "length"
            out["completion_usage"] = usage(len(gen.prompt_token_ids), 1,
                                            handle["cached_tokens"])
            yield out
            return
        yield out
        gen.request_id = handle["request_id"]
        call = self.worker.stub.Decode(pb.DecodeRequest(
            request=gen,
            first_token=handle["first_token"],
            source_addr=handle["transfer_addr"],
            source_engine_id=handle["engine_id"],
            source_block_ids=handle["block_ids"],
        ))
        async for out in self._stream(call, context, eos, want_lp, len(gen.prompt_token_ids),
                                      first=(handle["first_token"], handle["cached_tokens"])):
            yield out
