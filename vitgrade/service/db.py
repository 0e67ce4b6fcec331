"""The record of truth: submissions (immutable, by sha256), jobs (state, attempts, lease), results
(the full report), an outbox of webhook deliveries, assignments and tokens. SQLite (WAL) on one
machine, PostgreSQL when the service scales out; the schema is made by Alembic's migrations."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

JOB_STATES = ("queued", "running", "done", "failed")  # failed: an infrastructure failure after every attempt


def now() -> datetime:
    """This host's clock."""
    return datetime.now(UTC)


def db_now(session: Session) -> datetime:
    """The database's clock, for leases and queue times: a lease set on one host is compared on
    another, so every host reads the one clock. SQLite is on this machine: its clock is this host's."""
    if session.get_bind().dialect.name == "postgresql":
        return session.scalar(text("SELECT clock_timestamp()")).astimezone(UTC)
    return now()


def exclusive(session: Session, key: str) -> None:
    """Serialize, until SESSION's transaction ends, the transactions that ask for KEY, so that what
    one reads and then writes (a quota's count, then a submission) cannot interleave with another's.
    PostgreSQL: a transaction-scoped advisory lock on KEY's hash. SQLite: the database's write lock,
    taken at BEGIN IMMEDIATE (the driver would begin only at the first write, after the read), so
    this must come before the transaction's first write."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        lock = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        connection.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": lock})
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and read back aware, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Assignment(Base):
    __tablename__ = "assignments"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    suite: Mapped[str] = mapped_column(String(255))
    contract: Mapped[str | None] = mapped_column(String(16))
    due: Mapped[datetime | None] = mapped_column(UtcDateTime())
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    daily_quota: Mapped[int] = mapped_column(Integer)
    webhook_url: Mapped[str | None] = mapped_column(String(1000))
    webhook_secret: Mapped[str | None] = mapped_column(String(200))


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the token: the token itself is never stored
    role: Mapped[str] = mapped_column(String(16))
    user: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=now)


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    assignment: Mapped[str] = mapped_column(ForeignKey("assignments.name"), index=True)
    student: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)  # drawn at upload, unknown to the student; a regrade reuses it
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=now, index=True)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    queue: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # tries so far; a result is fenced by it
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires: Mapped[datetime | None] = mapped_column(UtcDateTime())
    grader_pid: Mapped[int | None] = mapped_column(Integer)
    regrade_id: Mapped[int | None] = mapped_column(ForeignKey("regrades.id"), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=now)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime())  # when it was last queued (enqueued, released, given back), by the database's clock
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class Result(Base):
    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), unique=True)  # at most one result per job
    submission_id: Mapped[str] = mapped_column(ForeignKey("submissions.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    max_score: Mapped[float] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    report: Mapped[str] = mapped_column(Text)  # the native report, whole
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=now)


class Regrade(Base):
    __tablename__ = "regrades"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment: Mapped[str] = mapped_column(ForeignKey("assignments.name"))
    requested_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=now)


class Delivery(Base):
    """The outbox: a webhook POST written in the same transaction as its result, sent later."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"))
    url: Mapped[str] = mapped_column(String(1000))
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending, delivered, dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=now)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


def connect(url: str) -> Engine:
    """An engine for URL; SQLite in WAL mode, waiting on a locked database rather than failing."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def pragmas(connection: object, record: object) -> None:
            cursor = connection.cursor()  # type: ignore[attr-defined]
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema at URL to REVISION (the newest migration; a test names an older one)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)


def sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
