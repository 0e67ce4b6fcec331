"""The student kit: the template notebook, the public suite with its fixtures, and instructions.
It never holds the reference or a hidden test."""

from __future__ import annotations

import zipfile
from pathlib import Path

INSTRUCTIONS = """# HW4 Vision Transformer: checking your notebook

1. Install the checker (Python 3.11): `pip install vitgrade`
2. Fill in `HW4-VIT-Student.ipynb` and save it.
3. Run the public tests: `vitgrade check HW4-VIT-Student.ipynb`

The checker runs only your imports, classes, functions and hyper-parameter assignments, in a
separate sandboxed process; it never runs your data loading or training cells. `vitgrade check`
uses the public suite bundled with vitgrade (a copy is in `public_suite/` here for reading).
The hidden suite that grades your submission tests the same contract with fresh inputs.

Hand in `<netid>.zip` with `hw4_impl.ipynb` and `hw4_theory.pdf`.
"""


def build(course: Path, out: Path) -> list[str]:
    names = []
    public = course / "test_cases" / "public"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.md", INSTRUCTIONS)
        names.append("README.md")
        template = course / "student_template" / "HW4-VIT-Student.ipynb"
        archive.write(template, template.name)
        names.append(template.name)
        for file in sorted(p for p in public.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            name = "public_suite/" + file.relative_to(public).as_posix()
            archive.write(file, name)
            names.append(name)
    return names
