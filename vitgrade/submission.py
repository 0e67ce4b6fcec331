"""Loading a submission: .ipynb, .py or the course zip, turned into the code the worker may run.

Everything here is parsing, never execution: notebooks are read with nbformat, code with ast.
The extraction policy keeps imports, function and class definitions and simple literal
assignments (the hyper-parameters); it drops shell and magic lines and all other top-level code
(data loading, training, plotting), so the training cells never run.
"""

from __future__ import annotations

import ast
import hashlib
import io
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import nbformat

from .protocol import Diagnostic
from .text import safe_text

MAX_FILE_BYTES = 20 << 20  # a notebook or .py
MAX_ZIP_BYTES = 300 << 20  # a zip may carry best_model.pth
MAX_UNZIPPED_BYTES = 600 << 20
MAX_ZIP_ENTRIES = 200
MAX_CELL_BYTES = 1 << 20
DEFINED = re.compile(r"^[ \t]*(?:class|def)[ \t]+([A-Za-z_]\w*)", re.M)
COURSE_NOTEBOOK = "hw4_impl.ipynb"
ALLOWED_ZIP_FILES = {COURSE_NOTEBOOK, "hw4_theory.pdf"}

Kind = Literal["ipynb", "py", "zip"]


class SubmissionError(Exception):
    """The submission cannot be graded at all; the message is one line for the report."""


@dataclass
class Chunk:
    """Kept code of one cell (or file): dropped lines are blanked so line numbers still match."""

    where: str
    source: str


