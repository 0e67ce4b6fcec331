"""The `process` backend: a plain child process with rlimits, a scrubbed environment and a
private temp working directory. It is the portable baseline; `local` (bubblewrap) adds
namespaces on top of the same limits.
"""

from __future__ import annotations

import ctypes
import resource
import shutil
import signal
import subprocess
from typing import Callable

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
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: nothing is loaded after fork

    def apply() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for which, value in values:
            resource.setrlimit(which, (value, value))

    return apply


class ProcessBackend(Backend):
    name = "process"

    def spawn(self, capture: OutputCapture) -> WorkerProcess:
        workdir = self.new_workdir()
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
        return ProcessWorker(popen, capture, [lambda: shutil.rmtree(workdir, ignore_errors=True)])

    def isolation(self) -> Isolation:
        return Isolation(
            backend=self.name,
            network="shared with the host",
            filesystem="private temp working directory; the rest of the host is visible",
            user="same user as the grader",
            limits={**self.limits.describe(), "process_group": "killed as a whole"},
        )
