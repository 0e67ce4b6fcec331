"""What one grade judged: its programs by hash (stored for a later re-run), where it had to
take the worker's word, and the pictures its cases recorded. Kept free of torch so that the engine can make one before it imports torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..report.models import Figures

if TYPE_CHECKING:
    from ..program import Program


@dataclass
class Judging:
    """One grade's record of its programs: which were judged (by hash, for the report and a later
    re-run), where they are stored, and which calls fell back to the worker's word."""

    allow_unverified: bool = False  # the instructor's opt-in for code that cannot be captured
    store: Path | None = None
    programs: dict[str, str] = field(default_factory=dict)  # sha256 -> what it is
    unverified: set[str] = field(default_factory=set)  # labels answered by the worker
    figures: Figures = field(default_factory=Figures)  # pictures the cases recorded (figures.py)

    def record(self, program: Program, what: str) -> None:
        digest, graph, tensors = program.files()
        self.programs.setdefault(digest, what)
        if self.store is not None and not (self.store / f"{digest}.json").exists():
            self.store.mkdir(parents=True, exist_ok=True)
            (self.store / f"{digest}.safetensors").write_bytes(tensors)
            (self.store / f"{digest}.json").write_bytes(graph)
