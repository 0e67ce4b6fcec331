"""Sandbox backends that start the untrusted worker: `process` (rlimits, private temp dir)."""

from __future__ import annotations

from .base import Backend, Isolation, Limits, OutputCapture, WorkerProcess
from .process import ProcessBackend

BACKENDS: dict[str, type[Backend]] = {"process": ProcessBackend}


def make_backend(name: str, limits: Limits | None = None) -> Backend:
    try:
        return BACKENDS[name](limits)
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}") from None


__all__ = ["BACKENDS", "Backend", "Isolation", "Limits", "OutputCapture", "WorkerProcess", "make_backend"]
