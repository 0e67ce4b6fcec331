"""The vitgrade command line: `check` for students, `grade` for instructors and the LMS."""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console

from . import __version__
from .api import BACKEND_NAMES, DEFAULT_BUDGET_S, GradeOptions
from .contract import CONTRACTS, Contract
from .report.export import EXPORTERS
from .times import parse_iso

if TYPE_CHECKING:
    from .report.models import Report



class IsoTime(click.ParamType):
    """ISO 8601 as LMS exports write it: a space or T, fractional seconds of any length, an offset or Z."""

    name = "ISO-8601-time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_iso(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time (e.g. 2025-11-21T23:59:00-05:00)", param, ctx)


THREADS = click.option("--threads", type=int, default=1, show_default=True, help="torch threads for grading")
BACKEND = click.option(
    "--backend",
    type=click.Choice(BACKEND_NAMES),
    default="auto",
    show_default=True,
    help="sandbox for the worker: local (bubblewrap), user (nobody + rlimits), process (plain child), docker,"
    " or auto (local where it works)",
)
UNVERIFIED = click.option(
    "--unverified",
    is_flag=True,
    help="judge code that runs but cannot be captured as a program on the worker's word (the report says so)",
)
PROGRAMS = click.option(
    "--programs",
    "programs_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="store every judged program here, named by the sha256 the report lists",
)
REPLAY = click.option(
    "--replay",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="a --programs folder: regrade from what each submission's code answered when it was graded there,"
    " running no student code (for a changed suite; a check that needs a new answer says so)",
)
CONTRACT = click.option(
    "--contract",
    type=click.Choice(CONTRACTS),
    help="the notebook graded: course (the course's own) or edition (vitgrade's, with an attention function and"
    " masks); default: the suite's contract, else edition",
)
BUDGET = click.option(
    "--budget",
    type=click.FloatRange(min=1),
    default=DEFAULT_BUDGET_S,
    show_default=True,
    help="seconds the whole grade may take; tests past it fail as timeouts and the report is still written",
)


def fail(message: str) -> NoReturn:
    """No report could be produced: one line, non-zero exit."""
    click.echo(f"vitgrade: {message}", err=True)
    sys.exit(2)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run_grade(submission: Path, options: GradeOptions) -> Report:
    from .api import grade
    from .forked import interrupt
    from .runner.suite import SuiteError

    signal.signal(signal.SIGTERM, interrupt)
    try:
        return grade(submission, options)
    except (SuiteError, RuntimeError) as exc:  # the suite or the sandbox cannot be used: the instructor's setup
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted: no report was written (the workers were stopped)")




@click.group()
@click.version_option(__version__, prog_name="vitgrade")
def main() -> None:
    """vitgrade: grade the Vision Transformer homework (HW4) safely and reproducibly."""


@main.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="also write the JSON report here")
@CONTRACT
@BACKEND
@BUDGET
def check(notebook: Path, json_path: Path | None, contract: Contract | None, backend: str, budget: float) -> None:
    """Run the public tests on NOTEBOOK and print a table with the total."""
    from .report.export import native, print_table

    report = run_grade(notebook, GradeOptions(suite="public", contract=contract, backend=backend, budget_s=budget))
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)
    print_table(report, console)
    if json_path:
        write(json_path, native(report))


@main.command()
@click.argument("submission", type=click.Path(path_type=Path))
@click.option("--suite", default="public", show_default=True, help="public, full (public + hidden) or a suite folder")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="write the report here instead of stdout")
@click.option("--format", "fmt", type=click.Choice(list(EXPORTERS)), default="native", show_default=True)
@click.option("--seed", type=int, help="reproduce a run: the seed recorded in its report")
@click.option("--student", help="the student's id, recorded in the report")
@click.option("--submitted-at", type=IsoTime(), help="submission time (ISO 8601), for the late penalty")
@click.option("--due", type=IsoTime(), help="due date (ISO 8601); overrides the suite's [course] due")
@CONTRACT
@THREADS
@BACKEND
@BUDGET
@UNVERIFIED
@PROGRAMS
@REPLAY
def grade(
    submission: Path,
    suite: str,
    contract: Contract | None,
    json_path: Path | None,
    fmt: str,
    seed: int | None,
    student: str | None,
    submitted_at: datetime | None,
    due: datetime | None,
    threads: int,
    backend: str,
    budget: float,
    unverified: bool,
    programs_dir: Path | None,
    replay: Path | None,
) -> None:
    """Grade SUBMISSION (.ipynb, .py or the course zip) and emit a JSON score report."""
    from .report.export import EXPORTERS

    options = GradeOptions(suite=suite, contract=contract, seed=seed, backend=backend, threads=threads, student=student,
                           submitted_at=submitted_at, due=due, budget_s=budget, unverified=unverified,
                           programs_dir=programs_dir, replay=replay)  # fmt: skip
    report = run_grade(submission, options)
    text = EXPORTERS[fmt](report)
    if json_path:
        write(json_path, text)
        click.echo(f"{report.submission.path}: {report.score:g}/{report.max_score:g} -> {json_path}", err=True)
    else:
        click.echo(text)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), help="write the schema here instead of stdout")
