"""Public training check: the grader's own short loop runs on your model and the loss goes down."""

from vitgrade.runner.api import case, expect, same_pattern_task

CONFIG = (16, 4, 3, 32, 4, 64, 2, 2, 0.0)


@case(unit="train", points={"edition": 1, "course": 2}, timeout=60, requires=("vit",))
def test_loss_decreases(student, seed):
    """80 AdamW steps of the grader's loop on the synthetic task lower the loss"""
    images, labels = same_pattern_task(512, seed=seed)
    model = student.build("VisionTransformer", *CONFIG, seed=seed)
    losses = model.fit(images, labels, steps=80, batch_size=64, lr=2e-3, weight_decay=0.01, seed=seed)
    first, last = losses[:10].mean().item(), losses[-10:].mean().item()
    expect(last < first, f"training loss went from {first:.3f} to {last:.3f} over 80 steps; it should go down")
