"""Batch grading of a class, course policy, and the gradebook files, through the real CLI."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import CORRECT, ROOT, grade_all, vitgrade, without_timings
from tests.corpus.hostile import ATTACKS, FORWARD_AT, IMPORT_AT
from tests.corpus.mutants import MUTANTS, REFERENCE
from tests.notebooks import write_course_zip, write_notebook
from vitgrade.batch.discover import discover

# A class of every kind of submission; tests/test_corpus.py grades every correct style and mutant.
STYLES, BUGS = CORRECT[:4], MUTANTS[:5]
QUICK_ATTACKS = ("exit_at_import", "segfault", "fake_report", "forged_channel", "sys_exit_in_forward", "huge_output")


def malformed(folder: Path) -> None:
    (folder / "bad01.ipynb").write_text("{not json")
    (folder / "bad02.ipynb").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (folder / "bad03.ipynb").write_text(json.dumps({"cells": "nope", "nbformat": 4, "nbformat_minor": 5}))
    (folder / "bad04.zip").write_bytes(b"PK\x03\x04 not really a zip")
    (folder / "bad05.py").write_bytes("x = 'caf\xe9'".encode("latin-1"))
    (folder / "bad06.ipynb").write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))


@pytest.fixture(scope="module")
def klass(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    folder = tmp_path_factory.mktemp("class")
    subs = folder / "submissions"
    subs.mkdir()
    for i, style in enumerate(STYLES):
        shutil.copy(style, subs / f"ok{i:02d}.py")
    for i, mutant in enumerate(BUGS):
        (subs / f"bug{i:02d}.py").write_text(mutant.source())
    values = {"daemon_seconds": "1", "grader_cwd": str(folder), "course_root": str(ROOT), "port": "9"}
    for i, attack in enumerate(a for a in ATTACKS if a.name in QUICK_ATTACKS):
        (subs / f"evil{i:02d}.py").write_text(attack.source(**values))
    malformed(subs)
    out = folder / "out"
    done = vitgrade("batch", str(subs), "--out", str(out), "--suite", "public", "--jobs", "2", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return subs, out, {p.stem: json.loads(p.read_text()) for p in (out / "reports").glob("*.json")}


def test_batch_grades_every_submission(klass) -> None:
    subs, out, reports = klass
    assert len(reports) == len(list(subs.iterdir())) == len(STYLES) + len(BUGS) + len(QUICK_ATTACKS) + 6
    assert all(reports[f"ok{i:02d}"]["score"] == 18 for i in range(len(STYLES)))
    assert all(r["status"] == "error" for s, r in reports.items() if s.startswith("bad0") and s != "bad06")
    assert reports["bad06"]["status"] == "ok" and reports["bad06"]["score"] == 0
    for name in ("scores.csv", "stats.json", "histogram.png", "tests.png", "summary.md", "canvas.csv", "brightspace.csv", "grades.csv"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "histogram.png").read_bytes()[:4] == b"\x89PNG"


def test_batch_report_equals_single_grade(klass, tmp_path: Path) -> None:
    """A batch report is exactly what `vitgrade grade` gives for that submission and seed: checked on
    every kind the class holds (correct, buggy, hostile, malformed), not all of it (CI's time)."""
    subs, _, reports = klass
    sample = {s: r for s, r in reports.items() if s in {"ok00", "ok01", "bug00", "bug01", "bad01", "bad06"} or s.startswith("evil")}
    jobs = {
        student: (next(subs.glob(f"{student}.*")), ("--suite", "public", "--seed", str(r["seed"]), "--student", student))
        for student, r in sample.items()
    }
    singles = grade_all(jobs, tmp_path / "singles")

    assert len(singles) == len(sample) == 12
    for student, report in sample.items():
        assert without_timings(singles[student]) == without_timings(report), student


def test_rerun_grades_nothing_new(klass) -> None:
    subs, out, _ = klass
    before = {p.name: p.stat().st_mtime_ns for p in (out / "reports").iterdir()}
    done = vitgrade("batch", str(subs), "--out", str(out), "--suite", "public", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "(0 graded now)" in done.stdout
    assert before == {p.name: p.stat().st_mtime_ns for p in (out / "reports").iterdir()}


def test_gradebook_formats(klass) -> None:
    _, out, reports = klass
    rows = list(csv.reader((out / "canvas.csv").open()))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "HW4 Implementation"]
    assert rows[1] == ["Points Possible", "", "", "", "", "18"]
    assert {r[3]: float(r[5]) for r in rows[2:]} == {s: r["score"] for s, r in reports.items()}
    rows = list(csv.reader((out / "brightspace.csv").open()))
    assert rows[0] == ["OrgDefinedId", "HW4 Implementation Points Grade", "End-of-Line Indicator"]
    assert all(len(r) == 3 and r[2] == "#" for r in rows[1:])
    assert {r[0]: float(r[1]) for r in rows[1:]} == {s: r["score"] for s, r in reports.items()}
    scores = list(csv.DictReader((out / "scores.csv").open()))
    assert len(scores) == len(reports) and len(scores[0]) == 5 + 18
    stats = json.loads((out / "stats.json").read_text())
    assert stats["submissions"] == len(reports) and 0 < stats["mean"] < 18 and len(stats["pass_rate"]) == 18
    summary = (out / "summary.md").read_text()
    assert "Most-failed tests" in summary and "bad01" in summary


def test_discovery_layouts(tmp_path: Path) -> None:
    nb = write_notebook((ROOT / "tests/corpus/correct/chunk_colab.py").read_text(), tmp_path / "nb.ipynb")
    per_student = tmp_path / "per_student"
    for netid in ("ab1", "cd2"):
        (per_student / netid).mkdir(parents=True)
        shutil.copy(nb, per_student / netid / "hw4_impl.ipynb")
        (per_student / netid / "notes.txt").write_text("x")
    assert [(e.student, e.path.name) for e in discover(per_student)] == [("ab1", "hw4_impl.ipynb"), ("cd2", "hw4_impl.ipynb")]
    export = tmp_path / "assignment_1_export"
    for sub, netid in (("submission_111", "ef3"), ("submission_222", "gh4")):
        (export / sub).mkdir(parents=True)
        write_course_zip(nb, export / sub / f"{netid}.zip")
    (export / "submission_metadata.yml").write_text(
        "submission_111:\n  :submitters:\n  - :name: E F\n    :sid: ef3\n    :email: ef3@nyu.edu\n"
        "  :created_at: 2025-11-21 23:58:00.000000000 -05:00\n"
        "submission_222:\n  :submitters:\n  - :name: G H\n    :email: gh4@nyu.edu\n"
        "  :created_at: 2025-11-23 08:00:00.000000000 -05:00\n"
    )
    entries = discover(tmp_path / "assignment_1_export")
    assert [e.student for e in entries] == ["ef3", "gh4"]
    assert entries[1].submitted_at is not None and entries[1].submitted_at.tzinfo is not None
    times = tmp_path / "times.csv"
    times.write_text("student,submitted_at\nab1,2025-11-22T12:00:00+00:00\n")
    stamped = {e.student: e.submitted_at for e in discover(per_student, times)}
    assert stamped["ab1"] == datetime(2025, 11, 22, 12, tzinfo=UTC) and stamped["cd2"] is None


def test_course_policy_adjustments(tmp_path: Path) -> None:
    nb = write_notebook((ROOT / "tests/corpus/correct/chunk_colab.py").read_text(), tmp_path / "nb.ipynb")
    late = write_course_zip(nb, tmp_path / "late.zip", name="homework.ipynb")
    out = tmp_path / "r.json"
    done = vitgrade("grade", str(late), "--submitted-at", "2025-11-23T09:00:00-05:00", "--due", "2025-11-21T23:59:00-05:00", "--json", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    reasons = {a["reason"].split(" (")[0]: a for a in report["adjustments"]}
    assert reasons["2 day(s) late"]["fraction"] == 0.2
    assert reasons["wrong file names or extra files in the zip"]["fraction"] == 0.1
    assert report["tests_score"] == 18 and report["score"] == pytest.approx(18 * 0.7)
    assert sum(a["points"] for a in report["adjustments"]) == pytest.approx(-18 * 0.3)
    too_late = json.loads(vitgrade("grade", str(nb), "--submitted-at", "2025-12-01T00:00:00-05:00", "--due", "2025-11-21T23:59:00-05:00").stdout)
    assert too_late["score"] == 0 and "not accepted" in too_late["adjustments"][0]["reason"]
    broken = tmp_path / "broken.ipynb"
    text = json.loads(nb.read_text())
    text["cells"].append({"cell_type": "code", "execution_count": None, "id": "x1", "metadata": {}, "outputs": [], "source": "image_size = # TODO"})
    broken.write_text(json.dumps(text))
    report = json.loads(vitgrade("grade", str(broken)).stdout)
    assert report["adjustments"][0]["fraction"] == 0.2 and "cannot be executed" in report["adjustments"][0]["reason"]


def test_a_grade_over_its_budget_is_stopped_with_its_workers(tmp_path: Path) -> None:
    """The hang is stopped at its budget, mid-suite, its report still written, and no worker it
    started outlives it."""
    pids = tmp_path / "worker-pids.log"
    hang = REFERENCE.read_text().replace(
        IMPORT_AT, IMPORT_AT + f"    import os as _os\n    open({str(pids)!r}, 'a').write(f'{{_os.getpid()}}\\n')\n"
    ).replace(FORWARD_AT, "        while True:\n            pass\n")
    subs = tmp_path / "submissions"
    subs.mkdir()
    (subs / "hang.py").write_text(hang)
    shutil.copy(CORRECT[0], subs / "fine.py")
    out = tmp_path / "out"
    # The process backend is the one without a PID namespace: its workers die only if the
    # grade stops them (or by their parent-death signal), which is what this test watches.
    done = vitgrade("batch", str(subs), "--out", str(out), "--suite", "public", "--jobs", "2", "--budget", "30",
                    "--backend", "process")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    hung = json.loads((out / "reports" / "hang.json").read_text())
    assert hung["status"] == "ok" and hung["budget_used_up"] and hung["budget_s"] == 30 and hung["score"] < 18
    assert any("time budget of 30 s was used up" in t["output"] for t in hung["tests"])
    assert json.loads((out / "reports" / "fine.json").read_text())["score"] == 18
    started = [int(line) for line in pids.read_text().split()]
    assert len(started) >= 2, "the hang should have cost at least one worker restart before its budget ran out"
    for pid in started:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "gone"
        assert state in {"gone", "Z"}, f"worker {pid} outlived its grade (state {state})"
    assert not list((out / "reports").glob("*.log"))


def gradescope_export(root: Path, created_at: str) -> Path:
    """An "Export Submissions" folder as Gradescope writes it: nanosecond times, a space before the offset."""
    export = root / "assignment_9_export"
    (export / "submission_901").mkdir(parents=True)
    shutil.copy(CORRECT[0], export / "submission_901" / "hw4_impl.py")
    (export / "submission_metadata.yml").write_text(
        f"submission_901:\n  :submitters:\n  - :name: I J\n    :sid: ij5\n    :email: ij5@nyu.edu\n  :created_at: {created_at}\n"
    )
    return export


def test_a_gradescope_export_with_fractional_seconds_is_graded(tmp_path: Path) -> None:
    export = gradescope_export(tmp_path, "2019-04-11 20:28:38.073862000 -07:00")
    out = tmp_path / "out"
    done = vitgrade("batch", str(export), "--out", str(out), "--suite", "public", "--due", "2019-04-10T21:00:00-07:00")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "reports" / "ij5.json").read_text())
    assert report["status"] == "ok" and report["tests_score"] == 18, report.get("error")
    assert report["submission"]["submitted_at"] == "2019-04-11T20:28:38.073862-07:00"
    assert report["adjustments"][0]["reason"].startswith("1 day(s) late") and report["score"] == pytest.approx(18 * 0.9)