def schema(out: Path | None) -> None:
    """Print the JSON Schema of the score report."""
    from .report.models import Report

    text = json.dumps(Report.model_json_schema(), indent=2) + "\n"
    if out:
        out.write_text(text)
    else:
        click.echo(text, nl=False)


@main.command()
def doctor() -> None:
    """Print which isolation this machine supports."""
    from .sandbox.doctor import checks

    for name, ok, detail in checks():
        click.echo(f"{'ok ' if ok else 'no '} {name:28s} {detail}")


@main.command()
@click.option("--suite", default="full", show_default=True, help="the suite whose [train] settings to calibrate")
@click.option("--seeds", type=int, default=20, show_default=True, help="how many seeds to train the reference on")
@click.option("--first-seed", type=int, default=1000, show_default=True)
@click.option("--jobs", type=int, default=2, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="also write the figures as JSON")
@click.option("--add-to", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a calibration JSON to grow: run the seeds after the ones it holds and rewrite it over all runs")  # fmt: skip
def calibrate(suite: str, seeds: int, first_seed: int, jobs: int, out: Path | None, add_to: Path | None) -> None:
    """Train the reference on many seeds with the training check's settings; print its accuracy
    distribution and the estimated false-fail rate of each threshold, for one run and for a grade
    (which repeats a run below full credit on fresh seeds, up to [train] attempts runs)."""
    from pydantic import ValidationError

    from .protocol import first_error
    from .runner.calibrate import Recorded, extended
    from .runner.calibrate import calibrate as run
    from .runner.suite import SuiteError, resolve

    try:
        chosen = resolve(suite)
    except SuiteError as exc:
        fail(str(exc))
    if chosen.reference is None or "train" not in chosen.config:
        fail(f"the {suite} suite has no reference or no [train] settings to calibrate")
    try:
        recorded = Recorded.model_validate_json(add_to.read_bytes()) if add_to else None
    except ValidationError as exc:
        fail(f"{add_to} is not a calibration file to grow: {first_error(exc)}")
    if recorded is not None:
        first_seed = recorded.first_seed + len(recorded.accuracies)
    elif seeds < 20:
        fail("calibrate needs at least 20 seeds")
    result = run(chosen.reference, chosen.config["train"], list(range(first_seed, first_seed + seeds)), jobs)
    if recorded is None:
        summary = {**result.summary(), "first_seed": first_seed, "accuracies": result.accuracies}
    else:
        summary = extended(recorded, result)
    for path in (add_to, out):
        if path:
            write(path, json.dumps(summary, indent=2))
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "accuracies"}, indent=2))


