#!/usr/bin/env bash
# The whole GPU check in two halves (the GPU machine has CUDA and PyTorch but no Rust and no
# network):
#
#   scripts/gpu-suite.sh build   here: builds the cuda feature (tandem + the GPU test
#                                binaries), strips them into target/gpu-suite/ (< 64 MiB)
#   scripts/gpu-suite.sh run     on the GPU machine, from the repo root, with
#                                target/gpu-suite carried: runs every GPU test (a missing GPU
#                                fails, never skips), the end-to-end generate on the fixture,
#                                the simulator's profile of Qwen3-32B (dummy weights) and
#                                bench-kernels; writes $OUT/gpu-results.md (date, GPU,
#                                commit, results table) and the logs next to it.
#
# With the device tool that is one call after the build:
#   run(command="scripts/gpu-suite.sh run", carry=["target/gpu-suite"])
# then commit the returned gpu-results.md as docs/gpu-results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
suite=target/gpu-suite

build() {
    NVCC="$(scripts/install-nvcc.sh | tail -n 1)"
    export NVCC
    rm -rf "$suite"
    mkdir -p "$suite/bin"
    cargo build --release --features cuda --bin tandem
    cp target/release/tandem "$suite/bin/"
    # The GPU test binaries, found through cargo's own report of what it built.
    cargo test --features cuda --no-run --test cuda_kernels --test cuda_model \
        --test cuda_serving --message-format=json |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do cp "$exe" "$suite/bin/$name"; done
    strip "$suite"/bin/*
    # The test binaries find fixtures through the path they were built in.
    {
        echo "manifest_dir=$PWD"
        echo "commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo -dirty)"
        echo "built=$(date -u +%Y-%m-%dT%H:%MZ)"
    } >"$suite/build-info"
    du -sh "$suite"/bin/* "$suite"
}

run() {
    [[ -d "$suite/bin" ]] || { echo "gpu-suite: $suite missing: run 'build' and carry it" >&2; exit 1; }
    out="${OUT:-$suite/out}"
    mkdir -p "$out"
    # shellcheck disable=SC1090
    source <(sed 's/^/info_/' "$suite/build-info")
    if [[ ! -e "$info_manifest_dir" ]]; then
        mkdir -p "$(dirname "$info_manifest_dir")"
        ln -s "$PWD" "$info_manifest_dir"
    fi
    # cuda_serving starts the tandem binary from the path cargo built it at.
    if [[ ! -x target/debug/tandem ]]; then
        mkdir -p target/debug
        cp "$suite/bin/tandem" target/debug/tandem
    fi
    # cuBLASLt and NCCL of the PyTorch install (the driver's libcuda is already on the path).
    libs="$(python3 -c 'import nvidia, os, glob
dirs = [d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "lib"))]
print(os.pathsep.join(dirs))' 2>/dev/null || true)"
    export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export TANDEM_REQUIRE_GPU=1
    gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1 || echo unknown)"
    report="$out/gpu-results.md"
    {
        echo "# GPU results"
        echo
        echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "- GPU: $gpu"
        echo "- commit: $info_commit (built $info_built)"
        echo
        echo "## Tests"
        echo
        echo "| suite | result | log |"
        echo "|---|---|---|"
    } >"$report"
    status=0
    for t in "$suite"/bin/cuda_*; do
        name="$(basename "$t")"
        if "$t" --test-threads=1 >"$out/$name.log" 2>&1; then res=pass; else res=FAIL; status=1; fi
        echo "| $name | $res ($(grep -E '^test result' "$out/$name.log" | tail -n 1)) | $name.log |" >>"$report"
    done
    # tandem generate on the GPU, end to end, for both tiny fixtures. bf16 cannot promise
    # transformers' exact greedy tokens (a near tie may flip; cuda_model holds the engine to
    # the logit tolerance), so this records how many tokens agree before the first
    # difference; it fails when generate fails or returns the wrong number of tokens.
    for fx in tiny-qwen3 tiny-qwen3-yarn; do
        res=pass
        agree=""
        for p in 0 1 2; do
            ids="$(python3 -c "import json; print(','.join(map(str, json.load(open('tests/fixtures/$fx.expected.json'))['prompts'][$p])))")"
            want="$(python3 -c "import json; print(json.load(open('tests/fixtures/$fx.expected.json'))['greedy_tokens'][$p])")"
            n="$(python3 -c "print(len($want))")"
            if ! "$suite/bin/tandem" generate --device cuda --gpu-memory-utilization 0.5 \
                --model "tests/fixtures/$fx" --prompt-ids "$ids" --max-tokens "$n" \
                --temperature 0 --ignore-eos --json >"$out/generate-$fx-$p.json" 2>"$out/generate-$fx-$p.log"; then
                res=FAIL
            elif ! k="$(python3 -c "
import json, sys
got, want = json.load(open(sys.argv[1]))['token_ids'], $want
if len(got) != len(want):
    sys.exit(1)
print(next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want)))" "$out/generate-$fx-$p.json")"; then
                res="FAIL (wrong token count)"
            else
                agree="$agree $k/$n"
            fi
        done
        [ "$res" = pass ] || status=1
        echo "| tandem generate --device cuda ($fx, 3 prompts; tokens equal to transformers' before the first difference:$agree) | $res | generate-$fx-*.log |" >>"$report"
    done
    # The simulator's profile of Qwen3-32B at TP1 (dummy weights of the real shapes): its step
    # grids, the KV transfer, and the serving path's latencies under load (a `tandem serve`
    # of one worker on this GPU, timed requests through its frontend; a GPU profile's
    # CPU-sharing terms stay zero). Bounded so that it cannot take the session's device time;
    # the A/B with it goes to BENCHMARKS.md.
    if timeout 420 "$suite/bin/tandem" profile --device cuda --load-format dummy \
        --model models/qwen3-32b --block-size 64 --max-model-len 32768 --points 4 --repeats 3 \
        --out "$out/profile-qwen3-32b-tp1-h200.json" >"$out/profile.log" 2>&1; then
        res="pass ($(tail -n 1 "$out/profile.log" | cut -c1-200))"
    else
        res=FAIL
        status=1
    fi
    echo "| tandem profile Qwen3-32B TP1 (dummy weights) | $res | profile.log |" >>"$report"
    {
        echo
        echo "## Kernels (tandem bench-kernels)"
        echo
    } >>"$report"
    if "$suite/bin/tandem" bench-kernels --out "$out/bench.md" >"$out/bench.log" 2>&1; then
        cat "$out/bench.md" >>"$report"
    else
        echo "bench-kernels FAILED, see bench.log" >>"$report"
        status=1
    fi
    cat "$report"
    exit "$status"
}

case "${1:-}" in
build) build ;;
run) run ;;
*)
    echo "usage: $0 build|run" >&2
    exit 2
    ;;
esac
