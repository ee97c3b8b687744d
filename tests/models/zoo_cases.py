"""What the model tests share: which input each registered model is tested at, and how."""

from __future__ import annotations

import functools

import torch

from cnnlab.config import ConfigError
from cnnlab.models import available_models, build_backbone, model_spec

MODELS = available_models()


@functools.lru_cache(maxsize=None)
def has_small_input(name: str) -> bool:
    """Whether the model's builder accepts `small_input` (an unknown kwarg is a ConfigError)."""
    try:
        with torch.device("meta"):
            build_backbone(name, num_classes=10, in_channels=3, image_size=224, small_input=True)
    except ConfigError:
        return False
    return True


def small_case(name: str, size: int = 16) -> tuple[int, dict]:
    """(image size, builder kwargs) for a small-input test: `size` px (or the small-input minimum, if
    larger) with small_input where the model has it, else the smallest size the model declares.
    16 px keeps the deepest nets' CPU tests short; the training tests run at 32 px."""
    if has_small_input(name):
        return max(size, model_spec(name).min_input_size), {"small_input": True}
    return model_spec(name).min_input_size, {}


def imagenet_size(name: str) -> int:
    return 299 if name == "xception" else 224


# Padded nets give maps of exactly ceil(S / stride). Nets with unpadded layers give a little less:
# their exact sizes, worked out by hand with (W - F + 2P) / S + 1 (ceil for ZFNet's ceil-mode pools).
UNPADDED_SMALL_SIZES = {
    "alexnet": [16, 7, 3, 1],  # small_input at 16: 3x3/1 conv 16, pool 7, pool 3, pool 1
    "zfnet": [15, 6, 3, 1],  # small_input at its minimum 30: pool 15, 5x5/2 conv 6, pool 3, conv5 3, pool 1
    "lenet5": [6, 1],  # 16 px: conv5 12, pool 6, conv5 2, pool 1
    "simple_cnn": [8, 3, 1],  # 18 px: conv3 16, pool 8, conv3 6, pool 3, conv3 1
}
UNPADDED_IMAGENET_SIZES = {  # default stems at 224 px (xception at 299 px, its design size)
    "alexnet": [55, 27, 13, 6],
    "zfnet": [55, 26, 13, 6],
    "xception": [74, 37, 19, 10],
    "lenet5": [110, 53],
    "simple_cnn": [111, 54, 52],
}
