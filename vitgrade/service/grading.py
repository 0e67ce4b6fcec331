"""Grading one claimed job, the same way under every dispatcher: the submission's file is graded
in a child of a warm fork server while a thread renews the job's lease; the report is written
fenced by the attempt (with its webhook delivery), a child that died without a report releases
the job for another attempt, and one past its budget gets the error report a batch would write."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from ..api import GradeOptions
from ..forked import failed_report, run_child, start_forkserver
from . import jobs
from .db import Assignment, Job, Submission
from .settings import ServiceSettings

log = logging.getLogger("vitgrade.grading")


def isolating(backend: str) -> str:
    """The backend a service grades with. `auto` must find one that keeps the student's code from
    DATA (every submission, the database): `process` runs it as the service's own user, so only an
    explicit --backend process gets it."""
    from ..sandbox import choose

    chosen = choose(backend)
    if backend == "auto" and chosen == "process":
        raise RuntimeError("no isolating sandbox works here (bubblewrap namespaces, or root to drop to nobody): student code "
                           "would run as the service's own user and could read every submission; pass --backend process to accept that")
    return chosen


def submission_path(settings: ServiceSettings, submission: Submission) -> Path:
    """Where a submission's bytes live: by content, under the name the student gave them."""
    return settings.files / submission.sha256 / submission.filename


def lease_owner() -> str:
    """This process, as a job's lease names its grader: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def webhook_body(submission: Submission, job: Job, report: dict) -> str:
    return json.dumps({
        "event": "result", "submission": submission.id, "assignment": submission.assignment,
        "student": submission.student, "job": job.id, "attempt": job.attempt, "status": report["status"],
        "score": report["score"], "max_score": report["max_score"], "report": report,
    }, sort_keys=True)  # fmt: skip


@dataclass
class Grader:
    """Grades jobs this process has claimed; OWNER names it in the jobs' leases."""

    settings: ServiceSettings
    sessions: sessionmaker
    owner: str = field(default_factory=lease_owner)

    def __post_init__(self) -> None:
        self.backend = isolating(self.settings.backend)  # once: every grade on this host uses the same isolation
        self.context = start_forkserver()
        self.versions: dict[str, str] = {}  # suite -> version, for the report of a grade that wrote none
        self.children: dict[int, int] = {}  # job id -> its grading child's pid
        self.stopping = threading.Event()
        self.settings.work.mkdir(parents=True, exist_ok=True)

    def options(self, submission: Submission, assignment: Assignment) -> GradeOptions:
        return GradeOptions(suite=assignment.suite, contract=assignment.contract, seed=submission.seed,  # type: ignore[arg-type]
                            backend=self.backend, student=submission.student, submitted_at=submission.created_at,
                            due=assignment.due, budget_s=self.settings.budget_s)  # fmt: skip

    def stop(self) -> None:
        """Stop every grade in progress (SIGTERM: each stops its workers); their jobs go back to the queue."""
        self.stopping.set()
        for pid in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    def grade(self, job: Job) -> str | None:
        """Grade claimed JOB; returns its new state (done, queued, failed) or None when it was no
        longer this attempt's."""
        with self.sessions() as session:
            submission = session.get(Submission, job.submission_id)
            assert submission is not None
            assignment = session.get(Assignment, submission.assignment)
            assert assignment is not None
        options = self.options(submission, assignment)
        out = self.settings.work / f"job{job.id}-{job.attempt}.json"
        done = threading.Event()

        def started(child: int) -> None:
            self.children[job.id] = child
            with self.sessions() as session:
                jobs.renew(session, job.id, job.attempt, self.settings.lease_s, child)

        def renewing() -> None:
            while not done.wait(self.settings.lease_s / 3):
                try:
                    with self.sessions() as session:
                        mine = jobs.renew(session, job.id, job.attempt, self.settings.lease_s)
                except Exception:  # the database hiccuped: try again at the next third of the lease
                    log.exception("job %d: renewing its lease failed", job.id)
                    continue
                if not mine and job.id in self.children:  # reaped (presumed dead): this grade's result would be refused
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.children[job.id], signal.SIGTERM)

        renewer = threading.Thread(target=renewing, daemon=True)
        renewer.start()
        try:
            outcome = run_child(self.context, submission_path(self.settings, submission), options, out, self.settings.grader, started)
        finally:
            done.set()
            renewer.join()
            self.children.pop(job.id, None)
            out.unlink(missing_ok=True)
        with self.sessions() as session:
            if self.stopping.is_set() and outcome.report is None:
                jobs.give_back(session, job.id, job.attempt)
                return "queued"
            if outcome.report is None and not outcome.over_budget:
                return jobs.release(session, job.id, job.attempt, outcome.reason, self.settings.max_attempts)
            if outcome.report is not None:
                report, text = json.loads(outcome.report), outcome.report
            else:
                report = failed_report(Path(submission.filename), submission.sha256, options, self.version(assignment.suite), outcome.reason)
                text = json.dumps(report, indent=2)
            hook = (assignment.webhook_url, webhook_body(submission, job, report)) if assignment.webhook_url else None
            return "done" if jobs.finish(session, job.id, job.attempt, report, text, hook) else None

    def version(self, suite: str) -> str:
        from ..runner.suite import resolve

        if suite not in self.versions:
            self.versions[suite] = resolve(suite).version
        return self.versions[suite]