@main.command()
@click.argument("submissions", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="folder for reports/, CSVs, plots and summary")
@click.option("--suite", default="full", show_default=True)
@click.option("--jobs", type=int, default=1, show_default=True, help="submissions graded in parallel")
@click.option("--seed", type=int, help="one seed for every submission (default: derived from each submission's content)")
@click.option("--due", type=IsoTime(), help="due date for the late penalty")
@click.option("--times", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CSV of student,submitted_at")
@BUDGET
@THREADS
@click.option("--assignment", default="HW4 Implementation", show_default=True, help="the gradebook column / item name")
@click.option("--force", is_flag=True, help="regrade submissions that are already graded")
@BACKEND
@UNVERIFIED
@CONTRACT
@REPLAY
def batch(submissions: Path, out: Path, suite: str, jobs: int, seed: int | None, due: datetime | None, times: Path | None,
          budget: float, threads: int, assignment: str, force: bool, backend: str, unverified: bool,
          contract: Contract | None, replay: Path | None) -> None:  # fmt: skip
    """Grade every submission in SUBMISSIONS (a folder of files, one folder per student, or a
    Gradescope export) in parallel; write per-student reports and the class's gradebook files,
    and every judged program under OUT/programs (named by the sha256 each report lists).
    Each report is exactly what `vitgrade grade` gives with the same seed and options."""
    from .batch.run import Options, run
    from .forked import start_forkserver

    cores = os.cpu_count() or 1
    jobs = max(1, jobs)
    if jobs * threads > cores:
        fail(f"--jobs {jobs} x --threads {threads} is more than this machine's {cores} cores: lower one of them")
    context = start_forkserver()
    from .batch.discover import discover
    from .report.gradebook import export_all
    from .runner.suite import SuiteError, resolve
    from .sandbox import choose

    try:
        chosen = resolve(suite)
        version, contract = chosen.version, contract or chosen.contract
        entries = discover(submissions, times)
    except (SuiteError, ValueError) as exc:
        fail(str(exc))
    if not entries:
        fail(f"no submissions found in {submissions}")
    grading = GradeOptions(suite=suite, contract=contract, seed=seed, backend=choose(backend), threads=threads, due=due, budget_s=budget,
                           unverified=unverified, programs_dir=out.resolve() / "programs",
                           replay=replay.resolve() if replay else None)  # fmt: skip
    options = Options(grading, version, jobs, force)
    reports, graded = run(entries, out, options, context)
    summary = export_all(reports, out, assignment, max((r["max_score"] for r in reports.values()), default=50.0) or 50.0)
    click.echo(f"{len(reports)} submissions ({graded} graded now), mean {summary['mean']:.2f}, median {summary['median']:.2f} -> {out}")


@main.group("gradescope")
def gradescope_group() -> None:
    """The Gradescope autograder: build the bundle, or run inside it."""


@gradescope_group.command("build")
@click.option("--out", type=click.Path(path_type=Path), default=Path("autograder.zip"), show_default=True)
@CONTRACT
def gradescope_build(out: Path, contract: Contract | None) -> None:
    """Write the autograder zip (setup.sh, run_autograder, engine, suites, reference)."""
    from .lms.gradescope import build
    from .runner.suite import course_root

    names = build(course_root(), out, contract)
    click.echo(f"wrote {out} ({len(names)} files)")


@gradescope_group.command("run")
@click.option("--root", type=click.Path(path_type=Path), default=Path("/autograder"), show_default=True)
@BACKEND
def gradescope_run(root: Path, backend: str) -> None:
    """Grade ROOT/submission and write ROOT/results/results.json (what run_autograder calls)."""
    from .lms.gradescope import run

    click.echo(f"wrote {run(root, backend)}")


@main.command("student-kit")
@click.option("--out", type=click.Path(path_type=Path), default=Path("kit.zip"), show_default=True)
@click.option("--wheel-url", help="where you host the kit's wheel (https://...): the instructions and the template install from it")
@CONTRACT
def student_kit(out: Path, wheel_url: str | None, contract: Contract | None) -> None:
    """Write the student kit: the contract's template notebook, vitgrade's wheel, public suite and instructions."""
    from .lms.kit import build
    from .runner.suite import course_root, resolve

    names = build(course_root(), out, wheel_url, contract or resolve("public").contract)
    click.echo(f"wrote {out} ({len(names)} files)")


DATA = click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True, help="the service's folder (database, files)")


@main.command()
@DATA
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--db", help="database URL (default: SQLite in DATA); postgresql+psycopg://... to scale out")
@click.option("--dispatcher", type=click.Choice(["local", "celery"]), default="local", show_default=True)
@click.option("--broker", help="the Celery broker (redis://...)")
@click.option("--pool", type=int, help="grades at once (default: from cores and memory)")
@click.option("--suite", default="full", show_default=True, help="the default assignment's suite")
@BACKEND
@BUDGET
@click.option("--daily-quota", type=int, default=20, show_default=True, help="submissions per student, assignment and day")
@click.option("--max-upload-mb", type=float, default=64.0, show_default=True)
@click.option("--lease", "lease_s", type=float, default=30.0, show_default=True, help="seconds a grading worker's claim lasts unrenewed")
@click.option("--grader", hidden=True, default=None, help="module:function graded in each child (tests)")
def serve(data: Path, host: str, port: int, db: str | None, dispatcher: str, broker: str | None, pool: int | None, suite: str,
          backend: str, budget: float, daily_quota: int, max_upload_mb: float, lease_s: float, grader: str | None) -> None:  # fmt: skip
    """Run the grading service: the HTTP API and pages on HOST:PORT, with the local dispatcher
    (or Celery's workers) grading what is submitted. Everything it keeps is in DATA or --db."""
    import uvicorn
    from pydantic import ValidationError

    from .service.app import create_app
    from .service.settings import ServiceSettings

    fields: dict[str, Any] = {"data": data.resolve(), "db": db, "dispatcher": dispatcher, "broker": broker, "pool": pool, "suite": suite,
              "backend": backend, "budget_s": budget, "daily_quota": daily_quota, "lease_s": lease_s,
              "max_upload_bytes": int(max_upload_mb * (1 << 20)), **({"grader": grader} if grader else {})}  # fmt: skip
    try:
        settings = ServiceSettings(**fields)
    except ValidationError as exc:
        fail(str(exc))
    from .service.grading import isolating

    try:
        isolating(settings.backend)
    except RuntimeError as exc:
        fail(str(exc))
    settings.save()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


