"""The local dispatcher: one process beside the API (`vitgrade serve` starts it) that claims
queued jobs with a lease and grades up to the pool size at once, each in a child of a warm fork
server. Students' jobs come first, and a regrade-all never takes the last free slot while the
pool has more than one, so a regrade does not starve students before a deadline.

    python -m vitgrade.service.local DATA
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from . import jobs
from .db import Job, connect, sessions
from .grading import Grader
from .settings import QUEUES, ServiceSettings

log = logging.getLogger("vitgrade.dispatcher")


class LocalDispatcher:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.sessions = sessions(connect(settings.db_url))
        self.grader = Grader(settings, self.sessions)
        self.size = settings.pool_size()

    def queues(self, running: dict[Future, Job]) -> tuple[str, ...]:
        """The queues a free slot may take from: the last free slot (of more than one) is kept for students."""
        return QUEUES if self.size == 1 or self.size - len(running) > 1 else QUEUES[:1]

    def run(self, stop: threading.Event) -> None:
        log.info("grading up to %d at once as %s", self.size, self.grader.owner)
        running: dict[Future, Job] = {}
        parent = os.getppid()
        with ThreadPoolExecutor(self.size) as pool:
            while not stop.is_set() and os.getppid() == parent:  # the server that started it is gone: stop
                while len(running) < self.size:
                    with self.sessions() as session:
                        job = jobs.claim(session, self.grader.owner, self.settings.lease_s, self.queues(running))
                    if job is None:
                        break
                    running[pool.submit(self.grader.grade, job)] = job
                if not running:
                    stop.wait(self.settings.poll_s)
                    continue
                finished, _ = wait(running, timeout=self.settings.poll_s, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    if future.exception() is not None:
                        log.error("job %d: %r", job.id, future.exception())
            self.grader.stop()
            wait(running)


def main(data: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    LocalDispatcher(ServiceSettings.load(Path(data))).run(stop)


if __name__ == "__main__":
    main(sys.argv[1])
