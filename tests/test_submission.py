"""Loading submissions: what the extraction keeps, drops and reports, and what it refuses."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.notebooks import write_course_zip, write_nbformat_40
from vitgrade.submission import MAX_CELL_BYTES, SubmissionError, load

ROOT = Path(__file__).resolve().parents[1]
STYLE = (ROOT / "tests" / "corpus" / "correct" / "chunk_colab.py").read_text()


def notebook(path: Path, *sources: str) -> Path:
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)
    return path


def kept(extracted) -> str:
    return "\n".join(c.source for c in extracted.chunks)


def test_keeps_definitions_imports_and_literals_drops_the_rest(tmp_path: Path) -> None:
    path = notebook(
        tmp_path / "a.ipynb",
        "import torch\nimport torch.nn as nn",
        'device = torch.device("cuda" if torch.cuda.is_available() else "cpu")',
        "embed_dim = 64\nheads = embed_dim // 8\nname = 'vit'\nmodel = nn.Linear(3, 4)",
        "def f(x):\n    return x + 1",
        "for epoch in range(100):\n    print(epoch)",
        "!pip install timm\n%matplotlib inline\nclass A:\n    pass",
    )
    out = load(path)
    code = kept(out)
    for wanted in ("import torch", "torch.device", "embed_dim = 64", "heads = embed_dim // 8", "def f", "class A"):
        assert wanted in code
    for dropped in ("nn.Linear(3, 4)", "for epoch", "pip install", "matplotlib"):
        assert dropped not in code
    reasons = {d.where: d.reason for d in out.diagnostics}
    assert "computed value" in reasons["cell 3, line 4"]
    assert "for statement" in reasons["cell 5, line 1"]
    assert reasons["cell 6"].startswith("2 shell/magic")
    # line numbers still match the student's cell, so messages point at the right line
    assert out.chunks[-1].source.split("\n")[2] == "class A:"


def test_a_cell_that_does_not_parse_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    out = load(notebook(tmp_path / "b.ipynb", "image_size = # TODO", "def g():\n    return 2"))
    assert "def g" in kept(out)
    assert any(d.where == "cell 1" and d.action == "skipped" and "does not parse" in d.reason for d in out.diagnostics)


def test_cell_magic_and_giant_cell_are_skipped(tmp_path: Path) -> None:
    giant = "x = 1\n" + "# " + "a" * MAX_CELL_BYTES
    out = load(notebook(tmp_path / "c.ipynb", "%%time\nimport os", giant, "y = 2"))
    assert kept(out).strip() == "y = 2"
    assert [d.where for d in out.diagnostics] == ["cell 1", "cell 2"]


def test_py_and_old_notebook_formats(tmp_path: Path) -> None:
    py = tmp_path / "s.py"
    py.write_text(STYLE)
    assert load(py).kind == "py" and "class VisionTransformer" in kept(load(py))
    old = load(write_nbformat_40(STYLE, tmp_path / "old.ipynb"))
    assert old.kind == "ipynb" and "class MultiHeadSelfAttention" in kept(old)


def test_course_zip_and_other_names(tmp_path: Path) -> None:
    nb = notebook(tmp_path / "n.ipynb", "def h():\n    return 3")
    good = load(write_course_zip(nb, tmp_path / "ab123.zip", extra={"best_model.pth": b"weights"}))
    assert good.kind == "zip" and "def h" in kept(good) and good.checkpoint == b"weights"
    renamed = load(write_course_zip(nb, tmp_path / "cd456.zip", name="my_homework.ipynb", extra={"notes.txt": b"x"}))
    assert "def h" in kept(renamed)
    notes = [d.reason for d in renamed.diagnostics]
    assert any("expected hw4_impl.ipynb" in n and "my_homework.ipynb" in n for n in notes)
    assert any("extra file in the zip: notes.txt" in n for n in notes)


def symlink_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("hw4_impl.ipynb")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return path


def traversal_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("../../evil.ipynb", "{}")
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: (p / "x.ipynb").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary") and p / "x.ipynb", "not UTF-8"),
        (lambda p: (p / "y.ipynb").write_text("{not json") and p / "y.ipynb", "not a readable Jupyter notebook"),
        (lambda p: (p / "z.ipynb").write_text(json.dumps({"cells": 3})) and p / "z.ipynb", "not a readable Jupyter notebook"),
        (lambda p: (p / "w.zip").write_bytes(b"PK\x03\x04garbage") and p / "w.zip", "not a valid zip"),
        (lambda p: symlink_zip(p / "link.zip"), "symbolic link"),
        (lambda p: traversal_zip(p / "trav.zip"), "outside the archive"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "expected a .ipynb"),
    ],
)
def test_bad_input_is_refused_with_one_line(tmp_path: Path, make, reason: str) -> None:
    with pytest.raises(SubmissionError) as err:
        load(make(tmp_path))
    assert reason in str(err.value) and "\n" not in str(err.value)


def test_decorated_definitions_keep_their_decorators(tmp_path: Path) -> None:
    source = "from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\nclass Config:\n    dim: int = 8\n"
    out = load(notebook(tmp_path / "d.ipynb", source, "@torch.no_grad()\ndef evaluate(model):\n    return model"))
    code = kept(out)
    assert "@dataclass(frozen=True)\nclass Config" in code and "@torch.no_grad()\ndef evaluate" in code


def test_a_decorated_config_used_by_the_model_is_graded(tmp_path: Path) -> None:
    """The reference with its attention scale read from a @dataclass config: full public marks."""
    from tests.conftest import grade
    from tests.corpus.mutants import REFERENCE

    source = REFERENCE.read_text().replace("import math\n", "import math\nfrom dataclasses import dataclass\n\n\n"
                                           "@dataclass(frozen=True)\nclass Scale:\n    power: float = 0.5\n", 1)  # fmt: skip
    source = source.replace("/ math.sqrt(d_k)", "/ d_k ** Scale(power=0.5).power", 1)
    path = tmp_path / "dataclass_config.py"
    path.write_text(source)
    assert grade(path, tmp_path / "r.json")["score"] == 18


def test_only_hyper_parameters_among_assignments(tmp_path: Path) -> None:
    """Arithmetic on hyper-parameters is kept; on names the training loop changes it is not run."""
    evaluation = (
        "correct = 0\ntotal = 0\nfor images, labels in test_loader:\n    correct += 1\n    total += 1\n"
        "test_acc = 100 * correct / total\nscale = 2.0 * -1"
    )
    out = load(notebook(tmp_path / "e.ipynb", "embed_dim = 64\nheads = embed_dim // 8", evaluation))
    code = kept(out)
    assert "heads = embed_dim // 8" in code and "scale = 2.0 * -1" in code
    assert "test_acc" not in code
    reasons = {d.where: d.reason for d in out.diagnostics}
    assert "computed value" in reasons["cell 2, line 6"]


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_duplicate_and_nested_notebooks_in_a_zip(tmp_path: Path) -> None:
    """Two hw4_impl.ipynb (in folders, or differing in case) or a zip in the zip: the graded member
    is chosen the same way whatever the zip's order, named, and the rest is listed as ignored."""
    first = notebook(tmp_path / "1.ipynb", "def top():\n    return 1").read_bytes()
    second = notebook(tmp_path / "2.ipynb", "def deeper():\n    return 2").read_bytes()
    third = notebook(tmp_path / "3.ipynb", "def upper():\n    return 3").read_bytes()
    for order in ([("hw4/old/hw4_impl.ipynb", second), ("HW4_IMPL.ipynb", third), ("hw4_impl.ipynb", first)],
                  [("hw4_impl.ipynb", first), ("HW4_IMPL.ipynb", third), ("hw4/old/hw4_impl.ipynb", second)]):  # fmt: skip
        out = load(zip_of(tmp_path / "dup.zip", dict(order)))
        assert out.member == "hw4_impl.ipynb" and "def top" in kept(out) and "def deeper" not in kept(out)
        assert any("graded hw4_impl.ipynb, ignored hw4/old/hw4_impl.ipynb, HW4_IMPL.ipynb" in d.reason for d in out.diagnostics)
    inner = zip_of(tmp_path / "inner.zip", {"hw4_impl.ipynb": first}).read_bytes()
    with pytest.raises(SubmissionError, match="no notebook"):
        load(zip_of(tmp_path / "nested_only.zip", {"inner.zip": inner}))
    out = load(zip_of(tmp_path / "nested.zip", {"inner.zip": inner, "a/hw4_impl.ipynb": second}))
    assert out.member == "a/hw4_impl.ipynb"
    assert any("inner.zip is a zip inside the zip: it was not opened" in d.reason for d in out.diagnostics)


def test_the_report_names_the_graded_member(tmp_path: Path) -> None:
    from tests.conftest import grade

    source = notebook(tmp_path / "n.ipynb", "def h():\n    return 3").read_bytes()
    path = zip_of(tmp_path / "ab1234.zip", {"sub/hw4_impl.ipynb": source, "hw4_impl.ipynb": source})
    report = grade(path, tmp_path / "r.json")
    assert report["submission"]["member"] == "hw4_impl.ipynb"
