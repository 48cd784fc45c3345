#!/usr/bin/env python3
"""How fast `tandem simulate` replays a whole trace against NVIDIA Dynamo's offline replay
(`dynamo.replay.run_trace_replay`, its mocker engines) of the same deployments, timed side by
side in one run: the baseline (8 aggregated workers, round-robin) and the disaggregated one
(6 prefill + 2 decode workers, KV router), blocks of 64 tokens, each in a process of its own,
its user + system CPU time and wall time read around it. Alternating the two tools, `--rounds`
times, puts any drift of a shared machine on both alike.

    target/test-venv/bin/python scripts/sim_speed.py --trace TRACE.jsonl [--tandem BIN]

The Python must have Dynamo (the tests install 1.6.1 into target/test-venv).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

DEPLOYMENTS = {
    "baseline": {
        "tandem": ["--deployment", "baseline"],
        "dynamo": {"num_workers": 8, "router_mode": "round_robin",
                   "extra_engine_args": {"engine": {"block_size": 64}}},
    },
    "disagg": {
        "tandem": ["--deployment", "disagg"],
        "dynamo": {"num_prefill_workers": 6, "num_decode_workers": 2,
                   "router_mode": "kv_router",
                   "prefill_engine_args": {"engine": {"block_size": 64,
                                                      "worker_type": "prefill"}},
                   "decode_engine_args": {"engine": {"block_size": 64,
                                                     "worker_type": "decode"}}},
    },
}

DYNAMO = """
import json, sys
from dynamo.replay import run_trace_replay
kwargs = json.loads(sys.argv[2])
report = run_trace_replay(sys.argv[1], **kwargs)
print(json.dumps({"completed": report.summary.get("completed_requests")}))
"""


def timed(argv):
    """Runs argv; returns (CPU s, wall s). A failure stops the measurement."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    # Both at warnings only: per-request log lines would time the logger.
    env = dict(os.environ, RUST_LOG="warn", DYN_LOG="warn")
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{argv[:3]} failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", required=True, help="Mooncake JSONL trace, replayed whole")
    ap.add_argument("--tandem", default="target/release/tandem")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(args.tandem):
        sys.exit(f"{args.tandem} not found: cargo build --release --bin tandem")
    rows = []
    for name, d in DEPLOYMENTS.items():
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(timed([args.tandem, "simulate", "--trace", args.trace,
                               "--block-size", "64", *d["tandem"]]))
            theirs.append(timed([sys.executable, "-c", DYNAMO, args.trace,
                                 json.dumps(d["dynamo"])]))
        # The median round of each, by CPU time.
        ours.sort()
        theirs.sort()
        o, t = ours[len(ours) // 2], theirs[len(theirs) // 2]
        rows.append((name, o, t))
    print("| deployment | tandem simulate CPU (wall) s | Dynamo run_trace_replay CPU (wall) s | "
          "ratio (CPU) |")
    print("|---|---|---|---|")
    for name, o, t in rows:
        print(f"| {name} | {o[0]:.2f} ({o[1]:.2f}) | {t[0]:.2f} ({t[1]:.2f}) | "
              f"{t[0] / o[0]:.1f}x |")


if __name__ == "__main__":
    main()
