"""A built-in, deterministic, synthetic image task for the training check, which needs attention.

Each image holds two marker patches on a noisy background, at two different cells of the patch
grid; each marker is one of `patterns` sign patterns. The label says whether the two markers carry
the same pattern (1) or different ones (0): 2 classes, balanced, chance 50%.

Why it needs attention between tokens: a model whose class scores are a sum over tokens of
per-token terms (a linear map of the pixels; per-token MLPs with a flatten or mean-pool and a
linear head) cannot fit it. For two cells i, j and two patterns a, b, such a score difference D
gives D(a, a) + D(b, b) = D(a, b) + D(b, a), so it cannot be positive on both "same" images and
negative on both "different" ones. Models that mix tokens without attention (a LayerNorm after
pooling, an MLP on all pixels, uniform attention) could in principle, and learn it for 2 patterns;
with 32 patterns they stay near chance in the grader's step budget while the reference ViT
learns it (measured for `vitgrade calibrate` and in the README). Attention compares the two marker
tokens by content, so positions do not matter here: the vit unit checks those.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

PATTERNS = 32


def same_pattern_task(
    count: int,
    seed: int,
    image_size: int = 16,
    patch_size: int = 4,
    channels: int = 3,
    noise: float = 0.3,
    markers: int | None = None,
    patterns: int = PATTERNS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (count, channels, S, S), labels (count,): 1 same pattern, 0 different), the same for
    the same arguments. The patterns are drawn from `markers` (default: `seed`), so in the hidden
    check they come from the grade's hidden seed: code cannot look for a pattern it could know in
    advance. Held-out images share the training images' patterns and differ in `seed`."""
    if patterns < 2:
        raise ValueError(f"same_pattern_task needs at least 2 patterns to tell same from different, got {patterns}")
    g = torch.Generator().manual_seed(seed)
    grid = image_size // patch_size
    drawn = torch.Generator().manual_seed(seed if markers is None else markers)
    bank = torch.randn(patterns, channels, patch_size, patch_size, generator=drawn).sign()
    images = noise * torch.randn(count, channels, image_size, image_size, generator=g)
    labels = (torch.arange(count) % 2)[torch.randperm(count, generator=g)]
    first = torch.randint(0, patterns, (count,), generator=g)
    shift = torch.randint(1, patterns, (count,), generator=g)  # a different pattern: never 0 apart
    second = torch.where(labels == 1, first, (first + shift) % patterns)
    cells = torch.stack([torch.randperm(grid * grid, generator=g)[:2] for _ in range(count)])
    for i in range(count):
        for m, which in enumerate((first[i], second[i])):
            r, c = int(cells[i, m]) // grid * patch_size, int(cells[i, m]) % grid * patch_size
            images[i, :, r : r + patch_size, c : c + patch_size] += bank[int(which)]
    return images, labels


def training_check_data(settings: dict[str, Any], seed: int) -> tuple[torch.Tensor, ...]:
    """(images, labels, held-out images, held-out labels) of the training check for SEED, with the
    suite's [train] settings: the hidden case and `vitgrade calibrate` use exactly these."""
    images, labels = same_pattern_task(int(settings["train_images"]), seed=seed)
    held_out, truth = same_pattern_task(int(settings["held_out_images"]), seed=seed + 1, markers=seed)
    return images, labels, held_out, truth


def training_seeds(seed: int, attempts: int) -> list[int]:
    """The seeds of up to ATTEMPTS training runs for a grade's hidden SEED: the seed itself, then
    seeds hashed from it, so that each run draws its task, start and batches independently of the
    others (the chance that a correct ViT misses a threshold on every run is then the calibrated
    chance of one miss, to the power of the runs)."""
    hashed = (hashlib.sha256(f"{seed}:training run {i}".encode()).digest() for i in range(1, attempts))
    return [seed, *(int.from_bytes(digest[:6], "big") for digest in hashed)]
