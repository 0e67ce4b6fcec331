"""Scale-out on Celery with Redis: `vitgrade serve --dispatcher celery` sends each queued job's id
to the job's Celery queue (CeleryDispatch, dispatch.py); `vitgrade worker` runs on each grading
host and grades what it receives.

The database stays the record of truth, so a message is only a hint: the task claims its job
through `jobs.claim(..., job_id=...)`, and a job already done, failed, or running under a live
lease is acknowledged and skipped. A message delivered twice (a redelivery after a lost worker, a
resend by the sweep) therefore never grades twice nor doubles a result, and a message lost with
the broker costs only a delay: the API's sweep sends again what stays queued, and its reaper
requeues (and sends again) a job whose grader stopped renewing its lease.

Messages are acknowledged after the task (acks_late) and put back when the pool process running
them dies (task_reject_on_worker_lost); each pool process takes one message at a time (prefetch
1); Redis gives an unacknowledged message to another worker only after a visibility timeout longer
than the hard time limit (the grade's budget, its grace, and a margin), so a long grade is never
handed out twice while it runs.

The pool is Celery's prefork: each pool process is a "slot" that grades one job at a time in a
child of its own warm fork server (started when the pool process starts, so its imports of torch
and the engine overlap the wait for the first message). A pool process is forked by billiard from
the worker's main process, which never starts a fork server, opens a database connection or
starts a thread that a fork would copy; multiprocessing's forkserver context works from the pool
process once free_multiprocessing has run there. The pool process's state (its Slot) is held by
the app (GradingApp), not by this module. The grade itself runs in the fork server's child in a
session of its own, as under the local dispatcher.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from kombu import Queue
from sqlalchemy.orm import sessionmaker

from ..forked import STOP_GRACE_S
from . import jobs
from .db import Job, connect, sessions
from .grading import Grader
from .settings import QUEUES, ServiceSettings

log = logging.getLogger("vitgrade.celery")
TASK = "vitgrade.grade_job"
LIMIT_MARGIN_S = 60.0  # past the grade's own kill (budget + grace): writing the result, or releasing the job
VISIBILITY_MARGIN_S = 300.0  # a message unacknowledged this long past the hard limit is given to another worker


def hard_limit_s(settings: ServiceSettings) -> float:
    """The task's hard time limit: the grade's budget, the grace its kill gives it, and a margin."""
    return settings.budget_s + STOP_GRACE_S + LIMIT_MARGIN_S


def visibility_timeout_s(settings: ServiceSettings) -> float:
    """How long Redis keeps a delivered, unacknowledged message from other workers: longer than any task can run."""
    return hard_limit_s(settings) + VISIBILITY_MARGIN_S


def make_app(settings: ServiceSettings, publisher: bool = False) -> GradingApp:
    """The Celery app for SETTINGS. PUBLISHER (the API's): a send fails fast when the broker is
    down (the job stays queued in the database and the sweep sends it again), where a worker keeps
    trying to reconnect for as long as it runs."""
    if not (settings.broker or "").startswith(("redis://", "rediss://")):
        raise ValueError(f"the celery dispatcher needs a Redis broker (--broker redis://HOST:6379/0), not {settings.broker!r}")
    app = GradingApp(settings, broker=settings.broker, set_as_current=False)
    transport: dict[str, Any] = {"visibility_timeout": visibility_timeout_s(settings),
                                 "queue_order_strategy": "priority"}  # a worker on both queues empties interactive first  # fmt: skip
    if publisher:
        transport.update(max_retries=1, interval_start=0, interval_step=0.5, interval_max=0.5,
                         socket_connect_timeout=2, socket_timeout=5)  # fmt: skip
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,  # a task that failed or hit the hard limit: the database's reaper requeues its job
        worker_prefetch_multiplier=1,
        task_time_limit=hard_limit_s(settings),
        broker_transport_options=transport,
        task_queues=[Queue(name, routing_key=name) for name in QUEUES],
        task_default_queue=QUEUES[0],
        task_ignore_result=True,  # results live in the database; there is no result backend
        task_serializer="json",
        accept_content=["json"],
        task_publish_retry=not publisher,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits out a broker outage
        broker_connection_timeout=2 if publisher else 4,
        worker_proc_alive_timeout=60.0,  # a pool process starts its fork server before it takes a message
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
        enable_utc=True,
    )
    app.task(name=TASK, bind=True)(grade_job)
    return app


class Sent:
    """Keys in the broker's Redis, one per job, that say its message is in the broker and not yet
    taken: set when it is sent, deleted when a worker claims the job, and gone with the messages
    when a Redis restarts empty. The API's sweep sends again a job queued too long without one.
    Each lasts a visibility timeout at most: a message not taken by then is presumed lost."""

    KEY = "vitgrade:sent:{}"

    def __init__(self, settings: ServiceSettings) -> None:
        self.broker = settings.broker or ""
        self.ttl_s = int(visibility_timeout_s(settings))
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.broker, socket_connect_timeout=2, socket_timeout=5)
        return self._client

    def mark(self, job_id: int, only_if_absent: bool = False) -> bool:
        """Record that JOB_ID's message was (or is about to be) sent; with ONLY_IF_ABSENT, False when it already was."""
        return bool(self.client().set(self.KEY.format(job_id), 1, nx=only_if_absent, ex=self.ttl_s))

    def clear(self, job_id: int) -> None:
        self.client().delete(self.KEY.format(job_id))


def send(app: Celery, sent: Sent, job_id: int, queue: str) -> None:
    """Send JOB_ID to QUEUE, recorded as sent (before: a worker that takes it at once clears the
    record after); raises, the record cleared, when the broker does not take the message."""
    with contextlib.suppress(Exception):  # without the record, the sweep sends it once more: harmless
        sent.mark(job_id)
    try:
        app.send_task(TASK, args=[job_id], queue=queue)
    except Exception:
        with contextlib.suppress(Exception):
            sent.clear(job_id)
        raise


# -- the worker's side


@dataclass
class Slot:
    """What one pool process keeps between tasks: its database sessions and its Grader (with its warm fork server)."""

    sessions: sessionmaker
    grader: Grader
    sent: Sent


class GradingApp(Celery):
    """The Celery app of a service: its SETTINGS, and in a pool process the Slot that grades there,
    made when the pool process starts (never in the worker's main process: a fork would copy it).
    Tasks reach it through their app, the worker's signals through the handlers bound to it."""

    def __init__(self, settings: ServiceSettings, **options: Any) -> None:
        super().__init__("vitgrade", **options)
        self.settings = settings
        self.slot: Slot | None = None

    def grading_slot(self) -> Slot:
        """This pool process's Slot, made at the first call (start_slot's, when the pool process starts)."""
        if self.slot is None:
            free_multiprocessing()
            made = sessions(connect(self.settings.db_url))
            self.slot = Slot(made, Grader(self.settings, made), Sent(self.settings))
        return self.slot

    def start_slot(self, **_: object) -> None:
        """worker_process_init: a new pool process starts its fork server now, not at its first message."""
        self.grading_slot()

    def stop_slot(self, **_: object) -> None:
        """worker_process_shutdown: stop any grade in progress; its job goes back to the queue."""
        if self.slot is not None:
            self.slot.grader.stop()


def free_multiprocessing() -> None:
    """Let multiprocessing start children (the fork server and its grades) from this billiard pool
    process. billiard makes its own process object multiprocessing's current process too, and that
    one is daemonic (multiprocessing refuses a daemonic process children) with an authentication key
    that only billiard may pickle (multiprocessing pickles it for each grade the fork server starts).
    The pool process's children are its fork server, which exits with it, and one grade at a time,
    in a session of its own, which stop_slot stops when the pool process is shut down."""
    current = multiprocessing.current_process()
    current.daemon = False
    current._config["authkey"] = multiprocessing.process.AuthenticationString(current.authkey)  # type: ignore[attr-defined]


def take(session: Any, job_id: int, settings: ServiceSettings, who: str) -> Job | None:
    """Claim JOB_ID for this pool process, or None when the database says it is not to be graded
    now: done, failed, unknown, or running under a live lease (another attempt has it). A job
    whose lease expired (its grader died) is released first, as the reaper would."""
    job = jobs.claim(session, who, settings.lease_s, job_id=job_id)
    if job is not None or jobs.release_if_expired(session, job_id, settings.max_attempts) != "queued":
        return job
    return jobs.claim(session, who, settings.lease_s, job_id=job_id)


def grade_job(task: Any, job_id: int) -> str:
    """The task: grade job JOB_ID if the database still says it is to be graded; returns what became of it."""
    current = task.app.grading_slot()
    with current.sessions() as session:
        job = take(session, job_id, task.app.settings, current.grader.owner)
        if job is None:
            row = session.get(Job, job_id)
            state = row.state if row is not None else "unknown"
            log.info("job %d: %s, skipped (delivery %s)", job_id, state, task.request.id)
            return f"skipped: {state}"
    with contextlib.suppress(Exception):  # taken: a sweep must not send it again (and if it does, the database decides)
        current.sent.clear(job.id)
    log.info("job %d: attempt %d", job.id, job.attempt)
    state = current.grader.grade(job) or "superseded"
    if state == "queued":  # its grade died without a report (or this worker is stopping): another attempt, by any worker
        try:
            send(task.app, current.sent, job.id, job.queue)
        except Exception as exc:
            log.warning("job %d is queued again; the broker did not take it (the sweep will send it): %r", job.id, exc)
    return state


def run_worker(settings: ServiceSettings, queues: list[str], concurrency: int, loglevel: str = "INFO") -> int:
    """Run a Celery worker for SETTINGS on QUEUES with CONCURRENCY pool processes; returns its exit code."""
    app = make_app(settings)
    worker_process_init.connect(app.start_slot, weak=False)
    worker_process_shutdown.connect(app.stop_slot, weak=False)
    worker = app.Worker(  # type: ignore[attr-defined]
        hostname=f"vitgrade-{os.getpid()}@{socket.gethostname()}", pool_cls="prefork", concurrency=concurrency,
        queues=queues, loglevel=loglevel, optimization="fair", without_gossip=True, without_mingle=True, without_heartbeat=True,
    )  # fmt: skip
    worker.start()
    return int(worker.exitcode or 0)
