"""Preprocessing that prepare, training and prediction share, so a model always sees one kind of input.

prepare converts every decoded image to `data.channels` and resizes it (with its box and mask) to
`data.image_size` (`resize_sample`); training, evaluation and prediction normalise batches with the
training split's statistics (`BatchNormalizer`). Prediction runs new files through both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from cnnlab.data.sources.base import BadSampleError, Sample

if TYPE_CHECKING:
    import torch

PADDING = "padding"  # a batch key: a DDP rank's filler step, which the task weighs 0 (cnnlab.data.shards)
BATCH_NUMBER = "cnnlab_batch_number"  # a shard training batch's number in its epoch, read by the DataModule


def to_channels(image: np.ndarray, channels: int, name: str) -> np.ndarray:
    """H x W (x C) uint8 -> H x W x `channels`: gray repeated to RGB, alpha dropped, RGB to luma."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8:
        raise BadSampleError(f"{name}: pixel type {image.dtype}, expected uint8 after decoding")
    have = image.shape[2]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 4:  # a reader that kept alpha: drop it
        image, have = np.ascontiguousarray(image[:, :, :3]), 3
        if channels == 3:
            return image
    if have == 3 and channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    raise BadSampleError(f"{name}: {have} channels, cannot convert to data.channels={channels}")


def center_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The central square of side `fraction` x the shorter side (ImageNet evaluation's crop)."""
    height, width = image.shape[:2]
    side = max(1, round(min(height, width) * fraction))
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def resize_sample(sample: Sample, size: int, channels: int) -> Sample:
    """Resize image (area when shrinking, linear when growing), mask (nearest) and box to size x size."""
    image = to_channels(sample.image, channels, sample.name)
    height, width = image.shape[:2]
    interpolation = cv2.INTER_AREA if size < min(height, width) else cv2.INTER_LINEAR
    resized = cv2.resize(image, (size, size), interpolation=interpolation)
    if resized.ndim == 2:
        resized = resized[:, :, None]
    box = None
    if sample.box is not None:
        x_min, y_min, x_max, y_max = sample.box
        if not (0 <= x_min < x_max <= width and 0 <= y_min < y_max <= height):
            raise BadSampleError(
                f"{sample.name}: box {sample.box} is not inside the {width}x{height} image with "
                f"x_min < x_max and y_min < y_max"
            )
        box = (x_min / width, y_min / height, x_max / width, y_max / height)
    mask = None
    if sample.mask is not None:
        if sample.mask.shape[:2] != (height, width):
            raise BadSampleError(
                f"{sample.name}: mask is {sample.mask.shape[1]}x{sample.mask.shape[0]} but its image is "
                f"{width}x{height}"
            )
        mask = cv2.resize(sample.mask, (size, size), interpolation=cv2.INTER_NEAREST)
    return Sample(image=resized, label=sample.label, name=sample.name, box=box, mask=mask, split=sample.split)


class BatchNormalizer:
    """N x H x W x C uint8 -> N x C x H x W float32, (pixel / 255 - mean) / std per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        import torch  # here: prepare and its decode workers use this module without torch

        mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        self.scale = torch.tensor(1.0 / (255.0 * std), dtype=torch.float32).view(1, -1, 1, 1)
        self.shift = torch.tensor(mean / std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        import torch  # see __init__

        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        out = torch.empty(pixels.shape, dtype=torch.float32)  # contiguous N x C x H x W
        out.copy_(pixels)
        return out.mul_(self.scale).sub_(self.shift)


def finish_batch(images, labels, boxes, masks, augment, normalize) -> dict[str, torch.Tensor]:
    """N x H x W x C uint8 images (and their boxes, masks) -> the augmented, normalised batch a task takes.
    Both storage formats end here: the arrays' `PreparedSplit` and the shards' `ShardBatches`."""
    import torch  # see BatchNormalizer

    if augment is not None:
        images, masks, boxes = augment.batch(images, masks, boxes)
    batch = {"image": normalize(images), "label": torch.from_numpy(np.asarray(labels).astype(np.int64))}
    if boxes is not None:
        batch["box"] = torch.from_numpy(np.asarray(boxes, np.float32))
    if masks is not None:
        batch["mask"] = torch.from_numpy(masks.astype(np.int64))
    return batch
