"""Shared machinery for vitgrade's own tests: run the real CLI in subprocesses, in parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORRECT = sorted((ROOT / "tests" / "corpus" / "correct").glob("*.py"))
JOBS = max(1, min(2, os.cpu_count() or 1))


def vitgrade(*args: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the vitgrade CLI as a separate process, as a user would."""
    env = {**os.environ, "VITGRADE_COURSE": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "vitgrade", *args], capture_output=True, text=True, cwd=cwd or ROOT, timeout=timeout, env=env
    )


def grade(submission: Path, out: Path, *extra: str, cwd: Path | None = None) -> dict:
    """Grade one submission through the CLI and return its JSON report."""
    done = vitgrade("grade", str(submission), "--json", str(out), *extra, cwd=cwd)
    assert done.returncode == 0, f"vitgrade grade {submission.name} failed: {done.stderr[-2000:]}"
    return json.loads(out.read_text())


def grade_all(jobs: dict[str, tuple[Path, tuple[str, ...]]], folder: Path, cwd: Path | None = None) -> dict[str, dict]:
    """Grade many submissions, JOBS at a time; returns name -> report."""
    folder.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[str, tuple[Path, tuple[str, ...]]]) -> tuple[str, dict]:
        name, (path, extra) = item
        return name, grade(path, folder / f"{name}.json", *extra, cwd=cwd)

    with ThreadPoolExecutor(JOBS) as pool:
        return dict(pool.map(one, jobs.items()))


def without_timings(report: dict) -> dict:
    """A report with every wall-clock figure zeroed: what a regrade must reproduce."""
    report = json.loads(json.dumps(report))
    report["duration_s"] = 0
    for test in report["tests"]:
        test["duration_s"] = 0
    return report


def unit_scores(report: dict) -> dict[str, tuple[float, float]]:
    """unit -> (score, max_score)."""
    totals: dict[str, tuple[float, float]] = {}
    for test in report["tests"]:
        score, most = totals.get(test["unit"], (0.0, 0.0))
        totals[test["unit"]] = (score + test["score"], most + test["max_score"])
    return totals


def failures(report: dict) -> str:
    return "\n".join(f"  {t['unit']}: {t['name']}: [{t['status']}] {t['output']}" for t in report["tests"] if t["status"] != "passed")


@pytest.fixture(scope="session")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled examples: the template solved with the reference, and the blank template."""
    out = tmp_path_factory.mktemp("examples")
    subprocess.run([sys.executable, str(ROOT / "examples" / "build.py"), str(out)], check=True, capture_output=True)
    return out
