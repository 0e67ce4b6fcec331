"""Grading a class: one `vitgrade grade` process per submission, `jobs` at a time.

Each submission is graded by the same command a single grade uses, so its report is identical
to `vitgrade grade SUBMISSION --seed S` (the seed is derived from the submission's content
unless given). The grading processes are forked from a fork server that has imported torch and
the engine once, so a submission costs what its tests compute, not another 3 s of imports; each
fork starts from that same freshly imported state, never from an earlier grade's. A run is
resumable: a submission whose content hash, suite version and options match the saved state is
not graded again unless forced. A submission that runs past its budget is stopped and gets an
error report; the others never wait for it.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..api import GradeOptions
from ..contract import DEFAULT_CONTRACT
from ..submission import sha256_of
from .discover import Entry

STATE = "state.json"
STOP_GRACE_S = 20.0  # past its own budget, a grade gets this long to write its report before it is stopped


@dataclass
class Options:
    """The batch's settings: how each submission is graded (GradeOptions, but for the student,
    seed and submission time) and how many at once."""

    grade: GradeOptions
    suite_version: str
    jobs: int
    force: bool = False

    def for_entry(self, entry: Entry, seed: int) -> GradeOptions:
        return self.grade.model_copy(update={"seed": seed, "student": entry.student, "submitted_at": entry.submitted_at})


def seed_for(sha256: str, fixed: int | None) -> int:
    """The given seed, or one derived from the content: a regrade reproduces it."""
    return fixed if fixed is not None else int(sha256[:8], 16) % (2**31)


def start_forkserver() -> multiprocessing.context.BaseContext:
    """Start the fork server now, so that its imports of torch and the engine overlap whatever
    the caller does before the first submission is graded."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["vitgrade.api", "vitgrade.runner.engine", "vitgrade.runner.plugin", "torch"])
    forkserver.ensure_running()
    return context


def grade_child(path: str, options_json: str, out: str, log: str) -> None:
    """In the forked process: vitgrade.grade(PATH, options) with its output in LOG, in a session of
    its own, the native report written to OUT. The options arrive as JSON, never through click."""
    os.setsid()  # a group of its own, for the budget's signals
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from ..api import grade
    from ..cli import interrupt
    from ..report.export import EXPORTERS
    from ..runner.suite import SuiteError

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


def budget_report(entry: Entry, sha: str, options: GradeOptions, suite_version: str, reason: str) -> dict:
    """The report of a submission whose grading process failed as a whole."""
    return {
        "schema_version": "1.0", "status": "error", "error": reason,
        "submission": {"path": entry.path.name, "sha256": sha, "kind": None, "member": None, "student": entry.student,
                       "submitted_at": entry.submitted_at.isoformat() if entry.submitted_at else None},
        "suite": {"name": options.suite, "version": suite_version, "contract": options.contract or DEFAULT_CONTRACT}, "score": 0.0, "max_score": 0.0,
        "tests_score": 0.0, "adjustments": [], "seed": options.seed, "budget_s": options.budget_s,
        "budget_used_up": True, "duration_s": options.budget_s, "environment": None,
        "diagnostics": [], "tests": [], "student_output": {"text": "", "total_bytes": 0, "truncated": False},
    }  # fmt: skip


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


def grade_one(
    context: multiprocessing.context.BaseContext, entry: Entry, sha: str, options: GradeOptions, out: Path, suite_version: str
) -> tuple[dict, bool]:
    """One submission in a forked child: (its report, whether the grade itself wrote it). The
    grade's own budget ends its tests and still writes a report; the kill past budget + grace is
    the backstop for a grade that cannot stop itself, and its error report is retried next run."""
    log = out.with_suffix(".log")
    out.unlink(missing_ok=True)  # an earlier run's report is not this grade's result
    args = (str(entry.path), options.model_dump_json(), str(out), str(log))
    process = context.Process(target=grade_child, args=args)  # type: ignore[attr-defined]
    process.start()
    process.join(options.budget_s + STOP_GRACE_S)
    over_budget = process.exitcode is None
    if over_budget:
        stop(process)
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    if over_budget:
        reason = f"grading took longer than its budget of {options.budget_s:.0f} s"
    elif out.exists():
        # The report the child wrote (whole: it is renamed into place) is the result, whatever the exit
        # status: the forkserver reports 255 for a child that wrote its report and exited 0 within milliseconds.
        return json.loads(out.read_text()), True
    else:
        reason = (lines or [f"the grading process failed (exit code {process.exitcode})"])[-1][:300]
    report = budget_report(entry, sha, options, suite_version, reason)
    out.write_text(json.dumps(report, indent=2))
    return report, False


def run(
    entries: list[Entry], out: Path, options: Options, context: multiprocessing.context.BaseContext
) -> tuple[dict[str, dict], int]:
    """Grade what needs grading, forking from CONTEXT's server; returns (student -> report, number graded now).
    A submission is graded again when its content, the suite or any grading option changed, or
    when its grading process failed last time (a crash or a kill is not a result to keep)."""
    reports_dir = out / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    state_file = out / STATE
    state: dict[str, dict] = json.loads(state_file.read_text()) if state_file.exists() else {}
    reports: dict[str, dict] = {}
    todo: list[tuple[Entry, str, GradeOptions, Path, dict]] = []
    for entry in entries:
        sha = sha256_of(entry.path)
        chosen = options.for_entry(entry, seed_for(sha, options.grade.seed))
        key = {"sha256": sha, "suite_version": options.suite_version, "options": chosen.model_dump(mode="json")}
        target = reports_dir / f"{entry.student}.json"
        if not options.force and state.get(entry.student) == key and target.exists():
            reports[entry.student] = json.loads(target.read_text())
        else:
            todo.append((entry, sha, chosen, target, key))
    columns = (TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    started = time.monotonic()
    with Progress(*columns, transient=False) as progress, ThreadPoolExecutor(options.jobs) as pool:
        task = progress.add_task("grading", total=len(todo))
        futures = {
            pool.submit(grade_one, context, e, sha, chosen, target, options.suite_version): (e, key)
            for e, sha, chosen, target, key in todo
        }
        for future in as_completed(futures):
            entry, key = futures[future]
            reports[entry.student], complete = future.result()
            state[entry.student] = key if complete else {**key, "retry": True}
            state_file.write_text(json.dumps(state, indent=2, sort_keys=True))
            progress.advance(task)
    elapsed = time.monotonic() - started
    if todo:
        threads = options.grade.threads
        print(f"graded {len(todo)} submission(s) in {elapsed:.1f} s with {options.jobs} job(s) x {threads} thread(s)")
    return {e.student: reports[e.student] for e in entries}, len(todo)
