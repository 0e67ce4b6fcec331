"""Hidden tests of MultiHeadSelfAttention: shapes, per-head attention with your own SDPA,
# vitgrade-sentinel: HIDDEN-7c41e9d2 (planted: must never appear in a report, a log or worker output)
transplant equality, permutation equivariance, batch independence, no forbidden modules."""

import torch

from vitgrade.runner.api import (
    GradingFailure,
    StudentError,
    attention_mistakes,
    attention_weights,
    case,
    describe,
    expect,
    expect_close,
    expect_shape,
    mhsa_mappings,
    own_attention,
    perturbed,
    reference_attention,
    search_transplant,
)

FORBIDDEN_TYPES = ("MultiheadAttention", "TransformerEncoder", "TransformerEncoderLayer")


def built(student, dim=24, heads=3):
    module = student.build("MultiHeadSelfAttention", dim, heads, seed=0)
    module.load_state_dict(perturbed(module.state_dict(), seed=1))
    return module.eval()


@case(unit="mhsa", points=1, visibility="after_due_date")
def test_shapes(student, rng):
    """(B, N, D) -> (B, N, D) for several widths and head counts"""
    ran = []
    for dim, heads, n in ((24, 3, 5), (64, 8, 11), (16, 1, 4)):
        x = torch.randn(3, n, dim, generator=rng)
        module = student.build("MultiHeadSelfAttention", dim, heads, seed=0)
        try:
            out = module(x)
        except StudentError as exc:
            if 3 not in ran:
                raise
            raise GradingFailure(
                f"{exc.student_message()} It runs with 3 heads but not with {heads}: are q, k and v taken along the "
                "heads axis? With a (B, N, 3, heads, head_dim) split, index the q/k/v axis (of size 3)"
            ) from None
        expect_shape(out, tuple(x.shape), f"MultiHeadSelfAttention({dim}, {heads}) output", describe(x=x))
        ran.append(heads)


@case(unit="mhsa", points={"edition": 1}, visibility="after_due_date")
def test_own_sdpa_per_head(student, rng):
    """with fresh weights, the output is what your own scaled_dot_product_attention gives on per-head q/k/v of D/heads"""
    dim, heads, n = 48, 6, 7
    module = student.build("MultiHeadSelfAttention", dim, heads, seed=0)
    weights = attention_weights(dim, rng)
    x = torch.randn(2, n, dim, generator=rng)
    search_transplant(module, mhsa_mappings(module.info(), dim, heads), weights, heads, (x,), own_attention(student, x, heads),
                      f"MultiHeadSelfAttention({dim}, {heads})",
                      goal=f"the heads computed by your own scaled_dot_product_attention on q, k, v of shape (2, {heads}, {n}, "
                             f"{dim // heads}) (does forward call it, once on all heads or once per head?)")  # fmt: skip


@case(unit="mhsa", points=2, visibility="after_due_date", anchor=True)
def test_transplant(student, reference, rng):
    """with fresh reference weights and biases, the output equals the reference's (any q/k/v layout)"""
    dim, heads = 24, 4
    module = student.build("MultiHeadSelfAttention", dim, heads, seed=0)
    weights = attention_weights(dim, rng)
    x = torch.randn(2, 6, dim, generator=rng)
    expected = reference_attention(reference, dim, heads, x)
    search_transplant(module, mhsa_mappings(module.info(), dim, heads), weights, heads, (x,), expected,
                      f"MultiHeadSelfAttention({dim}, {heads})", mistakes=attention_mistakes(x, heads))


@case(unit="mhsa", points=1, visibility="after_due_date")
def test_permutation_equivariance(student, rng):
    """permuting the tokens permutes the output the same way"""
    module = built(student)
    x = torch.randn(2, 9, 24, generator=rng)
    order = torch.randperm(9, generator=rng)
    out = expect_shape(module(x), tuple(x.shape), "MultiHeadSelfAttention output", describe(x=x))
    expect_close(module(x[:, order]), out[:, order], "the output for permuted tokens (self-attention is permutation-equivariant)", describe(x=x))


@case(unit="mhsa", points=1, visibility="after_due_date")
def test_batch_independence_and_no_forbidden_modules(student, rng):
    """each sample is processed on its own, and no torch attention module does the work"""
    module = built(student)
    x = torch.randn(3, 5, 24, generator=rng)
    out = expect_shape(module(x), tuple(x.shape), "MultiHeadSelfAttention output", describe(x=x))
    expect_close(module(x[1:2]), out[1:2], "the output of sample 1 computed alone vs. in a batch of 3", describe(x=x))
    found = [f"{name or '(root)'}: {kind}" for name, kind in module.info().modules.items() if kind.rsplit(".", 1)[-1] in FORBIDDEN_TYPES]
    expect(not found, f"MultiHeadSelfAttention must not use torch's attention modules: {found}")
