"""The `local` backend: bubblewrap namespaces, an unprivileged uid, rlimits and cgroup v1 limits.

The worker sees a filesystem built only from read-only binds of what it needs (/usr, the Python
install, the venv's site-packages, the staged worker runtime) plus a private tmpfs /tmp and its
own working directory. Hidden tests, the reference, suite config, results folders and the rest of
the project are not in the view at all. It has its own network namespace (no route out), PID,
IPC and UTS namespaces, a scrubbed environment, no capabilities, and it dies with the grader.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from . import cgroups
from .base import (
    BOOT,
    Backend,
    Isolation,
    Limits,
    OutputCapture,
    ProcessWorker,
    WorkerProcess,
    python_paths,
    scrubbed_env,
)
from .process import child_setup

UNPRIVILEGED = 65534  # nobody
HOME = "/home/student"
RUNTIME = "/opt/vitgrade"


def tool(name: str) -> str | None:
    return shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")


def setpriv_argv() -> list[str]:
    """Become uid/gid 65534 with no groups, no capabilities and no new privileges, then exec.
    Changing uid clears the parent-death signal, so setpriv sets it again."""
    return [tool("setpriv") or "setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--pdeathsig=KILL", "--"]  # fmt: skip


def limited(limits: Limits, group: cgroups.Cgroup | None) -> Callable[[], None]:
    """A preexec function: join the worker's cgroup (if any), then apply the rlimits (with
    RLIMIT_NPROC standing in for the pids limit where there is no cgroup)."""
    rlimits = child_setup(limits, nproc=group is None)

    def apply() -> None:
        if group is not None:
            group.join()
        rlimits()

    return apply


def python_roots() -> list[str]:
    """The folders holding the interpreter, its stdlib and the packages the worker imports."""
    roots = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), os.path.abspath(sys.prefix)}
    for path in python_paths():
        if not any(path.startswith(r + os.sep) for r in roots):
            roots.add(path)
    executable = os.path.realpath(sys.executable)
    if not any(executable.startswith(r + os.sep) for r in roots):
        roots.add(os.path.dirname(executable))
    return sorted(r for r in roots if not r.startswith("/usr/"))


def ancestors(paths: list[str]) -> list[str]:
    """Every parent folder of the bind targets, to be created world-traversable (0755)."""
    out: set[str] = set()
    for path in paths:
        parent = Path(path).parent
        while str(parent) not in {"/", "."}:
            out.add(str(parent))
            parent = parent.parent
    return sorted(out, key=lambda p: (p.count("/"), p))


class LocalBackend(Backend):
    name = "local"

    def __init__(self, limits: Limits | None = None):
        super().__init__(limits)
        self.bwrap = tool("bwrap")
        self.setpriv = tool("setpriv")
        self.root = os.geteuid() == 0
        self.cgroups = self.root and cgroups.available()
        if self.cgroups:
            cgroups.prepare()
        if self.bwrap is None or (self.root and self.setpriv is None):
            raise RuntimeError("the local backend needs bubblewrap (apt-get install bubblewrap) and setpriv")

    def bwrap_argv(self) -> list[str]:
        roots = python_roots()
        assert self.bwrap is not None  # checked in __init__
        argv = [self.bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if not self.root:
            argv += ["--unshare-user", "--uid", str(UNPRIVILEGED), "--gid", str(UNPRIVILEGED)]
        argv += ["--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for etc in ("/etc/ld.so.cache", "/etc/localtime"):
            if os.path.exists(etc):
                argv += ["--ro-bind", etc, etc]
        # /tmp and the working directory are tmpfs mounts of half the disk quota each: writes past it
        # fail with ENOSPC and never reach the host's disk. The only user inside is the worker's uid.
        half = str(self.limits.scratch // 2)
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", half, "--perms", "1777", "--tmpfs", "/tmp"]
        for folder in ancestors([*roots, RUNTIME, HOME]):
            argv += ["--perms", "0755", "--dir", folder]
        for root in roots:
            argv += ["--ro-bind", root, root]
        argv += ["--ro-bind", str(self.runtime), RUNTIME, "--size", half, "--perms", "0777", "--tmpfs", HOME]
        argv += ["--chdir", HOME, "--clearenv"]
        for key, value in {**scrubbed_env(HOME, self.limits.threads), "TMPDIR": "/tmp"}.items():
            argv += ["--setenv", key, value]
        argv.append("--")
        if self.root:
            argv += setpriv_argv()
        return argv

    def spawn(self, capture: OutputCapture) -> WorkerProcess:
        group = cgroups.Cgroup.create(self.limits.memory, self.limits.pids) if self.cgroups else None
        argv = [*self.bwrap_argv(), sys.executable, "-I", "-S", "-B", "-c", BOOT, RUNTIME, *python_paths()]
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin"},
            preexec_fn=limited(self.limits, group),
            start_new_session=True,
            close_fds=True,
        )
        return ProcessWorker(popen, capture, [], wrapped=True, cgroup=group)

    def isolation(self) -> Isolation:
        limits: dict[str, int | str] = {**self.limits.describe(), "process_tree": "PID namespace, killed as a whole"}
        if self.cgroups:
            limits |= {"cgroup_memory_bytes": self.limits.memory, "cgroup_pids": self.limits.pids}
        return Isolation(
            backend=self.name,
            network="none (own network namespace)",
            filesystem="read-only binds of /usr, the Python install and site-packages; private tmpfs /tmp and working "
            f"directory of {self.limits.scratch >> 21} MiB each; "
            "the course checkout, hidden tests and reference are not in view",
            user=f"uid {UNPRIVILEGED} (nobody), no capabilities, no new privileges",
            pid_namespace=True,
            limits=limits,
        )


def probe() -> str | None:
    """None if the local backend works here, else the reason it does not."""
    if tool("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    try:
        done = subprocess.run(
            [tool("bwrap") or "bwrap", "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "--size", "1048576",
             "--tmpfs", "/tmp", "true"],
            capture_output=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot start: {exc}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip()[:200]
        if "--size" in reason:
            return f"bubblewrap is too old to limit a tmpfs's size (needs 0.7 or later): {reason}"
        return f"bubblewrap cannot create namespaces here: {reason}"
    return None
