"""Inputs and weights for property tests, built on the trusted side."""

from __future__ import annotations

import torch


def perturbed(state: dict[str, torch.Tensor], seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """Every float tensor plus small noise: no zero-initialized parameter hides a bug or a feature."""
    g = torch.Generator().manual_seed(seed)
    return {
        name: t + scale * torch.randn(t.shape, generator=g, dtype=t.dtype) if t.is_floating_point() else t
        for name, t in state.items()
    }


def patch_token_causes(batch: int, patches: int, dim: int) -> dict[tuple[int, ...], str]:
    """The known causes of a wrong PatchEmbedding output shape, for expect_shape."""
    return {
        (batch, patches + 1, dim): f"{patches} patches and 1 more token: the class token is added inside PatchEmbedding. "
        "PatchEmbedding returns the patch tokens only; VisionTransformer.forward prepends the class token and adds the "
        "positions",
    }


def shuffle_patches(x: torch.Tensor, patch: int, order: torch.Tensor) -> torch.Tensor:
    """Rearrange the p x p patches of (B, C, H, W) images: new patch i is old patch order[i]."""
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    tiles = x.reshape(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, patch, patch)
    tiles = tiles[:, order]
    return tiles.reshape(b, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
