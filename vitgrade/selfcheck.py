"""The student's self-check from inside a running notebook: `vitgrade.check_notebook()`.

It finds the notebook as it is now (Colab: asked from the Colab frontend, the way Otter-Grader
does; VS Code and Jupyter: the notebook's file, which the student saves first), runs the public
suite on it in a separate `vitgrade check` process, and prints the table in the notebook. On a
student's own machine the check runs their own code: it needs no root, no bubblewrap and no
Docker, so it uses a plain child process and says so rather than claim a sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

COLAB_TIMEOUT_S = 30.0
NO_SANDBOX = (
    "Your code ran in a separate process on this machine, without a sandbox: it is your own code on your own"
    " computer. The grade itself runs it isolated, on the public and the hidden tests."
)


class NotebookNotFound(Exception):
    """The running notebook's file could not be found; the message says what to pass instead."""


def _from_colab() -> dict[str, Any] | None:
    """The notebook as Colab's frontend holds it now (unsaved edits included), or None outside Colab."""
    if "google.colab" not in sys.modules:
        return None
    from google.colab import _message  # type: ignore[import-not-found]

    reply = _message.blocking_request("get_ipynb", request="", timeout_sec=COLAB_TIMEOUT_S)
    if not isinstance(reply, dict) or not isinstance(reply.get("ipynb"), dict):
        raise NotebookNotFound("Colab did not send the notebook; run the cell again, or pass the notebook's path")
    return reply["ipynb"]


def _from_kernel() -> Path | None:
    """The notebook file of this kernel: VS Code sets __vsc_ipynb_file__ in the user namespace, and
    Jupyter Server (2.x) gives each kernel its notebook's path as JPY_SESSION_NAME."""
    try:
        from IPython import get_ipython  # type: ignore[attr-defined]
    except ImportError:
        return None
    shell = get_ipython()
    vscode = shell.user_ns.get("__vsc_ipynb_file__") if shell is not None else None
    for candidate in (vscode, os.environ.get("JPY_SESSION_NAME")):
        if candidate and str(candidate).endswith(".ipynb") and Path(candidate).is_file():
            return Path(candidate)
    return None


def locate(path: str | os.PathLike[str] | None, scratch: Path) -> tuple[Path, str]:
    """(the notebook file to check, where it came from)."""
    if path is not None:
        chosen = Path(path)
        if not chosen.is_file():
            raise NotebookNotFound(f"{chosen} is not a file")
        return chosen, "file"
    notebook = _from_colab()
    if notebook is not None:
        target = scratch / "HW4-VIT-Student.ipynb"
        target.write_text(json.dumps(notebook))
        return target, "Colab"
    found = _from_kernel()
    if found is not None:
        return found, "its saved file: unsaved edits are not checked"
    raise NotebookNotFound(
        "could not find this notebook's file: save it, then call vitgrade.check_notebook('HW4-VIT-Student.ipynb')"
    )


def check_notebook(
    path: str | os.PathLike[str] | None = None, *, contract: str | None = None, timeout: float = 900.0
) -> dict[str, Any]:
    """Run the public tests on this notebook (or on PATH) under CONTRACT (course or edition; None:
    the suite's) and print the table; returns the report."""
    with tempfile.TemporaryDirectory(prefix="vitgrade-check-") as scratch:
        notebook, origin = locate(path, Path(scratch))
        out = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "vitgrade", "check", str(notebook), "--json", str(out), "--backend", "process"]
        command += ["--contract", contract] if contract else []
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        print(f"Checked: {notebook.name} ({origin})")
        print(done.stdout, end="")
        if done.returncode != 0 or not out.is_file():
            raise RuntimeError(f"the check could not run: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        print(NO_SANDBOX)
        report: dict[str, Any] = json.loads(out.read_text())
        return report
