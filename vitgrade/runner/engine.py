"""Grading one submission: load it, start its worker, run the suite, assemble the report."""

from __future__ import annotations

import platform
import secrets
import time
from datetime import datetime
from pathlib import Path

from .. import __version__
from ..protocol import Diagnostic
from ..report.models import (
    Environment,
    IsolationInfo,
    Report,
    StudentOutput,
    SubmissionInfo,
    SuiteInfo,
)
from ..sandbox import Limits, make_backend
from ..submission import SubmissionError, load
from .course import adjustments, apply, parse_time
from .session import WorkerSession
from .suite import Suite, SuiteError, resolve


def environment(isolation: IsolationInfo | None) -> Environment:
    import torch

    return Environment(
        python=platform.python_version(),
        torch=torch.__version__,
        device="cpu",
        vitgrade=__version__,
        isolation=isolation,
    )


def choose_seed(suite: Suite, seed: int | None) -> int:
    """An explicit seed wins; a fixtures-only suite has a fixed one; otherwise a fresh one."""
    if seed is not None:
        return seed
    if suite.fixed_seed is not None:
        return suite.fixed_seed
    return secrets.randbelow(2**31)


def error_report(path: Path, suite: SuiteInfo, seed: int, reason: str, started: float, student: str | None) -> Report:
    return Report(
        status="error",
        error=reason,
        submission=SubmissionInfo(path=path.name, student=student),
        suite=suite,
        seed=seed,
        duration_s=round(time.monotonic() - started, 3),
        environment=environment(None),
    )


def grade(
    path: Path,
    suite_spec: str = "public",
    seed: int | None = None,
    backend: str = "auto",
    limits: Limits | None = None,
    student: str | None = None,
    submitted_at: datetime | None = None,
    due: datetime | None = None,
) -> Report:
    """Grade one submission. Raises SuiteError only when the suite itself is unusable.
    submitted_at and due (else the suite's [course] due) drive the late penalty."""
    started = time.monotonic()
    path = Path(path)
    suite = resolve(suite_spec)
    seed = choose_seed(suite, seed)
    suite_info = SuiteInfo(name=suite.name, version=suite.version)
    try:
        extracted = load(path)
    except SubmissionError as exc:
        return error_report(path, suite_info, seed, str(exc), started, student)
    protected = [*suite.dirs, *([suite.reference.parent] if suite.reference else [])]
    sandbox = make_backend(backend, limits, protected)
    session = WorkerSession(sandbox, extracted.chunks)
    session.spawn()
    try:
        # Only now torch, pytest and the suite's helpers: these imports overlap the worker's own.
        import torch

        from .plugin import run_suite

        torch.set_num_threads(sandbox.limits.threads)
        results, collect_errors = run_suite(session, suite, seed, extracted, sandbox.scratch)
    finally:
        session.stop()
        sandbox.close()
    if collect_errors:
        raise SuiteError(f"the suite could not be collected: {collect_errors[0]}")
    diagnostics = list(extracted.diagnostics)
    if session.ready is not None:
        diagnostics += session.ready.diagnostics
    diagnostics += [Diagnostic(where="worker", action="note", reason=event[:2000]) for event in session.events]
    iso = sandbox.isolation()
    tests_score = round(sum(r.score for r in results), 4)
    course = suite.config.get("course", {})
    due = due or parse_time(course.get("due"))
    score, items = apply(tests_score, adjustments(extracted, course, submitted_at, due))
    return Report(
        submission=SubmissionInfo(
            path=path.name,
            sha256=extracted.sha256,
            kind=extracted.kind,
            student=student,
            submitted_at=submitted_at.isoformat() if submitted_at else None,
        ),
        suite=suite_info,
        score=score,
        max_score=round(sum(r.max_score for r in results), 4),
        tests_score=tests_score,
        adjustments=items,
        seed=seed,
        duration_s=round(time.monotonic() - started, 3),
        environment=environment(IsolationInfo(**iso.__dict__)),
        diagnostics=diagnostics,
        tests=results,
        student_output=StudentOutput(
            text=session.output.text(), total_bytes=session.output.total, truncated=session.output.truncated
        ),
    )
