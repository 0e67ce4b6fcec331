"""Public tests of MultiHeadSelfAttention."""

from vitgrade.runner.api import (
    attention_mistakes,
    case,
    describe,
    expect_shape,
    mhsa_mappings,
    own_attention,
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
    d = fixtures("mhsa")
    attn = student.build("MultiHeadSelfAttention", DIM, HEADS, seed=0)
    search_transplant(
        attn,
        mhsa_mappings(attn.info(), DIM, HEADS),
        {k: v for k, v in d.items() if k[0] in "qkvo" and "." in k},
        heads=HEADS,
        inputs=(d["x"],),
        expected=own_attention(student, d["x"], HEADS),
        what=f"MultiHeadSelfAttention({DIM}, {HEADS})",
        goal=f"the heads computed by your own scaled_dot_product_attention on q, k, v of shape (B, heads, N, D/heads) = "
        f"(2, {HEADS}, 9, {DIM // HEADS}) (does forward call it, once on all heads or once per head?)",
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
