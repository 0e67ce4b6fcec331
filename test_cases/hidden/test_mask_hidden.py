"""Hidden tests of masking: broadcast shapes, independence from masked values, the convention,
# vitgrade-sentinel: HIDDEN-7c41e9d2 (planted: must never appear in a report, a log or worker output)
and masks passed through MultiHeadSelfAttention and TransformerBlock."""

import torch

from vitgrade.runner.api import (
    case,
    describe,
    expect,
    expect_close,
    expect_shape,
    expect_tensors,
    perturbed,
)

SDPA = "scaled_dot_product_attention"


def random_mask(shape, rng):
    """A random bool mask where every query row keeps at least one key."""
    mask = torch.rand(shape, generator=rng) > 0.4
    mask[..., 0] = True
    return mask


@case(unit="mask", points=1, visibility="after_due_date", anchor=True)
def test_broadcast_shapes(student, reference, rng):
    """masks of shape (n, m), (B, 1, n, m) and (B, 1, 1, m) match the reference"""
    b, h, n, m = 2, 3, 5, 7
    q, k, v = torch.randn(b, h, n, 4, generator=rng), torch.randn(b, h, m, 4, generator=rng), torch.randn(b, h, m, 6, generator=rng)
    for shape in ((n, m), (b, 1, n, m), (b, 1, 1, m)):
        mask = random_mask(shape, rng)
        fed = describe(q=q, k=k, v=v, mask=mask)
        out, attn = expect_tensors(student.call(SDPA, q, k, v, mask).value, 2, SDPA)
        ref_out, ref_attn = reference.scaled_dot_product_attention(q, k, v, mask)
        expect_close(attn, ref_attn, f"the attention with a {shape} mask", fed)
        leaked = attn.masked_select(~mask.expand_as(attn)).abs().max().item()
        expect(leaked == 0.0, f"masked entries must get weight exactly 0; with a {shape} mask yours reach {leaked:.3g}")
        expect_close(out, ref_out, f"the output with a {shape} mask", fed)


@case(unit="mask", points=1, visibility="after_due_date")
def test_masked_values_do_not_matter(student, rng):
    """changing the keys and values of masked positions changes nothing"""
    q, k, v = torch.randn(2, 5, 8, generator=rng), torch.randn(2, 6, 8, generator=rng), torch.randn(2, 6, 3, generator=rng)
    mask = torch.ones(2, 1, 6, dtype=torch.bool)
    mask[..., 4:] = False
    k2, v2 = k.clone(), v.clone()
    k2[:, 4:] = 100 * torch.randn(2, 2, 8, generator=rng)
    v2[:, 4:] = 100 * torch.randn(2, 2, 3, generator=rng)
    a = expect_tensors(student.call(SDPA, q, k, v, mask).value, 2, SDPA)
    b = expect_tensors(student.call(SDPA, q, k2, v2, mask).value, 2, SDPA)
    expect_close(b[0], a[0], "the output after changing only masked keys and values (mask (B, 1, m) hides keys 4, 5)", describe(q=q, k=k, v=v, mask=mask))


@case(unit="mask", points=1, visibility="after_due_date")
def test_true_means_attend(student, rng):
    """with exactly one True per row, each query copies the value of that key"""
    q, k, v = torch.randn(4, 6, generator=rng), torch.randn(5, 6, generator=rng), torch.randn(5, 3, generator=rng)
    chosen = torch.randint(0, 5, (4,), generator=rng)
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[torch.arange(4), chosen] = True
    out, attn = expect_tensors(student.call(SDPA, q, k, v, mask).value, 2, SDPA)
    expect_shape(out, (4, 3), "the output", describe(q=q, k=k, v=v, mask=mask))
    expect_close(
        out, v[chosen], "the output when each query may attend to one key only (True = may attend; is your mask inverted?)",
        describe(q=q, k=k, v=v, mask=mask),
    )


@case(unit="mask", points=1, visibility="after_due_date")
def test_causal_mask_through_mhsa_and_block(student, rng):
    """a causal mask passed to MultiHeadSelfAttention and TransformerBlock hides the future"""
    x = torch.randn(2, 7, 24, generator=rng)
    causal = torch.ones(7, 7, dtype=torch.bool).tril()
    future = x.clone()
    future[:, 4:] = torch.randn(2, 3, 24, generator=rng)
    for cls, args in (("MultiHeadSelfAttention", (24, 3)), ("TransformerBlock", (24, 3, 40, 0.0))):
        module = student.build(cls, *args, seed=1)
        module.load_state_dict(perturbed(module.state_dict(), seed=2))
        module.eval()
        a = expect_shape(module(x, causal), tuple(x.shape), f"{cls} output", describe(x=x, mask=causal))
        b = expect_shape(module(future, causal), tuple(x.shape), f"{cls} output", describe(x=future, mask=causal))
        diff = (a[:, :4] - b[:, :4]).abs().max().item()
        expect(
            diff < 1e-5,
            f"with a causal (N, N) mask, changing tokens 4..6 changed the outputs of tokens 0..3 of {cls} by up to "
            f"{diff:.3g}: {cls}.forward(x, mask) must pass the mask on to the attention",
        )
