"""Public tests of the mask argument: True = may attend, masked weights exactly 0."""

from vitgrade.runner.api import case, describe, expect, expect_close, expect_tensors

SDPA = "scaled_dot_product_attention"


@case(unit="mask", points=1, anchor=True)
def test_causal_mask(student, fixtures):
    """an (n, m) causal mask: masked weights are exactly 0 and the output matches"""
    d = fixtures("mask")
    fed = describe(q=d["q"], k=d["k"], v=d["v"], mask=d["causal"])
    out, attn = expect_tensors(student.call(SDPA, d["q"], d["k"], d["v"], d["causal"]).value, 2, SDPA)
    expect_close(attn, d["attn_causal"], "the attention with a causal mask", fed)
    leaked = attn.masked_select(~d["causal"].expand_as(attn)).abs().max().item()
    expect(leaked == 0.0, f"masked entries (mask False) must get attention weight exactly 0; yours reach {leaked:.3g}")
    expect_close(out, d["out_causal"], "the output with a causal mask", fed)


@case(unit="mask", points=1, anchor=True)
def test_key_padding_mask(student, fixtures):
    """a (B, 1, 1, m) key-padding mask broadcasts over heads and queries"""
    d = fixtures("mask")
    fed = describe(q=d["q"], k=d["k"], v=d["v"], mask=d["padding"])
    out, attn = expect_tensors(student.call(SDPA, d["q"], d["k"], d["v"], d["padding"]).value, 2, SDPA)
    expect_close(attn, d["attn_padding"], "the attention with a key-padding mask", fed)
    expect_close(out, d["out_padding"], "the output with a key-padding mask", fed)


@case(unit="mask", points=1)
def test_all_true_mask_is_no_mask(student, fixtures):
    """an all-True mask (attend everywhere) gives the same result as no mask"""
    d = fixtures("mask")
    everywhere = d["causal"] | True
    fed = describe(q=d["q"], k=d["k"], v=d["v"], mask=everywhere)
    plain = expect_tensors(student.call(SDPA, d["q"], d["k"], d["v"]).value, 2, SDPA)
    masked = expect_tensors(student.call(SDPA, d["q"], d["k"], d["v"], everywhere).value, 2, SDPA)
    hint = " (True means 'may attend': is your mask inverted?)"
    expect_close(masked[1], plain[1], "the attention with an all-True mask" + hint, fed)
    expect_close(masked[0], plain[0], "the output with an all-True mask" + hint, fed)
