"""ResNet (He et al. 2015, "Deep Residual Learning for Image Recognition") and ResNeXt (Xie et al. 2016,
"Aggregated Residual Transformations for Deep Neural Networks").

Module names and tensor shapes follow torchvision's `resnet.py` exactly (conv1, bn1, layer1..layer4 of
BasicBlock / Bottleneck with conv1/bn1/conv2/bn2/(conv3/bn3)/downsample.0/.1, fc), so a torchvision
ImageNet `.pth` loads with `load_state_dict(..., strict=True)`. Bottlenecks stride in the 3x3 conv
(the "ResNet v1.5" placement torchvision uses).

`small_input=True` is the CIFAR-style stem: a 3x3 stride-1 conv1 and no max-pool, so the four stage
maps sit at strides 1/2/4/8 instead of 4/8/16/32 (conv1 is then 3x3, unlike the ImageNet weights).
`stem_pool=False` keeps the 7x7 stride-2 conv1 but drops the max-pool: strides 2/4/8/16, a middle way
for 64-px images (an FCN-8s output at stride 4 for a quarter of the CIFAR stem's cost).
`width_mult` scales the stem and every stage (0.25: 16/32/64/128 planes); 1.0 is the reference
network and the only width whose state_dict matches torchvision's.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.config import ConfigError
from cnnlab.models.base import Backbone
from cnnlab.models.registry import register_architecture


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut: ResNet-18/34."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and width_per_group=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand by 4: ResNet-50/101/152, ResNeXt."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """Stem, four stages of residual blocks (64/128/256/512 planes), global average pool, fc."""

    CLASSIFIER = ("fc",)
    # (MIN_INPUT_SIZE: the default 1 px) every convolution is padded and pooling is global

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        zero_init_residual: bool = False,
        dropout: float = 0.0,
        width_mult: float = 1.0,
        stem_pool: bool = True,
    ):
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(
                f"model.width_mult must be a positive number (1.0 = the reference widths), got {width_mult}"
            )
        # stem and stage widths (64/128/256/512 at 1.0, the reference); < 1 for cheap small-image nets
        stem, *planes = (max(1, int(round(c * width_mult))) for c in (64, 64, 128, 256, 512))
        self.inplanes = stem
        self.groups = groups
        self.base_width = width_per_group
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        pooled = stem_pool and not small_input
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if pooled else nn.Identity()
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        # Dropout has no parameters, so a non-zero rate keeps the torchvision state_dict layout.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(planes[3] * block.expansion, num_classes)

        self.feature_channels = tuple(c * block.expansion for c in planes)
        first = 1 if small_input else 4 if pooled else 2
        self.feature_strides = tuple(first * 2**i for i in range(4))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # each residual branch starts as zero, so blocks start as identities
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width))
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.flatten(self.avgpool(features[-1]), 1)
        return self.fc(self.dropout(x))


def _register(name: str, block, layers, **fixed):
    @register_architecture(name)
    def build(**kwargs) -> ResNet:
        return ResNet(block, layers, **{**fixed, **kwargs})

    build.__name__ = name
    build.__doc__ = f"{name}: torchvision-compatible {block.__name__} ResNet with stages {layers}."
    return build


resnet18 = _register("resnet18", BasicBlock, (2, 2, 2, 2))
resnet34 = _register("resnet34", BasicBlock, (3, 4, 6, 3))
resnet50 = _register("resnet50", Bottleneck, (3, 4, 6, 3))
resnet101 = _register("resnet101", Bottleneck, (3, 4, 23, 3))
resnet152 = _register("resnet152", Bottleneck, (3, 8, 36, 3))
resnext50_32x4d = _register("resnext50_32x4d", Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4)
