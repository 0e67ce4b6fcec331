"""Sandbox backends that start the untrusted worker: `local` (bubblewrap namespaces, nobody,
cgroups), `user` (nobody + rlimits, for hosts without namespaces), `process` (a plain child
with rlimits and a private temp dir) and `docker` (a fresh container per worker)."""

from __future__ import annotations

from pathlib import Path

from .base import Backend, Isolation, Limits, OutputCapture, WorkerProcess
from .docker import DockerBackend
from .local import LocalBackend
from .local import probe as local_probe
from .process import ProcessBackend
from .user import UserBackend
from .user import usable as user_usable

BACKENDS: dict[str, type[Backend]] = {
    "local": LocalBackend,
    "user": UserBackend,
    "process": ProcessBackend,
    "docker": DockerBackend,
}


def choose(name: str) -> str:
    """`auto` is `local` where namespaces work, else `user` where root can drop to nobody, else `process`."""
    if name != "auto":
        return name
    if local_probe() is None:
        return "local"
    return "user" if user_usable() is None else "process"


def make_backend(name: str, limits: Limits | None = None, protected: list[Path] | None = None) -> Backend:
    """A backend by name. `protected`: files the worker must not read, for backends that share
    the host's filesystem (the others never show them)."""
    name = choose(name)
    if name == "user":
        return UserBackend(limits, protected)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    return BACKENDS[name](limits)


__all__ = ["BACKENDS", "Backend", "Isolation", "Limits", "OutputCapture", "WorkerProcess", "make_backend"]
