"""The library seam: `vitgrade.grade(submission, options) -> Report`.

The CLI, the batch children, the Gradescope runner and the service all call this one function.
Its options are a pydantic model, so they can travel as JSON (a batch child, a queue message)
and a typo is an error where the options are made, not in the middle of a grade.

One grade per process: a grade starts a worker, installs signal handlers, sets torch's thread
count and imports the suite's test files; the batch and the service therefore run each grade in
a process of its own (forked from a server that imported torch once), never two in one process.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .contract import Contract
from .sandbox import BACKENDS

if TYPE_CHECKING:
    from .report.models import Report

DEFAULT_BUDGET_S = 300.0
BACKEND_NAMES = ("auto", *BACKENDS)  # auto: local where namespaces work, else user, else process


def known_backend(value: str) -> str:
    """A pydantic validator for a backend name (GradeOptions, the service's settings)."""
    if value not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {value!r}; choose one of {', '.join(BACKEND_NAMES)}")
    return value


class GradeOptions(BaseModel):
    """How to grade one submission. Every field has the default an instructor would expect."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suite: str = "public"  # public, full, hidden, or a suite folder
    contract: Contract | None = None  # None: the suite's contract (suite.toml), else edition
    seed: int | None = Field(default=None, ge=0, lt=2**31)  # None: the suite's fixed seed, or a fresh one
    backend: str = "auto"
    threads: int = Field(default=1, ge=1, le=256)  # torch threads, in the worker and on the trusted side
    student: str | None = None
    submitted_at: datetime | None = None  # for the late penalty
    due: datetime | None = None  # overrides the suite's [course] due
    budget_s: float = Field(default=DEFAULT_BUDGET_S, gt=0)  # the whole grade; tests past it fail as timeouts
    # Code that runs but cannot be captured as a program is judged on the worker's word (the report
    # then says its verdicts are unverified); off by default, an instructor's choice per submission.
    unverified: bool = False
    programs_dir: Path | None = None  # store every judged program here, by its sha256 (named in the report),
    # and what the worker answered (<submission sha256>.transcript)
    replay: Path | None = None  # a programs_dir: judge from the recorded answers there, running no student code

    _backend = field_validator("backend")(known_backend)


def grade(submission: str | Path, options: GradeOptions | None = None) -> Report:
    """Grade SUBMISSION. Whatever the submission or its worker does, the result is a report with a
    status and a one-line reason. Raises SuiteError only when the suite itself is unusable (the
    instructor's setup, not the student's), and KeyboardInterrupt when the grade is interrupted."""
    from .runner.engine import Engine

    options = options or GradeOptions()
    return Engine(Path(submission), options, time.monotonic()).run()
