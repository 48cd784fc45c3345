"""NVIDIA Dynamo's own KV router (ai-dynamo-runtime) following a tandem worker's ZMQ KV
events: Dynamo's KvEventPublisher relays the vLLM-format stream into a Dynamo KvRouter, in
this one process (mem discovery, zmq event plane: no etcd, no NATS).

    dynamo_router.py ZMQ_ENDPOINT BLOCK_SIZE

Prints "ready", then answers each line of stdin, a JSON list of token ids, with Dynamo's
overlap for them: the number of leading blocks it says the worker holds on its device, and
how many more it holds in host memory (events with medium "CPU")."""
import asyncio
import json
import os
import sys

# Before the runtime exists: no waiting for workers, and every socket on loopback.
os.environ.setdefault("DYN_ROUTER_MIN_INITIAL_WORKERS", "0")
for var in ("DYN_TCP_RPC_HOST", "DYN_EVENT_PLANE_HOST", "DYN_TCP_RESPONSE_STREAM_HOST"):
    os.environ.setdefault(var, "127.0.0.1")

from dynamo.llm import (KvEventPublisher, KvRouter, KvRouterConfig, ModelInput,  # noqa: E402
                        ModelRuntimeConfig, ModelType, WorkerType, register_model)
from dynamo.runtime import DistributedRuntime  # noqa: E402

endpoint_addr, block_size = sys.argv[1], int(sys.argv[2])


async def main():
    loop = asyncio.get_running_loop()
    runtime = DistributedRuntime(loop, "mem", "tcp", event_plane="zmq")
    endpoint = runtime.endpoint("tandem.worker.generate")
    await endpoint.register_endpoint_instance()
    rc = ModelRuntimeConfig()
    rc.kv_event_publishing_enabled = True
    await register_model(ModelInput.Tensor, ModelType.TensorBased, endpoint, "tandem-demo",
                         worker_type=WorkerType.Aggregated, kv_cache_block_size=block_size,
                         runtime_config=rc)
    worker = endpoint.connection_id()
    relay = KvEventPublisher(endpoint, kv_block_size=block_size, zmq_endpoint=endpoint_addr,
                             zmq_topic="")
    router = KvRouter(endpoint, block_size, KvRouterConfig(use_kv_events=True))
    print("ready", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        tokens = json.loads(line)
        scores = await router.get_overlap_scores(tokens, include_shared=False)
        ours = [w for w in scores["workers"] if w["worker_id"] == worker and w["dp_rank"] == 0]
        overlap = sum(w["device_blocks"] for w in ours)
        host = sum(w["host_pinned_extension_blocks"] for w in ours)
        print(json.dumps({"overlap": overlap, "host": host}), flush=True)
    relay.shutdown()
    runtime.shutdown()


asyncio.run(main())
