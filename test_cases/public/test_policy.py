"""Public policy check: the graded units are implemented, and written from scratch."""

import torch

from vitgrade.runner.api import case, expect, forbidden_uses


@case(unit="policy", points=1, requires=("mhsa", "vit"))
def test_no_forbidden_api(student, source):
    """your ViT runs without nn.MultiheadAttention, F.scaled_dot_product_attention, nn.TransformerEncoder(Layer), timm or torchvision's ViT"""
    model = student.build("VisionTransformer", 16, 4, 3, 32, 4, 64, 1, 4, 0.0, seed=0).eval()
    model(torch.zeros(1, 3, 16, 16))
    uses = forbidden_uses(source)
    listing = "; ".join(f"{u.api} in {u.unit} ({u.where})" for u in uses)
    expect(not uses, f"these are what the homework asks you to write yourself: {listing}")
