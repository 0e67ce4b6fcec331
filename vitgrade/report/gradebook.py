"""A class's reports as gradebook files: scores, statistics, plots, a summary, and LMS imports.

- scores.csv: one row per student, a column per test;
- stats.json: mean, median and per-test pass rates; histogram.png and tests.png;
- summary.md: the most-failed tests and the submissions that errored;
- canvas.csv (Canvas gradebook import), brightspace.csv (Brightspace grades import), grades.csv.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CANVAS_HEADER = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def test_key(test: dict) -> str:
    return f"{test['unit']}: {test['name']}"


def test_columns(reports: dict[str, dict]) -> list[str]:
    columns: dict[str, None] = {}
    for report in reports.values():
        for test in report["tests"]:
            columns.setdefault(test_key(test))
    return list(columns)


def write_scores(reports: dict[str, dict], path: Path) -> None:
    tests = test_columns(reports)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["student", "score", "max_score", "tests_score", "status", *tests])
        for student, r in sorted(reports.items()):
            by_key = {test_key(t): t["score"] for t in r["tests"]}
            out.writerow([student, r["score"], r["max_score"], r["tests_score"], r["status"], *(by_key.get(t, "") for t in tests)])


def stats(reports: dict[str, dict]) -> dict:
    scores = [r["score"] for r in reports.values()]
    rates: dict[str, float] = {}
    for key in test_columns(reports):
        results = [t for r in reports.values() for t in r["tests"] if test_key(t) == key]
        rates[key] = round(sum(t["status"] == "passed" for t in results) / max(1, len(results)), 4)
    return {
        "submissions": len(scores),
        "errored": sum(r["status"] == "error" for r in reports.values()),
        "mean": round(statistics.mean(scores), 4) if scores else 0.0,
        "median": statistics.median(scores) if scores else 0.0,
        "pass_rate": rates,
    }


def plots(reports: dict[str, dict], summary: dict, out: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist([r["score"] for r in reports.values()], bins=25, range=(0, max([50.0, *[r["max_score"] for r in reports.values()]])))
    axes.set(title="Total scores", xlabel="score", ylabel="students")
    figure.tight_layout()
    figure.savefig(out / "histogram.png", dpi=100)
    plt.close(figure)
    rates = summary["pass_rate"]
    figure, axes = plt.subplots(figsize=(9, max(4, 0.22 * len(rates))))
    axes.barh(list(rates), list(rates.values()))
    axes.invert_yaxis()
    axes.set(title="Pass rate per test", xlabel="fraction of submissions passing", xlim=(0, 1))
    axes.tick_params(axis="y", labelsize=6)
    figure.tight_layout()
    figure.savefig(out / "tests.png", dpi=100)
    plt.close(figure)


def write_summary(reports: dict[str, dict], summary: dict, path: Path) -> None:
    lines = [
        "# Batch summary",
        "",
        f"- submissions: {summary['submissions']} (errored: {summary['errored']})",
        f"- mean score: {summary['mean']:.2f}, median: {summary['median']:.2f}",
        "",
        "## Most-failed tests",
        "",
        "| pass rate | test |",
        "|---:|---|",
    ]
    for key, rate in sorted(summary["pass_rate"].items(), key=lambda kv: kv[1])[:10]:
        lines.append(f"| {rate:.0%} | {key} |")
    lines += ["", "## Submissions that errored", ""]
    errored = [(s, r) for s, r in sorted(reports.items()) if r["status"] == "error"]
    lines += [f"- {s}: {r['error']}" for s, r in errored] or ["- none"]
    lines += ["", "Plots: histogram.png (total scores), tests.png (pass rate per test)."]
    path.write_text("\n".join(lines) + "\n")


def write_canvas(reports: dict[str, dict], path: Path, assignment: str, points: float) -> None:
    """Canvas gradebook import: the student columns, a Points Possible row, one row per student
    matched by SIS Login ID."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([*CANVAS_HEADER, assignment])
        out.writerow(["Points Possible", "", "", "", "", f"{points:g}"])
        for student, r in sorted(reports.items()):
            out.writerow(["", "", "", student, "", f"{r['score']:g}"])


def write_brightspace(reports: dict[str, dict], path: Path, item: str) -> None:
    """Brightspace grades import: OrgDefinedId, '<item> Points Grade', End-of-Line Indicator (#)."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["OrgDefinedId", f"{item} Points Grade", "End-of-Line Indicator"])
        for student, r in sorted(reports.items()):
            out.writerow([student, f"{r['score']:g}", "#"])


def write_plain(reports: dict[str, dict], path: Path) -> None:
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["student", "score", "max_score", "status"])
        for student, r in sorted(reports.items()):
            out.writerow([student, f"{r['score']:g}", f"{r['max_score']:g}", r["status"]])


def export_all(reports: dict[str, dict], out: Path, assignment: str = "HW4 Implementation", points: float = 50.0) -> dict:
    summary = stats(reports)
    write_scores(reports, out / "scores.csv")
    (out / "stats.json").write_text(json.dumps(summary, indent=2))
    plots(reports, summary, out)
    write_summary(reports, summary, out / "summary.md")
    write_canvas(reports, out / "canvas.csv", assignment, points)
    write_brightspace(reports, out / "brightspace.csv", assignment)
    write_plain(reports, out / "grades.csv")
    return summary
