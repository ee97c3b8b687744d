"""Xception (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions").

torchvision has no Xception; module names follow the widely shared PyTorch port (Cadene's
`pretrainedmodels`, timm's `legacy_xception`): `conv1/bn1/conv2/bn2`, `block1..block12` with
`skip`/`skipbn` shortcuts and `rep.N` sequences of SeparableConv2d (`conv1` depthwise, `pointwise`) and
BatchNorm, `conv3/bn3/conv4/bn4`, and the classifier `fc` (timm's name; Cadene calls it `last_linear`).
22,855,952 parameters at 1000 classes (Keras reports 22,910,480 because it also counts the batch-norm
running statistics); either way "22.9M" as in the paper, at any input size.

Entry flow: 3x3/2 conv 32, 3x3 conv 64 (both unpadded), three separable blocks to 128, 256, 728 with
stride 2; middle flow: eight residual blocks of three 728-channel separable convs; exit flow: block to
1024 with stride 2, separable convs to 1536 and 2048, global pool, fc. At 299 px the maps are
74/37/19/10 (strides 4/8/16/32 over an unpadded stem). `small_input=True` makes the first conv stride 1
and pads both stem convs, so the maps are exactly ceil(S / stride) at strides 2/4/8/16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.base import Backbone, check_input_size
from cnnlab.models.registry import register_architecture


class SeparableConv2d(nn.Module):
    """Depthwise kxk conv (`conv1`) followed by a pointwise 1x1 conv, no nonlinearity between."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class Block(nn.Module):
    """`reps` x (ReLU, separable 3x3, BN), optional 3x3/stride max-pool, plus a (projected) shortcut."""

    def __init__(self, in_filters, out_filters, reps, strides=1, start_with_relu=True, grow_first=True):
        super().__init__()
        if out_filters != in_filters or strides != 1:
            self.skip = nn.Conv2d(in_filters, out_filters, 1, stride=strides, bias=False)
            self.skipbn = nn.BatchNorm2d(out_filters)
        else:
            self.skip = None
        rep: list[nn.Module] = []
        filters = in_filters
        if grow_first:
            rep += _relu_separable_bn(in_filters, out_filters)
            filters = out_filters
        for _ in range(reps - 1):
            rep += _relu_separable_bn(filters, filters)
        if not grow_first:
            rep += _relu_separable_bn(in_filters, out_filters)
        if not start_with_relu:
            rep = rep[1:]
        else:
            rep[0] = nn.ReLU(inplace=False)  # the block input also feeds the shortcut
        if strides != 1:
            rep.append(nn.MaxPool2d(3, strides, 1))
        self.rep = nn.Sequential(*rep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.skipbn(self.skip(x)) if self.skip is not None else x
        return self.rep(x) + skip


def _relu_separable_bn(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.ReLU(inplace=True), SeparableConv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels)]


class Xception(Backbone):
    """Entry, middle and exit flows of depthwise-separable convolutions with residual shortcuts."""

    MIN_INPUT_SIZE = {False: 7, True: 1}  # two unpadded 3x3 stem convs, the first with stride 2
    CLASSIFIER = ("fc",)

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 299,
        small_input: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        stem_padding = 1 if small_input else 0
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1 if small_input else 2, stem_padding, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=stem_padding, bias=False)
        self.bn2 = nn.BatchNorm2d(64)

        self.block1 = Block(64, 128, 2, 2, start_with_relu=False, grow_first=True)
        self.block2 = Block(128, 256, 2, 2, start_with_relu=True, grow_first=True)
        self.block3 = Block(256, 728, 2, 2, start_with_relu=True, grow_first=True)
        self.block4 = Block(728, 728, 3, 1)
        self.block5 = Block(728, 728, 3, 1)
        self.block6 = Block(728, 728, 3, 1)
        self.block7 = Block(728, 728, 3, 1)
        self.block8 = Block(728, 728, 3, 1)
        self.block9 = Block(728, 728, 3, 1)
        self.block10 = Block(728, 728, 3, 1)
        self.block11 = Block(728, 728, 3, 1)
        self.block12 = Block(728, 1024, 2, 2, start_with_relu=True, grow_first=False)

        self.conv3 = SeparableConv2d(1024, 1536, 3, 1, 1)
        self.bn3 = nn.BatchNorm2d(1536)
        self.conv4 = SeparableConv2d(1536, 2048, 3, 1, 1)
        self.bn4 = nn.BatchNorm2d(2048)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(2048, num_classes)

        self.feature_channels = (128, 256, 728, 2048)
        self.feature_strides = (2, 4, 8, 16) if small_input else (4, 8, 16, 32)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.relu(self.bn2(self.conv2(x)), inplace=True)
        stride4 = self.block1(x)
        stride8 = self.block2(stride4)
        x = self.block3(stride8)
        for block in (self.block4, self.block5, self.block6, self.block7, self.block8, self.block9, self.block10):
            x = block(x)
        stride16 = self.block11(x)
        x = self.block12(stride16)
        x = F.relu(self.bn3(self.conv3(x)), inplace=True)
        x = F.relu(self.bn4(self.conv4(x)), inplace=True)
        return [stride4, stride8, stride16, x]

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(features[-1], (1, 1)), 1)
        return self.fc(self.dropout(x))


@register_architecture()
def xception(small_input: bool = False, image_size: int = 299, **kwargs) -> Xception:
    check_input_size("xception", image_size, Xception.MIN_INPUT_SIZE, small_input)
    return Xception(small_input=small_input, image_size=image_size, **kwargs)
