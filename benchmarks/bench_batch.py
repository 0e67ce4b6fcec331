"""Batch throughput with --jobs 1 and --jobs 2 on this machine: wall time per submission and
parallel efficiency (T1 / (2 x T2)).

    python benchmarks/bench_batch.py [--count 8] [--suite public]

Prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.build import main as build_examples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--suite", default="public")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build_examples(Path(tmp) / "examples")
        subs = Path(tmp) / "submissions"
        subs.mkdir()
        styles = sorted((ROOT / "tests" / "corpus" / "correct").glob("*.py"))
        for i in range(args.count):
            source = styles[i % len(styles)]
            shutil.copy(source, subs / f"s{i:03d}.py")
        times = {}
        for jobs in (1, 2):
            out = Path(tmp) / f"out{jobs}"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "grader", "batch", str(subs), "--out", str(out), "--suite", args.suite,
                            "--jobs", str(jobs)], check=True, capture_output=True, cwd=ROOT)  # fmt: skip
            times[jobs] = time.perf_counter() - start
            print(f"--jobs {jobs}: {times[jobs]:.1f} s for {args.count} submissions = {times[jobs] / args.count:.2f} s each "
                  f"({3600 * args.count / times[jobs]:.0f} per hour)")  # fmt: skip
        print(f"parallel efficiency with 2 jobs: {100 * times[1] / (2 * times[2]):.0f}%")


if __name__ == "__main__":
    main()
