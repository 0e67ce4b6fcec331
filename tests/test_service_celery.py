"""Scale-out on Celery through real processes: PostgreSQL, redis-server, `vitgrade serve
--dispatcher celery` and `vitgrade worker` processes (prefork pool), grading with the stub
(tests/stub_grade.py), whose log counts the grades of each submission (its sha256). No eager mode:
every message goes through Redis, every claim through PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from redis import Redis as RedisClient

from vitgrade.service.celery_app import Sent, make_app, send
from vitgrade.service.settings import ServiceSettings

from .servers import REPO, STUB, Redis, Server, environment, fresh_database, postgres, redis_instance, wait_for

CORRECT = Path(__file__).parent / "corpus" / "correct" / "einops_rearrange.py"
LEASE_S = "3"  # the reaper and the sweep run every second; a dead grader's job is requeued within about 4 s


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with postgres() as url:
        yield url


@pytest.fixture
def db(pg_server: str) -> str:
    """A fresh database of its own for each test, in the module's PostgreSQL."""
    return fresh_database(pg_server)


@pytest.fixture
def redis(request: pytest.FixtureRequest) -> Iterator[Redis]:
    """A Redis database of the test's own; a test that stops its Redis parametrizes this "own" (a server of its own)."""
    with redis_instance(own=getattr(request, "param", None) == "own") as server:
        yield server


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if parent(int(entry.name)) == pid:
                    found.append(int(entry.name))
    return found


def command(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def descendants(pid: int) -> list[int]:
    found = children(pid)
    return found + [d for child in found for d in descendants(child)]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Workers:
    """`vitgrade worker` processes on the service's folder; every one of them, and everything
    they started (pool processes, fork servers, grades), is killed at the end of the test."""

    data: Path
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)  # pids to kill at the end, even once orphaned

    def start(self, *args: str) -> subprocess.Popen:
        log = (self.data.parent / f"worker{len(self.processes)}.log").open("ab")
        command = [sys.executable, "-m", "vitgrade", "worker", "--data", str(self.data), "--concurrency", "1", *args]
        process = subprocess.Popen(command, cwd=REPO, env=environment(**self.env), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        self.processes.append(process)
        return process

    def pool(self, worker: subprocess.Popen) -> int:
        """WORKER's one pool process (--concurrency 1): the child forked from its main process, with
        the same command line (its other children, if any, are short-lived commands)."""

        def forked() -> list[int]:
            with contextlib.suppress(OSError):
                return [pid for pid in children(worker.pid) if command(pid) == command(worker.pid)]
            return []

        found = wait_for(forked, 30, every=0.05, what="the worker's pool process")
        assert len(found) == 1, found  # type: ignore[arg-type]
        return found[0]  # type: ignore[index]

    def note(self, *pids: int) -> None:
        self.seen.update(pids)

    def kill(self) -> None:
        for process in self.processes:
            self.seen.update([process.pid, *descendants(process.pid)])
        for pid in self.seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in self.processes:
            process.wait(30)

    def log(self, tail: int = 3000) -> str:
        return "\n".join(p.read_text(errors="replace")[-tail:] for p in sorted(self.data.parent.glob("worker*.log")))


@dataclass
class Service:
    folder: Path
    server: Server
    workers: Workers
    db: str
    made: int = 0  # submissions so far

    def client(self) -> httpx.Client:
        return self.server.client(self.server.token("lms", "canvas"))

    def sql(self, query: str, *args: object) -> list[tuple]:
        with psycopg.connect(self.db.replace("+psycopg", ""), autocommit=True) as conn:
            return conn.execute(query, args).fetchall()  # type: ignore[arg-type]

    def settings(self) -> ServiceSettings:
        return ServiceSettings.load(self.server.data)

    def starts(self) -> Counter[str]:
        """Grades started, by submission sha256."""
        log = self.folder / "stub.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return Counter(line.split()[1] for line in lines if line.startswith("start"))

    def submissions(self, count: int, client: httpx.Client) -> list[dict]:
        """COUNT more submissions, each different from every other (their sha256 differ), by the LMS for students s0, s1, ..."""
        made = []
        for i in range(self.made, self.made + count):
            path = self.folder / f"submission{i}" / CORRECT.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(CORRECT.read_text() + f"\n# submission {i} of {self.folder.name}\n")
            with path.open("rb") as fh:
                response = client.post("/api/v1/submissions", files={"file": (path.name, fh)}, data={"student": f"s{i}"})
            assert response.status_code == 202, response.text
            made.append(response.json())
        self.made += count
        return made

    def job(self, submission: str) -> tuple:
        """(id, state, attempt, grader_pid) of SUBMISSION's job."""
        return self.sql("SELECT id, state, attempt, grader_pid FROM jobs WHERE submission_id = %s", submission)[0]

    def results(self, submission: str) -> int:
        return self.sql("SELECT count(*) FROM results WHERE submission_id = %s", submission)[0][0]

    def finished(self, client: httpx.Client, submissions: list[dict], timeout: float = 45) -> list[dict]:
        def done(submission: str) -> dict | None:
            view = client.get(f"/api/v1/submissions/{submission}").json()
            return view if view["state"] in {"done", "failed"} else None

        try:
            return [wait_for(lambda s=s: done(s["id"]), timeout, what=f"submission {s['id']} to be graded") for s in submissions]  # type: ignore[misc]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- jobs: {self.sql('SELECT id, state, attempt, error FROM jobs')}\n"
                                 f"--- serve:\n{self.server.log()}\n--- workers:\n{self.workers.log()}") from None  # fmt: skip

    def graded_once_each(self, submissions: list[dict], views: list[dict], again: str | None = None) -> None:
        """Every submission done with exactly one result; each graded once (AGAIN: twice)."""
        assert [v["state"] for v in views] == ["done"] * len(views), views
        assert [self.results(s["id"]) for s in submissions] == [1] * len(submissions)
        expected = {s["sha256"]: 2 if s["id"] == again else 1 for s in submissions}
        assert dict(self.starts()) == expected


