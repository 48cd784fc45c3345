#!/usr/bin/env bash
# Builds the emulated CUDA device (emu/) and lays out its libraries under the names the CUDA
# libraries have: libcuda.so (the driver API), and libcublasLt.so and libnccl.so as links to
# the same file (the dynamic loader maps one file once, so all three share one device).
# Prints the directory on its last line:
#   LD_LIBRARY_PATH=$(scripts/cuda-emu.sh | tail -1) tandem generate --device cuda ...
# Usage: scripts/cuda-emu.sh [--debug]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
flags=(--release)
if [[ "${1:-}" == "--debug" ]]; then
    profile=debug
    flags=()
fi
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build "${flags[@]}" -p tandem-emu --lib >&2
lib="$target/$profile/libtandem_emu.so"
if [[ ! -f "$lib" ]]; then
    echo "cuda-emu: $lib was not built" >&2
    exit 1
fi
dir="$target/cuda-emu"
mkdir -p "$dir"
# A copy, not a link into target/: a later build must not change a running process's library.
cp -f "$lib" "$dir/libcuda.so.tmp"
mv -f "$dir/libcuda.so.tmp" "$dir/libcuda.so"
for name in libcuda.so.1 libcublasLt.so libcublasLt.so.13 libnccl.so libnccl.so.2; do
    ln -sfn libcuda.so "$dir/$name"
done
echo "$dir"
