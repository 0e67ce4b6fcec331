"""cgroup v1 memory and pids limits for one worker, where /sys/fs/cgroup is writable.

Each worker gets its own group in the memory and pids hierarchies; every process it starts
inherits it, so a fork bomb stops at pids.max and a memory bomb is killed by the kernel's OOM
killer inside the group, which memory.oom_control then reports.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids")


def available() -> bool:
    """True when this process can create groups in both v1 hierarchies."""
    for controller in CONTROLLERS:
        probe = ROOT / controller / f"vitgrade-probe-{os.getpid()}"
        try:
            probe.mkdir()
            probe.rmdir()
        except OSError:
            return False
    return True


def become_subreaper() -> None:
    """Adopt the worker's orphans (daemons, double forks) instead of leaving them to pid 1,
    which may never reap them; a zombie keeps its cgroup from being removed."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans() -> None:
    """Reap every child that has exited (called only once the worker itself has been reaped)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Cgroup:
    def __init__(self, memory: int, pids: int):
        self.name = f"vitgrade-{uuid.uuid4().hex[:12]}"
        self.dirs = {c: ROOT / c / self.name for c in CONTROLLERS}
        for folder in self.dirs.values():
            folder.mkdir()
        memory_dir = self.dirs["memory"]
        (memory_dir / "memory.limit_in_bytes").write_text(str(memory))
        swap = memory_dir / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(memory))  # memory + swap equal: no escape into swap
        (self.dirs["pids"] / "pids.max").write_text(str(pids))

    def join(self) -> None:
        """Move the calling process (a child before exec) into the group."""
        for folder in self.dirs.values():
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    def oom_killed(self) -> bool:
        control = self.dirs["memory"] / "memory.oom_control"
        for line in control.read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1]) > 0
        return int((self.dirs["memory"] / "memory.failcnt").read_text()) > 0

    def pids(self) -> list[int]:
        return [int(p) for p in (self.dirs["pids"] / "cgroup.procs").read_text().split()]

    def destroy(self, patience: float = 30.0) -> None:
        """Kill whatever is left in the group (daemons, double forks, a fork bomb) and remove it.
        A group can only be removed once its last process has fully exited and been reaped:
        orphans of the worker are re-parented to us (become_subreaper) and reaped here."""
        deadline = time.monotonic() + patience
        remaining = dict(self.dirs)
        while remaining and time.monotonic() < deadline:
            for pid in self.pids() if "pids" in remaining else []:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            reap_orphans()
            for controller, folder in list(remaining.items()):
                try:
                    folder.rmdir()
                    del remaining[controller]
                except OSError:
                    pass
            if remaining:
                time.sleep(0.05)
