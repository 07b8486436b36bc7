#!/usr/bin/env bash
# GPU smoke test of the worker runtime: NCCL with world size 1, gloo for 2 ranks sharing one GPU (running a
# tensor-parallel split), NVML metrics and CUDA-event timing. Prints a JSON summary as its last line.
# Needs a machine with an NVIDIA GPU and a Python with torch (CUDA build) and prometheus-client; it uses
# .venv when present, otherwise python3 (set PYTHON to choose). Not part of `make test`: CI has no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || echo "nvidia-smi not found" >&2
if ! "$PYTHON" -c "import torch, prometheus_client, yaml, numpy, rich" 2>/dev/null; then
    echo "installing the worker extra into .venv (needs PyPI)" >&2
    python3 -m venv .venv && PYTHON=.venv/bin/python
    "$PYTHON" -m pip install --quiet -e '.[operator,worker]'
fi
export PYTHONPATH="operator:worker-image${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" bench/gpu_smoke.py
