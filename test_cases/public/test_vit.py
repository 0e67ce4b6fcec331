"""Public tests of VisionTransformer."""

import torch

from vitgrade.runner.api import VitConfig, case, describe, expect, expect_shape, perturbed, vit_check

CONFIG = dict(image_size=16, patch_size=4, in_channels=3, embed_dim=32, num_heads=4, mlp_dim=64, num_layers=2, num_classes=10)


def build(student, **changes):
    config = {**CONFIG, **changes}
    model = student.build("VisionTransformer", *config.values(), 0.1, seed=0)
    model.load_state_dict(perturbed(model.state_dict(), seed=3))  # no parameter left at an exact zero
    return model.eval(), config


def images(config, count=2, seed=4):
    size = config["image_size"]
    return torch.randn(count, config["in_channels"], size, size, generator=torch.Generator().manual_seed(seed))


@case(unit="vit", points=1, anchor=True)
def test_computes_its_parts(student):
    """the logits are the head on the class token after your PatchEmbedding, positions and every block, in order"""
    for channels in (3, 1):
        config = VitConfig(**{**CONFIG, "in_channels": channels})
        vit_check(student, config, images(CONFIG | {"in_channels": channels}), seed=12)


@case(unit="vit", points=1)
def test_positional_embeddings_used(student):
    """shuffling the patches changes the logits (a ViT without positions would not notice)"""
    model, config = build(student)
    x = images(config)
    grid = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (B, C, 4, 4, p, p)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(5))
    shuffled = grid.reshape(2, 3, 16, 4, 4)[:, :, order].reshape(2, 3, 4, 4, 4, 4).permute(0, 1, 2, 4, 3, 5).reshape(x.shape)
    a = expect_shape(model(x), (2, 10), "VisionTransformer logits", describe(x=x))
    b = expect_shape(model(shuffled), (2, 10), "VisionTransformer logits", describe(x=shuffled))
    expect(
        (a - b).abs().max().item() > 1e-4,
        "shuffling the 16 patches of the image did not change the logits: add learned positional embeddings to the tokens",
    )


@case(unit="vit", points=1)
def test_logits_not_probabilities(student):
    """the model returns logits, not softmax probabilities"""
    model, config = build(student)
    x = images(config, count=4)
    out = expect_shape(model(x), (4, 10), "VisionTransformer logits", describe(x=x))
    looks_like_probs = bool((out >= 0).all()) and (out.sum(-1) - 1).abs().max().item() < 1e-4
    expect(not looks_like_probs, "VisionTransformer returns probabilities (rows sum to 1): return the logits, before softmax")
