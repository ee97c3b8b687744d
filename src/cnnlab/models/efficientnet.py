"""EfficientNet-B0 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks").

Module names and shapes are torchvision's (`features.0` stem Conv-BN-SiLU, `features.1..7` stages of
MBConv blocks with `block.N` Conv2dNormActivation / SqueezeExcitation (`fc1`, `fc2`) modules and a
parameter-free `stochastic_depth`, `features.8` the 1x1 conv to 1280, `classifier.1`), so a torchvision
ImageNet `.pth` loads strictly.

`small_input=True` makes the stem conv stride 1, so the four maps sit at strides 2/4/8/16 instead of
4/8/16/32.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.models.base import SequentialBackbone
from cnnlab.models.mobilenet import ConvNormActivation, make_divisible
from cnnlab.models.registry import register_architecture


class StochasticDepth(nn.Module):
    """Drop whole residual branches per sample with probability p in training ("row" mode), rescaled."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        noise = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SqueezeExcitation(nn.Module):
    """Channel attention: global pool, 1x1 conv squeeze (fc1), activation, 1x1 conv (fc2), sigmoid scale."""

    def __init__(self, input_channels: int, squeeze_channels: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.SiLU(inplace=True)
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


@dataclass
class MBConvConfig:
    expand_ratio: float
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int


class MBConv(nn.Module):
    """1x1 expand, kxk depthwise, squeeze-excitation, 1x1 projection, all SiLU; stochastic-depth residual."""

    def __init__(self, cnf: MBConvConfig, stochastic_depth_prob: float):
        super().__init__()
        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels
        layers: list[nn.Module] = []
        expanded = make_divisible(cnf.input_channels * cnf.expand_ratio, 8)
        if expanded != cnf.input_channels:
            layers.append(ConvNormActivation(cnf.input_channels, expanded, kernel_size=1, activation=nn.SiLU))
        layers.append(
            ConvNormActivation(expanded, expanded, cnf.kernel, cnf.stride, groups=expanded, activation=nn.SiLU)
        )
        layers.append(SqueezeExcitation(expanded, max(1, cnf.input_channels // 4)))
        layers.append(ConvNormActivation(expanded, cnf.out_channels, kernel_size=1, activation=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)
        self.out_channels = cnf.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result = self.stochastic_depth(result) + x
        return result


# expand ratio, kernel, stride, in, out, layers: Table 1 of the paper (B0: width and depth 1.0).
B0_SETTING = [
    MBConvConfig(1, 3, 1, 32, 16, 1),
    MBConvConfig(6, 3, 2, 16, 24, 2),
    MBConvConfig(6, 5, 2, 24, 40, 2),
    MBConvConfig(6, 3, 2, 40, 80, 3),
    MBConvConfig(6, 5, 1, 80, 112, 3),
    MBConvConfig(6, 5, 2, 112, 192, 4),
    MBConvConfig(6, 3, 1, 192, 320, 1),
]


class EfficientNet(SequentialBackbone):
    """Stem, seven MBConv stages, 1x1 conv to 4x the last width, global pool, dropout, linear."""

    def __init__(
        self,
        setting: list[MBConvConfig] = B0_SETTING,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        dropout: float = 0.2,
        stochastic_depth_prob: float = 0.2,
    ):
        super().__init__()
        stride = 1 if small_input else 2
        layers: list[nn.Module] = [
            ConvNormActivation(in_channels, setting[0].input_channels, 3, stride, activation=nn.SiLU)
        ]
        total_blocks = sum(cnf.num_layers for cnf in setting)
        block_id = 0
        stage_ends, channels, strides = [], [], []
        for cnf in setting:
            if cnf.stride == 2 and len(layers) > 1:
                stage_ends.append(len(layers))
                channels.append(setting[len(layers) - 2].out_channels)
                strides.append(stride)
            stride *= cnf.stride
            stage: list[nn.Module] = []
            for _ in range(cnf.num_layers):
                block_cnf = copy.copy(cnf)
                if stage:
                    block_cnf.input_channels = block_cnf.out_channels
                    block_cnf.stride = 1
                # stochastic depth grows linearly with depth, as in torchvision
                stage.append(MBConv(block_cnf, stochastic_depth_prob * block_id / total_blocks))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = setting[-1].out_channels
        last_out = 4 * last_in
        layers.append(ConvNormActivation(last_in, last_out, kernel_size=1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(last_out, num_classes))
        # Drop the stride-2 map; keep stride 4, 8, 16 stage outputs and the final 1x1-conv map.
        self._stage_ends = tuple(stage_ends[1:]) + (len(layers),)
        self.feature_channels = tuple(channels[1:]) + (last_out,)
        self.feature_strides = tuple(strides[1:]) + (stride,)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init_range = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -init_range, init_range)
                nn.init.zeros_(m.bias)


# Every convolution is padded and pooling is global, so any input size from 1 px up works.
@register_architecture()
def efficientnet_b0(**kwargs) -> EfficientNet:
    return EfficientNet(B0_SETTING, **kwargs)
