"""Regenerate the public suite's fixtures from the reference: `python test_cases/build_public_fixtures.py`.

The data itself is defined in public/fixture_data.py (seed 0 here); the instructor's grade
computes the same cases afresh from its own seed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent / "public"
REFERENCE = HERE.parents[1] / "reference" / "vit.py"
SEED = 0


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build() -> dict[str, dict[str, torch.Tensor]]:
    """The fixtures as they should be stored."""
    data = load("fixture_data", HERE / "fixture_data.py")
    return data.build(load("vitgrade_reference", REFERENCE), SEED)


def main() -> None:
    (HERE / "fixtures").mkdir(exist_ok=True)
    for name, tensors in build().items():
        save_file({k: t.contiguous() for k, t in tensors.items()}, HERE / "fixtures" / f"{name}.safetensors")
        print(f"wrote fixtures/{name}.safetensors ({len(tensors)} tensors)")


if __name__ == "__main__":
    sys.exit(main())
