"""Wall time of `vitgrade check` and `vitgrade grade --suite full` on the reference notebook,
split into process start + torch import, student import (worker start to ready) and tests.

    python benchmarks/bench_grade.py [--repeat 3] [--backend process]

Prints figures; it asserts nothing (speed targets are benchmarks, not tests).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.build import main as build_examples  # noqa: E402


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def worker_ready(notebook: Path, backend: str) -> tuple[float, float]:
    """(seconds from spawn to the worker's ready message, of which running the student's code)."""
    from grader.runner.session import WorkerSession
    from grader.sandbox import make_backend
    from grader.submission import load

    sandbox = make_backend(backend)
    session = WorkerSession(sandbox, load(notebook).chunks)
    start = time.perf_counter()
    ready = session.ensure()
    elapsed = time.perf_counter() - start
    session.stop()
    sandbox.close()
    return elapsed, ready.load_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", default="process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_examples(Path(tmp))
        solved = Path(tmp) / "solved.ipynb"
        cli = [sys.executable, "-m", "grader"]
        start_torch = statistics.median(wall([sys.executable, "-c", "import grader.runner.engine"]) for _ in range(args.repeat))
        ready = [worker_ready(solved, args.backend) for _ in range(args.repeat)]
        worker_s = statistics.median(r[0] for r in ready)
        student_s = statistics.median(r[1] for r in ready)
        print(f"backend: {args.backend}, repeats: {args.repeat} (medians)")
        print(f"trusted process start + torch import:      {start_torch:6.2f} s")
        print(f"worker start + torch import + student code: {worker_s:6.2f} s (student code {student_s:.3f} s)")
        for label, command in (
            ("vitgrade check", [*cli, "check", str(solved), "--backend", args.backend]),
            ("vitgrade grade --suite full", [*cli, "grade", str(solved), "--suite", "full", "--seed", "1", "--backend", args.backend]),
        ):
            total = statistics.median(wall(command) for _ in range(args.repeat))
            # The worker starts while the trusted side imports and collects, so the two overlap.
            tests = total - start_torch - max(0.0, worker_s - start_torch)
            print(f"{label:30s} total {total:6.2f} s  = start+torch {start_torch:.2f} + worker wait "
                  f"{max(0.0, worker_s - start_torch):.2f} + tests {tests:.2f}")


if __name__ == "__main__":
    main()
