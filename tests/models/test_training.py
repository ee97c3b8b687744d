"""One member of each family learns: 15 Adam steps on a fixed batch of 8 images lower its loss.

Nets with a small_input stem train at 16x16 (Xception at 8x8) (their stage maps are then 16/8/4/2 px, what a 64 px input
gives an ImageNet stem), the rest at 32x32: at 32 px the small-input ResNet-18 alone costs 400 GFLOP for
15 steps, too much for the 2-core budget of the whole suite.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.models import build_backbone

# (name, image size, kwargs), 3 channels, 10 classes; vgg19/resnet152 stay out (one per family).
FAMILY_MEMBERS = [
    ("lenet5", 32, {}),
    # the CIFAR head (pool to 1x1, 512-wide FCs) instead of the 58M / 120M-parameter ImageNet one
    ("alexnet", 16, {"small_input": True, "pool_size": 1, "hidden_features": 512}),
    ("zfnet", 32, {"small_input": True, "pool_size": 1, "hidden_features": 512}),  # its small stem needs 30 px
    ("vgg11_bn", 32, {"pool_size": 1, "hidden_features": 512}),
    ("googlenet", 16, {"small_input": True}),
    ("resnet18", 16, {"small_input": True}),
    ("densenet_bc_100_k12", 16, {}),
    ("mobilenet_v2", 16, {"small_input": True}),
    ("xception", 8, {"small_input": True}),  # 36 separable convs: 8 px keeps it to a few seconds
    ("efficientnet_b0", 16, {"small_input": True}),
]


def _loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    torch.manual_seed(1)  # the same dropout / stochastic-depth draw before and after
    with torch.no_grad():
        return nn.functional.cross_entropy(model(images), labels).item()


@pytest.mark.parametrize("name,size,kwargs", FAMILY_MEMBERS, ids=[name for name, _, _ in FAMILY_MEMBERS])
def test_adam_steps_lower_the_loss(name, size, kwargs):
    torch.manual_seed(0)
    images, labels = torch.randn(8, 3, size, size), torch.arange(8) % 10
    model = build_backbone(name, num_classes=10, in_channels=3, image_size=size, **kwargs).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = _loss(model, images, labels)
    for _ in range(15):
        optimizer.zero_grad(set_to_none=False)  # reuse gradient buffers: fewer page faults
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    after = _loss(model, images, labels)
    assert after < before, f"{name}: loss {before:.3f} -> {after:.3f}"
