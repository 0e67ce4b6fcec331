"""The service under load, on loopback: `vitgrade serve` (local dispatcher, SQLite) with N students
who submit at random moments over a few minutes and poll until graded.

1. With the stub grade (tests/stub_grade.py sleeps --stub-sleep seconds): API latency under load
   (p50, p95 of every request), sustained grades per minute against the pool's ideal, and
   whether anything was lost or graded twice.
2. With real grades: COUNT submissions (the correct corpus, suite public) through the service,
   then the same files through `vitgrade batch --jobs POOL`: grades per minute of each and the
   service's share of the batch's throughput.

    python benchmarks/bench_service.py [--students 40] [--minutes 2] [--count 8] [--pool 2]

Prints figures; it asserts nothing. It stops by itself, and its servers with it.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.servers import STUB, Server  # noqa: E402

CORRECT = sorted((ROOT / "tests" / "corpus" / "correct").glob("*.py"))


class Load:
    """Students who each submit once at a random moment and poll until graded; every request timed."""

    def __init__(self, server: Server, token: str, spread_s: float) -> None:
        self.server, self.token, self.spread_s = server, token, spread_s
        self.latencies: list[float] = []
        self.finished: dict[str, float] = {}  # submission -> when its grade was seen
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def request(self, client: httpx.Client, method: str, url: str, **kwargs: object) -> httpx.Response:
        started = time.perf_counter()
        response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
        with self.lock:
            self.latencies.append(time.perf_counter() - started)
        return response

    def student(self, name: str, path: Path, delay: float, deadline: float) -> None:
        time.sleep(delay)
        with self.server.client(self.token) as client:
            with path.open("rb") as fh:
                response = self.request(client, "POST", "/api/v1/submissions", files={"file": (path.name, fh)}, data={"student": name})
            if response.status_code != 202:
                self.errors.append(f"{name}: {response.status_code} {response.text[:100]}")
                return
            submission = response.json()["id"]
            while time.monotonic() < deadline:
                time.sleep(1.0)
                if self.request(client, "GET", f"/api/v1/submissions/{submission}").json()["state"] in {"done", "failed"}:
                    with self.lock:
                        self.finished[submission] = time.monotonic()
                    return
            self.errors.append(f"{name}: not graded in time")

    def run(self, students: int, files: list[Path], timeout_s: float) -> float:
        started = time.monotonic()
        deadline = started + timeout_s
        threads = [threading.Thread(target=self.student, args=(f"s{i:04d}", files[i % len(files)], random.uniform(0, self.spread_s), deadline))
                   for i in range(students)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else (values or [0.0])[0]


def stub_phase(tmp: Path, students: int, minutes: float, pool: int, sleep: float) -> None:
    log = tmp / "stub.log"
    server = Server(tmp / "stub", args=("--grader", STUB, "--pool", str(pool), "--daily-quota", "1000"),
                    env={"VITGRADE_STUB_SLEEP": str(sleep), "VITGRADE_STUB_LOG": str(log)}).start()  # fmt: skip
    try:
        load = Load(server, server.token("lms", "bench"), 60 * minutes)
        elapsed = load.run(students, CORRECT, 60 * minutes + 120)
    finally:
        server.stop()
    starts = [line for line in log.read_text().splitlines() if line.startswith("start")]
    done = sorted(load.finished.values())
    busy = (done[-1] - done[0]) / 60 if len(done) > 1 else 0
    print(f"stub grade ({sleep:.1f} s, pool {pool}): {students} students over {minutes:.1f} min; graded {len(load.finished)}, "
          f"lost {students - len(load.finished)}, grades started {len(starts)} (twice: {len(starts) - len(load.finished)}), "
          f"{len(load.errors)} errors; {elapsed:.0f} s in all")  # fmt: skip
    print(f"  API latency over {len(load.latencies)} requests: p50 {1000 * percentile(load.latencies, 50):.0f} ms, "
          f"p95 {1000 * percentile(load.latencies, 95):.0f} ms, max {1000 * max(load.latencies):.0f} ms")  # fmt: skip
    if busy:
        print(f"  sustained {len(done) / busy:.1f} grades/min while grading (pool's ideal {60 * pool / sleep:.1f}; "
              "the arrivals, not the pool, bound it when the load is below capacity)")


def real_phase(tmp: Path, count: int, pool: int) -> None:
    folder = tmp / "submissions"
    folder.mkdir()
    for i in range(count):
        shutil.copy(CORRECT[i % len(CORRECT)], folder / f"s{i:03d}.py")
    files = sorted(folder.iterdir())
    server = Server(tmp / "real", args=("--suite", "public", "--pool", str(pool), "--daily-quota", "1000")).start()
    try:
        load = Load(server, server.token("lms", "bench"), 0.0)
        first = time.monotonic()
        load.run(count, files, 1800)
        service_s = max(load.finished.values()) - first if load.finished else float("nan")
    finally:
        server.stop()
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "vitgrade", "batch", str(folder), "--out", str(tmp / "batch"), "--suite", "public",
                    "--jobs", str(pool)], check=True, capture_output=True, cwd=ROOT)  # fmt: skip
    batch_s = time.monotonic() - started
    print(f"real grades, {count} submissions, pool {pool}: service {service_s:.1f} s ({60 * count / service_s:.1f}/min; "
          f"{len(load.finished)} graded, {len(load.errors)} errors), batch --jobs {pool} {batch_s:.1f} s "
          f"({60 * count / batch_s:.1f}/min): the service sustains {100 * batch_s / service_s:.0f}% of the batch's throughput")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--students", type=int, default=40)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--stub-sleep", type=float, default=2.0)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stub_phase(Path(tmp), args.students, args.minutes, args.pool, args.stub_sleep)
        if not args.skip_real:
            real_phase(Path(tmp), args.count, args.pool)


if __name__ == "__main__":
    main()
