"""Subscribes to a tandem worker's ZMQ KV events the way vLLM's consumers do and decodes the
msgpack: prints "ready" once subscribed, then one JSON line per batch (topic, sequence,
dp_rank, and each event as a dict) until the stream is quiet for 20 s."""
import json
import sys

import msgpack
import zmq

endpoint = sys.argv[1]
ctx = zmq.Context()
sock = ctx.socket(zmq.SUB)
sock.setsockopt(zmq.SUBSCRIBE, b"")
sock.setsockopt(zmq.RCVTIMEO, 20000)
sock.connect(endpoint)
print("ready", flush=True)
FIELDS = {
    "BlockStored": ["block_hashes", "parent", "token_ids", "block_size", "lora_id", "medium",
                    "lora_name"],
    "BlockRemoved": ["block_hashes", "medium"],
    "AllBlocksCleared": [],
}
while True:
    try:
        topic, seq, payload = sock.recv_multipart()
    except zmq.Again:
        break
    assert len(seq) == 8, "sequence must be 8 bytes"
    ts, events, dp_rank = msgpack.unpackb(payload)
    out = []
    for e in events:
        kind = e[0]
        assert len(e) == 1 + len(FIELDS[kind]), e
        out.append({"kind": kind, **dict(zip(FIELDS[kind], e[1:]))})
    print(json.dumps({"topic": topic.decode(), "seq": int.from_bytes(seq, "big"), "ts": ts,
                      "dp_rank": dp_rank, "events": out}), flush=True)
