#!/usr/bin/env bash
# Builds the tandem image from the repository root: docker/build.sh [TAG] [extra docker build args]
# e.g. docker/build.sh registry.example.com/tandem:v1 --build-arg CUDA_VERSION=13.0.0 --push
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-tandem:latest}"
shift || true
# BuildKit: the Dockerfile uses cache mounts.
export DOCKER_BUILDKIT=1
exec docker build -f docker/Dockerfile -t "${tag}" "$@" .
