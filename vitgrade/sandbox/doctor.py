"""`vitgrade doctor`: what isolation this machine supports, checked by trying it."""

from __future__ import annotations

import os
import subprocess

from . import cgroups
from .docker import IMAGE
from .docker import probe as docker_probe
from .local import probe, tool


def docker_status() -> tuple[bool, str]:
    reason = docker_probe()
    return reason is None, f"engine reachable, image {IMAGE} present" if reason is None else reason


def checks() -> list[tuple[str, bool, str]]:
    root = os.geteuid() == 0
    local = probe()
    rows = [
        ("local backend (bubblewrap)", local is None, local or "namespaces for pid, net, ipc, uts, mounts"),
        (
            "unprivileged worker uid",
            bool(tool("setpriv")) or not root,
            "setpriv drops to uid 65534" if root else "already unprivileged",
        ),
        ("cgroup v1 memory + pids", root and cgroups.available(), "per-worker memory and pids limits"),
    ]
    user_ns = (
        subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode == 0 if tool("unshare") else False
    )
    rows.append(("user namespaces", user_ns, "unprivileged namespaces"))
    rows.append(("docker backend", *docker_status()))
    rows.append(("default backend", True, "local" if local is None else "process (rlimits, private temp dir only)"))
    return rows
