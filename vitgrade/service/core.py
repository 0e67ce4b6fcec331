"""What the service does for a caller, apart from HTTP: submit, look up, list, regrade, export.
The API (app.py) and the web pages (pages.py) are thin layers over one Service; a refusal is a
`Refused` with the HTTP status and message either layer shows."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ..report import gradebook
from ..submission import SubmissionError, load, sha256_of
from . import jobs
from .auth import Caller
from .db import Assignment, Job, Regrade, Result, Submission, exclusive, now
from .dispatch import Dispatch
from .grading import submission_path
from .settings import QUEUES, ServiceSettings
from .visibility import for_caller

DEFAULT_ASSIGNMENT = "hw4"
MAX_NAME_BYTES = 200  # an upload's file name: it is a file name in DATA/files and a column in the database
EXPORTS = ("scores", "canvas", "brightspace", "grades")  # the batch's gradebook files, by name


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass
class Service:
    settings: ServiceSettings
    sessions: sessionmaker
    dispatch: Dispatch
    # one upload parsed at a time: CPython 3.11 keeps the AST constructor's recursion depth per
    # interpreter, not per thread, so two ast.parse calls at once can fail (SystemError, gh-106905)
    parsing: threading.Lock = field(default_factory=threading.Lock)

    # -- assignments and quotas
    def assignment(self, session: Session, name: str | None) -> Assignment:
        found = session.get(Assignment, name or DEFAULT_ASSIGNMENT)
        if found is None:
            raise Refused(404, f"no assignment named {name!r}")
        return found

    def ensure_default(self) -> None:
        with self.sessions() as session:
            if session.get(Assignment, DEFAULT_ASSIGNMENT) is None:
                session.add(Assignment(name=DEFAULT_ASSIGNMENT, suite=self.settings.suite, daily_quota=self.settings.daily_quota, published=False))
                session.commit()

    def quota(self, session: Session, assignment: Assignment, student: str) -> dict:
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        used = session.scalar(select(func.count()).select_from(Submission).where(
            Submission.assignment == assignment.name, Submission.student == student, Submission.created_at >= day)) or 0  # fmt: skip
        resets = day + timedelta(days=1)
        return {"limit": assignment.daily_quota, "used": used, "remaining": max(0, assignment.daily_quota - used),
                "resets_at": resets.isoformat(), "retry_after_s": int((resets - datetime.now(UTC)).total_seconds()) + 1}  # fmt: skip

    def within_quota(self, session: Session, caller: Caller, assignment: Assignment, student: str) -> None:
        """Refuse (429) a submission past STUDENT's daily quota; an instructor has none."""
        quota = self.quota(session, assignment, student)
        if caller.role != "instructor" and quota["remaining"] <= 0:
            raise Refused(429, f"{student} has used all {quota['limit']} submissions for {assignment.name} today; "
                               f"the quota resets at {quota['resets_at']}", {"Retry-After": str(quota["retry_after_s"])})  # fmt: skip

    # -- submitting
    def submit(self, caller: Caller, upload: BinaryIO, filename: str, assignment: str | None, student: str | None) -> dict:
        if caller.role == "ta":
            raise Refused(403, "a TA cannot submit; an instructor or the LMS may submit for a student")
        if caller.role == "student":
            if student not in (None, caller.user):
                raise Refused(403, "a student submits only as themselves")
            student = caller.user
        if not student:
            raise Refused(422, "say which student this submission is for (the 'student' field)")
        name = Path(filename or "").name
        if len(name.encode()) > MAX_NAME_BYTES or not name.isprintable():
            raise Refused(422, f"the file name must be printable and at most {MAX_NAME_BYTES} bytes long; rename the file")
        if Path(name).suffix.lower() not in {".ipynb", ".py", ".zip"}:
            raise Refused(422, f"{name or 'the upload'}: expected a .ipynb, .py or .zip file")
        with self.sessions() as session:
            chosen = self.assignment(session, assignment)
            self.within_quota(session, caller, chosen, student)  # before the file is read: a refused upload costs nothing more
        self.settings.files.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.settings.files) as scratch:
            path = Path(scratch) / name
            with path.open("wb") as fh:
                shutil.copyfileobj(upload, fh, 1 << 20)
            try:
                with self.parsing:
                    load(path)  # trusted parsing only: a submission that cannot be graded is refused now, with the reason
            except SubmissionError as exc:
                raise Refused(422, str(exc)) from None
            sha = sha256_of(path)
            size = path.stat().st_size
            with self.sessions() as session:
                exclusive(session, f"quota\0{chosen.name}\0{student}")  # the count and the insert: concurrent uploads pass one by one
                self.within_quota(session, caller, chosen, student)
                row = Submission(id=uuid.uuid4().hex, assignment=chosen.name, student=student, filename=name, sha256=sha,
                                 size=size, seed=secrets.randbelow(2**31), created_at=now())  # fmt: skip
                target = submission_path(self.settings, row)
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(FileExistsError):
                        path.rename(target)
                session.add(row)
                session.flush()
                job = jobs.enqueue(session, row, QUEUES[0])
                session.commit()
                self.dispatch.notify(job)
                return {**self.view(session, caller, row), "quota": self.quota(session, chosen, student)}

    # -- reading
    def submission(self, session: Session, caller: Caller, submission_id: str) -> Submission:
        row = session.get(Submission, submission_id)
        if row is None or (not caller.staff and row.student != caller.user):
            raise Refused(404, "no such submission")  # someone else's looks the same as none
        return row

    def view(self, session: Session, caller: Caller, row: Submission) -> dict:
        job = session.scalars(select(Job).where(Job.submission_id == row.id).order_by(Job.id.desc()).limit(1)).first()
        result = self.result(session, row.id)
        state = job.state if job else "done"
        view: dict = {"id": row.id, "assignment": row.assignment, "student": row.student, "filename": row.filename,
                      "sha256": row.sha256, "submitted_at": row.created_at.isoformat(), "state": state,
                      "attempts": job.attempt if job else 0, "position": None, "eta_s": None, "error": None, "report": None}  # fmt: skip
        if job is not None and job.state == "queued":
            view["position"] = jobs.position(session, job)
            view["eta_s"] = jobs.eta_s(session, view["position"])
        if job is not None and job.state == "failed":
            view["error"] = job.error
        if result is not None:
            assignment = self.assignment(session, row.assignment)
            view["report"] = for_caller(json.loads(result.report), caller, assignment, datetime.now(UTC))
        return view

    def get(self, caller: Caller, submission_id: str) -> dict:
        with self.sessions() as session:
            return self.view(session, caller, self.submission(session, caller, submission_id))

    def listing(self, caller: Caller, assignment: str | None = None, student: str | None = None,
                state: str | None = None, limit: int = 200) -> list[dict]:  # fmt: skip
        if not caller.staff:
            if student not in (None, caller.user):
                raise Refused(403, "a student lists only their own submissions")
            student = caller.user
        with self.sessions() as session:
            query = select(Submission).order_by(Submission.created_at.desc()).limit(limit)
            if assignment:
                query = query.where(Submission.assignment == assignment)
            if student:
                query = query.where(Submission.student == student)
            if state:  # the state of each submission's latest job, filtered before the limit
                latest = select(Job.submission_id, func.max(Job.id).label("job")).group_by(Job.submission_id).subquery()
                query = query.join(latest, latest.c.submission_id == Submission.id).join(Job, Job.id == latest.c.job).where(Job.state == state)
            return [self.view(session, caller, row) for row in session.scalars(query)]

    # -- regrading (staff)
    def require(self, caller: Caller, *roles: str) -> None:
        if caller.role not in roles:
            raise Refused(403, f"this needs the role {' or '.join(roles)}")

    def regrade(self, caller: Caller, submission_id: str) -> dict:
        self.require(caller, "ta", "instructor")
        with self.sessions() as session:
            row = self.submission(session, caller, submission_id)
            job = jobs.enqueue(session, row, QUEUES[0])
            session.commit()
            self.dispatch.notify(job)
            return self.view(session, caller, row)

    def latest(self, session: Session, assignment: str, graded: bool = False) -> dict[str, Submission]:
        """Each student's latest submission to ASSIGNMENT (GRADED: their latest that has a result)."""
        query = select(Submission).where(Submission.assignment == assignment).order_by(Submission.created_at)
        if graded:
            query = query.where(Submission.id.in_(select(Result.submission_id)))
        return {row.student: row for row in session.scalars(query)}

    def result(self, session: Session, submission_id: str) -> Result | None:
        """The latest result of a submission (a regrade's, once it has one)."""
        return session.scalars(select(Result).where(Result.submission_id == submission_id).order_by(Result.id.desc()).limit(1)).first()

    def regrade_all(self, caller: Caller, assignment: str) -> dict:
        self.require(caller, "instructor")
        with self.sessions() as session:
            chosen = self.assignment(session, assignment)
            regrade = Regrade(assignment=chosen.name, requested_by=caller.user)
            session.add(regrade)
            session.flush()
            queued = [jobs.enqueue(session, row, QUEUES[1], regrade.id) for row in self.latest(session, chosen.name).values()]
            session.commit()
            for job in queued:
                self.dispatch.notify(job)
            return self.progress(session, regrade.id)

    def progress(self, session: Session, regrade_id: int) -> dict:
        counts = dict(session.execute(select(Job.state, func.count()).where(Job.regrade_id == regrade_id).group_by(Job.state)).all())
        total = sum(counts.values())
        return {"regrade": regrade_id, "total": total, **{s: counts.get(s, 0) for s in ("queued", "running", "done", "failed")},
                "finished": counts.get("done", 0) + counts.get("failed", 0) == total}  # fmt: skip

    def regrade_progress(self, caller: Caller, regrade_id: int) -> dict:
        self.require(caller, "ta", "instructor")
        with self.sessions() as session:
            if session.get(Regrade, regrade_id) is None:
                raise Refused(404, "no such regrade")
            return self.progress(session, regrade_id)

    # -- the class (staff)
    def reports(self, caller: Caller, assignment: str) -> dict[str, dict]:
        """Each student's latest graded report for ASSIGNMENT, as the gradebook files take them: a
        submission still queued leaves its student's last graded one in place."""
        if not caller.staff:
            raise Refused(403, "the class's grades are for staff")
        with self.sessions() as session:
            self.assignment(session, assignment)
            out = {}
            for student, row in self.latest(session, assignment, graded=True).items():
                result = self.result(session, row.id)
                if result is not None:
                    out[student] = json.loads(result.report)
            return out

    def stats(self, caller: Caller, assignment: str) -> dict:
        reports = self.reports(caller, assignment)
        summary = gradebook.stats(reports)
        top = max([50.0, *(r["max_score"] for r in reports.values())])
        counts = [0] * 10
        for report in reports.values():
            counts[min(9, int(10 * report["score"] / top))] += 1
        return {**summary, "histogram": {"bins": [round(top * i / 10, 2) for i in range(11)], "counts": counts}}

    def export(self, caller: Caller, assignment: str, name: str) -> str:
        if name not in EXPORTS:
            raise Refused(404, f"no export named {name!r}; choose one of {', '.join(EXPORTS)}")
        reports = self.reports(caller, assignment)
        points = max((r["max_score"] for r in reports.values()), default=50.0) or 50.0
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / f"{name}.csv"
            if name == "scores":
                gradebook.write_scores(reports, path)
            elif name == "canvas":
                gradebook.write_canvas(reports, path, assignment, points)
            elif name == "brightspace":
                gradebook.write_brightspace(reports, path, assignment)
            else:
                gradebook.write_plain(reports, path)
            return path.read_text()
