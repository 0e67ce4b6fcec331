"""Find every student's submission in a folder, in the layouts instructors actually have:

- a flat folder of `<netid>.zip` / `<netid>.ipynb` / `<netid>.py` files;
- one subfolder per student (`<netid>/...`);
- Gradescope's "Export Submissions" layout (`submission_metadata.yml` beside `submission_<id>/`
  folders), where the student id and the submission time come from the metadata.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

SUFFIXES = (".zip", ".ipynb", ".py")
PREFERRED = ("hw4_impl.ipynb",)


@dataclass(frozen=True)
class Entry:
    student: str
    path: Path
    submitted_at: datetime | None = None


def pick(folder: Path) -> Path | None:
    """The submission file inside one student's folder: the course notebook, a zip, a notebook."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
    for name in PREFERRED:
        for file in files:
            if file.name == name:
                return file
    for suffix in SUFFIXES:
        for file in files:
            if file.suffix.lower() == suffix:
                return file
    return None


def gradescope_export(root: Path) -> list[Entry]:
    metadata = yaml.safe_load((root / "submission_metadata.yml").read_text()) or {}
    entries = []
    for key, info in sorted(metadata.items()):
        folder = root / key
        chosen = pick(folder) if folder.is_dir() else None
        if chosen is None:
            continue
        submitters = info.get(":submitters") or [{}]
        first = submitters[0]
        student = str(first.get(":sid") or str(first.get(":email", "")).split("@")[0] or first.get(":name") or key)
        created = info.get(":created_at")
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        entries.append(Entry(student, chosen, created if isinstance(created, datetime) else None))
    return entries


def discover(root: Path, times: Path | None = None) -> list[Entry]:
    """Every submission under root, by student id, with submission times where known.
    times: an optional CSV with columns `student,submitted_at` (ISO 8601), which wins."""
    root = Path(root)
    exports = sorted(root.rglob("submission_metadata.yml"))
    if exports:
        entries = [e for meta in exports for e in gradescope_export(meta.parent)]
    else:
        entries = []
        for item in sorted(root.iterdir()):
            if item.is_file() and item.suffix.lower() in SUFFIXES:
                entries.append(Entry(item.stem, item))
            elif item.is_dir() and (chosen := pick(item)) is not None:
                entries.append(Entry(item.name, chosen))
    if times is not None:
        with times.open(newline="") as fh:
            stamps = {row["student"]: datetime.fromisoformat(row["submitted_at"]) for row in csv.DictReader(fh)}
        entries = [Entry(e.student, e.path, stamps.get(e.student, e.submitted_at)) for e in entries]
    seen: set[str] = set()
    for entry in entries:
        if entry.student in seen:
            raise ValueError(f"two submissions for student {entry.student}")
        seen.add(entry.student)
    return entries
