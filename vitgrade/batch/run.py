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
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..submission import sha256_of
from .discover import Entry

STATE = "state.json"
STOP_GRACE_S = 20.0


@dataclass
class Options:
    suite: str
    suite_version: str
    jobs: int
    backend: str
    seed: int | None
    due: datetime | None
    budget_s: float
    force: bool = False

    @property
    def threads(self) -> int:
        """torch threads per job, so that jobs x threads <= cores."""
        return max(1, (os.cpu_count() or 1) // max(1, self.jobs))


def seed_for(sha256: str, fixed: int | None) -> int:
    """The given seed, or one derived from the content: a regrade reproduces it."""
    return fixed if fixed is not None else int(sha256[:8], 16) % (2**31)


def command(entry: Entry, seed: int, out: Path, options: Options) -> list[str]:
    """The `vitgrade` arguments that grade one submission."""
    argv = ["grade", str(entry.path), "--suite", options.suite, "--seed", str(seed), "--json", str(out),
            "--student", entry.student, "--threads", str(options.threads), "--backend", options.backend]  # fmt: skip
    if entry.submitted_at is not None:
        argv += ["--submitted-at", entry.submitted_at.isoformat()]
    if options.due is not None:
        argv += ["--due", options.due.isoformat()]
    return argv


def start_forkserver() -> multiprocessing.context.BaseContext:
    """Start the fork server now, so that its imports of torch and the engine overlap whatever
    the caller does before the first submission is graded."""
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["vitgrade.cli", "vitgrade.runner.engine", "vitgrade.runner.plugin", "torch"])
    forkserver.ensure_running()
    return context


def vitgrade(argv: list[str], log: str) -> None:
    """In the forked process: `vitgrade ARGV` with its output in LOG, in a session of its own."""
    os.setsid()  # a group of its own, for the budget's signals
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from ..cli import main

    main.main(args=argv, prog_name="vitgrade")


def budget_report(entry: Entry, sha: str, seed: int, options: Options, reason: str) -> dict:
    """The report of a submission whose grading process failed as a whole."""
    return {
        "schema_version": "1.0", "status": "error", "error": reason,
        "submission": {"path": entry.path.name, "sha256": sha, "kind": None, "student": entry.student,
                       "submitted_at": entry.submitted_at.isoformat() if entry.submitted_at else None},
        "suite": {"name": options.suite, "version": options.suite_version}, "score": 0.0, "max_score": 0.0,
        "tests_score": 0.0, "adjustments": [], "seed": seed, "duration_s": options.budget_s, "environment": None,
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


def grade_one(context: multiprocessing.context.BaseContext, entry: Entry, sha: str, seed: int, out: Path, options: Options) -> dict:
    log = out.with_suffix(".log")
    process = context.Process(target=vitgrade, args=(command(entry, seed, out, options), str(log)))  # type: ignore[attr-defined]
    process.start()
    process.join(options.budget_s)
    over_budget = process.exitcode is None
    if over_budget:
        stop(process)
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    if over_budget:
        reason = f"grading took longer than its budget of {options.budget_s:.0f} s"
    elif process.exitcode != 0 or not out.exists():
        reason = (lines or ["the grading process failed"])[-1][:300]
    else:
        return json.loads(out.read_text())
    report = budget_report(entry, sha, seed, options, reason)
    out.write_text(json.dumps(report, indent=2))
    return report


def run(
    entries: list[Entry], out: Path, options: Options, context: multiprocessing.context.BaseContext
) -> tuple[dict[str, dict], int]:
    """Grade what needs grading, forking from CONTEXT's server; returns (student -> report, number graded now)."""
    reports_dir = out / "reports"
    reports_dir.mkdir(parents=True, exist_ok=True)
    state_file = out / STATE
    state: dict[str, dict] = json.loads(state_file.read_text()) if state_file.exists() else {}
    reports: dict[str, dict] = {}
    todo: list[tuple[Entry, str, int, Path, dict]] = []
    for entry in entries:
        sha = sha256_of(entry.path)
        seed = seed_for(sha, options.seed)
        key = {"sha256": sha, "suite": options.suite, "suite_version": options.suite_version, "seed": seed,
               "submitted_at": entry.submitted_at.isoformat() if entry.submitted_at else None,
               "due": options.due.isoformat() if options.due else None}  # fmt: skip
        target = reports_dir / f"{entry.student}.json"
        if not options.force and state.get(entry.student) == key and target.exists():
            reports[entry.student] = json.loads(target.read_text())
        else:
            todo.append((entry, sha, seed, target, key))
    columns = (TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    started = time.monotonic()
    with Progress(*columns, transient=False) as progress, ThreadPoolExecutor(options.jobs) as pool:
        task = progress.add_task("grading", total=len(todo))
        futures = {pool.submit(grade_one, context, e, sha, seed, target, options): (e, key) for e, sha, seed, target, key in todo}
        for future in as_completed(futures):
            entry, key = futures[future]
            reports[entry.student] = future.result()
            state[entry.student] = key
            state_file.write_text(json.dumps(state, indent=2, sort_keys=True))
            progress.advance(task)
    elapsed = time.monotonic() - started
    if todo:
        print(f"graded {len(todo)} submission(s) in {elapsed:.1f} s with {options.jobs} job(s) x {options.threads} thread(s)")
    return {e.student: reports[e.student] for e in entries}, len(todo)
