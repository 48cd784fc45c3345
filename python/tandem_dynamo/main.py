"""`python -m tandem_dynamo`: registers one tandem worker with Dynamo and serves it.

Flags follow Dynamo's backends (`--namespace`, `--component`, `--endpoint`,
`--discovery-backend`, ...). The worker's capacity (KV blocks, block size, max sequences,
context length) is registered from its ModelInfo; its KV events are relayed from its ZMQ
publisher (`tandem worker --kv-events-endpoint`); its load is published every
`--load-interval` seconds. The bridge exits when its worker stops answering."""

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("tandem_dynamo")

ROLES = ("agg", "prefill", "decode")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m tandem_dynamo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", required=True, help="the tandem worker's gRPC address, HOST:PORT")
    p.add_argument("--model-path", required=True,
                   help="the model directory (config.json, tokenizer.json): Dynamo's frontend "
                        "applies its chat template and tokenizes with it")
    p.add_argument("--model-name", help="the served model name (default: the worker's)")
    p.add_argument("--role", choices=ROLES, default=None,
                   help="the worker's role in Dynamo (default: the worker's own --role)")
    p.add_argument("--namespace", default=os.environ.get("DYN_NAMESPACE", "dynamo"))
    p.add_argument("--component", default=None,
                   help="default: prefill for the prefill role, else backend")
    p.add_argument("--endpoint", default="generate")
    p.add_argument("--discovery-backend", default=os.environ.get("DYN_DISCOVERY_BACKEND", "etcd"),
                   choices=["kubernetes", "etcd", "file", "mem"])
    p.add_argument("--request-plane", default=os.environ.get("DYN_REQUEST_PLANE", "tcp"),
                   choices=["tcp", "nats"])
    p.add_argument("--event-plane", default=os.environ.get("DYN_EVENT_PLANE"),
                   choices=["zmq", "nats"])
    p.add_argument("--kv-events-endpoint",
                   help="the worker's ZMQ KV event publisher, e.g. tcp://127.0.0.1:5557 "
                        "(without it Dynamo's KV router sees no events from this worker)")
    p.add_argument("--kv-cache-block-size", type=int,
                   help="the block size the deployment expects: refused unless the worker's")
    p.add_argument("--worker-tls-ca",
                   help="TLS to the worker (one started with --tls-*): the CA that signed its "
                        "certificate (PEM)")
    p.add_argument("--worker-tls-cert", help="the bridge's client certificate (PEM), for a "
                                             "worker started with --tls-require-client-cert")
    p.add_argument("--worker-tls-key", help="the client certificate's private key (PEM)")
    p.add_argument("--worker-tls-domain",
                   help="the name the worker's certificate carries, when it is not the "
                        "address's host")
    p.add_argument("--load-interval", type=float, default=0.5,
                   help="seconds between load reports")
    p.add_argument("--wait-for-worker", type=float, default=600.0,
                   help="seconds to wait for the worker to be ready")
    p.add_argument("--worker-check-misses", type=int, default=3,
                   help="failed health checks (one a second) after which the bridge exits")
    return p.parse_args(argv)


def _check_model_path(path: Path) -> dict:
    """The model directory's generation_config.json (or {}); refuses one without a tokenizer."""
    if not (path / "tokenizer.json").is_file():
        raise SystemExit(f"tandem_dynamo: {path} has no tokenizer.json: Dynamo's frontend "
                         "tokenizes with the model's own tokenizer")
    g = path / "generation_config.json"
    return json.loads(g.read_text()) if g.is_file() else {}


async def _publish_load(worker, publisher, interval):
    while True:
        try:
            l = await worker.load()
            publisher.publish(dp_rank=None, active_decode_blocks=l.used_blocks,
                              kv_used_blocks=l.used_blocks)
        except Exception as e:  # the watchdog decides whether the worker is gone
            log.debug("load report failed: %s", e)
        await asyncio.sleep(interval)


async def _watch_worker(worker, misses, runtime):
    """Exits the bridge once the worker has missed `misses` health checks in a row: Dynamo
    must stop routing to it (the bridge's instance leaves discovery with it)."""
    missed = 0
    while missed < misses:
        await asyncio.sleep(1.0)
        missed = 0 if await worker.alive() else missed + 1
    log.error("the tandem worker at %s is gone (%d missed health checks): exiting",
              worker.addr, misses)
    runtime.shutdown()
    os._exit(3)


