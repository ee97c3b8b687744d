"""AlexNet (Krizhevsky, Sutskever & Hinton 2012, "ImageNet Classification with Deep Convolutional Neural
Networks") in torchvision's single-tower layout, and ZFNet (Zeiler & Fergus 2013, "Visualizing and
Understanding Convolutional Networks").

AlexNet's module names and shapes are torchvision's (`features.0/3/6/8/10` convs, `classifier.1/4/6`
linears), so a torchvision ImageNet `.pth` loads strictly. ZFNet has no torchvision model; it uses the
same layout (features.N, avgpool, classifier.1/4/6): 96@7x7/2, pool 3/2, 256@5x5/2, pool 3/2, 384, 384,
256 @3x3, pool 3/2, FC 4096, 4096. Like torchvision's AlexNet it drops local response normalisation
and pools adaptively to 6x6 before the classifier, so its 62,357,608 parameters (1000 classes, 3
channels) do not depend on the input size. Both stems are unpadded, so their maps are a little smaller
than S / stride (224 gives 55/27/13/6 for AlexNet, 55/26/13/6 for ZFNet).

`small_input=True` replaces the large strided first convolution by a 3x3 stride-1 one, so 28-64 px
inputs keep useful maps (strides 1/2/4/8 instead of 4/8/16/32).
"""

from __future__ import annotations

from torch import nn

from cnnlab.models.base import SequentialBackbone, check_input_size
from cnnlab.models.registry import register_architecture


class AlexNet(SequentialBackbone):
    """Five convolutions (64, 192, 384, 256, 256), three max-pools, adaptive 6x6 pool, three FCs."""

    MIN_INPUT_SIZE = {False: 63, True: 15}  # smallest input per small_input setting

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        dropout: float = 0.5,
        hidden_features: int = 4096,
        pool_size: int = 6,
    ):
        super().__init__()
        check_input_size("alexnet", image_size, self.MIN_INPUT_SIZE, small_input)
        if small_input:
            first = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
        else:
            first = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
        self.features = nn.Sequential(
            first,
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = _classifier(256 * pool_size * pool_size, hidden_features, num_classes, dropout)
        # Maps after conv1, conv2, conv5 (each with its ReLU) and after the last pool.
        self._stage_ends = (2, 5, 12, 13)
        self.feature_channels = (64, 192, 256, 256)
        self.feature_strides = (1, 2, 4, 8) if small_input else (4, 8, 16, 32)


class ZFNet(SequentialBackbone):
    """Zeiler & Fergus' refinement of AlexNet: a 7x7 stride-2 first conv and 5x5 stride-2 second conv."""

    MIN_INPUT_SIZE = {False: 63, True: 30}

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        small_input: bool = False,
        dropout: float = 0.5,
        hidden_features: int = 4096,
        pool_size: int = 6,
    ):
        super().__init__()
        check_input_size("zfnet", image_size, self.MIN_INPUT_SIZE, small_input)
        if small_input:
            first = nn.Conv2d(in_channels, 96, kernel_size=3, stride=1, padding=1)
        else:  # padding 1 gives the paper's 110x110 first map at 224
            first = nn.Conv2d(in_channels, 96, kernel_size=7, stride=2, padding=1)
        # ceil_mode pools reproduce the paper's 55x55 and 13x13 maps at 224.
        self.features = nn.Sequential(
            first,
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.Conv2d(96, 256, kernel_size=5, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = _classifier(256 * pool_size * pool_size, hidden_features, num_classes, dropout)
        # Maps after pool1 (stride 4), conv2 (8), conv5 (16) and the last pool (32).
        self._stage_ends = (3, 5, 12, 13)
        self.feature_channels = (96, 256, 256, 256)
        self.feature_strides = (2, 4, 8, 16) if small_input else (4, 8, 16, 32)


def _classifier(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """torchvision's AlexNet head: linears at indices 1, 4, 6."""
    return nn.Sequential(
        nn.Dropout(p=dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(p=dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


@register_architecture()
def alexnet(**kwargs) -> AlexNet:
    return AlexNet(**kwargs)


@register_architecture()
def zfnet(**kwargs) -> ZFNet:
    return ZFNet(**kwargs)
