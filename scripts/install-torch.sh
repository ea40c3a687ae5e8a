#!/usr/bin/env bash
# Installs PyTorch without dragging multi-GB CUDA packages onto CPU-only machines.
# GPU machines (nvidia-smi answers) get the regular CUDA wheel; CPU machines get the +cpu
# build, from a local find-links wheel when pip is configured with one, else from the
# PyTorch CPU index. Nothing happens when a torch >= 2.6 is already importable.
set -euo pipefail
PY=${PYTHON:-python3}
VERSION=${TORCH_VERSION:-2.13.0}
if "$PY" -c 'import sys, torch; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 6))' 2>/dev/null; then
    echo "torch already installed: $("$PY" -c 'import torch; print(torch.__version__)')"
    exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install "torch==${VERSION}"
elif ! "$PY" -m pip install "torch==${VERSION}+cpu"; then
    "$PY" -m pip install "torch==${VERSION}+cpu" --index-url https://download.pytorch.org/whl/cpu
fi
