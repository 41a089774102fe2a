#!/usr/bin/env bash
# The GPU check (see docs/architecture.md, "GPU checks"): on a machine with an NVIDIA GPU, a CUDA build of
# torch and semdraw installed (pip install -e ".[dev]"; add ".[tensorrt]" for TensorRT), run
#   bash scripts/gpu_check.sh [OUT.json]
# It finishes within about 7.5 minutes, prints one table and writes every figure to OUT.json
# (default gpu_check.json). Set PYTHON to choose the interpreter (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python3
exec "$py" -m semdraw.tools.gpu_check --out "${1:-gpu_check.json}"
