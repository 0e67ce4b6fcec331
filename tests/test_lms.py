"""The Gradescope bundle in a simulated /autograder, the student kit, and the wheel."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema

from tests.conftest import ROOT, vitgrade
from tests.corpus.course import SEPARATE
from tests.corpus.hostile import IMPORT_AT
from tests.corpus.mutants import REFERENCE

SENTINELS = (b"HIDDEN-7c41e9d2", b"REFERENCE-5be08f13")
GRADESCOPE_SCHEMA = json.loads((ROOT / "tests" / "schemas" / "gradescope_results.schema.json").read_text())


def test_gradescope_bundle_runs_in_a_simulated_autograder(tmp_path: Path, examples: Path) -> None:
    bundle = tmp_path / "autograder.zip"
    done = vitgrade("gradescope", "build", "--out", str(bundle))
    assert done.returncode == 0, done.stderr
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        archive.extractall(root / "source")
        mode = archive.getinfo("run_autograder").external_attr >> 16
    assert {"setup.sh", "run_autograder"} <= set(names) and mode & stat.S_IXUSR
    assert any(n.startswith("test_cases/hidden/") for n in names) and "reference/vit.py" in names
    setup = (root / "source" / "setup.sh").read_text()
    assert "torch==2.14.1" in setup and "einops==" in setup
    # the submission: the reference, plus an attempt to read the hidden suite and the reference
    targets = [str(root / "source" / "test_cases" / "hidden" / "test_sdpa_hidden.py"), str(root / "source" / "reference" / "vit.py")]
    thief = REFERENCE.read_text().replace(IMPORT_AT, IMPORT_AT + "".join(
        f"    try:\n        print(open({t!r}).read())\n    except OSError as exc:\n        print('denied', exc)\n" for t in targets
    ))
    (root / "submission").mkdir()
    (root / "submission" / "hw4_impl.py").write_text(thief)
    (root / "submission_metadata.json").write_text(json.dumps({
        "created_at": "2025-11-21T20:00:00.000000-05:00",
        "assignment": {"due_date": "2025-11-21T23:59:00.000000-05:00", "title": "HW4"},
        "users": [{"email": "ab1234@nyu.edu", "name": "A B", "sid": "ab1234"}],
    }))
    env = {**os.environ, "VITGRADE_AUTOGRADER_ROOT": str(root), "VITGRADE_PYTHON": sys.executable, "VITGRADE_BACKEND": "user"}
    run = subprocess.run(["bash", str(root / "source" / "run_autograder")], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    raw = (root / "results" / "results.json").read_bytes()
    results = json.loads(raw)
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == 50, results["output"]
    visibility = {t["visibility"] for t in results["tests"]}
    assert visibility == {"visible", "after_due_date"}
    # The thief's prints reach results.json (so the check below could see a leak), its reads did not.
    assert b"denied" in raw, results["output"][-2000:]
    assert all(s not in raw for s in SENTINELS)
    assert stat.S_IMODE((root / "source" / "test_cases" / "hidden").stat().st_mode) & 0o077 == 0


def test_a_course_bundle_grades_the_courses_notebook(tmp_path: Path) -> None:
    """The contract chosen at build time travels in the bundle: a course notebook gets 50/50 there."""
    bundle = tmp_path / "autograder.zip"
    done = vitgrade("gradescope", "build", "--out", str(bundle), "--contract", "course")
    assert done.returncode == 0, done.stderr
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
    assert json.loads((root / "source" / "grading.json").read_text()) == {"contract": "course"}
    (root / "submission").mkdir()
    (root / "submission" / "hw4_impl.py").write_text(SEPARATE.read_text())
    env = {**os.environ, "VITGRADE_AUTOGRADER_ROOT": str(root), "VITGRADE_PYTHON": sys.executable, "VITGRADE_BACKEND": "process"}
    run = subprocess.run(["bash", str(root / "source" / "run_autograder")], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 50, results["output"]
    assert not any(t["name"].startswith("sdpa") or "mask" in t["name"] for t in results["tests"])


def test_gradescope_run_always_writes_results(tmp_path: Path) -> None:
    root = tmp_path / "autograder"
    (root / "submission").mkdir(parents=True)
    (root / "source").mkdir()
    done = vitgrade("gradescope", "run", "--root", str(root))
    assert done.returncode == 0, done.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    jsonschema.validate(results, GRADESCOPE_SCHEMA)
    assert results["score"] == 0 and "no .ipynb" in results["output"]


def test_student_kit_and_wheel_hold_no_hidden_material(tmp_path: Path, examples: Path) -> None:
    kit = tmp_path / "kit.zip"
    assert vitgrade("student-kit", "--out", str(kit)).returncode == 0
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)  # fmt: skip
    wheel = next((tmp_path / "dist").glob("vitgrade-*.whl"))
    for archive_path in (kit, wheel):
        with zipfile.ZipFile(archive_path) as archive:
            names = archive.namelist()
            assert not [n for n in names if "reference" in n or "hidden" in n], names
            for name in names:
                data = archive.read(name)
                assert all(s not in data for s in SENTINELS), f"{archive_path.name}:{name}"
    with zipfile.ZipFile(kit) as archive:
        names = set(archive.namelist())
    assert {"README.md", "HW4-VIT-Student.ipynb", "public_suite/suite.toml", "public_suite/fixtures/sdpa.safetensors"} <= names
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "installed")
        assert "vitgrade/public_suite/fixtures/mhsa.safetensors" in archive.namelist()
    # The wheel alone (no course checkout) checks a notebook with its bundled public suite.
    env = {k: v for k, v in os.environ.items() if k != "VITGRADE_COURSE"}
    done = subprocess.run([sys.executable, "-m", "vitgrade", "check", str(examples / "solved.ipynb")], cwd=tmp_path / "installed",
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Total: 18 / 18" in done.stdout
    shutil.rmtree(tmp_path / "installed")
