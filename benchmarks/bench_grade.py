"""Wall time and memory of `vitgrade check` and `vitgrade grade --suite full` on the reference
notebook, split into process start + torch import, worker start, and tests; and the extra time
the sandbox adds (local vs. plain process isolation).

    python benchmarks/bench_grade.py [--repeat 3] [--backends process,local]

Prints figures; it asserts nothing (speed targets are benchmarks, not tests).
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


def tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry)] = int(line.split()[1]) * 1024
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo += children.get(current, [])
    return total


def measure(command: list[str]) -> tuple[float, int]:
    """(wall seconds, peak resident memory of the whole process tree)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while process.poll() is None:
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    process.wait()
    sampler.join()
    return time.perf_counter() - start, peak


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
    parser.add_argument("--backends", default="process,local")
    args = parser.parse_args()
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        build_examples(Path(tmp))
        solved = Path(tmp) / "solved.ipynb"
        cli = [sys.executable, "-m", "grader"]
        start_torch = statistics.median(measure([sys.executable, "-c", "import grader.runner.engine"])[0] for _ in range(args.repeat))
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
                peak = max(r[1] for r in runs)
                totals[(backend, label)] = total
                # The worker starts while the trusted side imports and collects: the two overlap.
                wait = max(0.0, worker_s - start_torch)
                tests = total - start_torch - wait
                print(f"[{backend}] {label:20s} total {total:6.2f} s = start+torch {start_torch:.2f} + worker wait {wait:.2f} "
                      f"+ tests {tests:.2f}; peak memory (all processes) {peak / 2**20:.0f} MiB")  # fmt: skip
        if "process" in backends and "local" in backends:
            for label in ("check", "grade --suite full"):
                base, boxed = totals[("process", label)], totals[("local", label)]
                print(f"sandbox overhead, {label}: local {boxed:.2f} s vs process {base:.2f} s = {100 * (boxed / base - 1):+.1f}%")


if __name__ == "__main__":
    main()
