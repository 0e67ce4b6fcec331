"""Public tests of scaled_dot_product_attention, against fixtures precomputed from the reference."""

from vitgrade.runner.api import (
    case,
    describe,
    expect,
    expect_close,
    expect_shape,
    expect_tensors,
)

SDPA = "scaled_dot_product_attention"


def call(student, fixtures):
    data = fixtures("sdpa")
    fed = describe(q=data["q"], k=data["k"], v=data["v"])
    result = student.call(SDPA, data["q"], data["k"], data["v"])
    return data, fed, expect_tensors(result.value, 2, SDPA)


@case(unit="sdpa", points=1)
def test_shapes(student, fixtures):
    """output and attention shapes with n != m, d_k != d_v and two batch dims"""
    data, fed, (out, attn) = call(student, fixtures)
    expect_shape(out, (2, 3, 5, 6), "the output (..., n, d_v)", fed)
    expect_shape(attn, (2, 3, 5, 7), "the attention (..., n, m)", fed)


@case(unit="sdpa", points=1)
def test_rows_sum_to_one(student, fixtures):
    """attention rows sum to 1 over the keys"""
    data, fed, (out, attn) = call(student, fixtures)
    expect_shape(attn, (2, 3, 5, 7), "the attention (..., n, m)", fed)
    keys = (attn.sum(-1) - 1).abs().max().item()
    queries = (attn.sum(-2) - 1).abs().max().item()
    hint = "; yours sum to 1 over axis -2 (the queries): softmax over the wrong axis" if queries < 1e-4 else ""
    expect(keys < 1e-4, f"attention rows must sum to 1 over the keys (last axis); yours are off by up to {keys:.3g}{hint}")


@case(unit="sdpa", points=1, anchor=True)
def test_values(student, fixtures, figures):
    """output and attention equal softmax(q k^T / sqrt(d_k)) v"""
    data, fed, (out, attn) = call(student, fixtures)
    if attn.dim() >= 2:
        first = (0,) * (attn.dim() - 2)
        figures.attention(attn[first], data["attn"][first], "attention weights on this test's q and k (first batch and head, "
                          f"{data['attn'].shape[-2]} queries x {data['attn'].shape[-1]} keys)")
    expect_close(attn, data["attn"], "the attention", fed)
    expect_close(out, data["out"], "the output", fed)
