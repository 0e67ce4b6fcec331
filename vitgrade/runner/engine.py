"""Grading one submission: load it, start its worker, run the suite, assemble the report."""

from __future__ import annotations

import dataclasses
import platform
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..protocol import Diagnostic, ProtocolError
from ..report.models import (
    Environment,
    IsolationInfo,
    ProgramRecord,
    Report,
    StudentOutput,
    SubmissionInfo,
    SuiteInfo,
)
from ..sandbox import Isolation, Limits, make_backend
from ..submission import SubmissionError, load
from .budget import Budget
from .course import adjustments, apply, parse_time
from .judging import Judging
from .session import ReplaySession, WorkerSession
from .suite import Suite, SuiteError, resolve
from .transcript import SUFFIX, Transcript
from .transcript import load as load_transcript

if TYPE_CHECKING:
    from ..api import GradeOptions


def environment(isolation: IsolationInfo | None) -> Environment:
    import torch

    return Environment(
        python=platform.python_version(),
        torch=torch.__version__,
        device="cpu",
        vitgrade=__version__,
        isolation=isolation,
    )


REPLAYED = Isolation(backend="replay", network="none (no worker)", filesystem="none (no worker)", user="none (no worker)")


def protected(suite: Suite) -> list[Path]:
    """What a worker that shares the host's filesystem must not read: the suite and the reference."""
    return [*suite.dirs, *([suite.reference.parent] if suite.reference else [])]


def choose_seed(suite: Suite, seed: int | None) -> int:
    """An explicit seed wins; a fixtures-only suite has a fixed one; otherwise a fresh one."""
    if seed is not None:
        return seed
    if suite.fixed_seed is not None:
        return suite.fixed_seed
    return secrets.randbelow(2**31)


class Engine:
    """One grade: its options, its clock and its budget. Per-grade state lives here, never in
    module globals, so that a long-lived process (the service's worker) can run grade after grade."""

    def __init__(self, path: Path, options: GradeOptions, started: float):
        self.path = path
        self.options = options
        self.started = started
        self.budget = Budget(started + options.budget_s, options.budget_s)

    def error_report(self, suite: SuiteInfo, seed: int, reason: str) -> Report:
        return Report(
            status="error",
            error=reason,
            submission=SubmissionInfo(path=self.path.name, student=self.options.student),
            suite=suite,
            seed=seed,
            duration_s=round(time.monotonic() - self.started, 3),
            environment=environment(None),
        )

    def run(self) -> Report:
        """Grade the submission. Raises SuiteError only when the suite itself is unusable;
        submitted_at and due (else the suite's [course] due) drive the late penalty."""
        options = self.options
        suite = resolve(options.suite)
        suite = dataclasses.replace(suite, contract=options.contract or suite.contract)
        seed = choose_seed(suite, options.seed)
        suite_info = SuiteInfo(name=suite.name, version=suite.version, contract=suite.contract)
        try:
            extracted = load(self.path)
        except SubmissionError as exc:
            return self.error_report(suite_info, seed, str(exc))
        judging = Judging(allow_unverified=options.unverified, store=options.programs_dir)
        recorded = options.replay / f"{extracted.sha256}{SUFFIX}" if options.replay is not None else None
        replay: Transcript | None = None
        if recorded is not None:
            if not recorded.is_file():
                return self.error_report(suite_info, seed, f"no recorded grade of this submission in {options.replay} "
                                         f"(grade it once with --programs {options.replay})")  # fmt: skip
            try:
                replay = load_transcript(recorded)
            except (OSError, ProtocolError, KeyError, TypeError) as exc:
                return self.error_report(suite_info, seed, f"the recorded grade {recorded} cannot be read: {exc}")
        sandbox = None if replay is not None else make_backend(options.backend, Limits(threads=options.threads), protected(suite))
        scratch = Path(tempfile.mkdtemp(prefix="vitgrade-")) if sandbox is None else sandbox.scratch
        if replay is not None:
            session: WorkerSession = ReplaySession(replay)
        else:
            session = WorkerSession(sandbox, extracted.chunks, transcript=Transcript() if options.programs_dir else None)
        session.spawn()
        try:
            # Only now torch, pytest and the suite's helpers: these imports overlap the worker's own.
            import torch

            from ..pages import release_cuda_pages
            from .plugin import run_suite

            release_cuda_pages()
            torch.set_num_threads(options.threads)
            results, collect_errors = run_suite(session, suite, seed, extracted, scratch, self.budget, judging)
        finally:
            session.stop()
            if sandbox is not None:
                sandbox.close()
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        if session.transcript is not None and options.programs_dir is not None:
            session.transcript.save(options.programs_dir / f"{extracted.sha256}{SUFFIX}")
        if collect_errors:
            raise SuiteError(f"the suite could not be collected: {collect_errors[0]}")
        diagnostics = list(extracted.diagnostics)
        if session.ready is not None:
            diagnostics += session.ready.diagnostics
        diagnostics += [Diagnostic(where="worker", action="note", reason=event[:2000]) for event in session.events]
        if recorded is not None:
            diagnostics.append(Diagnostic(where="grader", action="note", reason=(
                f"replayed: judged on what your code answered when it was graded ({recorded.name}); no code of "
                "this submission ran now, and its printed output is not shown again")))  # fmt: skip
        if judging.unverified:
            reason = "unverified: judged on the worker's word, not on a program (it cannot be captured): "
            diagnostics.append(Diagnostic(where="grader", action="note", reason=reason + ", ".join(sorted(judging.unverified))))
        iso = sandbox.isolation() if sandbox is not None else REPLAYED
        tests_score = round(sum(r.score for r in results), 4)
        course = suite.config.get("course", {})
        due = options.due or parse_time(course.get("due"))
        score, items = apply(tests_score, adjustments(extracted, course, options.submitted_at, due))
        return Report(
            submission=SubmissionInfo(
                path=self.path.name,
                sha256=extracted.sha256,
                kind=extracted.kind,
                member=extracted.member,
                student=options.student,
                submitted_at=options.submitted_at.isoformat() if options.submitted_at else None,
            ),
            suite=suite_info,
            score=score,
            max_score=round(sum(r.max_score for r in results), 4),
            tests_score=tests_score,
            adjustments=items,
            seed=seed,
            budget_s=options.budget_s,
            budget_used_up=self.budget.used_up,
            duration_s=round(time.monotonic() - self.started, 3),
            environment=environment(IsolationInfo(**iso.__dict__)),
            diagnostics=diagnostics,
            tests=results,
            verified=not judging.unverified,
            programs=[ProgramRecord(sha256=digest, what=what) for digest, what in sorted(judging.programs.items())],
            figures=judging.figures,
            student_output=StudentOutput(
                text=session.output.text(), total_bytes=session.output.total, truncated=session.output.truncated
            ),
        )
