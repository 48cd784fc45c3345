#!/usr/bin/env bash
# Installs nvcc 13.0 from PyPI into a directory (no root, no apt, no CUDA driver needed), so a
# fresh machine and CI can build the `cuda` feature. The pins must match each other exactly:
# a newer nvvm or crt emits PTX that ptxas 13.0 rejects.
# Idempotent: a complete install is reused. Prints the nvcc path on stdout (last line).
# Usage: scripts/install-nvcc.sh [DIR]   (default: $TANDEM_NVCC_DIR, else target/nvcc)
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-${TANDEM_NVCC_DIR:-target/nvcc}}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
pins=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
)
stamp="$dir/.tandem-pins"
nvcc="$dir/nvidia/cu13/bin/nvcc"

if [[ -x "$nvcc" && -f "$stamp" && "$(cat "$stamp")" == "${pins[*]}" ]]; then
    echo "$nvcc"
    exit 0
fi
if ! command -v python3 >/dev/null; then
    echo "install-nvcc: python3 is needed (pip installs the nvcc wheels)" >&2
    exit 1
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
fi
# A partial install (interrupted, other pins) is replaced as a whole.
rm -rf "$dir/nvidia" "$stamp"
# --break-system-packages only matters for a system pip (PEP 668); --target never touches it.
python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
    --break-system-packages --target "$dir" "${pins[@]}" >&2 ||
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
        --target "$dir" "${pins[@]}" >&2
if [[ ! -x "$nvcc" ]]; then
    echo "install-nvcc: $nvcc missing after pip install" >&2
    exit 1
fi
# nvcc finds its own cicc/ptxas through nvcc.profile; check it runs before stamping.
"$nvcc" --version >&2
printf '%s' "${pins[*]}" >"$stamp"
echo "$nvcc"
