"""Subscribes to a tandem worker's ZMQ KV events the way vLLM's consumers do, decodes the
msgpack, and prints the first BlockStored batch as JSON. Prints "ready" once subscribed."""
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
while True:
    topic, seq, payload = sock.recv_multipart()
    assert len(seq) == 8, "sequence must be 8 bytes"
    ts, events, dp_rank = msgpack.unpackb(payload)
    stored = [e for e in events if e[0] == "BlockStored"]
    if stored:
        e = stored[0]
        print(json.dumps({
            "topic": topic.decode(), "seq": int.from_bytes(seq, "big"), "ts": ts, "dp_rank": dp_rank,
            "block_hashes": e[1], "parent": e[2], "token_ids": e[3], "block_size": e[4],
            "lora_id": e[5], "medium": e[6],
        }), flush=True)
        break
