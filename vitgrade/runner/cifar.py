"""CIFAR-10/100 from a local folder in torchvision's layout (never a download).

The instructor's data folder is trusted, so its python-pickle batches are read here directly
(torchvision's own loader would also insist on the original files' checksums).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}, "labels"),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels"),
}
MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


def load(root: Path, which: str, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalized images (N, 3, 32, 32) float32, labels (N,) int64) of one split."""
    folder, files, label_key = LAYOUTS[which]
    images, labels = [], []
    for name in files[split]:
        with (Path(root) / folder / name).open("rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        images.append(torch.as_tensor(batch["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
        labels.append(torch.as_tensor(batch[label_key], dtype=torch.int64))
    x, y = torch.cat(images)[:limit], torch.cat(labels)[:limit]
    mean, std = torch.tensor(MEAN[which]).view(1, 3, 1, 1), torch.tensor(STD[which]).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std, y