@main.group("token")
def token_group() -> None:
    """Bearer tokens for the service."""


@token_group.command("create")
@DATA
@click.option("--role", type=click.Choice(["student", "ta", "instructor", "lms"]), required=True)
@click.option("--user", required=True, help="the NetID (students) or a name")
@click.option("--db", help="database URL, when not SQLite in DATA")
def token_create(data: Path, role: str, user: str, db: str | None) -> None:
    """Print a new token for USER with ROLE, once: only its hash is stored."""
    from .service.auth import create_token
    from .service.db import connect, migrate, sessions
    from .service.settings import ServiceSettings

    url = db or ServiceSettings(data=data.resolve()).db_url
    data.mkdir(parents=True, exist_ok=True)
    migrate(url)
    with sessions(connect(url))() as session:
        click.echo(create_token(session, role, user))  # type: ignore[arg-type]


@main.command()
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="the service's folder, the one `vitgrade serve --data` was given: its service.json says how to grade, and the "
                   "submissions are read from DATA/files, so every grading host mounts the same folder (e.g. over NFS)")  # fmt: skip
@click.option("--db", help="database URL, when it differs from the service's (postgresql+psycopg://...)")
@click.option("--broker", help="the Celery broker, when it differs from the service's (redis://...)")
@click.option("--queues", default=",".join(("interactive", "batch")), show_default=True,
              help="the queues this host takes jobs from, in order: a host may serve students only (interactive)")  # fmt: skip
@click.option("--concurrency", type=int, help="grades at once on this host (default: the service's --pool, or from cores and memory)")
@click.option("--loglevel", default="info", show_default=True)
def worker(data: Path, db: str | None, broker: str | None, queues: str, concurrency: int | None, loglevel: str) -> None:
    """Grade on this host what `vitgrade serve --dispatcher celery` queues: a Celery worker (prefork
    pool, one grade at a time per pool process, each in a child of that process's warm fork
    server) on the service's database and broker."""
    from pydantic import ValidationError

    from .service.celery_app import run_worker
    from .service.settings import QUEUES, SETTINGS_FILE, ServiceSettings

    folder = data.resolve()
    if not (folder / SETTINGS_FILE).exists():
        fail(f"{folder / SETTINGS_FILE} not found: start `vitgrade serve --data {data} --dispatcher celery` first, or mount its folder here")
    try:
        saved = ServiceSettings.load(folder)
        settings = ServiceSettings(**{**saved.model_dump(), "data": folder, "db": db or saved.db, "broker": broker or saved.broker})
    except ValidationError as exc:
        fail(str(exc))
    names = [name.strip() for name in queues.split(",") if name.strip()]
    if not names or any(name not in QUEUES for name in names):
        fail(f"--queues: choose among {', '.join(QUEUES)} (got {queues!r})")
    if not (settings.broker or "").startswith(("redis://", "rediss://")):
        fail(f"a Redis broker is needed (got {settings.broker!r}): give --broker redis://..., or start the service with "
             "--dispatcher celery --broker redis://...")  # fmt: skip
    if settings.db is None:
        click.echo(f"warning: the database is SQLite in {folder}; that is safe only if every worker runs on this host", err=True)
    if concurrency is not None and concurrency < 1:
        fail("--concurrency: at least 1")
    from .service.grading import isolating

    try:
        isolating(settings.backend)
    except RuntimeError as exc:
        fail(str(exc))
    settings.private()
    sys.exit(run_worker(settings, names, concurrency or settings.pool_size(), loglevel.upper()))
