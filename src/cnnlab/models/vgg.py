"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image Recognition"):
configurations A, B, D, E as vgg11, vgg13, vgg16, vgg19, with and without batch norm (`_bn`).

Module names and shapes are torchvision's (`features.N` with N counting conv, [bn,] relu and pool
modules, `classifier.0/3/6`), so a torchvision ImageNet `.pth` loads strictly. VGG's stem already is a
3x3 stride-1 conv, so there is no `small_input` switch: five 2x2 pools need at least 32 px. For CIFAR-
sized work, `pool_size=1` and a narrower `hidden_features` shrink the 7x7x512 -> 4096 classifier
that dominates the parameter count (e.g. 14.7M conv + 0.5M head for vgg16 instead of 138M).
"""

from __future__ import annotations

from torch import nn

from cnnlab.models.base import SequentialBackbone
from cnnlab.models.registry import register_architecture

CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(SequentialBackbone):
    """Stacks of 3x3 convs separated by 2x2 max-pools, adaptive pool, three fully connected layers."""

    MIN_INPUT_SIZE = {False: 32, True: 32}  # five unpadded 2x2 pools: 32 px is the smallest that leaves a 1x1 map

    def __init__(
        self,
        config: str,
        batch_norm: bool = False,
        num_classes: int = 1000,
        in_channels: int = 3,
        image_size: int = 224,
        dropout: float = 0.5,
        hidden_features: int = 4096,
        pool_size: int = 7,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        self._pool_indices: list[int] = []
        channels = in_channels
        for item in CONFIGS[config]:
            if item == "M":
                self._pool_indices.append(len(layers))
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(channels, item, kernel_size=3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(item))
                layers.append(nn.ReLU(inplace=True))
                channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Linear(512 * pool_size * pool_size, hidden_features),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_features, hidden_features),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden_features, num_classes),
        )
        # The maps after pools 2..5 (strides 4..32), as FCN's skip connections use them.
        self._stage_start = self._pool_indices[0] + 1
        self._stage_ends = tuple(i + 1 for i in self._pool_indices[1:])
        self.feature_channels = (128, 256, 512, 512)
        self.feature_strides = (4, 8, 16, 32)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)


def _register(name: str, config: str, batch_norm: bool):
    @register_architecture(name)
    def build(**kwargs) -> VGG:
        return VGG(config, batch_norm, **kwargs)

    build.__name__ = name
    build.__doc__ = f"{name}: VGG configuration {config}{' with batch norm' if batch_norm else ''}."
    return build


vgg11 = _register("vgg11", "A", False)
vgg13 = _register("vgg13", "B", False)
vgg16 = _register("vgg16", "D", False)
vgg19 = _register("vgg19", "E", False)
vgg11_bn = _register("vgg11_bn", "A", True)
vgg13_bn = _register("vgg13_bn", "B", True)
vgg16_bn = _register("vgg16_bn", "D", True)
vgg19_bn = _register("vgg19_bn", "E", True)
