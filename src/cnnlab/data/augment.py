"""Albumentations pipelines from config: image, box and mask transformed together."""

from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate


def build_transform(
    train_transforms: Sequence[Any],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    with_boxes: bool = False,
) -> A.Compose:
    """Compose the configured transforms, then normalise with the prepared statistics and make tensors.

    `train_transforms` are instantiable configs (or transforms); pass [] for evaluation. Masks
    follow the image with nearest interpolation (albumentations' default for masks); boxes use
    the normalised (x_min, y_min, x_max, y_max) format that the prepared data stores.
    """
    transforms = [t if isinstance(t, A.BasicTransform) else instantiate(t) for t in train_transforms]
    transforms += [A.Normalize(mean=list(mean), std=list(std), max_pixel_value=255.0), ToTensorV2()]
    bbox_params = (
        A.BboxParams(format="albumentations", label_fields=["box_labels"], clip=True, min_visibility=0.0)
        if with_boxes
        else None
    )
    return A.Compose(transforms, bbox_params=bbox_params, seed=None)
