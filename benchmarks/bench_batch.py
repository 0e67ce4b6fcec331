"""Batch throughput with --jobs 1 and --jobs 2 on this machine: wall time per submission and
parallel efficiency (T1 / (2 x T2)).

Each job count grades COUNT and then 2 x COUNT submissions. A batch has a fixed cost (the CLI's
imports, the fork server's, the gradebook plots) that a class of hundreds makes negligible, so
besides end-to-end figures it prints the marginal cost of a submission, (T(2n) - T(n)) / n,
and the efficiency computed from those. This machine's CPU time is shared with its neighbours,
so the runs are interleaved and repeated, and the figures are medians.

    python benchmarks/bench_batch.py [--count 8] [--suite public] [--repeat 2]

Prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--suite", default="public")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subs = Path(tmp) / "submissions"
        styles = sorted((ROOT / "tests" / "corpus" / "correct").glob("*.py"))
        runs: dict[tuple[int, int], list[float]] = {}
        for count in (args.count, 2 * args.count):
            folder = subs / str(count)
            folder.mkdir(parents=True)
            for i in range(count):
                shutil.copy(styles[i % len(styles)], folder / f"s{i:03d}.py")
        for round_ in range(args.repeat):
            for count in (args.count, 2 * args.count):
                for jobs in (1, 2):
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "vitgrade", "batch", str(subs / str(count)), "--out",
                                    str(Path(tmp) / f"out-{count}-{jobs}-{round_}"), "--suite", args.suite, "--jobs", str(jobs)],
                                   check=True, capture_output=True, cwd=ROOT)  # fmt: skip
                    runs.setdefault((count, jobs), []).append(time.perf_counter() - start)
        times = {key: statistics.median(values) for key, values in runs.items()}
        for (count, jobs), elapsed in sorted(times.items()):
            print(f"--jobs {jobs}: {elapsed:.1f} s for {count} submissions = {elapsed / count:.2f} s each end to end "
                  f"({3600 * count / elapsed:.0f} per hour; runs {', '.join(f'{t:.1f}' for t in runs[(count, jobs)])})")  # fmt: skip
        n = 2 * args.count
        print(f"parallel efficiency with 2 jobs, end to end ({n} submissions): {100 * times[(n, 1)] / (2 * times[(n, 2)]):.0f}%")
        marginal = {jobs: (times[(n, jobs)] - times[(args.count, jobs)]) / args.count for jobs in (1, 2)}
        fixed = times[(n, 1)] - n * marginal[1]
        print(f"marginal cost of a submission: {marginal[1]:.2f} s with --jobs 1, {marginal[2]:.2f} s with --jobs 2 "
              f"(fixed cost of a batch about {fixed:.1f} s); parallel efficiency {100 * marginal[1] / (2 * marginal[2]):.0f}%")


if __name__ == "__main__":
    main()
