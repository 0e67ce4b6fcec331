"""Hidden tests of scaled_dot_product_attention: fresh shapes and values, compared with the reference."""
# vitgrade-sentinel: HIDDEN-7c41e9d2 (planted: must never appear in a report, a log or worker output)

import math

import torch

from vitgrade.runner.api import (
    case,
    describe,
    expect,
    expect_close,
    expect_shape,
    expect_tensors,
)

SDPA = "scaled_dot_product_attention"


def inputs(rng, dtype=torch.float32):
    b, h = (int(x) for x in torch.randint(1, 4, (2,), generator=rng))
    n, m, dk, dv = (int(x) for x in torch.randint(3, 12, (4,), generator=rng))
    if m == n:
        m += 1
    if dv == dk:
        dv += 2
    q = torch.randn(b, h, n, dk, generator=rng, dtype=dtype)
    k = torch.randn(b, h, m, dk, generator=rng, dtype=dtype)
    v = torch.randn(b, h, m, dv, generator=rng, dtype=dtype)
    return q, k, v


def diagnose(attn, q, k):
    """Name the common bugs when the attention is off: scale, softmax axis."""
    scores = q @ k.transpose(-2, -1)
    d = q.shape[-1]
    for label, guess in (
        ("you do not divide the scores by sqrt(d_k)", scores.softmax(-1)),
        ("you divide the scores by d_k instead of sqrt(d_k)", (scores / d).softmax(-1)),
        ("you take the softmax over the queries (axis -2) instead of the keys (axis -1)", (scores / math.sqrt(d)).softmax(-2)),
    ):
        if attn.shape == guess.shape and torch.allclose(attn.to(guess.dtype), guess, atol=1e-5):
            return f" ({label})"
    return ""


@case(unit="sdpa", points=1, visibility="after_due_date")
def test_shapes_fresh(student, rng):
    """output and attention shapes for fresh n != m, d_k != d_v and batch dims"""
    q, k, v = inputs(rng)
    fed = describe(q=q, k=k, v=v)
    out, attn = expect_tensors(student.call(SDPA, q, k, v).value, 2, SDPA)
    expect_shape(out, (*q.shape[:-1], v.shape[-1]), "the output (..., n, d_v)", fed)
    expect_shape(attn, (*q.shape[:-1], k.shape[-2]), "the attention (..., n, m)", fed)


@case(unit="sdpa", points=1, visibility="after_due_date", anchor=True)
def test_float32_matches_reference(student, reference, rng):
    """float32 output and attention equal the reference, with the 1/sqrt(d_k) scale and the softmax over keys"""
    q, k, v = inputs(rng)
    fed = describe(q=q, k=k, v=v)
    out, attn = expect_tensors(student.call(SDPA, q, k, v).value, 2, SDPA)
    ref_out, ref_attn = reference.scaled_dot_product_attention(q, k, v)
    expect_shape(attn, tuple(ref_attn.shape), "the attention", fed)
    hint = diagnose(attn, q, k)
    expect_close(attn, ref_attn, "the attention" + hint, fed)
    expect_close(out, ref_out, "the output", fed)


@case(unit="sdpa", points=1, visibility="after_due_date", anchor=True)
def test_float64_matches_reference(student, reference, rng):
    """float64 inputs give float64 results equal to the reference"""
    q, k, v = inputs(rng, torch.float64)
    fed = describe(q=q, k=k, v=v)
    out, attn = expect_tensors(student.call(SDPA, q, k, v).value, 2, SDPA)
    ref_out, ref_attn = reference.scaled_dot_product_attention(q, k, v)
    expect_close(attn, ref_attn, "the float64 attention", fed, atol=1e-10, rtol=1e-8)
    expect_close(out, ref_out, "the float64 output", fed, atol=1e-10, rtol=1e-8)


@case(unit="sdpa", points=1, visibility="after_due_date")
def test_scale_with_large_dk(student, reference, rng):
    """the 1/sqrt(d_k) scale, seen with a large d_k where it matters most"""
    q = torch.randn(2, 6, 64, generator=rng)
    k = torch.randn(2, 7, 64, generator=rng)
    v = torch.randn(2, 7, 5, generator=rng)
    fed = describe(q=q, k=k, v=v)
    out, attn = expect_tensors(student.call(SDPA, q, k, v).value, 2, SDPA)
    ref_out, ref_attn = reference.scaled_dot_product_attention(q, k, v)
    expect_shape(attn, tuple(ref_attn.shape), "the attention", fed)
    expect_close(attn, ref_attn, "the attention" + diagnose(attn, q, k), fed)


@case(unit="sdpa", points=1, visibility="after_due_date", anchor=True)
def test_gradients(student, reference, rng):
    """gradients with respect to q, k and v equal the reference's"""
    q, k, v = inputs(rng, torch.float64)
    g_out = torch.randn(*q.shape[:-1], v.shape[-1], generator=rng, dtype=torch.float64)
    fed = describe(q=q, k=k, v=v)
    result = student.call(SDPA, q, k, v, grad_inputs=(0, 1, 2), grad_output=[g_out, None])
    expect_tensors(result.value, 2, SDPA)
    rq, rk, rv = (t.clone().requires_grad_(True) for t in (q, k, v))
    ref_out, _ = reference.scaled_dot_product_attention(rq, rk, rv)
    (ref_out * g_out).sum().backward()  # the same product as backward(g_out), which imports sympy
    for name, got, want in zip("qkv", result.input_grads, (rq.grad, rk.grad, rv.grad)):
        expect(got is not None, f"no gradient reached {name}: is something detached?")
        expect_close(got, want, f"the gradient with respect to {name}", fed, atol=1e-9, rtol=1e-7)
