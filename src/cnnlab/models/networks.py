"""One plain network per task: a backbone and the task's head, as segmentation_models_pytorch builds
encoder, decoder and head.

  ClassificationNetwork   the backbone with its own classifier: class logits (one logit in sigmoid mode)
  LocalizationNetwork     the backbone's classifier and a `BoxHead` on the deepest map: (logits, boxes)
  SegmentationNetwork     a classifier-less backbone's maps -> `FCNHead`: per-pixel logits at input size

`forward` gives what a loss takes (logits); `predict` the one tensor per batch a logged model serves
(probabilities, then boxes for localisation). This is what the tasks train, what MLflow logs (its
`predict`, see cnnlab.tracking.model_registry) and what a user holds: no Lightning, metrics or
hyperparameters inside.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.base import Backbone
from cnnlab.models.fcn import FCNHead

MEAN_BOX = (0.5, 0.5, 0.4, 0.4)  # (cx, cy, w, h) the box head predicts before training


def center_size_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x_min, y_min, x_max, y_max)."""
    center, size = boxes[..., :2], boxes[..., 2:]
    return torch.cat([center - size / 2, center + size / 2], dim=-1)


class BoxHead(nn.Module):
    """4 box coordinates from the deepest feature map, normalised to the image.

    The map is average-pooled to a small fixed grid (not to 1x1: a global average forgets where
    things are), then an MLP predicts (cx, cy, w, h) through a sigmoid, converted to
    (x_min, y_min, x_max, y_max). Centre and size keep every prediction a valid box (x_max >=
    x_min), which GIoU needs, and the sigmoid keeps the centre and size inside the image.
    """

    def __init__(self, channels: int, pool_size: int = 4, hidden: int = 256):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * pool_size * pool_size, hidden), nn.ReLU(), nn.Linear(hidden, 4)
        )
        with torch.no_grad():  # start at the typical box, not at random corners
            self.mlp[-1].weight.mul_(0.1)
            self.mlp[-1].bias.copy_(torch.logit(torch.tensor(MEAN_BOX)))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return center_size_to_corners(torch.sigmoid(self.mlp(self.pool(feature)))).clamp(0, 1)


class TaskNetwork(nn.Module):
    """A backbone and a task's head; subclasses define `forward` (loss inputs) and `predict` (served output)."""

    backbone: Backbone

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """One tensor per batch of normalised images: what a logged model returns."""
        raise NotImplementedError


class ClassificationNetwork(TaskNetwork):
    """Class logits from the backbone's classifier; `sigmoid`: one logit for class 1 of two classes.

    `tta_flip`: in eval mode (validation, test, prediction, the logged model) the logits are the mean of
    the image's and its mirror image's, the flip test-time augmentation of the speedrun literature.
    """

    def __init__(self, backbone: Backbone, sigmoid: bool = False, tta_flip: bool = False):
        super().__init__()
        self.backbone = backbone
        self.sigmoid = sigmoid
        self.tta_flip = tta_flip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.tta_flip and not self.training:
            return (self.backbone(images) + self.backbone(images.flip(-1))) / 2
        return self.backbone(images)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """N x classes probabilities in either mode (sigmoid: [1 - p, p])."""
        if self.sigmoid:
            positive = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - positive, positive], dim=1)
        return logits.softmax(1)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.probabilities(self(images))


class LocalizationNetwork(TaskNetwork):
    """Class logits from the backbone's classifier and a box from `BoxHead`, both on the same feature maps."""

    def __init__(self, backbone: Backbone, box_pool_size: int = 4, box_hidden: int = 256):
        super().__init__()
        self.backbone = backbone
        self.box_head = BoxHead(backbone.num_features, box_pool_size, box_hidden)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N x classes logits, N x 4 boxes as normalised x_min, y_min, x_max, y_max)."""
        features = self.backbone.forward_features(images)
        return self.backbone.forward_head(features), self.box_head(features[-1])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        logits, boxes = self(images)
        return torch.cat([logits.softmax(1), boxes], dim=1)


class SegmentationNetwork(TaskNetwork):
    """A classifier-less backbone's feature maps -> FCN-32s/16s/8s -> per-pixel class logits at input size."""

    def __init__(self, backbone: Backbone, num_classes: int, variant: str = "fcn8s", model_name: str = "backbone"):
        super().__init__()
        self.backbone = backbone.remove_classifier()  # never run: no weights to save, no DDP parameter without gradient
        self.head = FCNHead(backbone.feature_channels, backbone.feature_strides, num_classes, variant, model_name)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(images), images.shape[-2:])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self(images).softmax(1)
