"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going Deeper with Convolutions").

Module names and shapes are torchvision's (`conv1.conv`/`conv1.bn` BasicConv2d with bn eps=0.001,
`inception3a.branch1.conv`, `inception3a.branch2.0.conv`, ..., `aux1.conv.conv`, `aux1.fc1`, `fc`),
including torchvision's 3x3 kernel in the "5x5" branch (pytorch/vision#906) that its ImageNet weights
were trained with: 6,624,904 parameters without auxiliary heads at 1000 classes.

torchvision's `googlenet-*.pth` holds the auxiliary heads; with `aux_logits=False` (the default) their
keys are dropped on load, as torchvision itself does, so `load_state_dict(torch.load(path), strict=True)`
works either way. Those weights expect `transform_input=True`.

Auxiliary heads (`aux_logits=True`) run in training mode only; `forward` still returns the main
logits and leaves the two auxiliary outputs in `model.aux_outputs` (aux1, aux2) for the task's loss
(the paper weights each by 0.3). `small_input=True`: 3x3 stride-1 conv1 and no first max-pool, so the
maps sit at strides 1/2/4/8 instead of 4/8/16/32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.base import Backbone, check_input_size
from cnnlab.models.registry import register_architecture


class BasicConv2d(nn.Module):
    """Conv (no bias), batch norm (eps 0.001, as ported from TensorFlow), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; pool->1x1) concatenated on channels."""

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1), BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1)
        )
        # 3x3 where the paper has 5x5: torchvision's layout, which its weights need.
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1), BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on an intermediate map: 4x4 average pool, 1x1 conv, two FCs."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7):
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


class GoogLeNet(Backbone):
    """Stem, nine Inception modules in three resolution groups, global pool, dropout, fc."""

    # Four unpadded 3x3/2 ceil-mode pools; the default stem divides by 4 before the first of them.
    MIN_INPUT_SIZE = {False: 15, True: 4}
    CLASSIFIER = ("fc", "aux1", "aux2")  # the auxiliary heads too: only a classification loss reads them

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        aux_logits: bool = False,
        transform_input: bool = False,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
    ):
        super().__init__()
        if transform_input and in_channels != 3:
            raise ValueError("transform_input re-normalises RGB inputs; it needs in_channels=3")
        self.aux_logits = aux_logits
        self.transform_input = transform_input
        if small_input:
            self.conv1 = BasicConv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
            self.maxpool1 = nn.Identity()
        else:
            self.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)

        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout=dropout_aux)
            self.aux2 = InceptionAux(528, num_classes, dropout=dropout_aux)
        else:
            self.aux1 = None
            self.aux2 = None
            self.register_load_state_dict_pre_hook(_drop_aux_keys)
        self.aux_outputs: tuple[torch.Tensor, ...] = ()

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

        self.feature_channels = (192, 480, 832, 1024)
        self.feature_strides = (1, 2, 4, 8) if small_input else (4, 8, 16, 32)

        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """Map ImageNet-normalised input to the [-1, 1] scaling the ported TensorFlow weights expect."""
        x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x_ch0, x_ch1, x_ch2), 1)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.transform_input:
            x = self._transform_input(x)
        x = self.conv3(self.conv2(self.maxpool1(self.conv1(x))))
        stride4 = x
        x = self.inception3b(self.inception3a(self.maxpool2(x)))
        stride8 = x
        x = self.inception4a(self.maxpool3(x))
        run_aux = self.aux1 is not None and self.training
        aux1 = self.aux1(x) if run_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if run_aux else None
        x = self.inception4e(x)
        stride16 = x
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        self.aux_outputs = (aux1, aux2) if run_aux else ()
        return [stride4, stride8, stride16, x]

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(features[-1]), 1)))


def _drop_aux_keys(module, state_dict, prefix, *args) -> None:
    """torchvision's checkpoint has aux-head weights; a model built without aux heads ignores them."""
    for key in [k for k in state_dict if k.startswith((prefix + "aux1.", prefix + "aux2."))]:
        del state_dict[key]


@register_architecture()
def googlenet(small_input: bool = False, image_size: int = 224, **kwargs) -> GoogLeNet:
    check_input_size("googlenet", image_size, GoogLeNet.MIN_INPUT_SIZE, small_input)
    return GoogLeNet(small_input=small_input, image_size=image_size, **kwargs)
