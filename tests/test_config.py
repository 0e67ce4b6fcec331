"""The engine's configuration: suite.toml checked at load time, options as one pydantic model,
one source for the version and the pins."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

import vitgrade
from vitgrade.api import GradeOptions
from vitgrade.runner.suite import SuiteError, resolve

from .conftest import ROOT
from .conftest import vitgrade as run_vitgrade


def suite_copy(tmp_path: Path, edit: str) -> Path:
    """The public suite with its suite.toml edited."""
    folder = tmp_path / "suite"
    shutil.copytree(ROOT / "test_cases" / "public", folder)
    toml = folder / "suite.toml"
    toml.write_text(toml.read_text().replace("max_late_days = 4", edit))
    return folder


def test_a_typo_in_suite_toml_is_an_error_at_load_time(tmp_path: Path) -> None:
    folder = suite_copy(tmp_path, "max_late_dayz = 4")
    with pytest.raises(SuiteError, match=r"course\.max_late_dayz: Extra inputs are not permitted"):
        resolve(str(folder))
    done = run_vitgrade("grade", str(ROOT / "examples" / "build.py"), "--suite", str(folder))
    assert done.returncode == 2 and "max_late_dayz" in done.stderr and "Traceback" not in done.stderr


def test_a_wrong_type_in_suite_toml_is_an_error_at_load_time(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match=r"course\.max_late_days"):
        resolve(str(suite_copy(tmp_path, 'max_late_days = "four"')))


def test_the_bundled_suites_load() -> None:
    full = resolve("full")
    assert full.config["train"]["model"][:2] == [16, 4] and isinstance(full.config["train"]["model"][0], int)
    assert full.config["policy"]["forbidden"] == "from_scratch" and full.fixed_seed is None
    assert resolve("public").fixed_seed == 0


def test_options_travel_as_json_and_refuse_unknown_fields() -> None:
    options = GradeOptions(suite="full", seed=7, backend="process", budget_s=60, submitted_at="2019-04-11T20:28:38.073862-07:00")
    assert GradeOptions.model_validate_json(options.model_dump_json()) == options
    with pytest.raises(ValueError, match="budget"):
        GradeOptions(budget=60)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="unknown backend 'bwrap'"):
        GradeOptions(backend="bwrap")


def test_the_library_returns_a_report_for_what_a_student_can_hand_in(tmp_path: Path) -> None:
    """A binary file named .ipynb: a report with status error and a one-line reason, no exception."""
    bad = tmp_path / "hw.ipynb"
    bad.write_bytes(b"\x00\xff" * 100)
    report = vitgrade.grade(bad, GradeOptions(backend="process"))
    assert report.status == "error" and report.error and "\n" not in report.error and report.score == 0


def test_one_version_everywhere() -> None:
    declared = vitgrade.__version__
    assert version("vitgrade") == declared
    assert "version" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dynamic"]
    done = subprocess.run([sys.executable, "-m", "vitgrade", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip().endswith(declared)


def test_pins_have_one_source() -> None:
    """Exact pins live in constraints.txt; the Dockerfile and the setup script use it."""
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line)
    assert {"torch", "torchvision", "einops"} <= set(pins)
    for name in ("torch", "torchvision", "einops"):
        assert version(name) == pins[name], f"the venv has {name} {version(name)}, constraints.txt pins {pins[name]}"
    for path in ("Dockerfile", "scripts/setup.sh", "pyproject.toml", "README.md"):
        assert f"torch=={pins['torch']}" not in (ROOT / path).read_text(), f"{path} writes the torch pin again"
    assert "constraints.txt" in (ROOT / "Dockerfile").read_text() and "constraints.txt" in (ROOT / "scripts/setup.sh").read_text()


def test_report_json_has_the_options_budget(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = run_vitgrade("grade", str(tmp_path / "missing.py"), "--json", str(out), "--budget", "77")
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["status"] == "error"
