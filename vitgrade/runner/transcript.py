"""A grade's worker transcript: what each instruction got back, so that a changed suite can be
re-run over a submission without running its code again (`vitgrade grade --replay DIR`).

Every reply is stored under a key made from the instruction. An export is keyed by the shapes
and dtypes of its inputs, not their values: a program is specialised to shapes, and the runner
feeds it its own inputs and weights, so a suite that draws new inputs of the same shapes replays
it. A weight load is keyed by names and shapes (the worker's strict load checks only those).
Everything else is keyed by its full content. The file is a sequence of the protocol's frames
(JSON headers and safetensors payloads, never pickle), written by the trusted side from replies
that it had already checked; a replay checks them again.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.utils._pytree as pytree

from ..protocol import MAX_BLOB, ChannelClosed, FrameReader, decode, encode, write_frame

SHAPES_ONLY = {"export", "set_state"}
SUFFIX = ".transcript"


def signature(value: Any, contents: bool = False) -> str:
    """A value's structure, its tensors' shapes and dtypes (with `contents`, a hash of their bytes
    too) and its other leaves: what a program is specialised to, and what an answer is keyed by."""
    leaves, spec = pytree.tree_flatten(value)
    parts = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            part = f"T{tuple(leaf.shape)}{leaf.dtype}"
            if contents:
                part += hashlib.sha256(leaf.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
            parts.append(part)
        else:
            parts.append(repr(leaf))
    return f"{spec}|{'|'.join(parts)}"


def key(op: str, target: Any, fields: dict[str, Any]) -> str:
    """What identifies an instruction's answer (see the module docstring)."""
    return hashlib.sha256(f"{op}|{target!r}|{signature(fields, op not in SHAPES_ONLY)}".encode()).hexdigest()


class Transcript:
    """Outcomes by key, in the order they came. An outcome is {"reply": decoded reply} or
    {"failure": report status, "message": ...} for a worker that timed out, crashed or ran out of memory."""

    def __init__(self) -> None:
        self.ready: dict[str, Any] | None = None
        self.outcomes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.served: dict[str, int] = defaultdict(int)

    def add(self, k: str, outcome: dict[str, Any]) -> None:
        self.outcomes[k].append(outcome)

    def next(self, k: str) -> dict[str, Any] | None:
        """The recorded outcomes of k in turn (the same build twice got two handles), then again from the first."""
        recorded = self.outcomes.get(k)
        if not recorded:
            return None
        index = self.served[k] % len(recorded)
        self.served[k] += 1
        return recorded[index]

    def save(self, path: Path) -> None:
        """Write atomically, keeping what an earlier grade of the same submission recorded under other keys."""
        if path.is_file():
            earlier = load(path)
            for k, outcomes in earlier.outcomes.items():
                self.outcomes.setdefault(k, outcomes)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_frame(fd, *encode({"ready": self.ready}))
            for k, outcomes in self.outcomes.items():
                for outcome in outcomes:
                    write_frame(fd, *encode({"key": k, **outcome}))
        finally:
            os.close(fd)
        os.replace(partial, path)


def load(path: Path) -> Transcript:
    transcript = Transcript()
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = FrameReader(fd, max_blob=MAX_BLOB)
        header, tensors = reader.read()
        transcript.ready = decode(header, tensors)["ready"]
        while True:
            try:
                header, tensors = reader.read()
            except ChannelClosed:
                return transcript
            entry = decode(header, tensors)
            transcript.add(entry.pop("key"), entry)
    finally:
        os.close(fd)
