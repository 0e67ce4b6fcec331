"""One grade in a child forked from a warm fork server: what batch runs and the service's workers share.

The fork server imports torch and the engine once, so a grade costs what its tests compute, not
another 3 s of imports; each child starts from that freshly imported state, never from an
earlier grade's, and runs `vitgrade.grade` (one grade per process, as api.py requires). The
child writes its native report whole (renamed into place) or not at all, so the parent can tell
a grade that ended, however badly for the student, from a process that died.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .api import GradeOptions
from .contract import DEFAULT_CONTRACT
from .sandbox.process import PR_SET_PDEATHSIG

STOP_GRACE_S = 20.0  # past its own budget, a grade gets this long to write its report before it is stopped
GRADER = "vitgrade.api:grade"  # what a child calls; a test may name another callable (module:function)


def start_forkserver() -> multiprocessing.context.BaseContext:
    """Start the fork server now, so that its imports of torch and the engine overlap whatever
    the caller does before the first submission is graded."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["vitgrade.api", "vitgrade.forked", "vitgrade.runner.engine", "vitgrade.runner.plugin", "torch"])
    forkserver.ensure_running()
    return context


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a batch budget, a job scheduler) unwinds like Ctrl-C, so that workers, containers
    and protected folders are cleaned up on the way out. A second SIGTERM cannot cut that short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def grade_child(path: str, options_json: str, out: str, log: str, grader: str = GRADER) -> None:
    """In the forked process: GRADER(PATH, options) with its output in LOG, in a session of its
    own, the native report written to OUT. The options arrive as JSON, never through click."""
    os.setsid()  # a group of its own, for the budget's signals
    if sys.platform.startswith("linux"):  # the fork server exits with whoever started it: the grade stops then too
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from .report.export import EXPORTERS
    from .runner.suite import SuiteError

    module, _, name = grader.partition(":")
    grade = getattr(importlib.import_module(module), name)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        report = grade(path, GradeOptions.model_validate_json(options_json))
    except (SuiteError, RuntimeError) as exc:
        print(f"vitgrade: {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no report was written (the workers were stopped)")
        sys.exit(2)
    partial = Path(out).with_suffix(".partial")
    partial.write_text(EXPORTERS["native"](report))
    os.replace(partial, out)  # whole or absent: the parent takes a report that exists as the result


def stop(process: multiprocessing.process.BaseProcess) -> None:
    """SIGTERM first, so that the grade stops its workers and containers; SIGKILL after a grace."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)  # type: ignore[arg-type]
        except ProcessLookupError:  # not yet in a session of its own, or already gone
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, sig)  # type: ignore[arg-type]
        process.join(grace)
        if process.exitcode is not None:
            return


@dataclass
class Outcome:
    """How a forked grade ended: with the report it wrote, past its budget, or dead without a report."""

    report: str | None  # the native report (JSON text), when the grade wrote one
    over_budget: bool
    reason: str  # why there is no report: the log's last line, or the exit code
    exitcode: int | None


def run_child(
    context: multiprocessing.context.BaseContext,
    path: Path,
    options: GradeOptions,
    out: Path,
    grader: str = GRADER,
    started: Callable[[int], None] | None = None,
) -> Outcome:
    """Grade PATH in a child forked from CONTEXT's server, its report at OUT; STARTED gets the child's
    pid. The grade's own budget ends its tests and still writes a report; the kill past budget +
    grace is the backstop for a grade that cannot stop itself."""
    log = out.with_suffix(".log")
    out.unlink(missing_ok=True)  # an earlier run's report is not this grade's result
    args = (str(path), options.model_dump_json(), str(out), str(log), grader)
    process = context.Process(target=grade_child, args=args)  # type: ignore[attr-defined]
    process.start()
    if started is not None:
        started(process.pid)
    process.join(options.budget_s + STOP_GRACE_S)
    over_budget = process.exitcode is None
    if over_budget:
        stop(process)
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    if not over_budget and out.exists():
        # The report the child wrote (whole: it is renamed into place) is the result, whatever the exit
        # status: the forkserver reports 255 for a child that wrote its report and exited 0 within milliseconds.
        return Outcome(out.read_text(), False, "", process.exitcode)
    if over_budget:
        reason = f"grading took longer than its budget of {options.budget_s:.0f} s"
    else:
        reason = (lines or [f"the grading process failed (exit code {process.exitcode})"])[-1][:300]
    return Outcome(None, over_budget, reason, process.exitcode)


def failed_report(path: Path, sha: str, options: GradeOptions, suite_version: str, reason: str) -> dict:
    """The report of a submission whose grading process failed as a whole (REASON: one line)."""
    submitted_at = options.submitted_at.isoformat() if options.submitted_at else None
    return {
        "schema_version": "1.0", "status": "error", "error": reason,
        "submission": {"path": path.name, "sha256": sha, "kind": None, "member": None, "student": options.student,
                       "submitted_at": submitted_at},
        "suite": {"name": options.suite, "version": suite_version, "contract": options.contract or DEFAULT_CONTRACT}, "score": 0.0, "max_score": 0.0,
        "tests_score": 0.0, "adjustments": [], "seed": options.seed, "budget_s": options.budget_s,
        "budget_used_up": True, "duration_s": options.budget_s, "environment": None,
        "diagnostics": [], "tests": [], "student_output": {"text": "", "total_bytes": 0, "truncated": False},
    }  # fmt: skip
