"""LeNet-5 (LeCun et al. 1998) and the Keras-book MNIST CNN (Chollet, Deep Learning with Python)."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.base import Backbone, SequentialBackbone, conv_output_size
from cnnlab.models.registry import register_architecture

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
_POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


class LeNet5(Backbone):
    """conv 6@5x5, pool, conv 16@5x5, pool, FC 120, FC 84, FC classes; no padding, as in 1998.

    The 1998 net used tanh-like squashing and trainable subsampling; `activation="tanh",
    pool="avg"` is the closest plain-torch reading, ReLU + max pooling the modern default.
    Same parameter count either way: 61,706 at 32x32x1 and 10 classes.
    """

    MIN_INPUT_SIZE = {False: 16, True: 16}  # two unpadded 5x5 convs and two 2x2 pools

    feature_strides = (2, 4)

    def __init__(self, num_classes=10, in_channels=1, image_size=32, activation="relu", pool="max", dropout=0.0):
        super().__init__()
        act, pool_cls = _ACTIVATIONS[activation], _POOLS[pool]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),
            act(),
            pool_cls(2),
            nn.Conv2d(6, 16, kernel_size=5),
            act(),
            pool_cls(2),
        )
        side = image_size
        for kernel, stride in ((5, 1), (2, 2), (5, 1), (2, 2)):
            side = conv_output_size(side, kernel, stride)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            act(),
            nn.Dropout(dropout),
            nn.Linear(120, 84),
            act(),
            nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )
        self.feature_channels = (6, 16)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        first = self.features[:3](x)
        return [first, self.features[3:](first)]

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(features[-1])


class SimpleCNN(SequentialBackbone):
    """Keras-book MNIST CNN: Conv 32 3x3, pool, Conv 64 3x3, pool, Conv 64 3x3, Dense 64, Dense classes.

    93,322 parameters at 28x28x1 and 10 classes. `batch_norm=True` puts a BatchNorm after every
    conv (conv bias dropped): the book's net plateaus at chance for epochs on colourful, noisy
    images such as `shapes`, where normalised activations let it learn from the first epoch.
    """

    MIN_INPUT_SIZE = {False: 18, True: 18}  # three unpadded 3x3 convs and two 2x2 pools

    feature_strides = (2, 4, 4)

    def __init__(self, num_classes=10, in_channels=1, image_size=28, dropout=0.0, batch_norm=False):
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            if batch_norm:
                return [nn.Conv2d(cin, cout, 3, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            return [nn.Conv2d(cin, cout, 3), nn.ReLU()]

        stages = [[*conv(in_channels, 32), nn.MaxPool2d(2)], [*conv(32, 64), nn.MaxPool2d(2)], conv(64, 64)]
        # one flat Sequential, as before batch_norm existed, so saved state_dict keys stay valid
        self.features = nn.Sequential(*(layer for stage in stages for layer in stage))
        self._stage_ends = tuple(sum(len(stage) for stage in stages[: i + 1]) for i in range(len(stages)))
        side = image_size
        for kernel, stride in ((3, 1), (2, 2), (3, 1), (2, 2), (3, 1)):
            side = conv_output_size(side, kernel, stride)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * side * side, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )
        self.feature_channels = (32, 64, 64)

    def forward_head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(features[-1])  # the book's Flatten + Dense: no pooling


@register_architecture()
def lenet5(**kwargs) -> LeNet5:
    return LeNet5(**kwargs)


@register_architecture()
def simple_cnn(**kwargs) -> SimpleCNN:
    return SimpleCNN(**kwargs)
