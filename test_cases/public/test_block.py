"""Public tests of TransformerBlock: properties every correct pre- or post-norm block has."""

import torch

from vitgrade.runner.api import block_check, case, describe, expect, expect_shape

DIM, HEADS, MLP = 32, 4, 64


def tokens():
    return torch.randn(2, 9, DIM, generator=torch.Generator().manual_seed(1))


@case(unit="block", points={"edition": 1, "course": 2}, anchor=True)
def test_computes_its_parts(student):
    """the block computes x + attention(LayerNorm(x)), then + MLP(LayerNorm(.)), with your own parts (pre- or post-norm)"""
    block_check(student, DIM, HEADS, MLP, tokens(), seed=11)


@case(unit="block", points={"edition": 1})
def test_mask_reaches_attention(student):
    """the mask is passed down: tokens that every query must ignore do not change the others"""
    x = tokens()
    mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    mask[..., 6:] = False  # nobody may attend to the last three tokens
    changed = x.clone()
    changed[:, 6:] = torch.randn(2, 3, DIM, generator=torch.Generator().manual_seed(2))
    block = student.build("TransformerBlock", DIM, HEADS, MLP, 0.1, seed=0).eval()
    a = expect_shape(block(x, mask), tuple(x.shape), "TransformerBlock output", describe(x=x, mask=mask))
    b = expect_shape(block(changed, mask), tuple(x.shape), "TransformerBlock output", describe(x=x, mask=mask))
    diff = (a[:, :6] - b[:, :6]).abs().max().item()
    expect(
        diff < 1e-5,
        f"with a (B, 1, 1, N) mask hiding tokens 6..8, changing those tokens changed the other tokens' outputs "
        f"by up to {diff:.3g}: TransformerBlock.forward(x, mask) must pass the mask to its attention",
    )
