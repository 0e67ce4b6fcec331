"""Real servers for the service's tests: `vitgrade serve` as a process on a free loopback port,
PostgreSQL (initdb in a temporary folder, run as the postgres user when we are root) and
redis-server. Each stops when its test or session ends.

.ci/run starts one PostgreSQL and one redis-server for the whole run and names them in
VITGRADE_TEST_POSTGRES_URL and VITGRADE_TEST_REDIS_URL; without them (a developer's machine) the
tests start their own. Either way a test gets a database of its own in each."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
from redis import Redis as RedisClient

REPO = Path(__file__).resolve().parents[1]
STUB = "tests.stub_grade:grade"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_URL, REDIS_URL = "VITGRADE_TEST_POSTGRES_URL", "VITGRADE_TEST_REDIS_URL"  # servers .ci/run started
REDIS_DATABASES = itertools.count()  # the shared redis-server's databases 1 to 15 in turn, one per test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float, every: float = 0.2, what: str = "a condition") -> object:
    """Poll CHECK until it returns something true; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


@dataclass
class Server:
    """`vitgrade serve` on 127.0.0.1:PORT with its folder DATA (and database DB when given)."""

    data: Path
    port: int = field(default_factory=free_port)
    db: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> Server:
        command = [sys.executable, "-m", "vitgrade", "serve", "--data", str(self.data), "--port", str(self.port), *self.args]
        if self.db:
            command += ["--db", self.db]
        self.data.mkdir(parents=True, exist_ok=True)
        log = (self.data / "serve.log").open("ab")
        self.process = subprocess.Popen(command, cwd=REPO, env=environment(**self.env), stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip
        wait_for(lambda: self.alive() and httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200, timeout, what="the server")
        return self

    def alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"vitgrade serve exited with {self.process.returncode}:\n{self.log()}")
        return True

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in (self.data / "serve.log", self.data / "dispatcher.log") if p.exists())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (and, with SIGKILL, everything in its session: the dispatcher and its graders)."""
        if self.process is None or self.process.poll() is not None:
            return
        if sig == signal.SIGKILL:
            kill_session(self.process.pid)
        else:
            self.process.send_signal(sig)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            kill_session(self.process.pid)
            self.process.wait()

    def token(self, role: str, user: str) -> str:
        command = [sys.executable, "-m", "vitgrade", "token", "create", "--data", str(self.data), "--role", role, "--user", user]
        if self.db:
            command += ["--db", self.db]
        return subprocess.run(command, cwd=REPO, env=environment(), check=True, capture_output=True, text=True).stdout.strip()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def kill_session(pid: int) -> None:
    """SIGKILL every process whose session leader is PID (the server, the dispatcher, the graders)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == pid or int(entry.name) == pid:  # fields[3]: the session id
                    os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def serving(data: Path, **kwargs: object) -> Iterator[Server]:
    server = Server(data, **kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the postgres user when we are root."""
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL server's URL: .ci/run's, or one on a free loopback port with a database
    `vitgrade`, started here and stopped at the end. Its folder is its own (pytest's tmp_path is
    closed to the postgres user). A test takes a fresh_database in it."""
    if os.environ.get(POSTGRES_URL):
        yield os.environ[POSTGRES_URL]
        return
    folder = Path(tempfile.mkdtemp(prefix="pg-for-tests-"))  # not vitgrade-*: a grade leaves none of those
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "pgdata", free_port()
    run = lambda *c: subprocess.run(as_postgres(list(c)), check=True, capture_output=True, cwd=folder)  # noqa: E731
    run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "pg.log"), "-w", "start")
    try:
        run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "vitgrade")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/vitgrade"
    finally:
        subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(url: str) -> str:
    """A new, empty database in the PostgreSQL server of URL, so that a test sees only its own rows; its URL."""
    name = "t" + uuid.uuid4().hex[:12]
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


@dataclass
class Redis:
    """redis-server on a free loopback port, without persistence; it can be stopped and started
    again. (Or, from `redis_instance`, a database of the shared server, which it does not stop.)"""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    db: int = 0

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"

    def start(self) -> Redis:
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no"], stdout=subprocess.DEVNULL)  # fmt: skip
        wait_for(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=1).close() or True, 20, what="redis-server")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)


@contextlib.contextmanager
def redis_instance(own: bool = False) -> Iterator[Redis]:
    """Redis for one test: a database of its own, emptied, in .ci/run's redis-server, or a
    redis-server started here and stopped at the end (always when OWN: for a test that stops it)."""
    shared = os.environ.get(REDIS_URL)
    if shared and not own:
        where = urlsplit(shared)
        server = Redis(port=where.port or 6379, host=where.hostname or "127.0.0.1", db=1 + next(REDIS_DATABASES) % 15)
        with RedisClient.from_url(server.url) as client:
            client.flushdb()
        yield server
        return
    server = Redis().start()
    try:
        yield server
    finally:
        server.stop()
