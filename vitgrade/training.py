"""The grader's own training loop, run by the runner on a student's programs, by `vitgrade
calibrate` on the reference (and by the worker only for code an instructor lets run unverified),
so all train exactly the same way."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


def train(
    model: Any,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> dict[str, Any]:
    """The grader's own training loop (seeded AdamW, fixed step budget) on the student's model."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    losses = []
    for _ in range(steps):
        batch = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"losses": torch.tensor(losses)}


@torch.no_grad()
def predict(model: Any, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Class predictions only: the labels stay on the trusted side."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]).argmax(-1) for i in range(0, images.shape[0], batch_size)])