@dataclass
class Extracted:
    path: str
    kind: Kind
    sha256: str
    chunks: list[Chunk] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    zip_names: list[str] = field(default_factory=list)  # every file in a zip, for course policy
    member: str | None = None  # the zip member that was graded
    skipped_definitions: dict[str, str] = field(default_factory=dict)  # name -> the skipped cell, and why
    checkpoint: bytes | None = None  # best_model.pth from a zip, only ever loaded in the worker
    constants: set[str] = field(default_factory=set)  # names of the kept literal assignments so far

    def note(self, where: str, action: Literal["skipped", "failed", "note"], reason: str) -> None:
        self.diagnostics.append(Diagnostic(where=where[:200], action=action, reason=reason[:2000]))

    def skip_cell(self, where: str, source: str, reason: str) -> None:
        """A whole cell is not run: remember what it defines, so that a missing class is explained
        by this cell rather than reported as never written."""
        self.note(where, "skipped", reason)
        first = next((line.strip() for line in source.splitlines() if line.strip()), "")
        for name in DEFINED.findall(source[:MAX_CELL_BYTES]):
            self.skipped_definitions.setdefault(name, f"{where} (first line: `{first[:80]}`), which the grader skips: {reason}")

    def why_missing(self, name: str) -> str | None:
        """Why NAME is not defined when the student wrote it: the skipped cell that holds it."""
        found = self.skipped_definitions.get(name)
        return f"{name} is defined in {found}" if found else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(path: Path) -> Extracted:
    """Read and extract a submission, or raise SubmissionError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path.name}: no such file")
    suffix = path.suffix.lower()
    kinds: dict[str, Kind] = {".ipynb": "ipynb", ".py": "py", ".zip": "zip"}
    if suffix not in kinds:
        raise SubmissionError(f"{path.name}: expected a .ipynb, .py or .zip file")
    kind = kinds[suffix]
    size = path.stat().st_size
    limit = MAX_ZIP_BYTES if kind == "zip" else MAX_FILE_BYTES
    if size > limit:
        raise SubmissionError(f"{path.name} is {size} bytes, over the limit of {limit} bytes")
    out = Extracted(path=str(path), kind=kind, sha256=sha256_of(path))
    data = path.read_bytes()
    if kind == "zip":
        name, data = _from_zip(data, out)
        _extract_notebook_or_py(name, data, out)
    else:
        _extract_notebook_or_py(path.name, data, out)
    return out


def _from_zip(data: bytes, out: Extracted) -> tuple[str, bytes]:
    """Pick the notebook out of the course zip, refusing bombs, traversal and links."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise SubmissionError("the .zip file is not a valid zip archive") from None
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise SubmissionError(f"the zip holds {len(infos)} entries, over the limit of {MAX_ZIP_ENTRIES}")
    total = 0
    files: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = PurePosixPath(info.filename)
        if info.filename.startswith("/") or ".." in name.parts or "\\" in info.filename:
            raise SubmissionError(f"the zip entry {info.filename!r} points outside the archive")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise SubmissionError(f"the zip entry {info.filename!r} is a symbolic link")
        total += info.file_size
        if total > MAX_UNZIPPED_BYTES:
            raise SubmissionError(f"the zip unpacks to more than {MAX_UNZIPPED_BYTES} bytes")
        if info.is_dir() or name.parts[0] in {"__MACOSX"} or name.name.startswith("."):
            continue
        files[info.filename] = info
    out.zip_names = sorted(files)
    by_base = {PurePosixPath(n).name: n for n in files}
    for extra in sorted(set(by_base) - ALLOWED_ZIP_FILES - {"best_model.pth"}):
        out.note("zip", "note", f"extra file in the zip: {extra}")
    if "best_model.pth" in by_base:
        out.checkpoint = _read_member(archive, files[by_base["best_model.pth"]])
    for nested in sorted(n for n in files if n.lower().endswith(".zip")):
        out.note("zip", "note", f"{nested} is a zip inside the zip: it was not opened (put {COURSE_NOTEBOOK} at the top level)")
    named = sorted((n for n in files if PurePosixPath(n).name.lower() == COURSE_NOTEBOOK), key=_preference)
    if named:
        chosen = named[0]
        if len(named) > 1:
            others = ", ".join(named[1:])
            out.note("zip", "note", f"the zip holds {len(named)} files named {COURSE_NOTEBOOK}: graded {chosen}, ignored {others}")
    else:
        candidates = sorted(n for n in files if n.lower().endswith((".ipynb", ".py")))
        notebooks = [n for n in candidates if n.lower().endswith(".ipynb")] or candidates
        if not notebooks:
            raise SubmissionError(f"the zip holds no notebook (expected {COURSE_NOTEBOOK} at its top level)")
        chosen = notebooks[0]
        ignored = f"; ignored {', '.join(notebooks[1:])}" if len(notebooks) > 1 else ""
        out.note("zip", "note", f"expected {COURSE_NOTEBOOK} in the zip; graded {chosen} instead{ignored}")
    out.member = chosen
    return PurePosixPath(chosen).name, _read_member(archive, files[chosen])


def _preference(name: str) -> tuple[bool, int, str]:
    """Among several notebooks named like the course's: the exact name first, then the one
    nearest the top of the zip, then by path, so the choice never depends on the zip's order."""
    path = PurePosixPath(name)
    return path.name != COURSE_NOTEBOOK, len(path.parts), name


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with archive.open(info) as fh:
        data = fh.read(info.file_size + 1)  # the header may lie: never read past what it claims
    if len(data) > info.file_size:
        raise SubmissionError(f"the zip entry {info.filename!r} is larger than its header says")
    return data


def _extract_notebook_or_py(name: str, data: bytes, out: Extracted) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SubmissionError(f"{name} is not UTF-8 text") from None
    if name.lower().endswith(".py"):
        _extract_cell(text, "file", out)
        return
    try:
        notebook = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises JSON, validation and version errors alike
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SubmissionError(f"{name} is not a readable Jupyter notebook: {reason[:200]}") from None
    code_cells = [c for c in notebook.get("cells", []) if c.get("cell_type") == "code"]
    for number, cell in enumerate(code_cells, start=1):
        _extract_cell(safe_text(str(cell.get("source", ""))), f"cell {number}", out)


def _strip_magics(source: str) -> tuple[str, int]:
    """Blank IPython shell (!) and magic (%) lines; returns the source and how many were blanked."""
    lines = source.split("\n")
    blanked = 0
    for i, line in enumerate(lines):
        if line.lstrip().startswith(("!", "%")):
            lines[i] = ""
            blanked += 1
    return "\n".join(lines), blanked