async def run(args):
    # Imported here so that --help works without Dynamo installed.
    from dynamo.common.utils.graceful_shutdown import install_signal_handlers
    from dynamo.llm import (KvEventPublisher, ModelInput, ModelRuntimeConfig, ModelType,
                            WorkerMetricsPublisher, WorkerType, register_model)
    from dynamo.runtime import DistributedRuntime

    from .handler import Handler
    from .request import Defaults
    from .worker import Tls, Worker

    model_path = Path(args.model_path).resolve()
    generation = _check_model_path(model_path)
    tls = None
    if args.worker_tls_ca:
        tls = Tls(args.worker_tls_ca, args.worker_tls_cert, args.worker_tls_key,
                  args.worker_tls_domain)
    elif args.worker_tls_cert or args.worker_tls_key or args.worker_tls_domain:
        raise SystemExit("tandem_dynamo: the --worker-tls-* flags need --worker-tls-ca")
    worker = Worker(args.worker, tls)
    info = await worker.wait_ready(args.wait_for_worker)
    role = args.role or (info.role if info.role in ROLES else "agg")
    if args.kv_cache_block_size is not None and args.kv_cache_block_size != info.block_size:
        raise SystemExit(f"tandem_dynamo: --kv-cache-block-size {args.kv_cache_block_size} "
                         f"differs from the worker's block size {info.block_size}")
    component = args.component or ("prefill" if role == "prefill" else "backend")
    name = args.model_name or info.model

    loop = asyncio.get_running_loop()
    kw = {"event_plane": args.event_plane} if args.event_plane else {}
    runtime = DistributedRuntime(loop, args.discovery_backend, args.request_plane, **kw)
    endpoint = runtime.endpoint(f"{args.namespace}.{component}.{args.endpoint}")
    install_signal_handlers(loop, runtime, [endpoint])

    kv_relay = None  # must live as long as the bridge: dropping it unregisters the relay
    if args.kv_events_endpoint:
        # With the local indexer the bridge keeps the worker's block index itself and Dynamo's
        # router queries it (and resyncs from it after a gap), as vLLM's workers do.
        kv_relay = KvEventPublisher(endpoint=endpoint, kv_block_size=info.block_size,
                                    dp_rank=0, enable_local_indexer=True,
                                    zmq_endpoint=args.kv_events_endpoint, zmq_topic="")
    metrics = WorkerMetricsPublisher()
    await metrics.create_endpoint(endpoint)

    rc = ModelRuntimeConfig()
    rc.context_length = info.max_model_len
    rc.total_kv_blocks = info.total_blocks
    rc.max_num_seqs = info.max_num_seqs
    rc.max_num_batched_tokens = info.max_num_batched_tokens
    rc.kv_event_publishing_enabled = bool(args.kv_events_endpoint)
    rc.enable_local_indexer = bool(args.kv_events_endpoint)

    handler = Handler(worker, info, Defaults.from_generation_config(generation))
    chat = ModelType.Chat | ModelType.Completions
    model_type, worker_type, needs, serve = {
        "agg": (chat, WorkerType.Aggregated, None, handler.generate),
        "prefill": (ModelType.Prefill, WorkerType.Prefill, [[WorkerType.Decode]], handler.prefill),
        "decode": (chat, WorkerType.Decode, [[WorkerType.Prefill]], handler.decode),
    }[role]
    await register_model(ModelInput.Tokens, model_type, endpoint, str(model_path), name,
                         worker_type=worker_type, needs=needs,
                         kv_cache_block_size=info.block_size, runtime_config=rc)
    log.info("registered tandem worker %s as %s.%s.%s (%s, model %s, %d blocks of %d tokens)",
             args.worker, args.namespace, component, args.endpoint, role, name,
             info.total_blocks, info.block_size)
    print(f"tandem_dynamo ready: {args.namespace}.{component}.{args.endpoint} -> {args.worker}",
          flush=True)
    tasks = [
        asyncio.create_task(_publish_load(worker, metrics, args.load_interval)),
        asyncio.create_task(_watch_worker(worker, args.worker_check_misses, runtime)),
    ]
    try:
        await endpoint.serve_endpoint(serve, graceful_shutdown=True,
                                      metrics_labels=[("model", name)])
    finally:
        for t in tasks:
            t.cancel()
        if kv_relay is not None:
            kv_relay.shutdown()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s tandem_dynamo %(levelname)s %(message)s")
    import uvloop

    uvloop.run(run(args))
