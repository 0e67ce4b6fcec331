"""Exporters: the native JSON report, Gradescope's results.json, and a readable table."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from ..runner.cases import UNITS
from .models import Report

UNIT_ORDER = {unit: i for i, unit in enumerate(UNITS)}
STATUS_STYLE = {"passed": "green", "failed": "red", "error": "red", "timeout": "magenta", "oom": "magenta", "crashed": "magenta", "skipped": "yellow"}
OUTPUT_LIMIT = 8000
PRINTED_LIMIT = 4000  # of the student's own prints, in Gradescope's overall output


def native(report: Report) -> str:
    return report.model_dump_json(indent=2)


def gradescope(report: Report) -> dict[str, Any]:
    """Gradescope's results.json (autograder specifications): per-test scores, statuses, visibility."""
    lines = [f"{report.suite.name} suite {report.suite.version}, seed {report.seed}"]
    if report.error:
        lines.append(f"Your submission could not be graded: {report.error}")
    lines += [f"[{d.action}] {d.where}: {d.reason}" for d in report.diagnostics]
    if report.student_output.text:
        lines.append(f"What your code printed ({report.student_output.total_bytes} bytes):\n{report.student_output.text[:PRINTED_LIMIT]}")
    tests = [
        {
            "name": f"{t.unit}: {t.name}",
            "number": str(i),
            "score": t.score,
            "max_score": t.max_score,
            "status": "passed" if t.status == "passed" else "failed",
            "output": (t.output if t.status in {"passed", "failed"} else f"[{t.status}] {t.output}")[:OUTPUT_LIMIT],
            "tags": [t.unit, t.status],
            "visibility": t.visibility,
        }
        for i, t in enumerate(report.tests, start=1)
    ]
    return {
        "score": report.score,
        "execution_time": round(report.duration_s, 3),
        "output": "\n".join(lines)[:OUTPUT_LIMIT],
        "stdout_visibility": "hidden",
        "extra_data": {"seed": report.seed, "suite_version": report.suite.version, "sha256": report.submission.sha256},
        "tests": tests,
    }


def gradescope_json(report: Report) -> str:
    return json.dumps(gradescope(report), indent=2)


EXPORTERS: dict[str, Callable[[Report], str]] = {"native": native, "gradescope": gradescope_json}
"""Report formats by name: `--format` offers exactly these."""


def print_table(report: Report, console: Console) -> None:
    """The student's view: one row per test, grouped by unit, then what the loader skipped."""
    if report.status == "error":
        console.print(f"[bold red]Not graded:[/] {report.error}")
        return
    table = Table(title=f"{report.submission.path} — {report.suite.name} suite", show_lines=False)
    table.add_column("unit")
    table.add_column("test", max_width=44, overflow="fold")
    table.add_column("status")
    table.add_column("points", justify="right")
    table.add_column("message", overflow="fold")
    for t in sorted(report.tests, key=lambda t: UNIT_ORDER.get(t.unit, 99)):
        style = STATUS_STYLE.get(t.status, "")
        table.add_row(t.unit, t.name, f"[{style}]{t.status}[/]", f"{t.score:g}/{t.max_score:g}", t.output[:600])
    console.print(table)
    not_run: dict[str, list[str]] = {}
    for d in report.diagnostics:
        cell, _, line = d.where.partition(", line ")
        if d.reason.startswith("not run") and line:
            not_run.setdefault(cell, []).append(line)
        else:
            console.print(f"[yellow]{d.action}[/] {d.where}: {d.reason}")
    for cell, lines in not_run.items():
        console.print(f"[dim]not run by the grader (top-level code): {cell}, line {', '.join(lines)}[/]")
    if report.student_output.total_bytes:
        note = " (truncated)" if report.student_output.truncated else ""
        console.print(f"your code printed {report.student_output.total_bytes} bytes{note}")
    console.print(f"your code ran {isolation_line(report)}")
    console.print(f"[bold]Total: {report.score:g} / {report.max_score:g}[/]  (seed {report.seed}, {report.duration_s:.1f} s)")


def isolation_line(report: Report) -> str:
    """What isolated the student's code, as it was: never a sandbox that was not there."""
    iso = report.environment.isolation if report.environment else None
    if iso is None:
        return "nowhere (it was not started)"
    if iso.backend == "process":
        return "in a plain separate process, without a sandbox"
    return f"in the {iso.backend} sandbox (network: {iso.network}; files: {iso.filesystem}; user: {iso.user})"

