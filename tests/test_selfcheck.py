"""The student's self-check from inside a running notebook: a real Jupyter kernel, and Colab's
notebook request through a stand-in for google.colab._message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "examples"))
from build import TEMPLATE, solved_notebook  # noqa: E402

# Cells the test skips, as a student's Colab session would not run them here: the data
# loaders and the training loop (they need CIFAR and hours); everything else runs for real.
SKIPPED_MARKERS = ("datasets.CIFAR100", "transforms.Compose", "optimizer = ", "for epoch in range")

COLAB_STAND_IN = '''"""Stands in for Colab's frontend: answers the request Colab documents for the open notebook."""
import json, os

REQUESTS = []


def blocking_request(request_type, request="", timeout_sec=5, parent=None):
    REQUESTS.append(request_type)
    if request_type != "get_ipynb":
        raise ValueError(request_type)
    with open(os.environ["STAND_IN_NOTEBOOK"]) as fh:
        return {"ipynb": json.load(fh)}
'''


def runnable(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with the data and training cells emptied and the pip cell line dropped
    (vitgrade is already installed in this environment)."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and any(marker in cell.source for marker in SKIPPED_MARKERS):
            cell.source = "# skipped by the test: data and training"
        elif cell.cell_type == "code" and "%pip install" in cell.source:
            cell.source = "\n".join(line for line in cell.source.splitlines() if "%pip" not in line)
    return notebook


def test_a_real_kernel_runs_the_solved_template_and_the_check_cell_prints_the_table(tmp_path: Path) -> None:
    from nbclient import NotebookClient

    path = tmp_path / "HW4-VIT-Student.ipynb"
    notebook = runnable(solved_notebook())
    nbformat.write(notebook, path)
    # A kernel spec for this interpreter (where vitgrade is installed), found through JUPYTER_PATH.
    spec = tmp_path / "jupyter" / "kernels" / "vitgrade-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "vitgrade test", "language": "python"}))
    # Jupyter Server tells each kernel its notebook's path in JPY_SESSION_NAME; so does this test.
    saved = dict(os.environ)
    os.environ.update(JPY_SESSION_NAME=str(path), JUPYTER_PATH=str(tmp_path / "jupyter"))
    try:
        client = NotebookClient(notebook, timeout=600, kernel_name="vitgrade-test", resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    last = notebook.cells[-1]
    text = re.sub(r"\x1b\[[0-9;]*m", "", "".join(o.get("text", "") for o in last.outputs if o.output_type == "stream"))
    assert "Total: 18 / 18" in text, text[-3000:]
    assert "Checked: HW4-VIT-Student.ipynb" in text and "without a sandbox" in text
    assert "sdpa" in text and "mhsa" in text  # the table itself, by unit


def colab_run(tmp_path: Path, notebook: nbformat.NotebookNode) -> subprocess.CompletedProcess[str]:
    stand_in = tmp_path / "stand_in"
    (stand_in / "google" / "colab").mkdir(parents=True)
    (stand_in / "google" / "__init__.py").write_text("")
    (stand_in / "google" / "colab" / "__init__.py").write_text("")
    (stand_in / "google" / "colab" / "_message.py").write_text(COLAB_STAND_IN)
    frontend = tmp_path / "frontend.ipynb"  # what the frontend holds: no file of it in the working folder
    nbformat.write(notebook, frontend)
    code = (
        "import google.colab, vitgrade\n"
        "from google.colab import _message\n"
        "report = vitgrade.check_notebook()\n"
        "print('REQUESTS', _message.REQUESTS, 'SCORE', report['score'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(stand_in), "STAND_IN_NOTEBOOK": str(frontend)}
    work = tmp_path / "content"
    work.mkdir()
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=work, env=env, timeout=600)


def test_colab_sends_the_notebook_and_the_check_grades_it(tmp_path: Path) -> None:
    done = colab_run(tmp_path, solved_notebook())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REQUESTS ['get_ipynb'] SCORE 18.0" in done.stdout
    assert "Checked: HW4-VIT-Student.ipynb (Colab)" in done.stdout and "Total: 18 / 18" in done.stdout


def test_colab_blank_template_scores_zero(tmp_path: Path) -> None:
    done = colab_run(tmp_path, nbformat.read(TEMPLATE, as_version=4))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SCORE 0.0" in done.stdout


def test_outside_a_notebook_it_says_what_to_pass(tmp_path: Path) -> None:
    code = "import vitgrade\ntry:\n    vitgrade.check_notebook()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    env = {k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert "NotebookNotFound" in done.stdout and "check_notebook('HW4-VIT-Student.ipynb')" in done.stdout


@pytest.mark.parametrize("kind", ["solved", "blank"])
def test_check_from_a_terminal_never_claims_a_sandbox_it_has_not(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.ipynb"
    nbformat.write(solved_notebook() if kind == "solved" else nbformat.read(TEMPLATE, as_version=4), path)
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "vitgrade", "check", str(path), "--backend", "process", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "your code ran in a plain separate process, without a sandbox" in done.stdout
    assert json.loads(out.read_text())["score"] == (18 if kind == "solved" else 0)
