"""The Gradescope autograder bundle, and what runs inside it.

`vitgrade gradescope build` zips setup.sh (pinned installs), run_autograder and the source:
the engine, both suites, the reference and grading.json (the contract chosen at build time).
Inside Gradescope, run_autograder calls `vitgrade gradescope run`, which reads
/autograder/submission and submission_metadata.json, grades with the full suite under that
contract and writes /autograder/results/results.json. The worker runs as an
unprivileged user and /autograder/source is made unreadable to it (the `user` backend, since
Gradescope's container has no namespaces; `local` where it does).
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from ..batch.discover import pick
from ..contract import Contract
from ..report.export import gradescope
from ..report.models import Report

SOURCE_ITEMS = ("vitgrade", "reference", "test_cases", "pyproject.toml", "README.md")
GRADING = "grading.json"  # {"contract": ...}: what the instructor chose when building the bundle
PINNED = ("torch", "torchvision", "einops", "numpy", "pydantic", "click", "safetensors", "nbformat", "rich", "pytest", "pyyaml")

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this as root in /autograder. VITGRADE_AUTOGRADER_ROOT, VITGRADE_PYTHON and
# VITGRADE_BACKEND exist for simulated runs.
ROOT="${VITGRADE_AUTOGRADER_ROOT:-/autograder}"
PYTHON="${VITGRADE_PYTHON:-python3}"
cd "$ROOT/source" || exit 1
export VITGRADE_COURSE="$ROOT/source"
exec "$PYTHON" -m vitgrade gradescope run --root "$ROOT" --backend "${VITGRADE_BACKEND:-auto}"
"""


def setup_script() -> str:
    pins = " ".join(f"{name}=={version(name)}" for name in PINNED)
    return f"""#!/usr/bin/env bash
# Gradescope's setup: pinned installs, then vitgrade itself from the bundled source.
set -euo pipefail
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y python3 python3-pip python3-venv util-linux
python3 -m pip install --no-cache-dir {pins}
python3 -m pip install --no-cache-dir --no-deps /autograder/source
"""


def build(course: Path, out: Path, contract: Contract | None = None) -> list[str]:
    """Write the bundle zip; returns its member names. CONTRACT: None grades with the suites' own."""
    names = [GRADING]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(GRADING, json.dumps({"contract": contract}) + "\n")
        for name, text in (("setup.sh", setup_script()), ("run_autograder", RUN_AUTOGRADER)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            archive.writestr(info, text)
            names.append(name)
        for item in SOURCE_ITEMS:
            path = course / item
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            for file in files:
                name = file.relative_to(course).as_posix()
                archive.write(file, name)
                names.append(name)
    return names


def metadata_times(root: Path) -> tuple[datetime | None, datetime | None, str | None]:
    """(submitted_at, due, student) from submission_metadata.json, where present."""
    try:
        meta = json.loads((root / "submission_metadata.json").read_text())
    except (OSError, ValueError):
        return None, None, None
    parse = lambda v: datetime.fromisoformat(v) if isinstance(v, str) else None  # noqa: E731
    users = meta.get("users") or [{}]
    student = users[0].get("sid") or str(users[0].get("email", "")).split("@")[0] or None
    return parse(meta.get("created_at")), parse((meta.get("assignment") or {}).get("due_date")), student


def protect_source(source: Path) -> None:
    """Make the whole source tree unreadable to anyone but its owner (root)."""
    for item in [source, *source.rglob("*")]:
        if not item.is_symlink():
            os.chmod(item, item.stat().st_mode & ~0o077)


def run(root: Path, backend: str) -> Path:
    """Grade /autograder/submission into /autograder/results/results.json, whatever happens."""
    from ..api import GradeOptions, grade

    results = root / "results" / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    submitted_at, due, student = metadata_times(root)
    protect_source(root / "source")
    submission = pick(root / "submission") if (root / "submission").is_dir() else None
    try:
        if submission is None:
            raise FileNotFoundError("no .ipynb, .py or .zip file was submitted")
        grading = root / "source" / GRADING  # a bundle written by `build` has it
        contract = json.loads(grading.read_text())["contract"] if grading.is_file() else None
        options = GradeOptions(suite="full", contract=contract, backend=backend, student=student,
                               submitted_at=submitted_at, due=due)  # fmt: skip
        report: Report = grade(submission, options)
        payload = gradescope(report)
    except Exception as exc:  # Gradescope must always get a results.json
        payload = {"score": 0.0, "output": f"The autograder could not grade this submission: {exc}", "tests": []}
    results.write_text(json.dumps(payload, indent=2))
    return results
