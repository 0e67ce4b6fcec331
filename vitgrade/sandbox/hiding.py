"""Hiding the course checkout from the `user` backend's worker, which shares the host's filesystem.

For the grade's duration the whole checkout holding the protected folders (the git work tree, so
.git's objects and the tests too; else the folder itself) becomes unreadable to other users: every
entry at its top loses its group/other bits, except the way down to what the worker must run (a
virtual environment inside the checkout), whose folders keep only the right to pass through.
Few modes change, and exactly those are restored.

Several grades may run at once (a batch) and a grader may die mid-grade, so the original modes are
kept in a journal under root's own state folder, with the processes that hold the protection: the
last holder restores them, and a grade that finds only dead holders restores them before it starts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "vitgrade"


def checkout_of(path: Path) -> Path:
    """The git work tree holding path, else path itself; never / or a home folder."""
    path = path.resolve()
    for folder in [path, *path.parents]:
        if (folder / ".git").exists():
            return path if folder in {Path("/"), Path.home()} else folder
    return path


def inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def plan(top: str, keep: list[str]) -> dict[str, int]:
    """path -> the mode it gets: no group/other access, except passage to the paths in keep."""
    mode = stat.S_IMODE(os.lstat(top).st_mode)
    below = [k for k in keep if inside(k, top)]
    if top in below:
        return {}
    if not below:
        return {top: mode & ~0o077}
    changes = {top: mode & ~0o066}  # pass through, not list
    for name in os.listdir(top):
        child = os.path.join(top, name)
        if not stat.S_ISLNK(os.lstat(child).st_mode):
            changes |= plan(child, below)
    return changes


def holder_alive(holder: list) -> bool:
    """Whether the process (pid, start time) that took the protection still runs."""
    pid, started = holder[0], holder[1]
    return start_time(pid) == started


def start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@contextmanager
def journal(top: str) -> Iterator[dict]:
    """The journal of one checkout, read and written under an exclusive lock."""
    STATE.mkdir(parents=True, exist_ok=True, mode=0o700)
    if STATE.lstat().st_uid != os.geteuid() or STATE.is_symlink():
        raise RuntimeError(f"{STATE} must be a folder owned by the grader's user")
    path = STATE / f"hidden-{hashlib.sha256(top.encode()).hexdigest()[:16]}.json"
    with open(STATE / "hidden.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"top": top, "modes": {}, "holders": []}
        state["holders"] = [h for h in state["holders"] if holder_alive(h)]
        try:
            yield state
        finally:
            if state["holders"]:
                temporary = path.with_suffix(".tmp")
                temporary.write_text(json.dumps(state))
                temporary.replace(path)
            else:
                path.unlink(missing_ok=True)


def restore(modes: dict[str, int]) -> None:
    for path, mode in modes.items():
        try:
            os.chmod(path, mode, follow_symlinks=False)
        except OSError:
            pass  # removed meanwhile


class Hidden:
    """The checkouts of `paths`, unreadable to other users until release()."""

    def __init__(self, paths: list[Path], keep: list[str]):
        self.tops = sorted({str(checkout_of(p)) for p in paths if p.exists()})
        self.me = [os.getpid(), start_time(os.getpid()), uuid.uuid4().hex]
        self.released = False
        for top in self.tops:
            with journal(top) as state:
                first = not state["holders"]
                state["holders"].append(self.me)  # before any chmod: a failure part way is still undone
                if first:
                    restore(state["modes"])  # left by a grade that died
                    changes = plan(top, [os.path.realpath(k) for k in keep])
                    state["modes"] = {p: stat.S_IMODE(os.lstat(p).st_mode) for p in changes}
                    for path, mode in changes.items():
                        os.chmod(path, mode)

    def release(self) -> None:
        """Once; the tops stay listed for the report."""
        if self.released:
            return
        self.released = True
        for top in self.tops:
            with journal(top) as state:
                state["holders"] = [h for h in state["holders"] if h != self.me]
                if not state["holders"]:
                    restore(state["modes"])
