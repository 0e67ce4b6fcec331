"""The disk quota for backends whose worker writes to the host's own filesystem (`user`, `process`).

RLIMIT_FSIZE caps each file; this caps the total. Where root may mount, the working directory is
a size-limited tmpfs, so writes past the quota fail (ENOSPC) and never touch the host disk. In any
case a watchdog sums, every few milliseconds, what the worker holds on disk (its working directory
and, for a dedicated uid, what that uid owns in the shared temp folders) and kills it past the
quota: the tmpfs holds exactly, the watchdog within what a fast disk takes in one poll.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import ProcessWorker

SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # world-writable on a usual host
POLL_S = 0.005
TOOLS = "/usr/bin:/bin:/usr/sbin:/sbin"


def tree_bytes(path: str) -> int:
    """Disk blocks under path (a file or a folder), never following links; vanishing entries count 0."""
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    total = info.st_blocks * 512
    if stat.S_ISDIR(info.st_mode):
        try:
            names = os.listdir(path)
        except OSError:
            return total
        total += sum(tree_bytes(os.path.join(path, name)) for name in names)
    return total


def owned(uid: int, since: float, folders: tuple[str, ...] = SHARED_TMP) -> list[str]:
    """Entries of the shared temp folders that `uid` created since `since` (searching inside
    world-writable subfolders too, since the uid can create entries only in those)."""
    found = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_uid == uid and info.st_ctime >= since:
                found.append(entry.path)
            elif stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IWOTH:
                found += owned(uid, since, (entry.path,))
    return found


def remove(paths: list[str]) -> None:
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def mount_tmpfs(path: Path, size: int, uid: int) -> list[Callable[[], None]]:
    """Mount a tmpfs of `size` bytes, owned by uid and private to it, on path; returns what unmounts
    it, or nothing where mounting is not allowed (not root, or no CAP_SYS_ADMIN as in most containers)."""
    mount = shutil.which("mount", path=TOOLS)
    if mount is None or os.geteuid() != 0:
        return []
    options = f"size={size},mode=0700,uid={uid},gid={uid},nosuid,nodev"
    if subprocess.run(
        [mount, "-t", "tmpfs", "-o", options, "vitgrade-scratch", str(path)], capture_output=True
    ).returncode:
        return []
    umount = shutil.which("umount", path=TOOLS) or "umount"

    def unmount() -> None:
        subprocess.run([umount, "--lazy", str(path)], capture_output=True)

    return [unmount]


class DiskWatch:
    """Kills the worker (through `stop`) once its working directory plus, with `uid`, what that uid
    created in the shared temp folders since the start, exceed `quota` bytes."""

    def __init__(self, quota: int, workdir: Path, uid: int | None, stop: Callable[[int], None]):
        self.quota = quota
        self.workdir = str(workdir)
        self.uid = uid
        self.since = time.time() - 1  # ctime has coarse granularity on some filesystems
        self.stop = stop
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def used(self) -> int:
        shared = owned(self.uid, self.since) if self.uid is not None else []
        return tree_bytes(self.workdir) + sum(tree_bytes(p) for p in shared)

    def run(self) -> None:
        while not self.done.wait(POLL_S):
            used = self.used()
            if used > self.quota:
                self.stop(used)
                return

    def close(self) -> None:
        """Stop watching; with a uid, remove what it left in the shared temp folders."""
        self.done.set()
        self.thread.join()
        if self.uid is not None:
            remove(owned(self.uid, self.since))


def guard(worker: ProcessWorker, quota: int, workdir: Path, uid: int | None) -> None:
    """Watch the worker's disk use from now until it is killed, telling the student why it stopped."""

    def stop(used: int) -> None:
        worker.capture.feed(
            f"\nvitgrade: your code wrote {used >> 20} MiB to disk, over the {quota >> 20} MiB a worker may use "
            "(its working directory and temp files together); the worker was stopped\n".encode()
        )
        worker.signal_all()

    worker.cleanup.insert(0, DiskWatch(quota, workdir, uid, stop).close)