def test_changed_options_and_failed_grades_are_graded_again(tmp_path: Path) -> None:
    """The resume key is the whole of the grading options; a grade whose process failed is retried."""
    subs = tmp_path / "submissions"
    subs.mkdir()
    shutil.copy(CORRECT[0], subs / "ok.py")
    out = tmp_path / "out"

    def batch(*extra: str) -> str:
        done = vitgrade("batch", str(subs), "--out", str(out), "--suite", "public", "--backend", "process", *extra)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    assert "(1 graded now)" in batch()
    assert "(0 graded now)" in batch()
    assert "(1 graded now)" in batch("--budget", "250")
    assert "(1 graded now)" in batch("--budget", "250", "--backend", "user")
    assert "(0 graded now)" in batch("--budget", "250", "--backend", "user")
    # a grade whose process failed as a whole is marked for retry in state.json (as grade_one does): graded again
    state = json.loads((out / "state.json").read_text())
    state["ok"]["retry"] = True
    (out / "state.json").write_text(json.dumps(state))
    assert "(1 graded now)" in batch("--budget", "250", "--backend", "user")


def test_threads_are_explicit_and_capped_by_cores(tmp_path: Path) -> None:
    done = vitgrade("batch", str(tmp_path), "--out", str(tmp_path / "out"), "--jobs", "64", "--threads", "64")
    assert done.returncode == 2 and "more than this machine's" in done.stderr


def test_quick_grades_keep_their_reports(tmp_path: Path) -> None:
    """Malformed submissions are graded in milliseconds, where the forkserver loses a child's exit
    status now and then (255): the report the child wrote is the result, never "the grading process
    failed" (before the fix: about 1 grade in 12 here)."""
    subs = tmp_path / "submissions"
    subs.mkdir()
    malformed(subs)
    out = tmp_path / "out"
    for _ in range(5):
        done = vitgrade("batch", str(subs), "--out", str(out), "--suite", "public", "--jobs", "2", "--force")
        assert done.returncode == 0, done.stderr[-3000:]
        errors = [json.loads(p.read_text())["error"] for p in (out / "reports").glob("*.json")]
        assert len(errors) == 6 and not any(e and "grading process failed" in e for e in errors), errors
        assert not list((out / "reports").glob("*.partial"))
