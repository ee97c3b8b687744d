"""DenseNet (Huang et al. 2016, "Densely Connected Convolutional Networks"): DenseNet-121 for ImageNet and
DenseNet-BC (L=100, k=12) for CIFAR.

Module names and shapes are torchvision's (`features.conv0/norm0/denseblock1.denselayer1.norm1/conv1/
norm2/conv2/transition1.norm/conv/norm5`, `classifier`). torchvision's published `densenet121-*.pth`
still uses the old key spelling `denselayer1.norm.1`; a load hook renames those keys the way
torchvision's loader does, so `load_state_dict(torch.load(path), strict=True)` works directly.

`small_input=True` (DenseNet-121) is the CIFAR stem: a 3x3 stride-1 conv0 and no max-pool, so the
four block outputs sit at strides 1/2/4/8 instead of 4/8/16/32. DenseNet-BC-100 is the paper's CIFAR
network: 3x3 conv of 2k=24 channels, three dense blocks of 16 bottleneck layers, compression 0.5;
its three maps sit at strides 1/2/4 (32/16/8 px at 32x32).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.base import Backbone, check_input_size
from cnnlab.models.registry import register_architecture

_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class _DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size*k channels), BN-ReLU-3x3 conv (k channels) on all previous maps."""

    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int, drop_rate: float):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = float(drop_rate)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        bottleneck = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        new_features = self.conv2(self.relu2(self.norm2(bottleneck)))
        if self.drop_rate > 0:
            new_features = F.dropout(new_features, p=self.drop_rate, training=self.training)
        return new_features


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int, drop_rate: float):
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size, drop_rate)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, init_features: torch.Tensor) -> torch.Tensor:
        features = [init_features]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    """BN-ReLU-1x1 conv (compression) and 2x2 average pool."""

    def __init__(self, num_input_features: int, num_output_features: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, kernel_size=1, stride=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNet(Backbone):
    """Stem, dense blocks joined by compressing transitions, final BN, ReLU, global pool, linear."""

    # DenseNet-121's stems: three 2x2 average pools in the transitions; the ImageNet stem divides by 4 first
    MIN_INPUT_SIZE = {False: 29, True: 8}

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        stem: str = "imagenet",
    ):
        super().__init__()
        if stem == "imagenet":  # 7x7/2 conv, BN, ReLU, 3x3/2 max-pool: stride 4
            self.features = nn.Sequential()
            self.features.add_module("conv0", nn.Conv2d(in_channels, num_init_features, 7, 2, 3, bias=False))
            self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
            self.features.add_module("relu0", nn.ReLU(inplace=True))
            self.features.add_module("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
            first_stride = 4
        elif stem == "small":  # the same without downsampling
            self.features = nn.Sequential()
            self.features.add_module("conv0", nn.Conv2d(in_channels, num_init_features, 3, 1, 1, bias=False))
            self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
            self.features.add_module("relu0", nn.ReLU(inplace=True))
            first_stride = 1
        elif stem == "cifar":  # the paper's CIFAR networks: one 3x3 conv straight into the first block
            self.features = nn.Sequential()
            self.features.add_module("conv0", nn.Conv2d(in_channels, num_init_features, 3, 1, 1, bias=False))
            first_stride = 1
        else:
            raise ValueError(f"unknown DenseNet stem {stem!r}")

        channels, strides = [], []
        num_features = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers, num_features, bn_size, growth_rate, drop_rate)
            self.features.add_module(f"denseblock{i + 1}", block)
            num_features += num_layers * growth_rate
            channels.append(num_features)
            strides.append(first_stride * 2**i)
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(num_features, num_features // 2))
                num_features //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(num_features))
        self.classifier = nn.Linear(num_features, num_classes)
        self.feature_channels = tuple(channels)
        self.feature_strides = tuple(strides)
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.constant_(m.bias, 0)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for name, module in self.features.named_children():
            x = module(x)
            if name.startswith("denseblock"):
                maps.append(x)
        maps[-1] = x  # the last block's map after norm5, which the head reads
        return maps

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = F.adaptive_avg_pool2d(F.relu(features[-1]), (1, 1))
        return self.classifier(torch.flatten(out, 1))


def _rename_legacy_keys(module, state_dict, prefix, *args) -> None:
    """'denselayer1.norm.1.weight' (torchvision's published checkpoints) -> 'denselayer1.norm1.weight'."""
    for key in list(state_dict):
        match = _LEGACY_KEY.match(key)
        if match and key.startswith(prefix):
            state_dict[match.group(1) + match.group(2)] = state_dict.pop(key)


@register_architecture()
def densenet121(small_input: bool = False, image_size: int = 224, **kwargs) -> DenseNet:
    """DenseNet-121: k=32, blocks (6, 12, 24, 16), 64 stem channels."""
    check_input_size("densenet121", image_size, DenseNet.MIN_INPUT_SIZE, small_input)
    kwargs.setdefault("growth_rate", 32)
    kwargs.setdefault("block_config", (6, 12, 24, 16))
    kwargs.setdefault("num_init_features", 64)
    return DenseNet(image_size=image_size, stem="small" if small_input else "imagenet", **kwargs)


@register_architecture()
def densenet_bc_100_k12(**kwargs) -> DenseNet:
    """DenseNet-BC, depth 100, k=12, for 32x32 inputs: about 0.8M parameters at 10 classes."""
    kwargs.setdefault("growth_rate", 12)
    kwargs.setdefault("block_config", (16, 16, 16))
    kwargs.setdefault("num_init_features", 24)
    return DenseNet(stem="cifar", **kwargs)


# the CIFAR stem (no reduction) and two transitions: its own minimum, not DenseNet-121's
densenet_bc_100_k12.MIN_INPUT_SIZE = {False: 4, True: 4}
