"""Dispatchers, by name: how queued jobs reach grading workers. The database holds the queue
either way; a dispatcher starts the graders and is told of each job queued or requeued."""

from __future__ import annotations

import logging
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from .db import Job
from .settings import ServiceSettings

log = logging.getLogger("vitgrade.service")
RESTART_DELAY_S = 1.0


class Dispatch(Protocol):
    def start(self) -> None: ...
    def notify(self, job: Job) -> None: ...
    def stop(self) -> None: ...


class LocalDispatch:
    """Runs the local dispatcher (local.py) as a process of its own and starts it again if it
    dies; it finds queued jobs in the database, so NOTIFY has nothing to send."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.supervisor = threading.Thread(target=self.supervise, daemon=True, name="dispatcher")

    def spawn(self) -> subprocess.Popen:
        with (self.settings.data / "dispatcher.log").open("ab") as log_file:  # the child keeps its own descriptor
            return subprocess.Popen([sys.executable, "-m", "vitgrade.service.local", str(self.settings.data)],
                                    stdout=log_file, stderr=subprocess.STDOUT)  # fmt: skip

    def start(self) -> None:
        self.process = self.spawn()
        self.supervisor.start()

    def supervise(self) -> None:
        while not self.stopping.wait(RESTART_DELAY_S):
            if self.process is not None and self.process.poll() is not None:
                log.warning("the dispatcher exited (%s); starting it again", self.process.returncode)
                self.process = self.spawn()

    def notify(self, job: Job) -> None:
        pass

    def stop(self) -> None:
        self.stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class CeleryDispatch:
    """Sends each job queued or requeued to its Celery queue (celery_app.py), from a thread of its
    own so that a request never waits on the broker. If the broker is down the job just stays
    queued in the database: a sweep, every third of a lease, sends again each job queued for a
    lease or longer whose message the broker is not known to hold. What it holds is recorded in
    the broker's Redis itself (celery_app.Sent), so a Redis that restarts empty forgets the
    records with the messages, and API replicas share them (the first replica to record a job
    sends it)."""

    SWEEP_LIMIT = 1000  # jobs looked at per sweep, oldest first

    def __init__(self, settings: ServiceSettings) -> None:
        from .celery_app import Sent, make_app

        self.settings = settings
        self.app = make_app(settings, publisher=True)
        self.sent = Sent(settings)
        self.outbox: queue.Queue[tuple[int, str] | None] = queue.Queue()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sessions: Any = None

    def start(self) -> None:
        from .db import connect, sessions

        self.sessions = sessions(connect(self.settings.db_url))
        self.threads = [threading.Thread(target=self.publish, daemon=True, name="celery-publisher"),
                        threading.Thread(target=periodically, args=(self.stopping, self.settings.lease_s / 3, self.sweep),
                                         daemon=True, name="celery-sweep")]  # fmt: skip
        for thread in self.threads:
            thread.start()

    def notify(self, job: Job) -> None:
        self.outbox.put((job.id, job.queue))

    def publish(self) -> None:
        """Send what NOTIFY and the sweep put in the outbox, in order; a failure is logged and left to the sweep."""
        from .celery_app import send

        while (item := self.outbox.get()) is not None:
            job_id, name = item
            try:
                send(self.app, self.sent, job_id, name)
            except Exception as exc:
                log.warning("job %d stays queued until the broker takes it (the sweep sends it again): %r", job_id, exc)

    def sweep(self) -> None:
        """Send again each job queued (enqueued, or queued again) a lease ago or more whose message
        the broker is not known to hold."""
        from sqlalchemy import select

        from .db import db_now

        with self.sessions() as session:
            cutoff = db_now(session) - timedelta(seconds=self.settings.lease_s)
            stale = session.execute(select(Job.id, Job.queue).where(Job.state == "queued", Job.queued_at < cutoff)
                                    .order_by(Job.id).limit(self.SWEEP_LIMIT)).all()  # fmt: skip
        try:
            for job_id, name in stale:
                if self.sent.mark(job_id, only_if_absent=True):
                    log.info("job %d has waited a lease without being claimed: sending it again", job_id)
                    self.outbox.put((job_id, name))
        except Exception as exc:
            log.info("the broker is still down (%r); %d job(s) wait in the database", exc, len(stale))

    def stop(self) -> None:
        self.stopping.set()
        self.outbox.put(None)
        for thread in self.threads:
            thread.join(10)


DISPATCHERS: dict[str, Callable[[ServiceSettings], Dispatch]] = {"local": LocalDispatch, "celery": CeleryDispatch}


def periodically(stop: threading.Event, every_s: float, work: Callable[[], object]) -> None:
    """Run WORK every EVERY_S seconds until STOP; a failure is logged, never fatal."""
    while not stop.wait(every_s):
        try:
            work()
        except Exception:
            log.exception("background work failed")
