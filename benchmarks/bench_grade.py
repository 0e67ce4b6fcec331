"""Wall time and memory of `vitgrade check` and `vitgrade grade --suite full` on the reference
notebook, split into process start + torch import, worker start, and tests; and the extra time
the sandbox adds (local vs. plain process isolation).

    python benchmarks/bench_grade.py [--repeat 3] [--backends process,local]

Prints figures; it asserts nothing about them (speed targets are benchmarks, not tests). Run it on
an otherwise idle machine: a process outside the measured tree that maps torch (a test run, a
calibration, the benchmark itself) takes its share of torch's library pages out of the tree's PSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.build import main as build_examples  # noqa: E402


def tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process and all its descendants, in bytes.

    The RSS sum counts the pages of torch's shared libraries once per process; PSS splits each
    shared page among the processes that map it, so its sum is what the tree really occupies.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    rss = pss = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            key, _, value = line.partition(":")
            if key == "Rss":
                rss += int(value.split()[0]) * 1024
            elif key == "Pss":
                pss += int(value.split()[0]) * 1024
    return rss, pss


def measure(command: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS sum, peak PSS sum of the whole process tree)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    peak_rss = peak_pss = 0

    def sample() -> None:
        nonlocal peak_rss, peak_pss
        while process.poll() is None:
            rss, pss = tree_memory(process.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    process.wait()
    sampler.join()
    return time.perf_counter() - start, peak_rss, peak_pss


# Run in a child: the benchmark's own process never maps torch, whose library pages it would
# otherwise share with the measured tree and take out of the tree's PSS (about 130 MiB).
WORKER_READY = """
import sys, time
from pathlib import Path
from vitgrade.runner.session import WorkerSession
from vitgrade.sandbox import make_backend
from vitgrade.submission import load

sandbox = make_backend(sys.argv[2])
session = WorkerSession(sandbox, load(Path(sys.argv[1])).chunks)
start = time.perf_counter()
ready = session.ensure()
elapsed = time.perf_counter() - start
session.stop()
sandbox.close()
print(elapsed, ready.load_s)
"""


def worker_ready(notebook: Path, backend: str) -> tuple[float, float]:
    """(seconds from spawn to the worker's ready message, of which running the student's code)."""
    done = subprocess.run([sys.executable, "-c", WORKER_READY, str(notebook), backend], capture_output=True, text=True,
                          cwd=ROOT, check=True)  # fmt: skip
    elapsed, load_s = done.stdout.split()[-2:]
    return float(elapsed), float(load_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="process,local")
    args = parser.parse_args()
    assert "torch" not in sys.modules, "the benchmark must not share torch's pages with what it measures"
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        build_examples(Path(tmp))
        solved = Path(tmp) / "solved.ipynb"
        cli = [sys.executable, "-m", "vitgrade"]
        start_torch = statistics.median(measure([sys.executable, "-c", "import vitgrade.runner.engine"])[0] for _ in range(args.repeat))
        print(f"repeats: {args.repeat} (medians); trusted process start + torch import: {start_torch:.2f} s")
        totals: dict[tuple[str, str], float] = {}
        for backend in backends:
            ready = [worker_ready(solved, backend) for _ in range(args.repeat)]
            worker_s = statistics.median(r[0] for r in ready)
            student_s = statistics.median(r[1] for r in ready)
            print(f"[{backend}] worker start + torch import + student code: {worker_s:.2f} s (student code {student_s:.3f} s)")
            for label, extra in (("check", ["check", str(solved)]), ("grade --suite full", ["grade", str(solved), "--suite", "full", "--seed", "1"])):
                runs = [measure([*cli, *extra, "--backend", backend]) for _ in range(args.repeat)]
                total = statistics.median(r[0] for r in runs)
                peak_rss, peak_pss = max(r[1] for r in runs), max(r[2] for r in runs)
                totals[(backend, label)] = total
                # The worker starts while the trusted side imports and collects: the two overlap.
                wait = max(0.0, worker_s - start_torch)
                tests = total - start_torch - wait
                print(f"[{backend}] {label:20s} total {total:6.2f} s = start+torch {start_torch:.2f} + worker wait {wait:.2f} "
                      f"+ tests {tests:.2f}; peak memory (all processes) PSS {peak_pss / 2**20:.0f} MiB, RSS sum {peak_rss / 2**20:.0f} MiB")  # fmt: skip
        if "process" in backends and "local" in backends:
            for label in ("check", "grade --suite full"):
                base, boxed = totals[("process", label)], totals[("local", label)]
                print(f"sandbox overhead, {label}: local {boxed:.2f} s vs process {base:.2f} s = {100 * (boxed / base - 1):+.1f}%")


if __name__ == "__main__":
    main()
