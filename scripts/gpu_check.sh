#!/usr/bin/env bash
# The GPU check (docs/testing.md "GPU status"; docs/architecture.md "GPU checks"), in one call of at most 8 minutes:
#   bash scripts/gpu_check.sh [OUT.json]
# On a machine with an NVIDIA GPU and a CUDA build of torch. With semdraw installed it runs at once. On a
# machine without network access (the lent GPU machine): first, on a connected machine, run
#   python -m semdraw.tools.gpu_check --prepare        # downloads diffusers' wheel into .gpu-wheels/
# and bring .gpu-wheels/ with the working tree; this script then installs it and semdraw with --no-deps
# --no-index --no-build-isolation (no network), and runs the check. It prints one table and writes every
# figure, with the versions of torch, CUDA, the driver and the GPU, to OUT.json (default gpu_check.json).
# Set PYTHON to choose the interpreter (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python3
if ! "$py" -c "import semdraw" 2>/dev/null; then
  if [ -d .gpu-wheels ]; then
    "$py" -m pip install --quiet --no-deps --no-index .gpu-wheels/*.whl
  fi
  "$py" -m pip install --quiet --no-deps --no-index --no-build-isolation -e .
fi
exec "$py" -m semdraw.tools.gpu_check --out "${1:-gpu_check.json}"
