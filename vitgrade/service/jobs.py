"""The queue's rules, as database operations: enqueue, claim with a lease, renew, finish fenced by
attempt, release after a crash, reap expired leases. Every dispatcher (local, Celery) goes through
these, so the database alone says which attempt of which job may write a result."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .db import Delivery, Job, Result, Submission, db_now
from .settings import QUEUES

INFRASTRUCTURE = "infrastructure failure"
EXPIRED = "its grading worker stopped renewing its lease"


def enqueue(session: Session, submission: Submission, queue: str, regrade_id: int | None = None) -> Job:
    job = Job(submission_id=submission.id, queue=queue, state="queued", attempt=0, regrade_id=regrade_id, queued_at=db_now(session))
    session.add(job)
    session.flush()
    return job


def claim(session: Session, owner: str, lease_s: float, queues: Sequence[str] = QUEUES, job_id: int | None = None) -> Job | None:
    """Take the oldest queued job of the first queue that has one (or JOB_ID, if still queued): it is
    running under OWNER's lease, its attempt counted. A conditional update, so two claimers never
    both win, on SQLite as on PostgreSQL. Lease times are the database's (db_now)."""
    if job_id is not None:
        candidates = [job_id]
    else:
        candidates = [found for queue in queues for found in session.scalars(
            select(Job.id).where(Job.state == "queued", Job.queue == queue).order_by(Job.id).limit(8))]  # fmt: skip
    for candidate in candidates:
        started = db_now(session)
        claimed = session.execute(
            update(Job)
            .where(Job.id == candidate, Job.state == "queued")
            .values(state="running", attempt=Job.attempt + 1, lease_owner=owner,
                    lease_expires=started + timedelta(seconds=lease_s), started_at=started, grader_pid=None)
        )  # fmt: skip
        session.commit()
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            return session.get(Job, candidate, populate_existing=True)
    return None


def renew(session: Session, job_id: int, attempt: int, lease_s: float, grader_pid: int | None = None) -> bool:
    """Extend the lease of ATTEMPT; False when the job is no longer this attempt's (reaped, regraded)."""
    values: dict = {"lease_expires": db_now(session) + timedelta(seconds=lease_s)}
    if grader_pid is not None:
        values["grader_pid"] = grader_pid
    done = session.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt, Job.state == "running").values(**values))
    session.commit()
    return done.rowcount == 1  # type: ignore[attr-defined]


def finish(session: Session, job_id: int, attempt: int, report: dict, report_json: str, webhook: tuple[str, str] | None) -> bool:
    """Write ATTEMPT's result, and its webhook delivery (URL, body) in the same transaction; False,
    writing nothing, when a later attempt owns the job (this one was presumed dead)."""
    finished = db_now(session)
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.state == "running")
        .values(state="done", finished_at=finished, lease_owner=None, lease_expires=None, error=None)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    result = Result(job_id=job_id, submission_id=job.submission_id, attempt=attempt, status=report["status"],
                    score=report["score"], max_score=report["max_score"], duration_s=report.get("duration_s") or 0.0,
                    report=report_json)  # fmt: skip
    session.add(result)
    session.flush()
    if webhook is not None:
        session.add(Delivery(result_id=result.id, url=webhook[0], body=webhook[1], next_at=finished))
    session.commit()
    return True


def release(session: Session, job_id: int, attempt: int, error: str, max_attempts: int) -> str | None:
    """ATTEMPT died without a result: queue the job again, or end it as an infrastructure failure
    after MAX_ATTEMPTS. Returns the job's new state (None when the attempt no longer owns it)."""
    state = "failed" if attempt >= max_attempts else "queued"
    values: dict = {"state": state, "lease_owner": None, "lease_expires": None, "grader_pid": None,
              "error": f"{INFRASTRUCTURE} after {attempt} attempt(s): {error}" if state == "failed" else error}  # fmt: skip
    values["finished_at" if state == "failed" else "queued_at"] = db_now(session)
    done = session.execute(update(Job).where(Job.id == job_id, Job.attempt == attempt, Job.state == "running").values(**values))
    session.commit()
    return state if done.rowcount == 1 else None  # type: ignore[attr-defined]


def give_back(session: Session, job_id: int, attempt: int) -> None:
    """A graceful stop: the job goes back to the queue and the interrupted try is not counted."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.state == "running")
        .values(state="queued", attempt=attempt - 1, lease_owner=None, lease_expires=None, grader_pid=None,
                queued_at=db_now(session))
    )
    session.commit()


def release_if_expired(session: Session, job_id: int, max_attempts: int) -> str | None:
    """JOB_ID's lease expired (its grader is presumed dead): release it, as `release` does; returns
    its new state, or None when it is not running under an expired lease."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.state != "running" or job.lease_expires is None or job.lease_expires >= db_now(session):
        return None
    return release(session, job.id, job.attempt, EXPIRED, max_attempts)


def reap(session: Session, max_attempts: int) -> list[Job]:
    """Jobs whose lease expired are queued again or failed; returns the requeued ones."""
    expired = session.scalars(select(Job).where(Job.state == "running", Job.lease_expires < db_now(session))).all()
    return [job for job in expired if release_if_expired(session, job.id, max_attempts) == "queued"]


def position(session: Session, job: Job) -> int:
    """Jobs that will be taken before JOB (0: it is next)."""
    ahead = select(func.count()).select_from(Job).where(Job.state == "queued", Job.queue == job.queue, Job.id < job.id)
    count = session.scalar(ahead) or 0
    if job.queue != QUEUES[0]:
        count += session.scalar(select(func.count()).select_from(Job).where(Job.state == "queued", Job.queue == QUEUES[0])) or 0
    return count


def eta_s(session: Session, ahead: int) -> float:
    """Seconds until a queued job with AHEAD jobs before it is graded, from what the database has
    seen, so that it holds for any dispatcher (Celery's graders are on other hosts): while a job
    waits every grader is busy, so the jobs running now count the graders, and each grade takes
    the recent mean duration."""
    graders = session.scalar(select(func.count()).select_from(Job).where(Job.state == "running")) or 1
    return round((ahead // graders + 1) * mean_duration(session), 1)


def mean_duration(session: Session, default: float = 30.0) -> float:
    """The mean of the last 20 grades' durations, for estimates."""
    recent = session.scalars(select(Result.duration_s).order_by(Result.id.desc()).limit(20)).all()
    return sum(recent) / len(recent) if recent else default
