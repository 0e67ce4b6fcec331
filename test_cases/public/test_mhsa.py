"""Public tests of MultiHeadSelfAttention."""

from vitgrade.runner.api import (
    attention_mistakes,
    case,
    describe,
    expect,
    expect_shape,
    mhsa_mappings,
    search_transplant,
)

DIM, HEADS = 32, 4


@case(unit="mhsa", points=1)
def test_shape(student, fixtures):
    """(B, N, D) -> (B, N, D)"""
    x = fixtures("mhsa")["x"]
    attn = student.build("MultiHeadSelfAttention", DIM, HEADS, seed=0)
    expect_shape(attn(x), tuple(x.shape), f"MultiHeadSelfAttention({DIM}, {HEADS}) output", describe(x=x))


@case(unit="mhsa", points={"edition": 1})
def test_uses_own_sdpa_per_head(student, fixtures):
    """attention is computed by your own scaled_dot_product_attention, per head"""
    x = fixtures("mhsa")["x"]
    attn = student.build("MultiHeadSelfAttention", DIM, HEADS, seed=0)
    calls = attn.forward(x, trace=True).sdpa_calls
    expect(calls != [], "MultiHeadSelfAttention.forward must call your scaled_dot_product_attention; it did not")
    head_dim = DIM // HEADS
    shapes = [tuple(c["q"]) for c in calls]
    batched = len(calls) == 1 and shapes[0] == (2, HEADS, 9, head_dim)
    per_head = len(calls) == HEADS and all(s == (2, 9, head_dim) for s in shapes)
    expect(
        batched or per_head,
        f"scaled_dot_product_attention should get per-head q of shape (B, heads, N, D/heads) = (2, {HEADS}, 9, "
        f"{head_dim}) in one call, or (B, N, D/heads) in {HEADS} calls; yours got {shapes} for x {tuple(x.shape)}",
    )


@case(unit="mhsa", points={"edition": 1, "course": 2}, anchor=True)
def test_transplant(student, fixtures):
    """with the reference's q/k/v/output weights, the output equals the reference's"""
    d = fixtures("mhsa")
    attn = student.build("MultiHeadSelfAttention", DIM, HEADS, seed=0)
    ref = {k: v for k, v in d.items() if k[0] in "qkvo" and "." in k}
    search_transplant(
        attn,
        mhsa_mappings(attn.info(), DIM, HEADS),
        ref,
        heads=HEADS,
        inputs=(d["x"],),
        expected=lambda _: d["out"],
        what=f"MultiHeadSelfAttention({DIM}, {HEADS})",
        mistakes=attention_mistakes(d["x"], HEADS),
    )
