#!/usr/bin/env bash
# Set up, then lint (ruff), type-check (mypy) and run vitgrade's own tests.
# pytest's exit code 5 ("no tests ran") is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/ruff check vitgrade tests test_cases reference benchmarks examples || exit 1
.venv/bin/mypy || exit 1
.venv/bin/python -m pytest tests "$@"
code=$?
if [ "$code" -eq 5 ]; then
    echo "no tests were collected: failing" >&2
    exit 1
fi
exit "$code"
