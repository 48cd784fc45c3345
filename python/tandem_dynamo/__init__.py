"""tandem workers as an NVIDIA Dynamo backend: a bridge that registers one tandem worker with
Dynamo's discovery and serves Dynamo's token-level requests through the worker's gRPC API.

    python -m tandem_dynamo --worker 127.0.0.1:50051 --model-path DIR [--role agg|prefill|decode]

Dynamo's frontend (`python -m dynamo.frontend`) applies the chat template, tokenizes,
enforces stop strings and detokenizes; the bridge maps each PreprocessedRequest onto a tandem
GenerateRequest (request.py), streams the worker's tokens back as LLMEngineOutput chunks, turns
Dynamo's cancellation into a cancelled gRPC stream (which aborts the request in tandem's
engine), relays the worker's vLLM-format KV events to Dynamo's KV router and reports its load.
"""
