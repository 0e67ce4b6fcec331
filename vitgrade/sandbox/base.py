"""What every sandbox backend provides: start a worker process, capture its output, kill it whole.

A backend starts `python -I -S -B` with only the staged worker runtime (vitgrade/__init__,
pages, protocol, program, training, worker) and the interpreter's site-packages on sys.path, so the worker can import
torch but never the course checkout (reference/, test_cases/). The channel is the worker's
stdin/stdout; the student's prints arrive on stderr, captured with a size cap.
"""

from __future__ import annotations

import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cgroups import Cgroup

WORKER_FILES = ("__init__.py", "pages.py", "protocol.py", "program.py", "shapes.py", "training.py", "worker.py")
BOOT = "import sys; sys.path[:0] = sys.argv[1:]; import vitgrade.worker as w; w.main()"
OUTPUT_CAP = 64 << 10


@dataclass(frozen=True)
class Limits:
    """Resource limits for one worker process."""

    address_space: int = 10 << 30  # torch (a CUDA build) maps ~3.3 GB of address space at import
    memory: int = 2 << 30  # resident memory, where a cgroup can enforce it (a grade needs about 0.6 GiB)
    cpu_seconds: int = 900
    file_size: int = 64 << 20
    scratch: int = 256 << 20  # disk the worker may fill in all (its working directory and /tmp together)
    open_files: int = 512
    pids: int = 256
    threads: int = 1  # torch intra-op threads for the student's code

    def describe(self) -> dict[str, int]:
        return {
            "address_space_bytes": self.address_space,
            "cpu_seconds": self.cpu_seconds,
            "file_size_bytes": self.file_size,
            "scratch_bytes": self.scratch,
            "open_files": self.open_files,
            "threads": self.threads,
        }


@dataclass
class Isolation:
    """The isolation a backend actually achieved, for the report."""

    backend: str
    network: str
    filesystem: str
    user: str
    pid_namespace: bool = False
    limits: dict[str, int | str] = field(default_factory=dict)


class OutputCapture:
    """Drains a stream in a thread, keeping the first `cap` bytes and counting the rest."""

    def __init__(self, cap: int = OUTPUT_CAP):
        self.cap = cap
        self.kept = bytearray()
        self.total = 0
        self.lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self.lock:
            self.total += len(chunk)
            room = self.cap - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    def drain(self, fd: int) -> threading.Thread:
        def run() -> None:
            with os.fdopen(fd, "rb", buffering=0) as stream:
                while chunk := stream.read(1 << 20):
                    self.feed(chunk)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def text(self) -> str:
        with self.lock:
            return self.kept.decode("utf-8", "replace")

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)


class WorkerProcess(ABC):
    """A running worker seen from the trusted side: channel descriptors and a kill switch."""

    send_fd: int
    recv_fd: int

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def exit_code(self, grace: float) -> int | None:
        """The worker's own exit status if it ends within `grace` seconds, else None
        (negative: killed by that signal)."""

    @abstractmethod
    def oom_killed(self) -> bool | None:
        """Whether the kernel killed it for memory; None where that cannot be observed."""

    @abstractmethod
    def kill(self) -> int:
        """Kill the worker and everything it started, and reap it; returns its exit status."""


class ProcessWorker(WorkerProcess):
    """A worker that is a child process (possibly a launcher such as bwrap).

    `wrapped` means the child is a launcher that reports a signal death as 128 + signal;
    `cgroup` is the worker's own group, if it has one, for OOM reports and the final sweep."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        capture: OutputCapture,
        cleanup: list[Any],
        wrapped: bool = False,
        cgroup: Cgroup | None = None,
    ):
        self.popen = popen
        self.wrapped = wrapped
        self.cgroup = cgroup
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
        self.send_fd = popen.stdin.fileno()
        self.recv_fd = popen.stdout.fileno()
        self.capture = capture
        self.drainer = capture.drain(os.dup(popen.stderr.fileno()))
        popen.stderr.close()
        self.cleanup = cleanup

    def signal_all(self) -> None:
        """SIGKILL the worker's process group and, where it has one, everything in its cgroup."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.cgroup is not None:
            for pid in self.cgroup.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def alive(self) -> bool:
        return self.popen.poll() is None

    def exit_code(self, grace: float) -> int | None:
        try:
            code = self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            return None
        return -(code - 128) if self.wrapped and code > 128 else code

    def oom_killed(self) -> bool | None:
        return self.cgroup.oom_killed() if self.cgroup is not None else None

    def kill(self) -> int:
        self.signal_all()
        code = self.popen.wait()
        if self.cgroup is not None:
            self.cgroup.destroy()
        for closer in self.cleanup:
            closer()
        self.drainer.join(timeout=2)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        return code


def python_paths() -> list[str]:
    """The site-packages the worker needs (torch, safetensors, pydantic) and nothing else."""
    paths = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(p for p in paths if os.path.isdir(p)))


def stage_runtime(root: Path) -> Path:
    """Copy the worker's own modules into root/vitgrade, read-only; returns root."""
    package = Path(__file__).resolve().parents[1]
    target = root / "vitgrade"
    target.mkdir(parents=True, exist_ok=True)
    for name in WORKER_FILES:
        shutil.copyfile(package / name, target / name)
        os.chmod(target / name, 0o444)
    return root


def scrubbed_env(home: str, threads: int) -> dict[str, str]:
    """No secrets, no proxies, no PYTHON* variables: only what Python and torch need."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "CUDA_VISIBLE_DEVICES": "",
    }


class Backend(ABC):
    """Base class: subclasses say how to start the worker command and what isolation results."""

    name = "base"

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()
        self.scratch = Path(tempfile.mkdtemp(prefix="vitgrade-"))
        self.runtime = stage_runtime(self.scratch / "runtime")

    def worker_argv(self) -> list[str]:
        return [sys.executable, "-I", "-S", "-B", "-c", BOOT, str(self.runtime), *python_paths()]

    @abstractmethod
    def spawn(self, capture: OutputCapture) -> WorkerProcess:
        """Start one worker in a fresh private working directory."""

    @abstractmethod
    def isolation(self) -> Isolation:
        """What this backend guarantees, as recorded in the report."""

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def new_workdir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="work-", dir=self.scratch))
