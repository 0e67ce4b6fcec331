#!/usr/bin/env bash
# Create .venv with vitgrade and its dependencies, pinned by constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import vitgrade, torch, einops, jsonschema, mypy, nbclient, fastapi, celery, psycopg, selenium" 2>/dev/null; then
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -c constraints.txt -e '.[dev,grading,service]'
fi
