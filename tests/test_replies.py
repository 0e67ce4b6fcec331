"""Worker replies are untrusted: forged frames of every kind cost the student the one test they
were written in (a crash that names the protocol), the next test gets a fresh worker, and the
grading process neither logs an internal error nor holds a forged frame in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import JOBS, ROOT, failures
from tests.corpus.hostile import FULL_PUBLIC, TARGET_TEST
from tests.corpus.mutants import REFERENCE
from tests.corpus.replies import FORGERIES

# Runs the CLI in this interpreter and prints the process's peak resident memory (kB) last.
PEAK_RSS = """
import re, runpy, sys
sys.argv = ["vitgrade", *sys.argv[1:]]
try:
    runpy.run_module("vitgrade", run_name="__main__")
finally:
    print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
"""


def grade_measured(submission: Path, out: Path) -> tuple[dict, str, int]:
    """Grade through the real CLI; return the report, the grader's log and its peak RSS in kB."""
    env = {**os.environ, "VITGRADE_COURSE": str(ROOT)}
    args = [sys.executable, "-c", PEAK_RSS, "grade", str(submission), "--json", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text()), done.stderr, int(done.stdout.split()[-1])


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, str, int]]:
    folder = tmp_path_factory.mktemp("replies")
    jobs = {forgery.name: forgery.source() for forgery in FORGERIES} | {"reference": REFERENCE.read_text()}
    for name, source in jobs.items():
        (folder / f"{name}.py").write_text(source)
    with ThreadPoolExecutor(JOBS) as pool:
        results = pool.map(lambda name: grade_measured(folder / f"{name}.py", folder / f"{name}.json"), jobs)
        return dict(zip(jobs, results))


@pytest.mark.parametrize("forgery", FORGERIES, ids=[f.name for f in FORGERIES])
def test_forged_reply_is_charged_to_the_worker(graded, forgery) -> None:
    report, log, _ = graded[forgery.name]
    target = next(t for t in report["tests"] if t["name"] == TARGET_TEST)
    assert target["status"] == "crashed", target
    assert "broke the grader's protocol" in target["output"] and forgery.message in target["output"], target
    assert report["score"] == FULL_PUBLIC - 1, failures(report)  # every other test ran on a fresh worker
    assert all(t["status"] == "passed" for t in report["tests"] if t is not target), failures(report)
    assert "Traceback" not in log and "test_cases" not in log, log[-2000:]


def test_a_256_mib_frame_is_never_held_in_memory(graded) -> None:
    """Both 256 MiB frames (one skipped for its wrong nonce, one refused for its request id) leave the
    grading process's peak RSS where an honest submission's grade leaves it."""
    peak = graded["big_frames"][2]
    honest = graded["reference"][2]
    print(
        f"peak RSS of the grading process: {peak / 1024:.0f} MiB with the 256 MiB frames, {honest / 1024:.0f} MiB without"
    )
    assert peak - honest < 32 << 10, (peak, honest)
