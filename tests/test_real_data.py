"""Optional real data: a local CIFAR folder in torchvision's layout (generated here) and a zip's
best_model.pth, loaded weights-only inside the worker into the student's own model."""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch

from tests.conftest import ROOT, grade
from tests.corpus.mutants import REFERENCE


def fake_cifar(root: Path, count: int = 400) -> Path:
    rng = np.random.default_rng(0)
    batch = lambda key, classes: {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), key: rng.integers(0, classes, count).tolist()}  # noqa: E731
    ten = root / "cifar-10-batches-py"
    ten.mkdir(parents=True)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (ten / name).write_bytes(pickle.dumps(batch("labels", 10)))
    hundred = root / "cifar-100-python"
    hundred.mkdir()
    for name in ("train", "test"):
        (hundred / name).write_bytes(pickle.dumps(batch("fine_labels", 100)))
    return root


def checkpoint() -> bytes:
    """A state_dict of the reference ViT with the template's hyper-parameters."""
    spec = importlib.util.spec_from_file_location("vitgrade_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.VisionTransformer(32, 4, 3, 256, 8, 512, 6, 100, 0.1)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def test_best_model_and_cifar_training_are_reported(tmp_path: Path, examples: Path) -> None:
    data = fake_cifar(tmp_path / "data")
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(ROOT / "test_cases" / "hidden" / "test_real_data_hidden.py", suite)
    hidden = (ROOT / "test_cases" / "hidden" / "suite.toml").read_text()
    settings = hidden[hidden.index("[train]") : hidden.index("[data]")]
    (suite / "suite.toml").write_text(
        f'name = "real-data"\nversion = "1"\nreference = {json.dumps(str(REFERENCE))}\n\n{settings}\n'
        f"[data]\ncifar100_root = {json.dumps(str(data))}\ncifar10_root = {json.dumps(str(data))}\n"
    )
    submission = tmp_path / "ab1234.zip"
    with zipfile.ZipFile(submission, "w") as archive:
        archive.write(examples / "solved.ipynb", "hw4_impl.ipynb")
        archive.writestr("hw4_theory.pdf", b"%PDF-1.4")
        archive.writestr("best_model.pth", checkpoint())
    report = grade(submission, tmp_path / "r.json", "--suite", str(suite), "--seed", "3")
    by_unit = {t["unit"]: t for t in report["tests"]}
    assert by_unit["vit"]["status"] == "passed" and "CIFAR-100 test images" in by_unit["vit"]["output"], by_unit["vit"]
    assert by_unit["train"]["status"] == "passed" and "CIFAR-10 test images" in by_unit["train"]["output"], by_unit["train"]
    assert report["max_score"] == 0, "informational by default"