def _extract_cell(source: str, where: str, out: Extracted) -> None:
    if len(source.encode()) > MAX_CELL_BYTES:
        out.skip_cell(where, source, f"the cell is larger than {MAX_CELL_BYTES} bytes")
        return
    if source.lstrip().startswith("%%"):
        out.skip_cell(where, source, f"cell magic {source.split()[0]} (the grader does not run cell magics)")
        return
    source, blanked = _strip_magics(source)
    if blanked:
        out.note(where, "skipped", f"{blanked} shell/magic line(s) (! or %)")
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        out.skip_cell(where, source, f"does not parse: {exc.msg} at line {exc.lineno}")
        return
    lines = source.split("\n")
    keep = [False] * (len(lines) + 1)
    drop_lines: set[int] = set()
    kept_nodes = []
    for node in tree.body:
        reason = _drop_reason(node, out.constants)
        # A decorated definition starts at its first decorator (`@dataclass`), not at `class`.
        decorators = getattr(node, "decorator_list", [])
        first = min([node.lineno, *(d.lineno for d in decorators)])
        span = range(first, (node.end_lineno or node.lineno) + 1)
        if reason is None:
            kept_nodes.append((node, span))
        else:
            drop_lines.update(span)
            # A name that code which is not run changes (`correct += ...` in the test loop) is
            # no constant: arithmetic on it later (`100 * correct / total`) is not run either.
            out.constants.difference_update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
            if reason:
                text = lines[node.lineno - 1].strip()
                out.note(f"{where}, line {node.lineno}", "skipped", f"{reason}: {text[:60]}")
    for node, span in kept_nodes:
        if drop_lines.intersection(span):
            out.note(f"{where}, line {node.lineno}", "skipped", "shares a line with top-level code that is not run")
            continue
        for line in span:
            keep[line] = True
    kept = "\n".join(text if keep[i] else "" for i, text in enumerate(lines, start=1))
    if kept.strip():
        out.chunks.append(Chunk(where=where, source=kept))


def _drop_reason(node: ast.stmt, constants: set[str]) -> str | None:
    """None keeps the statement; a string explains the drop ('' drops silently). Only imports,
    definitions and literal assignments are run."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return None
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if node.value is not None and all(_is_name_target(t) for t in targets) and _is_simple(node.value, constants):
            constants.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            return None
        return "not run (top-level assignment of a computed value)"
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return ""  # a bare string or number: nothing to run
    kind = type(node).__name__.lower()
    return f"not run (top-level {kind} statement)"


def _is_name_target(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in target.elts)


def _is_simple(expr: ast.expr, constants: set[str]) -> bool:
    """What the contract needs of top-level assignments: hyper-parameters. Literals, containers of
    them, arithmetic on literals and on hyper-parameters kept before (`heads = embed_dim // 8`), and
    the course's `device = torch.device(...)` line. Arithmetic on anything else (`test_acc = 100 *
    correct / total`, whose names the training loop computes) belongs to the training cells."""
    if isinstance(expr, ast.Call):
        return ast.unparse(expr.func) == "torch.device"
    return _is_constant(expr, constants)


def _is_constant(expr: ast.expr, constants: set[str]) -> bool:
    if isinstance(expr, ast.Constant):
        return True
    if isinstance(expr, ast.Name):
        return expr.id in constants
    if isinstance(expr, (ast.Tuple, ast.List, ast.Set)):
        return all(_is_constant(e, constants) for e in expr.elts)
    if isinstance(expr, ast.Dict):
        return all(k is not None and _is_constant(k, constants) for k in expr.keys) and all(
            _is_constant(v, constants) for v in expr.values
        )
    if isinstance(expr, ast.UnaryOp):
        return _is_constant(expr.operand, constants)
    if isinstance(expr, ast.BinOp):
        return _is_constant(expr.left, constants) and _is_constant(expr.right, constants)
    return False
