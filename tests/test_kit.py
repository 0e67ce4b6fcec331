"""The student kit on a student's machine: its wheel installs beside the torch a student already
has (the torch 2.13.0 CPU wheel that lies on this machine's disk), without pulling another, and
`vitgrade check` then gives the solved template full public marks and the blank one 0."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import nbformat
import pytest

from .conftest import ROOT, vitgrade

sys.path.insert(0, str(ROOT / "examples"))
from build import TEMPLATE, solved_notebook  # noqa: E402

STUDENT_TORCH = "2.13.0"


def kit(tmp_path: Path, *extra: str) -> zipfile.ZipFile:
    out = tmp_path / "kit.zip"
    done = vitgrade("student-kit", "--out", str(out), *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    return zipfile.ZipFile(out)


def test_the_kit_installs_from_what_it_carries(tmp_path: Path) -> None:
    with kit(tmp_path) as archive:
        names = archive.namelist()
        readme = archive.read("README.md").decode()
        template = json.loads(archive.read("HW4-VIT-Student.ipynb"))
    wheel = next(n for n in names if n.startswith("vitgrade-") and n.endswith(".whl"))
    assert f"pip install {wheel}" in readme and "pip install vitgrade\n" not in readme
    cells = ["".join(c["source"]) for c in template["cells"]]
    assert any("%pip install -q vitgrade-*.whl" in c and 'vitgrade.check_notebook(contract="edition")' in c for c in cells)
    assert "vitgrade check --contract edition HW4-VIT-Student.ipynb" in readme


def test_a_course_kit_carries_the_courses_notebook(tmp_path: Path) -> None:
    with kit(tmp_path, "--contract", "course") as archive:
        readme = archive.read("README.md").decode()
        cells = ["".join(c["source"]) for c in json.loads(archive.read("HW4-VIT-Student.ipynb"))["cells"]]
    assert "vitgrade check --contract course HW4-VIT-Student.ipynb" in readme
    assert any('vitgrade.check_notebook(contract="course")' in c for c in cells)
    assert not any("def scaled_dot_product_attention" in c or "mask" in c for c in cells)
    assert any("def forward(self, x):" in c and "class MultiHeadSelfAttention" in c for c in cells)


def test_a_hosted_wheel_url_reaches_the_instructions_and_the_template(tmp_path: Path) -> None:
    url = "https://course.example.edu/hw4/vitgrade-0.1.0-py3-none-any.whl"
    with kit(tmp_path, "--wheel-url", url) as archive:
        readme = archive.read("README.md").decode()
        cells = ["".join(c["source"]) for c in json.loads(archive.read("HW4-VIT-Student.ipynb"))["cells"]]
    assert f"pip install {url}" in readme
    assert any(f"%pip install -q {url}" in c for c in cells) and not any("vitgrade-*.whl" in c for c in cells)


@pytest.fixture(scope="module")
def student_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A fresh venv with torch 2.13.0, then the kit's wheel. Returns (python, folder, pip's log)."""
    folder = tmp_path_factory.mktemp("student")
    with kit(folder) as archive:
        wheel = next(n for n in archive.namelist() if n.endswith(".whl"))
        archive.extract(wheel, folder)
    venv.create(folder / "venv", with_pip=True)
    python = folder / "venv" / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "-q", f"torch=={STUDENT_TORCH}"], check=True, capture_output=True, timeout=900)
    done = subprocess.run([*pip, str(folder / wheel)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return python, folder, done.stdout


def test_the_wheel_keeps_the_students_torch(student_venv: tuple[Path, Path, str]) -> None:
    python, _, log = student_venv
    assert "Collecting torch" not in log and "Downloading torch" not in log, log[-3000:]
    version = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith(STUDENT_TORCH)


@pytest.mark.parametrize("kind", ["solved", "blank"])
def test_check_with_the_students_torch(student_venv: tuple[Path, Path, str], kind: str) -> None:
    python, folder, _ = student_venv
    notebook = folder / f"{kind}.ipynb"
    nbformat.write(solved_notebook() if kind == "solved" else nbformat.read(TEMPLATE, as_version=4), notebook)
    out = folder / f"{kind}.json"
    # From a folder with no course checkout: the wheel's bundled public suite.
    done = subprocess.run([str(python), "-m", "vitgrade", "check", str(notebook), "--json", str(out)],
                          capture_output=True, text=True, cwd=folder, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["environment"]["torch"].startswith(STUDENT_TORCH)
    assert report["score"] == (18 if kind == "solved" else 0), [t["output"] for t in report["tests"] if t["status"] != "passed"]
