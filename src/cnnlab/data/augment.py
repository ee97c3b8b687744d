"""Albumentations pipelines from config: image, box and mask transformed together.

Training applies the configured transforms per sample (`build_augmentation`), then normalises a
whole batch at once (`cnnlab.data.preprocess.BatchNormalizer`): the same arithmetic as
albumentations' Normalize + ToTensorV2, without their per-sample cost. `build_transform` is the
single-sample equivalent (configured transforms + Normalize + ToTensorV2).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import albumentations as A
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate

BOX_LABEL_FIELD = "box_labels"


def _instantiate(train_transforms: Sequence[Any]) -> list:
    return [t if isinstance(t, (A.BasicTransform, A.BaseCompose)) else instantiate(t) for t in train_transforms]


def _bbox_params(with_boxes: bool) -> Optional[A.BboxParams]:
    # boxes use the normalised (x_min, y_min, x_max, y_max) format that the prepared data stores
    if not with_boxes:
        return None
    return A.BboxParams(format="albumentations", label_fields=[BOX_LABEL_FIELD], clip=True, min_visibility=0.0)


def _compose(transforms: list, with_boxes: bool) -> A.Compose:
    with warnings.catch_warnings():
        # a pixel-only pipeline (invert, normalise) leaves boxes as they are; albumentations warns about that
        warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform to process it")
        return A.Compose(transforms, bbox_params=_bbox_params(with_boxes), seed=None)


def build_augmentation(train_transforms: Sequence[Any], *, with_boxes: bool = False) -> Optional[A.Compose]:
    """The configured transforms as one albumentations Compose, or None when there are none.

    `train_transforms` are instantiable configs (the `augment.train` list) or transforms. Masks
    follow the image with nearest interpolation (albumentations' default for masks).
    """
    transforms = _instantiate(train_transforms)
    return _compose(transforms, with_boxes) if transforms else None


def build_transform(
    train_transforms: Sequence[Any],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    with_boxes: bool = False,
) -> A.Compose:
    """Compose the configured transforms, then normalise with the prepared statistics and make tensors.

    Pass [] for evaluation. One sample per call; the DataModule uses the batched equivalent.
    """
    transforms = _instantiate(train_transforms)
    transforms += [A.Normalize(mean=list(mean), std=list(std), max_pixel_value=255.0), ToTensorV2()]
    return _compose(transforms, with_boxes)
