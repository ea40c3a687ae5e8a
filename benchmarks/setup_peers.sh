#!/usr/bin/env bash
# Creates benchmarks/.venv-deep-river, the virtual environment the deep-river peer of
# benchmarks/prequential.py runs in (deep-river 0.3.4 pins torch<2.6 and river<0.26, which the
# project's own environment does not satisfy). Idempotent: does nothing when the venv already
# has deep-river 0.3.4. The venv is git-ignored. Override the interpreter with PYTHON=...
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python}"
VENV=benchmarks/.venv-deep-river

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('deep-river') != '0.3.4')" 2>/dev/null
then
    echo "$VENV already has deep-river 0.3.4"
    exit 0
fi

"$PYTHON" -m venv "$VENV" && "$VENV/bin/pip" install deep-river==0.3.4
echo "created $VENV"
