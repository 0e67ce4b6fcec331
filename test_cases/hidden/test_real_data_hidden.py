"""Optional real-data checks, informational (0 points): they run only when the suite config names
a local CIFAR folder ([data] in suite.toml), and never download anything."""

from pathlib import Path

import pytest
import torch

from vitgrade.runner.api import case, cifar, inform

HYPER = ("image_size", "patch_size", "in_channels", "embed_dim", "num_heads", "mlp_dim", "num_layers", "num_classes", "dropout")


def data_root(suite_config, key):
    root = suite_config.get("data", {}).get(key)
    if not root:
        pytest.skip(f"no local {key} folder is configured ([data] {key} in suite.toml)")
    return Path(root)


@case(unit="vit", points=0, visibility="after_due_date", timeout=300, from_scratch=False)
def test_best_model_accuracy(student, checkpoint, suite_config):
    """best_model.pth, loaded into your model built from your hyper-parameter cell, on the CIFAR-100 test split"""
    if checkpoint is None:
        pytest.skip("the submission has no best_model.pth")
    images, labels = cifar.load(data_root(suite_config, "cifar100_root"), "cifar100", "test")
    hyper = [student.value(name) for name in HYPER]
    model = student.build("VisionTransformer", *hyper, seed=0)
    model.load_checkpoint(checkpoint)
    size = int(hyper[0])
    if size != 32:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    accuracy = float((model.predict(images) == labels).float().mean())
    inform(f"best_model.pth reaches {accuracy:.2%} on {len(labels)} CIFAR-100 test images (informational)")


@case(unit="train", points=0, visibility="after_due_date", timeout=300, from_scratch=False)
def test_short_cifar10_training(student, seed, suite_config):
    """the grader's short training run on local CIFAR-10 images (informational)"""
    root = data_root(suite_config, "cifar10_root")
    s = suite_config["train"]
    images, labels = cifar.load(root, "cifar10", "train", limit=2048)
    held_out, truth = cifar.load(root, "cifar10", "test", limit=512)
    model = student.build("VisionTransformer", 32, 4, 3, 32, 4, 64, 2, 10, 0.0, seed=seed)
    model.fit(images, labels, steps=int(s["steps"]), batch_size=int(s["batch_size"]), lr=float(s["lr"]),
              weight_decay=float(s["weight_decay"]), seed=seed)
    accuracy = float((model.predict(held_out) == truth).float().mean())
    inform(f"{accuracy:.2%} on {len(truth)} CIFAR-10 test images after {s['steps']} steps (informational)")
