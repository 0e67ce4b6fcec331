"""The `process` backend: a plain child process with rlimits, a scrubbed environment and a
private temp working directory. It is the portable baseline; `local` (bubblewrap) adds
namespaces on top of the same limits.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable

from . import quota
from .base import (
    Backend,
    Isolation,
    Limits,
    OutputCapture,
    ProcessWorker,
    WorkerProcess,
    scrubbed_env,
)

PR_SET_PDEATHSIG = 1


def child_setup(limits: Limits, nproc: bool = False) -> Callable[[], None]:
    """A preexec function, run inside the child before Python starts: the rlimits, and a SIGKILL
    when the grading process dies (PR_SET_PDEATHSIG), so that no worker outlives a killed grader.
    nproc: also cap processes per user (counted for the whole uid; used where no cgroup is)."""
    values = [
        (resource.RLIMIT_AS, limits.address_space),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_FSIZE, limits.file_size),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CORE, 0),
    ]
    if nproc:
        values.append((resource.RLIMIT_NPROC, limits.pids))
    # Linux has prctl and enforces every rlimit. Elsewhere (a student's Mac running `vitgrade
    # check` on their own code) there is no parent-death signal, and a limit the kernel refuses
    # (macOS rejects RLIMIT_AS below the current use) is left as it is.
    linux = sys.platform.startswith("linux")
    prctl = ctypes.CDLL(None, use_errno=True).prctl if linux else None  # resolved here: nothing is loaded after fork

    def apply() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for which, value in values:
            try:
                resource.setrlimit(which, (value, value))
            except (ValueError, OSError):
                if linux:
                    raise

    return apply


class ProcessBackend(Backend):
    name = "process"
    tmpfs = False  # whether the working directories are size-limited tmpfs mounts (root may mount)

    def spawn(self, capture: OutputCapture) -> WorkerProcess:
        workdir = self.new_workdir()
        unmount = quota.mount_tmpfs(workdir, self.limits.scratch, os.geteuid())
        self.tmpfs = bool(unmount)
        popen = subprocess.Popen(
            self.worker_argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=scrubbed_env(str(workdir), self.limits.threads),
            preexec_fn=child_setup(self.limits),
            start_new_session=True,
            close_fds=True,
        )
        worker = ProcessWorker(popen, capture, [*unmount, lambda: shutil.rmtree(workdir, ignore_errors=True)])
        quota.guard(worker, self.limits.scratch, workdir, uid=None)
        return worker

    def isolation(self) -> Isolation:
        return Isolation(
            backend=self.name,
            network="shared with the host",
            filesystem="private temp working directory"
            + (" (a size-limited tmpfs)" if self.tmpfs else "")
            + ", its size watched and the worker killed past the quota; the rest of the host is visible",
            user="same user as the grader",
            limits={**self.limits.describe(), "process_group": "killed as a whole"},
        )
