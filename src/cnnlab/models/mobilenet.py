"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

Module names and shapes are torchvision's (`features.0.0` stem conv, `features.0.1` its BN,
`features.N.conv.M` for the inverted residual blocks, `features.18` the 1x1 conv to 1280 channels,
`classifier.1`), so a torchvision ImageNet `.pth` loads strictly.

`small_input=True` makes the stem conv stride 1 (the only downsampling before the first block), so the
four maps sit at strides 2/4/8/16 instead of 4/8/16/32.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cnnlab.models.base import SequentialBackbone
from cnnlab.models.registry import register_architecture


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never dropping more than 10% (as in the TF reference)."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvNormActivation(nn.Sequential):
    """Conv (no bias), BN, optional activation: torchvision's Conv2dNormActivation (indices 0, 1, 2)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[..., nn.Module] | None = nn.ReLU6,
    ):
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6), 3x3 depthwise (ReLU6), 1x1 linear projection; residual when shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: float):
        super().__init__()
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormActivation(inp, hidden_dim, kernel_size=1))
        layers += [
            ConvNormActivation(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# t (expansion), c (channels), n (repeats), s (first stride): Table 2 of the paper.
INVERTED_RESIDUAL_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class MobileNetV2(SequentialBackbone):
    """Stem conv, 17 inverted residual blocks, 1x1 conv to 1280, global pool, dropout, linear."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        width_mult: float = 1.0,
        round_nearest: int = 8,
        dropout: float = 0.2,
    ):
        super().__init__()
        input_channel = make_divisible(32 * width_mult, round_nearest)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features: list[nn.Module] = [ConvNormActivation(in_channels, input_channel, stride=1 if small_input else 2)]
        stride = 1 if small_input else 2
        stage_ends, channels, strides = [], [], []
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = make_divisible(c * width_mult, round_nearest)
            if s == 2 and len(features) > 1:  # a resolution stage ends before each stride-2 group
                stage_ends.append(len(features))
                channels.append(input_channel)
                strides.append(stride)
            stride *= s
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, expand_ratio=t))
                input_channel = output_channel
        features.append(ConvNormActivation(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        # The stride-2 map (after features[1]) is left out: the four maps are strides 4..32.
        self._stage_ends = tuple(stage_ends[1:]) + (len(features),)
        self.feature_channels = tuple(channels[1:]) + (self.last_channel,)
        self.feature_strides = tuple(strides[1:]) + (stride,)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(features[-1], (1, 1)), 1)
        return self.classifier(x)


# Every convolution is padded and pooling is global, so any input size from 1 px up works.
@register_architecture()
def mobilenet_v2(**kwargs) -> MobileNetV2:
    return MobileNetV2(**kwargs)
