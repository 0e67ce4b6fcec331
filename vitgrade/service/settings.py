"""The service's settings: one validated model, written to DATA/service.json by `vitgrade serve`
so that the dispatcher and Celery workers grade exactly as the API process was told to."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..api import DEFAULT_BUDGET_S, known_backend
from ..forked import GRADER

QUEUES = ("interactive", "batch")  # students' submissions first; an instructor's regrade-all behind them
Queue = Literal["interactive", "batch"]
GRADE_MEMORY_BYTES = 1300 << 20  # what one grade takes at its peak (benchmarks/), for the pool size
SETTINGS_FILE = "service.json"


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path
    db: str | None = None  # None: SQLite (WAL) at DATA/vitgrade.db
    dispatcher: Literal["local", "celery"] = "local"
    broker: str | None = None  # redis://... for the celery dispatcher
    pool: int | None = Field(default=None, ge=1)  # grades at once per grading host; None: from cores and memory
    suite: str = "full"  # the default assignment's suite
    backend: str = "auto"
    budget_s: float = Field(default=DEFAULT_BUDGET_S, gt=0)
    lease_s: float = Field(default=30.0, gt=0)  # a claimed job's lease, renewed every third of it while graded
    max_attempts: int = Field(default=3, ge=1)  # tries before a job ends as an infrastructure failure
    max_upload_bytes: int = Field(default=64 << 20, gt=0)
    daily_quota: int = Field(default=20, ge=1)  # submissions per student, assignment and UTC day
    grader: str = GRADER  # module:function called in each grading child (tests use a stub that sleeps)
    poll_s: float = Field(default=0.5, gt=0)

    _backend = field_validator("backend")(known_backend)

    @model_validator(mode="after")
    def broker_for_celery(self) -> ServiceSettings:
        if self.dispatcher == "celery" and not self.broker:
            raise ValueError("the celery dispatcher needs --broker redis://HOST:PORT/N")
        return self

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.data / 'vitgrade.db'}"

    @property
    def files(self) -> Path:
        return self.data / "files"

    @property
    def work(self) -> Path:
        return self.data / "work"

    def pool_size(self) -> int:
        """Grades at once: one per core, no more than memory holds."""
        if self.pool:
            return self.pool
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return max(1, min(os.cpu_count() or 1, memory // GRADE_MEMORY_BYTES))

    def private(self) -> None:
        """DATA open to this user only: a sandbox that drops to another user (nobody) cannot reach any
        submission or the database. (Not a umask: the sandboxes' own scratch folders must stay open
        to their workers.)"""
        self.data.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)

    def save(self) -> None:
        self.private()
        (self.data / SETTINGS_FILE).write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, data: Path) -> ServiceSettings:
        return cls.model_validate_json((data / SETTINGS_FILE).read_text())
