"""Hidden tests of the attention inside MultiHeadSelfAttention, one aspect each (course contract:
the course's notebook has no attention function, so attention is graded through MHSA).
# vitgrade-sentinel: HIDDEN-7c41e9d2 (planted: must never appear in a report, a log or worker output)

Each case loads fresh reference weights into the student's MHSA and passes when its output is the
reference's, or the reference's with one known mistake in another aspect (vitgrade.runner.mistakes):
a module whose only mistake is the scale keeps the softmax, tokens, heads and projection points."""

import torch

from vitgrade.runner.api import (
    MISTAKES,
    KnownMistake,
    attention_mistakes,
    attention_weights,
    case,
    inform,
    mhsa_mappings,
    reference_attention,
    search_transplant,
)

DIM, HEADS, TOKENS = 24, 3, 6  # 3 heads of 8: scores over 6 tokens, 8 channels or 3 heads all differ in shape


def check_aspect(student, reference, rng, aspect: str) -> None:
    module = student.build("MultiHeadSelfAttention", DIM, HEADS, seed=0)
    weights = attention_weights(DIM, rng, scale=1.5)  # scores large enough that the scale matters
    x = torch.randn(2, TOKENS, DIM, generator=rng)
    expected = reference_attention(reference, DIM, HEADS, x)
    try:
        search_transplant(module, mhsa_mappings(module.info(), DIM, HEADS), weights, HEADS, (x,), expected,
                          f"MultiHeadSelfAttention({DIM}, {HEADS})", mistakes=attention_mistakes(x, HEADS))
    except KnownMistake as exc:
        if MISTAKES[exc.name].aspect == aspect:
            raise
        inform(f"this part is right; another is not: {MISTAKES[exc.name].cause}")


@case(unit="mhsa", points={"course": 2}, visibility="after_due_date", anchor=True)
def test_scores_scaled_by_head_dim(student, reference, rng):
    """the attention scores are scaled by 1 / sqrt(head_dim)"""
    check_aspect(student, reference, rng, "scale")


@case(unit="mhsa", points={"course": 2}, visibility="after_due_date", anchor=True)
def test_softmax_over_keys(student, reference, rng):
    """the softmax runs over the keys, so each token's attention weights sum to 1"""
    check_aspect(student, reference, rng, "softmax")


@case(unit="mhsa", points={"course": 2}, visibility="after_due_date", anchor=True)
def test_attention_between_tokens(student, reference, rng):
    """each head attends over the N tokens (not over channels, nor between heads)"""
    check_aspect(student, reference, rng, "tokens")


@case(unit="mhsa", points={"course": 2}, visibility="after_due_date", anchor=True)
def test_heads_split_and_merged(student, reference, rng):
    """q, k and v are split into num_heads heads of embed_dim // num_heads, and merged back in order"""
    check_aspect(student, reference, rng, "heads")


@case(unit="mhsa", points={"course": 2}, visibility="after_due_date", anchor=True)
def test_output_projection(student, reference, rng):
    """the concatenated heads go through the output projection"""
    check_aspect(student, reference, rng, "projection")
