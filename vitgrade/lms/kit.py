"""The student kit: the template notebook, vitgrade's wheel (engine + public suite), the public
suite for reading, and instructions. It never holds the reference or a hidden test.

vitgrade is not on any package index, so every instruction installs the wheel the kit carries,
or the address where the instructor hosts that same file (`--wheel-url`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..contract import Contract

TEMPLATE = "HW4-VIT-Student.ipynb"
TEMPLATE_INSTALL = "%pip install -q vitgrade-*.whl"

INSTRUCTIONS = """# HW4 Vision Transformer: checking your notebook

The checker is `{wheel}` (in this kit{hosted}). It needs Python 3.11 and torch 2.13 or 2.14,
and installs without replacing the torch you have.

**In the notebook** (Colab, Jupyter, VS Code): {where} then run the last cell of
`{template}`:

    {install}
    import vitgrade
    vitgrade.check_notebook(contract="{contract}")

In Colab it checks the notebook as it is on screen; in Jupyter and VS Code, save first.

**From a terminal:**

    pip install {source}
    vitgrade check --contract {contract} {template}

The check runs only your imports, classes, functions and hyper-parameter assignments, in a
separate process; it never runs your data loading or training cells. On your own computer that
process has no sandbox (it is your own code), and the output says so. The public tests are in
`public_suite/` here for reading; the hidden suite that grades your submission tests the same
contract with fresh inputs.

Hand in `<netid>.zip` with `hw4_impl.ipynb` and `hw4_theory.pdf`.
"""


def build_wheel(course: Path, folder: Path) -> Path:
    """vitgrade's wheel, built from the course checkout (engine and public suite only)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(folder), str(course)],
        check=True,
        capture_output=True,
    )
    return next(folder.glob("vitgrade-*.whl"))


def template(course: Path, contract: Contract) -> Path:
    """The contract's template: the course's notebook as handed out, or vitgrade's edition."""
    folder = course / "student_template"
    return folder / "course" / TEMPLATE if contract == "course" else folder / TEMPLATE


def template_with(install: str, template: Path) -> str:
    """The template, its self-check cell installing from INSTALL (the kit's wheel or a URL)."""
    text = template.read_text()
    if install == TEMPLATE_INSTALL:
        return text
    notebook = json.loads(text)
    for cell in notebook["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if TEMPLATE_INSTALL in source:
            cell["source"] = source.replace(TEMPLATE_INSTALL, install)
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def build(course: Path, out: Path, wheel_url: str | None, contract: Contract) -> list[str]:
    """Write the kit zip for CONTRACT; returns its member names. WHEEL_URL: where the instructor
    hosts the same wheel (the kit still carries it)."""
    names = []
    public = course / "test_cases" / "public"
    with tempfile.TemporaryDirectory() as scratch, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        wheel = build_wheel(course, Path(scratch))
        source = wheel_url or wheel.name
        install = f"%pip install -q {source}" if wheel_url else TEMPLATE_INSTALL
        where = (
            "nothing to upload;"
            if wheel_url
            else f"put `{wheel.name}` next to your notebook (in Colab: upload it in the Files panel),"
        )
        hosted = f", also at {wheel_url}" if wheel_url else ""
        readme = INSTRUCTIONS.format(
            wheel=wheel.name, hosted=hosted, where=where, template=TEMPLATE, install=install, source=source, contract=contract
        )
        members = [("README.md", readme), (TEMPLATE, template_with(install, template(course, contract)))]
        for name, text in members:
            archive.writestr(name, text)
            names.append(name)
        archive.write(wheel, wheel.name)
        names.append(wheel.name)
        for file in sorted(p for p in public.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            name = "public_suite/" + file.relative_to(public).as_posix()
            archive.write(file, name)
            names.append(name)
    return names
