"""Hidden tests of PatchEmbedding: shapes, locality and row-major order, affinity, transplant."""
# vitgrade-sentinel: HIDDEN-7c41e9d2 (planted: must never appear in a report, a log or worker output)

import torch

from vitgrade.runner.api import (
    case,
    describe,
    expect,
    expect_close,
    expect_shape,
    patch_mappings,
    patch_token_causes,
    search_transplant,
)

CONFIGS = ((16, 4, 3, 24), (32, 8, 1, 16), (12, 3, 2, 10))


@case(unit="patch", points=1, visibility="after_due_date")
def test_shapes(student, rng):
    """(B, C, H, W) -> (B, (H/p)^2, D) for three image/patch/channel configurations"""
    for size, p, c, d in CONFIGS:
        x = torch.randn(2, c, size, size, generator=rng)
        embed = student.build("PatchEmbedding", size, p, c, d, seed=0)
        n = (size // p) ** 2
        expect_shape(embed(x), (2, n, d), f"PatchEmbedding({size}, {p}, {c}, {d}) output", describe(x=x), patch_token_causes(2, n, d))


@case(unit="patch", points=1, visibility="after_due_date")
def test_locality_and_row_major_order(student, rng):
    """changing one patch changes exactly its own token, numbered row by row"""
    size, p, c, d = 16, 4, 3, 24
    embed = student.build("PatchEmbedding", size, p, c, d, seed=0)
    x = torch.randn(1, c, size, size, generator=rng)
    base = expect_shape(embed(x), (1, 16, d), "PatchEmbedding output", describe(x=x), patch_token_causes(1, 16, d))
    for row, col in ((0, 1), (2, 0), (3, 2)):
        changed = x.clone()
        changed[..., row * p : (row + 1) * p, col * p : (col + 1) * p] += torch.randn(c, p, p, generator=rng)
        moved = (embed(changed) - base).abs().amax(-1)[0] > 1e-6
        tokens = moved.nonzero().flatten().tolist()
        expect(
            tokens == [row * 4 + col],
            f"changing the pixels of the patch at row {row}, column {col} should change token {row * 4 + col} "
            f"(row-major order) and no other; yours changed tokens {tokens}",
        )


@case(unit="patch", points=1, visibility="after_due_date")
def test_affine(student, rng):
    """each token is an affine function of its patch: f(a x + (1 - a) y) = a f(x) + (1 - a) f(y)"""
    embed = student.build("PatchEmbedding", 16, 4, 3, 24, seed=0)
    x, y = torch.randn(2, 3, 16, 16, generator=rng), torch.randn(2, 3, 16, 16, generator=rng)
    a = 0.3
    mix = expect_shape(embed(a * x + (1 - a) * y), (2, 16, 24), "PatchEmbedding output", describe(x=x))
    expect_close(mix, a * embed(x) + (1 - a) * embed(y), "PatchEmbedding of a blend of two images (it should be affine)", describe(x=x))


@case(unit="patch", points=1, visibility="after_due_date", anchor=True)
def test_transplant(student, reference, rng):
    """with fresh reference weights (and biases where yours has them), the output equals the reference's"""
    size, p, c, d = 16, 4, 3, 24
    embed = student.build("PatchEmbedding", size, p, c, d, seed=0)
    ref_module = reference.PatchEmbedding(size, p, c, d)
    weights = {"patch.weight": torch.randn(d, c, p, p, generator=rng) / 7, "patch.bias": torch.randn(d, generator=rng)}
    x = torch.randn(2, c, size, size, generator=rng)

    def expected(w):
        ref_module.load_state_dict({"proj.weight": w["patch.weight"], "proj.bias": w["patch.bias"]})
        with torch.no_grad():
            return ref_module(x)

    search_transplant(embed, patch_mappings(embed.info(), d, c, p), weights, 1, (x,), expected,
                      "PatchEmbedding (patches must be non-overlapping and in row-major order)")
