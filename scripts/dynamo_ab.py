#!/usr/bin/env python3
"""The reference A/B behind two frontends over the same tandem workers, in one run: the
baseline (2 aggregated workers, round-robin) and the disaggregated deployment (1 prefill + 1
decode worker, KV routing), each behind NVIDIA Dynamo's frontend (through python/tandem_dynamo
bridges) and behind tandem's own frontend. Every deployment replays the same slice of the
Mooncake conversation trace with `tandem replay`, from a cold prefix cache; the frontends' own
CPU time (and the bridges') is read from /proc around each replay.

    dyn/bin/python scripts/dynamo_ab.py [--tandem target/release/tandem] [--out DIR]
        [--max-requests 200] [--cpus 0,1]

Run it with the Python of a venv that has Dynamo and the bridge's requirements (README,
"Under NVIDIA Dynamo"). Prints a markdown table; writes ab.json and each replay's exports."""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = "tandem-demo"
# The calibrate slice (BENCHMARKS.md): 1/32 lengths, prompts up to 1,500 tokens, outputs 48.
SLICE = ["--length-scale", "0.03125", "--max-input-tokens", "1500", "--max-output-tokens", "48"]
WORKER = ["--block-size", "16", "--kv-cache-gib", "0.1", "--max-model-len", "2048"]
GOODPUT = "time_to_first_token:2000 inter_token_latency:25"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Procs:
    def __init__(self, logs: Path):
        self.logs = logs
        self.all = []

    def start(self, name, argv, env=None, ready=None, cwd=None):
        log = open(self.logs / f"{name}.log", "w")
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True,
                             env={**os.environ, **(env or {})}, cwd=cwd)
        self.all.append(p)
        found = None
        if ready:
            for line in p.stdout:
                log.write(line)
                if ready in line:
                    found = line
                    break
            else:
                raise SystemExit(f"{name} exited before it was ready; see {log.name}")
        # Keep draining stdout into the log: a full pipe would stall the process.
        threading.Thread(target=lambda: [log.write(l) for l in p.stdout], daemon=True).start()
        return p, found

    def stop(self):
        for p in reversed(self.all):
            p.send_signal(signal.SIGTERM)
        for p in self.all:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_http(url, check, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if check(json.load(r)):
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", default=str(REPO / "target/release/tandem"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--max-requests", default="200")
    ap.add_argument("--cpus", default="0,1", help="the two cores the workers are pinned to")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="tandem-dynamo-ab-"))
    out.mkdir(parents=True, exist_ok=True)
    cores = args.cpus.split(",")
    state = Path(tempfile.mkdtemp(prefix="dynamo-state-"))
    procs = Procs(out)
    dyn_env = lambda name: {
        "DYN_FILE_KV": str(state / name), "HOME": str(state / "home"),
        "PYTHONPATH": str(REPO / "python"), "DYN_TCP_RPC_HOST": "127.0.0.1",
        "DYN_EVENT_PLANE_HOST": "127.0.0.1", "DYN_TCP_RESPONSE_STREAM_HOST": "127.0.0.1",
        "DYN_SELF_HOST_METADATA": "0", "DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "1"}
    try:
        # Workers: two aggregated, a prefill and a decode, each pinned to one core.
        workers = {}
        for name, role, core in [("agg0", "agg", cores[0]), ("agg1", "agg", cores[1]),
                                 ("prefill", "prefill", cores[0]),
                                 ("decode", "decode", cores[1])]:
            events = f"tcp://127.0.0.1:{free_port()}"
            _, line = procs.start(name, [args.tandem, "worker", "--port", "0", "--role", role,
                                         "--cpus", core, "--kv-events-endpoint", events,
                                         *WORKER], ready="listening on")
            workers[name] = (line.split("listening on ")[1].strip(), events)
        # Bridges and Dynamo's frontends, one discovery directory per deployment.
        bridges, frontends = {}, {}
        for dep, names, router in [("baseline", ["agg0", "agg1"], "round-robin"),
                                   ("disagg", ["prefill", "decode"], "kv")]:
            for n in names:
                addr, events = workers[n]
                bridges[n], _ = procs.start(
                    f"bridge-{n}",
                    [sys.executable, "-m", "tandem_dynamo", "--worker", addr,
                     "--model-path", str(REPO / "models" / MODEL), "--discovery-backend",
                     "file", "--kv-events-endpoint", events],
                    env=dyn_env(dep), ready="tandem_dynamo ready", cwd=REPO / "python")
            port = free_port()
            p, _ = procs.start(f"dynamo-frontend-{dep}",
                               [sys.executable, "-m", "dynamo.frontend", "--http-host",
                                "127.0.0.1", "--http-port", str(port), "--discovery-backend",
                                "file", "--router-mode", router], env=dyn_env(dep))
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/health", lambda h: sum(
                i["endpoint"] == "generate" for i in h.get("instances", [])) == 2)
            frontends[("dynamo", dep)] = (p, url, names)
        # tandem's frontends over the same workers.
        for dep, flags, names in [
                ("baseline", ["--workers", f"{workers['agg0'][0]},{workers['agg1'][0]}",
                              "--router", "round-robin"], ["agg0", "agg1"]),
                ("disagg", ["--prefill-workers", workers["prefill"][0], "--decode-workers",
                            workers["decode"][0], "--router", "kv"], ["prefill", "decode"])]:
            p, line = procs.start(f"tandem-frontend-{dep}",
                                  [args.tandem, "frontend", "--port", "0", *flags],
                                  ready="listening on")
            frontends[("tandem", dep)] = (p, "http://" + line.split("listening on ")[1].strip(),
                                          names)
        vocab = json.load(urllib.request.urlopen(
            frontends[("tandem", "baseline")][1] + "/v1/models"))["data"][0]["vocab_size"]

        results = {}
        for dep in ("baseline", "disagg"):
            for front in ("tandem", "dynamo"):
                p, url, names = frontends[(front, dep)]
                # A cold prefix cache for every run (tandem's frontend resets the workers).
                reset = urllib.request.Request(frontends[("tandem", dep)][1]
                                               + "/reset_prefix_cache", method="POST")
                urllib.request.urlopen(reset).read()
                time.sleep(1)
                key = f"{dep}/{front}"
                run = out / key.replace("/", "-")
                cpu0 = cpu_seconds(p.pid)
                bcpu0 = sum(cpu_seconds(bridges[n].pid) for n in names)
                t0 = time.time()
                subprocess.run([args.tandem, "replay", "--url", url, "--model", MODEL,
                                "--vocab", str(vocab), "--max-requests", args.max_requests,
                                "--goodput", GOODPUT, "--out", str(run), *SLICE],
                               check=True, stdout=open(out / f"replay-{run.name}.log", "w"))
                s = json.load(open(run / "profile_export_aiperf.json"))
                s["wall_s"] = time.time() - t0
                s["frontend_cpu_s"] = cpu_seconds(p.pid) - cpu0
                s["bridges_cpu_s"] = (sum(cpu_seconds(bridges[n].pid) for n in names) - bcpu0
                                      if front == "dynamo" else 0.0)
                results[key] = s
                print(f"{key}: done in {s['wall_s']:.0f} s", file=sys.stderr)
    finally:
        procs.stop()
        shutil.rmtree(state, ignore_errors=True)

    json.dump(results, open(out / "ab.json", "w"), indent=1)
    cols = [f"{d}/{f}" for d in ("baseline", "disagg") for f in ("tandem", "dynamo")]
    rows = [("TTFT p50 (ms)", lambda s: s["time_to_first_token"]["p50"]),
            ("TTFT p90 (ms)", lambda s: s["time_to_first_token"]["p90"]),
            ("ITL p50 (ms)", lambda s: s["inter_token_latency"]["p50"]),
            ("ITL p90 (ms)", lambda s: s["inter_token_latency"]["p90"]),
            ("latency p50 (ms)", lambda s: s["request_latency"]["p50"]),
            ("goodput (req/s)", lambda s: (s.get("goodput") or {}).get("avg", 0.0)),
            ("hit rate (%)", lambda s: 100 * s["prefix_cache_hit_rate"]["avg"]),
            ("errors", lambda s: (s.get("error_request_count") or {}).get("avg", 0)),
            ("frontend CPU ms / request", lambda s: 1e3 * s["frontend_cpu_s"]
             / max(1, s["request_count"]["avg"])),
            ("frontend CPU µs / output token", lambda s: 1e6 * s["frontend_cpu_s"]
             / max(1, s["output_token_throughput"]["avg"] * s["benchmark_duration"]["avg"])),
            ("bridges' CPU ms / request", lambda s: 1e3 * s["bridges_cpu_s"]
             / max(1, s["request_count"]["avg"]))]
    print("| metric | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for name, f in rows:
        print(f"| {name} | " + " | ".join(f"{f(results[c]):,.2f}" for c in cols) + " |")
    print(f"\nexports in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
