"""ResNet's width multiplier and stem pooling: cheap small-image variants, reference layout at the defaults."""

from __future__ import annotations

import pytest
import torch

from cnnlab.config import ConfigError
from cnnlab.models import build_backbone


def test_defaults_are_the_reference_network():
    """width_mult=1.0 and stem_pool=true change nothing: torchvision's 11,689,512 parameters."""
    model = build_backbone("resnet18", num_classes=1000, image_size=224, width_mult=1.0, stem_pool=True)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512
    assert model.feature_strides == (4, 8, 16, 32)


@pytest.mark.parametrize(
    "width_mult, channels, parameters",
    [
        # stem 2,384 + layer1 9,344 + layer2 33,088 + layer3 131,712 + layer4 525,568 + fc 903 (by hand)
        (0.25, (16, 32, 64, 128), 702_999),
        (0.5, (32, 64, 128, 256), 2_800_679),
    ],
)
def test_width_mult_scales_stem_and_stages(width_mult, channels, parameters):
    model = build_backbone("resnet18", num_classes=7, image_size=64, width_mult=width_mult)
    assert model.feature_channels == channels
    assert model.conv1.out_channels == channels[0]
    assert model.fc.in_features == channels[-1]
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_bottleneck_width_mult_keeps_the_expansion():
    model = build_backbone("resnet50", num_classes=10, image_size=64, width_mult=0.25)
    assert model.feature_channels == (64, 128, 256, 512)  # 16/32/64/128 planes x 4


@pytest.mark.parametrize(
    "options, strides",
    [
        ({}, (4, 8, 16, 32)),
        ({"stem_pool": False}, (2, 4, 8, 16)),
        ({"small_input": True}, (1, 2, 4, 8)),
        ({"small_input": True, "stem_pool": False}, (1, 2, 4, 8)),
    ],
)
def test_stem_options_set_the_feature_strides(options, strides):
    """The declared strides are the real ones: maps of 64 / stride px at a 64-px input."""
    model = build_backbone("resnet18", num_classes=7, image_size=64, width_mult=0.25, **options)
    assert model.feature_strides == strides
    features = model.forward_features(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in features] == [64 // s for s in strides]


def test_width_mult_must_be_positive():
    with pytest.raises(
        ConfigError, match=r"model.width_mult must be a positive number \(1.0 = the reference widths\), got 0"
    ):
        build_backbone("resnet18", num_classes=7, image_size=64, width_mult=0)
