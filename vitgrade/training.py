"""The grader's own training loop, run by the runner on a student's programs, by `vitgrade
calibrate` on the reference (and by the worker only for code an instructor lets run unverified),
so all train exactly the same way."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn


class AdamW:
    """torch.optim.AdamW as it runs on the CPU (its single-tensor update), operation for operation,
    so a run matches torch's. torch's own optimizer imports torch._dynamo when it is made: about
    100 MB in the trusted process, for a loop that needs none of it."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:  # fmt: skip
        self.params = list(params)
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.state: dict[int, tuple[float, torch.Tensor, torch.Tensor]] = {}  # step, exp_avg, exp_avg_sq

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for i, param in enumerate(self.params):
            if param.grad is None:
                continue  # as torch: no update and no step counted for a parameter without a gradient
            step, exp_avg, exp_avg_sq = self.state.get(i) or (0.0, torch.zeros_like(param), torch.zeros_like(param))
            step += 1
            self.state[i] = (step, exp_avg, exp_avg_sq)
            grad = param.grad
            param.mul_(1 - self.lr * self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1**step)
            denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(self.eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


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
    """The grader's own training loop (seeded AdamW, fixed step budget) on the student's model.

    It trains in eval mode: the check asks whether the architecture learns, as the calibrated
    reference (built with dropout 0) does, not how a student's dropout regularises. A correct
    notebook that fixes attention dropout at 0.1 reached 85.5% in train mode on one seed, 95.7%
    in eval mode; for a model with dropout 0 the two modes are the same computation."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.eval()
    losses = []
    for _ in range(steps):
        batch = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"losses": torch.tensor(losses)}


@torch.no_grad()
def predict(model: Any, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Class predictions only: the labels stay on the trusted side."""
    model.eval()
    return torch.cat([model(images[i : i + batch_size]).argmax(-1) for i in range(0, images.shape[0], batch_size)])


def reference_initialization(
    state: dict[str, torch.Tensor], params: list[str], modules: dict[str, str], seed: int
) -> dict[str, torch.Tensor]:
    """STATE with its parameters drawn afresh, each by the law the reference's layer of its kind uses.

    The training check is calibrated on the reference, whose accuracy depends on where it starts;
    a student's own init (a zero class token, trunc_normal(0.02) weights) is not graded, and with
    it a correct ViT got stuck at chance on some seeds. Drawn from the grade's seed, so the start
    cannot be predicted: LayerNorms start at 1 and 0, Linear and Conv2d weights and biases
    U(+-1/sqrt(fan_in)) as torch's defaults, class tokens and positions (1, T, D) N(0, 0.02).
    Anything else (a raw weight matrix, whose fan-in its shape does not tell) keeps the student's."""
    generator = torch.Generator().manual_seed(seed)
    fresh = dict(state)
    for name in sorted(params):
        owner, _, leaf = name.rpartition(".")
        kind, value = modules.get(owner, "").rsplit(".", 1)[-1], state[name]
        if kind == "LayerNorm" and value.dim() == 1:
            fresh[name] = torch.full_like(value, 0.0 if leaf in {"bias", "beta", "shift"} else 1.0)
        elif kind in {"Linear", "Conv2d"}:
            bound = 1 / math.sqrt(max(1, state.get(f"{owner}.weight", value)[0].numel()))
            fresh[name] = torch.empty_like(value).uniform_(-bound, bound, generator=generator)
        elif value.dim() == 3 and value.shape[0] == 1:
            fresh[name] = torch.empty_like(value).normal_(0.0, 0.02, generator=generator)
    return fresh
