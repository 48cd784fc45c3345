#!/usr/bin/env bash
# The whole GPU check in two halves (the GPU machine has CUDA and PyTorch but no Rust and no
# network, see ../shared/GPU.md):
#
#   scripts/gpu-suite.sh build   here: builds the cuda feature (tandem + the GPU test
#                                binaries), strips them into target/gpu-suite/ (< 64 MiB)
#   scripts/gpu-suite.sh run     on the GPU machine, from the repo root, with
#                                target/gpu-suite carried: runs every GPU test (a missing GPU
#                                fails, never skips), the end-to-end generate on the fixture,
#                                and bench-kernels; writes $OUT/gpu-results.md (date, GPU,
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
        --message-format=json |
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
    gen=(generate --device cuda --gpu-memory-utilization 0.5 --model tests/fixtures/tiny-qwen3
        --prompt-ids 256,72,101,108,108,111 --max-tokens 16 --json)
    if "$suite/bin/tandem" "${gen[@]}" >"$out/generate.log" 2>&1; then res=pass; else res=FAIL; status=1; fi
    echo "| tandem generate --device cuda (tiny-qwen3) | $res | generate.log |" >>"$report"
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
