"""The Keras-book CNN as printed, and its batch_norm option."""

from __future__ import annotations

import torch

from cnnlab.models.lenet import SimpleCNN


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_book_layout_parameter_count_and_state_dict_keys():
    model = SimpleCNN(num_classes=10, in_channels=1, image_size=28)
    assert count(model) == 93_322  # the book's model.summary()
    assert [k for k in model.state_dict() if k.startswith("features")] == [
        "features.0.weight",
        "features.0.bias",
        "features.3.weight",
        "features.3.bias",
        "features.6.weight",
        "features.6.bias",
    ]


def test_batch_norm_replaces_conv_biases_and_keeps_the_feature_maps():
    plain = SimpleCNN(num_classes=6, in_channels=3, image_size=64)
    normed = SimpleCNN(num_classes=6, in_channels=3, image_size=64, batch_norm=True)
    # -160 conv biases, +2 x 160 BatchNorm scales and shifts
    assert count(normed) == count(plain) + 160
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in normed.modules()) == 3
    images = torch.randn(2, 3, 64, 64)
    shapes = [tuple(f.shape) for f in plain.forward_features(images)]
    assert (
        shapes
        == [tuple(f.shape) for f in normed.forward_features(images)]
        == [(2, 32, 31, 31), (2, 64, 14, 14), (2, 64, 12, 12)]
    )
    assert normed(images).shape == (2, 6)
