"""Build the bundled example notebooks from the template: one solved with the reference, one blank.

    python examples/build.py OUT_DIR

The solved notebook is made on demand rather than committed, so the solution lives in one place
(reference/vit.py) and never ships by accident.
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "student_template" / "HW4-VIT-Student.ipynb"
REFERENCE = ROOT / "reference" / "vit.py"


def definitions(source: str) -> dict[str, str]:
    """Top-level function and class sources of a module, by name."""
    tree = ast.parse(source)
    return {
        node.name: ast.get_source_segment(source, node) or ""
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }


def fill(notebook: nbformat.NotebookNode, sources: dict[str, str]) -> nbformat.NotebookNode:
    """Replace each template cell that defines one of `sources` by that definition."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        names = [n for n in definitions(cell.source) if n in sources] if "raise NotImplementedError" in cell.source else []
        if names:
            cell.source = "\n\n\n".join(sources[n] for n in names)
    return notebook


def solved_notebook() -> nbformat.NotebookNode:
    return fill(nbformat.read(TEMPLATE, as_version=4), definitions(REFERENCE.read_text()))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(solved_notebook(), out / "solved.ipynb")
    shutil.copyfile(TEMPLATE, out / "blank.ipynb")
    print(f"wrote {out / 'solved.ipynb'} and {out / 'blank.ipynb'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/out"))
