"""Hidden tests of VisionTransformer: its wiring of its own parts, shapes, class token, gradients, determinism."""
# vitgrade-sentinel: HIDDEN-7c41e9d2 (planted: must never appear in a report, a log or worker output)

import torch

from vitgrade.runner.api import VitConfig, case, describe, expect, expect_close, expect_shape, perturbed, vit_check


def build(student, image=16, patch=4, channels=3, dim=32, heads=4, mlp=48, layers=2, classes=7, dropout=0.0):
    model = student.build("VisionTransformer", image, patch, channels, dim, heads, mlp, layers, classes, dropout, seed=0)
    model.load_state_dict(perturbed(model.state_dict(), seed=5))
    return model.eval()


@case(unit="vit", points=1, visibility="after_due_date")
def test_shapes_for_several_configurations(student, rng):
    """logits (B, num_classes) for three image/patch sizes and 1 or 3 input channels"""
    for image, patch, channels, classes in ((16, 4, 3, 7), (32, 8, 1, 5), (24, 6, 3, 11)):
        model = build(student, image=image, patch=patch, channels=channels, classes=classes)
        x = torch.randn(2, channels, image, image, generator=rng)
        expect_shape(model(x), (2, classes), f"VisionTransformer({image}, {patch}, {channels}, ...) logits", describe(x=x))


@case(unit="vit", points=1, visibility="after_due_date")
def test_logits_from_class_token(student, rng):
    """with num_layers=0 the class token never sees the image, so the logits must not depend on it"""
    model = build(student, layers=0)
    x, y = torch.randn(1, 3, 16, 16, generator=rng), torch.randn(1, 3, 16, 16, generator=rng)
    a = expect_shape(model(x), (1, 7), "VisionTransformer(num_layers=0) logits", describe(x=x))
    expect_close(
        model(y), a,
        "the logits of two different images with num_layers=0 (read the logits from the class token, position 0, "
        "not from an average over the patches)",
        describe(x=x),
    )
    model = build(student, layers=1)
    a, b = model(x), model(y)
    expect((a - b).abs().max().item() > 1e-5, "with one block the logits do not depend on the image at all")


@case(unit="vit", points={"edition": 1, "course": 2}, visibility="after_due_date", anchor=True)
def test_computes_its_parts(student, rng, seed):
    """with fresh weights and images, the logits are what your own parts give when wired as a ViT (3 blocks)"""
    config = VitConfig(24, 6, 3, 24, 3, 40, 3, 9)
    vit_check(student, config, torch.randn(2, 3, 24, 24, generator=rng), seed=seed)


@case(unit="vit", points=1, visibility="after_due_date")
def test_gradients_reach_every_parameter(student, rng):
    """a backward pass from the logits gives every parameter a gradient"""
    model = build(student)
    model.train()
    x = torch.randn(2, 3, 16, 16, generator=rng)
    result = model.forward(x, grad_inputs=(0,), grad_output=torch.randn(2, 7, generator=rng), seed=0)
    missing = [n for n, g in result.param_grads.items() if g is None or not bool(g.abs().sum() > 0)]
    expect(not missing, f"these parameters got no gradient from the logits: {missing}")


@case(unit="vit", points=1, visibility="after_due_date")
def test_deterministic_and_batch_independent(student, rng):
    """in eval mode the same input gives the same logits, alone or in a batch"""
    x = torch.randn(3, 3, 16, 16, generator=rng)
    plain = build(student, dropout=0.0)
    first = expect_shape(plain.forward(x, seed=1).value, (3, 7), "VisionTransformer logits", describe(x=x))
    expect(
        torch.equal(first, plain.forward(x, seed=2).value),
        "with dropout=0.0, in eval mode, two forward passes gave different logits: something in forward is drawn at "
        "random (torch.randn for the class token or the positions?): create it once in __init__ as an nn.Parameter",
    )
    model = build(student, dropout=0.3)
    a = expect_shape(model.forward(x, seed=1).value, (3, 7), "VisionTransformer logits", describe(x=x))
    expect(
        torch.equal(a, model.forward(x, seed=2).value),
        "with dropout=0.3, two forward passes in eval mode gave different logits (with dropout=0.0 they agree): "
        "dropout must be off in eval mode (use nn.Dropout, or F.dropout(..., training=self.training))",
    )
    expect_close(model(x[2:3]), a[2:3], "the logits of image 2 alone vs. in a batch of 3", describe(x=x))
