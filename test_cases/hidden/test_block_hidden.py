"""Hidden tests of TransformerBlock: residual paths, MLP width, dropout, gradients (pre- or post-norm)."""
# vitgrade-sentinel: HIDDEN-7c41e9d2 (planted: must never appear in a report, a log or worker output)

import torch

from vitgrade.runner.api import block_check, case, describe, expect, expect_shape, perturbed

DIM, HEADS, MLP = 24, 3, 56


@case(unit="block", points=1, visibility="after_due_date")
def test_residual_paths(student, rng):
    """with every weight matrix and bias zeroed, both residual paths carry x through (x, or LayerNorm(x) post-norm)"""
    block = student.build("TransformerBlock", DIM, HEADS, MLP, 0.0, seed=0).eval()
    state = block.state_dict()
    zeroed = {n: torch.zeros_like(t) if t.is_floating_point() and (t.dim() >= 2 or n.endswith("bias")) else t for n, t in state.items()}
    block.load_state_dict(zeroed)
    x = torch.randn(2, 6, DIM, generator=rng)
    out = expect_shape(block(x), tuple(x.shape), "TransformerBlock output", describe(x=x))
    normed = torch.nn.functional.layer_norm(x, (DIM,))
    pre, post = (out - x).abs().max().item(), (out - normed).abs().max().item()
    expect(
        min(pre, post) < 1e-4,
        "with all weight matrices and biases set to zero, attention and MLP contribute nothing, so the block should "
        f"return x (pre-norm) or LayerNorm(x) (post-norm); yours is off by {min(pre, post):.3g}: is a residual "
        "connection (x + attention(...), x + mlp(...)) missing?",
    )


@case(unit="block", points={"edition": 1, "course": 2}, visibility="after_due_date", anchor=True)
def test_computes_its_parts(student, rng, seed):
    """with fresh weights and inputs, the block computes what its own attention, LayerNorms and MLP give when wired"""
    block_check(student, DIM, HEADS, MLP, torch.randn(3, 7, DIM, generator=rng), seed=seed)


@case(unit="block", points=1, visibility="after_due_date")
def test_dropout_only_in_train_mode(student, rng):
    """with dropout 0.5: eval mode is deterministic, train mode is not"""
    block = student.build("TransformerBlock", DIM, HEADS, MLP, 0.5, seed=0)
    x = torch.randn(2, 6, DIM, generator=rng)
    block.eval()
    a, b = block.forward(x, seed=1).value, block.forward(x, seed=2).value
    expect_shape(a, tuple(x.shape), "TransformerBlock output", describe(x=x))
    expect(torch.equal(a, b), "in eval mode two forward passes gave different outputs: is dropout active in eval mode?")
    block.train()
    c, d = block.forward(x, seed=1).value, block.forward(x, seed=2).value
    expect(not torch.equal(c, d), "with dropout=0.5 in train mode, two forward passes gave the same output: is the dropout argument used?")


@case(unit="block", points={"edition": 1, "course": 2}, visibility="after_due_date")
def test_gradients_reach_every_parameter(student, rng):
    """a backward pass gives every parameter a non-zero gradient"""
    block = student.build("TransformerBlock", DIM, HEADS, MLP, 0.0, seed=0)
    block.load_state_dict(perturbed(block.state_dict(), seed=3))
    x = torch.randn(2, 6, DIM, generator=rng)
    result = block.forward(x, grad_inputs=(0,), grad_output=torch.randn(2, 6, DIM, generator=rng))
    missing = [n for n, g in result.param_grads.items() if g is None or not bool(g.abs().sum() > 0)]
    expect(not missing, f"these parameters got no gradient: {missing} (a detach, or a layer that is never used?)")
    expect(result.input_grads[0] is not None, "no gradient reached the input x")