@pytest.fixture
def service(tmp_path: Path, db: str, redis: Redis) -> Iterator[Service]:
    """`vitgrade serve --dispatcher celery` on PostgreSQL and Redis, grading with the stub (2 s a grade), and no worker yet."""
    env = {"VITGRADE_STUB_SLEEP": "2", "VITGRADE_STUB_LOG": str(tmp_path / "stub.log")}
    server = Server(tmp_path / "data", db=db, env=env,
                    args=("--grader", STUB, "--lease", LEASE_S, "--dispatcher", "celery", "--broker", redis.url)).start()  # fmt: skip
    workers = Workers(server.data, env)
    try:
        yield Service(tmp_path, server, workers, db)
    finally:
        workers.kill()
        server.stop(signal.SIGKILL)


def test_jobs_go_through_redis_to_workers_and_a_message_delivered_twice_grades_once(service: Service) -> None:
    """Duplicates of each job's message, as a redelivery or a sweep would bring them, while the
    job is being graded, while it is still queued, and once it is done: the database decides."""
    client = service.client()
    service.workers.start("--concurrency", "2")
    settings = service.settings()
    app, sent = make_app(settings, publisher=True), Sent(settings)
    skipped = lambda state="": service.workers.log(1 << 20).count(f"{state}, skipped")  # noqa: E731
    first = service.submissions(1, client)
    running = wait_for(lambda: service.job(first[0]["id"])[1] == "running" and service.starts(), 30, every=0.05, what="the first grade")
    assert running
    send(app, sent, service.job(first[0]["id"])[0], "interactive")  # the free pool process takes it at once
    wait_for(lambda: skipped(": running") == 1, 10, every=0.05, what="the duplicate of a running job to be skipped")
    more = service.submissions(3, client)
    for submission in more[1:]:  # behind their originals in the queue, twice
        for _ in range(2):
            send(app, sent, service.job(submission["id"])[0], "interactive")
    submissions = first + more
    views = service.finished(client, submissions)
    for submission in submissions:
        send(app, sent, service.job(submission["id"])[0], "batch")
    wait_for(lambda: skipped() == 1 + 2 * 2 + 4, 20, every=0.1, what="every duplicate to be skipped")
    assert all(v["attempts"] == 1 and v["report"]["score"] == v["report"]["max_score"] > 0 for v in views)
    service.graded_once_each(submissions, views)


