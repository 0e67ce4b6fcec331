"""Grading a class: one `vitgrade grade` process per submission, `jobs` at a time.

Each submission is graded by the same command a single grade uses, so its report is identical
to `vitgrade grade SUBMISSION --seed S` (the seed is derived from the submission's content
unless given). Each is graded in a child of a warm fork server (forked.py). A run is
resumable: a submission whose content hash, suite version and options match the saved state is
not graded again unless forced. A submission that runs past its budget is stopped and gets an
error report; the others never wait for it.
"""

from __future__ import annotations

import json
import multiprocessing
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
from ..forked import failed_report, run_child
from ..submission import sha256_of
from .discover import Entry

STATE = "state.json"


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


def grade_one(
    context: multiprocessing.context.BaseContext, entry: Entry, sha: str, options: GradeOptions, out: Path, suite_version: str
) -> tuple[dict, bool]:
    """One submission in a forked child: (its report, whether the grade itself wrote it). The
    grade's own budget ends its tests and still writes a report; the kill past budget + grace is
    the backstop for a grade that cannot stop itself, and its error report is retried next run."""
    outcome = run_child(context, entry.path, options, out)
    if outcome.report is not None:
        return json.loads(outcome.report), True
    report = failed_report(entry.path, sha, options, suite_version, outcome.reason)
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
