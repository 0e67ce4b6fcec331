#!/usr/bin/env bash
# Set up, then grade the bundled examples: the template solved with the reference (full marks)
# and the blank template (0), on the full suite; print both reports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/build.py examples/out
for notebook in solved blank; do
    echo "== examples/out/${notebook}.ipynb: vitgrade check (public suite)"
    .venv/bin/vitgrade check "examples/out/${notebook}.ipynb"
    echo "== examples/out/${notebook}.ipynb: vitgrade grade --suite full (JSON report)"
    .venv/bin/vitgrade grade "examples/out/${notebook}.ipynb" --suite full --json "examples/out/${notebook}.report.json"
    cat "examples/out/${notebook}.report.json"
done
echo "== the grading service: examples/out/solved.ipynb submitted through the HTTP API as a student"
.venv/bin/python examples/service_demo.py examples/out/solved.ipynb
