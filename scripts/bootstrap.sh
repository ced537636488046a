#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install pairflow into it.
# Idempotent: a second run only re-installs when pyproject.toml changed.
#
# torch: if the interpreter already has torch (a user's CUDA or newer build), the venv sees it
# through --system-site-packages and keeps it. Otherwise the CPU build torch==2.13.0 is
# installed first (override with PAIRFLOW_TORCH="torch==X.Y"), so that the unpinned
# "torch>=2.4" of pyproject.toml never pulls a multi-GB CUDA build.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."

if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "bootstrap: using the torch already installed for $PYTHON"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
stamp="$VENV/.pairflow-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && "$PY" -c "import pairflow, torch" >/dev/null 2>&1; then
  exit 0
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet "${PAIRFLOW_TORCH:-torch==2.13.0}"
fi
"$PY" -m pip install --quiet -e ".[dev,app]"
"$PY" -c "import torch, pairflow; print(f'bootstrap: pairflow {pairflow.__version__}, torch {torch.__version__}')"
touch "$stamp"
