#!/usr/bin/env bash
# Create .venv with vitgrade and its pinned dependencies (torch 2.14.1, torchvision 0.29.1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import vitgrade, torch, jsonschema" 2>/dev/null; then
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e '.[dev]'
fi
