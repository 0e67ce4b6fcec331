"""A built-in, deterministic, synthetic image task for the training check.

Each image holds two marker patches on a noisy background: the target A and a distractor B, in
cells of the patch grid with different rows and columns. The label is the quadrant of the image
that A lies in: 4 classes. A ViT without positional embeddings is exactly invariant to a
permutation of its patches, so it is stuck at chance. The task alone does not need attention
(measured: a linear model on the pixels, an MLP stack and a per-token MLP with mean pooling all
reach 100%), so the training case counts only once the ViT reproduces the reference (its anchor).
"""

from __future__ import annotations

import torch

CLASSES = 4


def arrangement_task(
    count: int,
    seed: int,
    image_size: int = 16,
    patch_size: int = 4,
    channels: int = 3,
    noise: float = 0.3,
    markers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (count, channels, S, S), labels (count,)), the same for the same arguments. The two
    marker patterns are drawn from `markers` (default: `seed`), so in the hidden check they come
    from the grade's hidden seed: code cannot look for a marker it could know in advance. Held-out
    images share the training images' markers and differ in `seed`."""
    g = torch.Generator().manual_seed(seed)
    grid = image_size // patch_size
    drawn = torch.Generator().manual_seed(seed if markers is None else markers)
    pattern = torch.randn(2, channels, patch_size, patch_size, generator=drawn).sign()
    images = noise * torch.randn(count, channels, image_size, image_size, generator=g)
    rows = torch.stack([torch.randperm(grid, generator=g)[:2] for _ in range(count)])
    cols = torch.stack([torch.randperm(grid, generator=g)[:2] for _ in range(count)])
    for i in range(count):
        for m in range(2):
            r, c = int(rows[i, m]) * patch_size, int(cols[i, m]) * patch_size
            images[i, :, r : r + patch_size, c : c + patch_size] += pattern[m]
    half = grid // 2
    labels = 2 * (rows[:, 0] >= half).long() + (cols[:, 0] >= half).long()
    return images, labels
