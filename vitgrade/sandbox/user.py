"""The `user` fallback, for machines without namespaces (e.g. inside Gradescope's container):
the worker runs as an unprivileged uid with rlimits (and cgroup limits where writable), and the
course checkout holding what it must not read (hidden tests, reference, suite config, .git, the
tests) is made unreadable to that uid for the grade's duration (see hiding.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import cgroups, quota
from .base import (
    Backend,
    Isolation,
    Limits,
    OutputCapture,
    ProcessWorker,
    WorkerProcess,
    scrubbed_env,
)
from .hiding import Hidden
from .local import UNPRIVILEGED, limited, python_roots, setpriv_argv, tool


def usable() -> str | None:
    """None if an unprivileged uid can run this interpreter and import torch, else why not."""
    if os.geteuid() != 0 or tool("setpriv") is None:
        return "needs root and setpriv to drop to an unprivileged uid"
    done = subprocess.run([*setpriv_argv(), sys.executable, "-I", "-c", "import torch"], capture_output=True, cwd="/")
    return None if done.returncode == 0 else f"uid {UNPRIVILEGED} cannot run {sys.executable} with torch"


class UserBackend(Backend):
    name = "user"

    def __init__(self, limits: Limits | None = None, protected: list[Path] | None = None):
        super().__init__(limits)
        reason = usable()
        if reason:
            raise RuntimeError(f"the user backend is not usable here: {reason}")
        self.cgroups = cgroups.available()
        if self.cgroups:
            cgroups.prepare()
        os.chmod(self.scratch, 0o711)  # traversable, not listable
        for folder in [self.runtime, *self.runtime.rglob("*")]:
            if folder.is_dir():
                os.chmod(folder, 0o755)
        self.hidden = Hidden(protected or [], [*python_roots(), os.path.dirname(sys.executable), str(self.scratch)])
        self.tmpfs = False  # whether the working directories are size-limited tmpfs mounts (root may mount)

    def spawn(self, capture: OutputCapture) -> WorkerProcess:
        workdir = self.new_workdir()
        os.chown(workdir, UNPRIVILEGED, UNPRIVILEGED)
        unmount = quota.mount_tmpfs(workdir, self.limits.scratch, UNPRIVILEGED)
        self.tmpfs = bool(unmount)
        group = cgroups.Cgroup.create(self.limits.memory, self.limits.pids) if self.cgroups else None
        popen = subprocess.Popen(
            [*setpriv_argv(), *self.worker_argv()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=scrubbed_env(str(workdir), self.limits.threads),
            preexec_fn=limited(self.limits, group),
            start_new_session=True,
            close_fds=True,
        )
        cleanup = [*unmount, lambda: shutil.rmtree(workdir, ignore_errors=True)]
        worker = ProcessWorker(popen, capture, cleanup, cgroup=group)
        quota.guard(worker, self.limits.scratch, workdir, uid=UNPRIVILEGED)
        return worker

    def close(self) -> None:
        """Give the checkout its modes back (the last grade holding it does), then remove the scratch."""
        self.hidden.release()
        super().close()

    def isolation(self) -> Isolation:
        limits: dict[str, int | str] = {**self.limits.describe(), "process_group": "killed as a whole"}
        if self.cgroups:
            limits |= {"cgroup_memory_bytes": self.limits.memory, "cgroup_pids": self.limits.pids}
        else:
            limits |= {"nproc": self.limits.pids}
        return Isolation(
            backend=self.name,
            network="shared with the host",
            filesystem="host filesystem as uid 65534; made unreadable to it: "
            + (", ".join(self.hidden.tops) or "nothing")
            + ("; working directory: a size-limited tmpfs" if self.tmpfs else "; working directory on the host disk")
            + "; what it writes is watched and the worker killed past the quota",
            user=f"uid {UNPRIVILEGED} (nobody), no capabilities, no new privileges",
            limits=limits,
        )
