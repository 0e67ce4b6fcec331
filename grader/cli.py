"""The vitgrade command line: `check` for students, `grade` for instructors and the LMS."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from . import __version__

BACKEND = click.option(
    "--backend",
    default="auto",
    show_default=True,
    help="sandbox for the worker: local (bubblewrap), process (plain child), or auto (local where it works)",
)


def fail(message: str) -> None:
    """No report could be produced: one line, non-zero exit."""
    click.echo(f"vitgrade: {message}", err=True)
    sys.exit(2)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run_grade(submission: Path, suite: str, seed: int | None, backend: str):  # type: ignore[no-untyped-def]
    from .runner.engine import grade
    from .runner.suite import SuiteError

    try:
        return grade(submission, suite, seed=seed, backend=backend)
    except (SuiteError, ValueError) as exc:
        fail(str(exc))


@click.group()
@click.version_option(__version__, prog_name="vitgrade")
def main() -> None:
    """vitgrade: grade the Vision Transformer homework (HW4) safely and reproducibly."""


@main.command()
@click.argument("notebook", type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="also write the JSON report here")
@BACKEND
def check(notebook: Path, json_path: Path | None, backend: str) -> None:
    """Run the public tests on NOTEBOOK and print a table with the total."""
    from .report.export import native, print_table

    report = run_grade(notebook, "public", None, backend)
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
@click.option("--format", "fmt", type=click.Choice(["native", "gradescope"]), default="native", show_default=True)
@click.option("--seed", type=int, help="reproduce a run: the seed recorded in its report")
@BACKEND
def grade(submission: Path, suite: str, json_path: Path | None, fmt: str, seed: int | None, backend: str) -> None:
    """Grade SUBMISSION (.ipynb, .py or the course zip) and emit a JSON score report."""
    from .report.export import gradescope_json, native

    report = run_grade(submission, suite, seed, backend)
    text = gradescope_json(report) if fmt == "gradescope" else native(report)
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
