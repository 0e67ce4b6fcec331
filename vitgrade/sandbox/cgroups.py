"""cgroup v1 memory and pids limits for one worker, where /sys/fs/cgroup is writable.

Each worker gets its own group in the memory and pids hierarchies; every process it starts
inherits it, so a fork bomb stops at pids.max and a memory bomb is killed by the kernel's OOM
killer inside the group, which memory.oom_control then reports.

A group is named after the grading process that owns it (PID namespace, pid and start time), so
that a group left behind by a grade that died without removing it (SIGKILL, a lost machine session) is
recognised and removed, with anything still in it, when the next grade prepares its backend.
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


def prepare() -> None:
    """Before the first worker: adopt the workers' orphans (daemons, double forks) instead of leaving
    them to pid 1, which may never reap them (a zombie keeps its cgroup from being removed), and
    remove the groups that dead grades left behind."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    sweep()


def started(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (with its pid, a name no later process
    reuses), or None when there is no such process. Other errors (out of file descriptors) raise:
    they must never make a live grade look dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def namespace() -> str:
    """This process's PID namespace: pids name an owner only within it."""
    return str(os.stat("/proc/self/ns/pid").st_ino)


def owner(name: str) -> tuple[str, int, str] | None:
    """(PID namespace, pid, start time) of the grade that created group NAME, or None for a name
    not in that form."""
    parts = name.split("-")
    if len(parts) != 5 or parts[0] != "vitgrade" or not all(p.isdigit() for p in parts[1:4]):
        return None
    return parts[1], int(parts[2]), parts[3]


def sweep() -> None:
    """Remove the groups whose owning grade has died, killing what is still in them. A live
    owner's groups, and groups of another PID namespace (whose pids mean nothing here), are never
    touched, so concurrent grades leave each other alone."""
    here = namespace()
    names = {folder.name for controller in CONTROLLERS for folder in (ROOT / controller).glob("vitgrade-*")}
    for name in sorted(names):
        found = owner(name)
        try:
            dead = found is not None and found[0] == here and started(found[1]) != found[2]
        except OSError:
            continue  # cannot tell: leave it
        if dead:
            Cgroup(name).destroy(patience=2.0)


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
    def __init__(self, name: str):
        self.name = name
        self.dirs = {c: ROOT / c / name for c in CONTROLLERS}

    @classmethod
    def create(cls, memory: int, pids: int) -> Cgroup:
        """A new group owned by this process, with these limits."""
        me = os.getpid()
        group = cls(f"vitgrade-{namespace()}-{me}-{started(me)}-{uuid.uuid4().hex[:8]}")
        for folder in group.dirs.values():
            folder.mkdir()
        memory_dir = group.dirs["memory"]
        (memory_dir / "memory.limit_in_bytes").write_text(str(memory))
        swap = memory_dir / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(memory))  # memory + swap equal: no escape into swap
        (group.dirs["pids"] / "pids.max").write_text(str(pids))
        return group

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
        try:
            return [int(p) for p in (self.dirs["pids"] / "cgroup.procs").read_text().split()]
        except FileNotFoundError:  # already removed
            return []

    def destroy(self, patience: float = 30.0) -> None:
        """Kill whatever is left in the group (daemons, double forks, a fork bomb) and remove it.
        A group can only be removed once its last process has fully exited and been reaped:
        orphans of the worker are re-parented to us (prepare) and reaped here."""
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
                except FileNotFoundError:
                    pass
                except OSError:
                    continue
                del remaining[controller]
            if remaining:
                time.sleep(0.05)