@pytest.mark.parametrize("killed", ["grading process", "pool process", "main process"])
def test_a_worker_killed_mid_grade_costs_one_more_grade_and_loses_nothing(service: Service, killed: str) -> None:
    client = service.client()
    worker = service.workers.start()
    submissions = service.submissions(3, client)
    first = submissions[0]
    grader = wait_for(lambda: service.job(first["id"])[3], 30, every=0.05, what="the first grade to start")
    wait_for(lambda: service.starts(), 10, every=0.05, what="the stub to start")
    fork_server = parent(grader)  # type: ignore[arg-type]
    pool = parent(fork_server)
    assert parent(pool) == worker.pid and service.workers.pool(worker) == pool  # a grade forked from the pool process's fork server
    service.workers.note(grader, fork_server, pool)  # type: ignore[arg-type]
    if killed == "grading process":
        os.kill(grader, signal.SIGKILL)  # type: ignore[arg-type]  # the pool process releases the job and sends it again
    elif killed == "pool process":
        os.kill(pool, signal.SIGKILL)  # Celery starts another pool process; the message goes back to Redis
    else:
        os.kill(worker.pid, signal.SIGKILL)  # its pool process goes with it; another worker comes up
        wait_for(lambda: not alive(pool), 10, every=0.05, what="the pool process to die with its worker")
        service.workers.start()
    views = service.finished(client, submissions)
    assert [v["attempts"] for v in views] == [2, 1, 1]
    service.graded_once_each(submissions, views, again=first["id"])


def test_a_pool_process_killed_before_it_claimed_its_job_gives_the_message_back(service: Service) -> None:
    """Between a message's delivery and its claim only the broker knows of it: acks_late and
    reject_on_worker_lost put it back when the pool process dies there."""
    client = service.client()
    submissions = service.submissions(1, client)
    job_id = service.job(submissions[0]["id"])[0]
    with psycopg.connect(service.db.replace("+psycopg", "")) as lock:
        lock.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))  # the claim's UPDATE waits on this row
        worker = service.workers.start()
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE 'UPDATE jobs%%'"
        wait_for(lambda: service.sql(waiting)[0][0] == 1, 30, every=0.05, what="the pool process to wait on its claim")
        pool = service.workers.pool(worker)  # the one waiting now (one that died starting would have been replaced)
        os.kill(pool, signal.SIGKILL)
        wait_for(lambda: not alive(pool), 10, every=0.05, what="the pool process to die")
        lock.rollback()
    views = service.finished(client, submissions, timeout=30)
    assert views[0]["attempts"] == 1
    service.graded_once_each(submissions, views)


@pytest.mark.parametrize("redis", ["own"], indirect=True)
def test_jobs_wait_while_redis_is_down_and_run_when_it_is_back(service: Service, redis: Redis) -> None:
    client = service.client()
    service.workers.start()
    before = service.submissions(2, client)
    wait_for(lambda: service.job(before[0]["id"])[1] == "running", 30, every=0.05, what="the first grade to start")
    broker = RedisClient.from_url(redis.url)
    wait_for(lambda: broker.llen("interactive") == 1, 10, every=0.05, what="the second job's message to wait in Redis")
    broker.close()
    redis.stop()  # no persistence: the waiting message is lost with it; the first job's grade goes on
    started = time.monotonic()
    during = service.submissions(2, client)
    assert time.monotonic() - started < 4  # accepted at once (202), without waiting on the broker
    assert [s["state"] for s in during] == ["queued"] * 2
    time.sleep(4)
    assert [client.get(f"/api/v1/submissions/{s['id']}").json()["state"] for s in [before[1], *during]] == ["queued"] * 3
    redis.start()  # the same port, empty
    submissions = before + during
    views = service.finished(client, submissions)
    service.graded_once_each(submissions, views)
