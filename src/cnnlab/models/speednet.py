"""A compact net for time-to-accuracy runs on CPU (conf/experiment/fashion_speed*.yaml).

The layout of the fast-training nets (Page's and Jordan's CIFAR-10 speedruns, airbench): 3x3 convs with
batch norm and ReLU, a 2x2 max-pool ending each stage, a global max-pool and one linear layer, and no
fully connected hidden layer (where most of LeNet-5's and the Keras-book net's weights sit).
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from cnnlab.config import ConfigError
from cnnlab.models.base import SequentialBackbone
from cnnlab.models.registry import register_architecture


class SpeedNet(SequentialBackbone):
    """Stage i: `depths[i]` conv 3x3 (no bias) + BatchNorm + ReLU at `widths[i]` channels, then max-pool 2x2.

    The head max-pools the deepest map to 1x1 and maps it to the classes. The default
    (widths 32, 64, 128; depths 1, 1, 1) has 94,186 parameters at 1 channel and 10 classes.
    """

    MIN_INPUT_SIZE = {False: 1, True: 1}  # padded convs and ceil-mode pools take any size

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        image_size: int = 28,
        widths: Sequence[int] = (32, 64, 128),
        depths: Sequence[int] = (1, 1, 1),
    ):
        super().__init__()
        widths, depths = [int(w) for w in widths], [int(d) for d in depths]
        if len(widths) != len(depths) or not widths or min(widths) < 1 or min(depths) < 1:
            raise ConfigError(
                f"model.widths={widths} and model.depths={depths}: expected lists of the same, non-zero length "
                "of positive integers (one width and one depth per stage)"
            )
        layers: list[nn.Module] = []
        ends, channels = [], in_channels
        for width, depth in zip(widths, depths):
            for _ in range(depth):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                channels = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: 28 -> 14 -> 7 -> 4, no border row lost
            ends.append(len(layers))
        self.features = nn.Sequential(*layers)
        self._stage_ends = tuple(ends)
        self.feature_channels = tuple(widths)
        self.feature_strides = tuple(2 ** (i + 1) for i in range(len(widths)))
        self.avgpool = nn.AdaptiveMaxPool2d(1)  # the name SequentialBackbone's head pools with
        self.classifier = nn.Linear(widths[-1], num_classes)


@register_architecture()
def speednet(**kwargs) -> SpeedNet:
    return SpeedNet(**kwargs)
