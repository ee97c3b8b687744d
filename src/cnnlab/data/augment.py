"""Augmentation pipelines from config: image, box and mask transformed together, a batch at a time.

The `augment.train` list holds albumentations transforms, applied per sample, and cnnlab's batch
transforms (`BatchAffine`, `BatchHorizontalFlip`, `BatchColorJitter`, `BatchGaussianBlur`,
`BatchCoarseDropout`), which draw every sample's parameters in one vectorised call: albumentations'
transforms of the same names and parameters at a fraction of their cost per image, because
albumentations spends most of a small image's time in per-call Python, not in the pixel work
(benchmarks/overhead.py).
`build_augmentation` runs the list in its order on a batch; the batch is then normalised at once
(`cnnlab.data.preprocess.BatchNormalizer`), the same arithmetic as Normalize + ToTensorV2.
`build_transform` is the single-sample equivalent (configured transforms + Normalize + ToTensorV2).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate

BOX_LABEL_FIELD = "box_labels"
REDRAWS = 3  # an augmentation that moved the object out of view is drawn again this many times


class BatchTransform:
    """A transform drawn for a whole batch: each sample is chosen with probability `p`; `__call__`
    takes and returns (N x H x W x C uint8 images, N x H x W masks or None, N x 4 normalised boxes or None)."""

    def __init__(self, p: float):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p={p} is not a probability in [0, 1]")
        self.p = p
        self.rng = np.random.default_rng()

    def set_random_seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def chosen(self, n: int) -> np.ndarray:
        return np.flatnonzero(self.rng.random(n) < self.p)

    def range(self, value, name: str, single: str = "symmetric") -> tuple[float, float]:
        """A [low, high] pair from a pair or one number v: [-v, v] (`single="symmetric"`: shifts and angles),
        [v, v] ("fixed": a scale, a count, a size) or [0, v] ("up_to": a blur's kernel size or sigma)."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            v = float(value)
            return {"symmetric": (-abs(v), abs(v)), "fixed": (v, v), "up_to": (0.0, v)}[single]
        if (
            isinstance(value, Sequence)
            and not isinstance(value, str)
            and len(value) == 2
            and all(isinstance(v, (int, float)) for v in value)
        ):
            return float(min(value)), float(max(value))
        raise ValueError(
            f"{type(self).__name__}: {name}={value!r} is not valid; expected a number or a [low, high] pair"
        )


class BatchAffine(BatchTransform):
    """albumentations' `Affine` (scale, translation, rotation, shear about the centre) for a whole batch.

    Parameters mean what they mean in `A.Affine` (ranges drawn uniformly per sample, x and y scale
    and shear drawn independently, translation truncated to whole pixels, zero fill). Images are
    warped bilinearly, masks with nearest neighbour (`fill_mask` outside), boxes through their
    corners and clipped; a sample whose box leaves the image keeps its original geometry.
    """

    def __init__(
        self,
        scale=(1.0, 1.0),
        translate_percent=(0.0, 0.0),
        rotate=(0.0, 0.0),
        shear=(0.0, 0.0),
        p: float = 0.5,
        fill: float = 0,
        fill_mask: float = 0,
        border_mode: int = cv2.BORDER_CONSTANT,
    ):
        super().__init__(p)
        self.scale = self.range(scale, "scale", single="fixed")
        self.translate, self.rotate, self.shear = (
            self.range(v, name)
            for v, name in ((translate_percent, "translate_percent"), (rotate, "rotate"), (shear, "shear"))
        )
        if border_mode != cv2.BORDER_CONSTANT:
            raise ValueError(
                f"BatchAffine: border_mode={border_mode} is not supported; only {cv2.BORDER_CONSTANT} (constant `fill`)"
            )
        self.fill, self.fill_mask = fill, fill_mask

    def matrices(self, n: int, height: int, width: int, shift: tuple[float, float]) -> np.ndarray:
        """n x 3 x 3 matrices, composed as albumentations composes them (about `shift`)."""
        draw = lambda bounds, size=n: self.rng.uniform(bounds[0], bounds[1], size)  # noqa: E731
        sx, sy = draw(self.scale), draw(self.scale)
        tx, ty = np.trunc(draw(self.translate) * width), np.trunc(draw(self.translate) * height)
        hx, hy = np.tan(np.deg2rad(-draw(self.shear))), np.tan(np.deg2rad(-draw(self.shear)))
        angle = np.deg2rad(draw(self.rotate) % 360)
        cos, sin = np.cos(angle), np.sin(angle)
        # shear @ rotate @ scale, then about the shift and translated (albumentations' order)
        a = np.stack(
            [np.stack([cos + hx * -sin, sin + hx * cos], -1), np.stack([hy * cos - sin, hy * sin + cos], -1)], 1
        )
        a = a * np.stack([sx, sy], -1)[:, None, :]
        m = np.zeros((n, 3, 3))
        m[:, :2, :2] = a
        centre = np.asarray(shift)
        m[:, :2, 2] = centre - a @ centre + np.stack([tx, ty], -1)
        m[:, 2, 2] = 1.0
        return m

    def __call__(self, images: np.ndarray, masks: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None):
        """N x H x W x C images (uint8), N x H x W masks, N x 4 normalised boxes -> the same, transformed."""
        n, height, width = images.shape[:3]
        chosen = self.chosen(n)
        pixel = self.matrices(n, height, width, (width / 2 - 0.5, height / 2 - 0.5))
        if boxes is not None:  # boxes turn about the image's geometric centre, as in albumentations
            box = self.matrices_for_boxes(pixel, height, width)
            moved = _transform_boxes(boxes, box, height, width)
            kept = (moved[:, 2] - moved[:, 0] > 0) & (moved[:, 3] - moved[:, 1] > 0)
            chosen = chosen[kept[chosen]]
            boxes = boxes.copy()
            boxes[chosen] = moved[chosen]
        images = images.copy()
        masks = masks.copy() if masks is not None else None
        for i in chosen:
            matrix = pixel[i, :2]
            out = cv2.warpAffine(
                images[i],
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=self.fill,
            )
            images[i] = out.reshape(images[i].shape)
            if masks is not None:
                masks[i] = cv2.warpAffine(
                    masks[i],
                    matrix,
                    (width, height),
                    flags=cv2.INTER_NEAREST,
                    borderMode=cv2.BORDER_CONSTANT,
                    borderValue=self.fill_mask,
                )
        return images, masks, boxes

    @staticmethod
    def matrices_for_boxes(pixel: np.ndarray, height: int, width: int) -> np.ndarray:
        """The pixel matrices re-centred from the centre pixel (w/2 - 0.5) to the geometric centre (w/2)."""
        to_pixel_centre = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
        back = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
        return back @ pixel @ to_pixel_centre


class BatchHorizontalFlip(BatchTransform):
    """albumentations' `HorizontalFlip` for a batch: images, masks and boxes mirrored left to right."""

    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def __call__(self, images: np.ndarray, masks: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None):
        chosen = self.chosen(len(images))
        images = images.copy()
        images[chosen] = images[chosen, :, ::-1]
        if masks is not None:
            masks = masks.copy()
            masks[chosen] = masks[chosen, :, ::-1]
        if boxes is not None:
            boxes = boxes.copy()
            boxes[chosen] = np.stack(
                [1 - boxes[chosen, 2], boxes[chosen, 1], 1 - boxes[chosen, 0], boxes[chosen, 3]], -1
            )
        return images, masks, boxes


class BatchColorJitter(BatchTransform):
    """albumentations' `ColorJitter` for a batch: brightness, contrast, saturation and hue factors drawn
    per sample (a number b means [max(0, 1 - b), 1 + b]; hue h means [-h, h]) and applied in a random
    order per sample, each step rounded to whole grey levels as the uint8 functions do. Saturation and
    hue leave one-channel images as they are, as in albumentations. Pixels only: masks and boxes pass."""

    def __init__(self, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2, p: float = 0.5):
        super().__init__(p)
        self.ranges = [
            self.factor_range(brightness, "brightness"),
            self.factor_range(contrast, "contrast"),
            self.factor_range(saturation, "saturation"),
            self.range(hue, "hue"),
        ]

    def factor_range(self, value, name: str) -> tuple[float, float]:
        """A factor: b means [max(0, 1 - b), 1 + b], as in albumentations and torchvision."""
        if isinstance(value, (int, float)):
            if value < 0:
                raise ValueError(f"BatchColorJitter: {name}={value} must be >= 0")
            return max(0.0, 1.0 - value), 1.0 + value
        return self.range(value, name)

    def __call__(self, images: np.ndarray, masks: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None):
        chosen = self.chosen(len(images))
        if not len(chosen):
            return images, masks, boxes
        m, rgb = len(chosen), images.shape[-1] == 3
        factors = np.stack([self.rng.uniform(low, high, m) for low, high in self.ranges], 1)  # m x 4
        orders = np.argsort(self.rng.random((m, 4)), axis=1)  # each sample's own order of the four
        x = images[chosen].astype(np.float32)
        identity = factors == np.array(
            [1.0, 1.0, 1.0, 0.0]
        )  # a step albumentations skips (hue's HSV round trip is lossy)
        for position in range(4):
            for op in range(4):
                rows = np.flatnonzero((orders[:, position] == op) & ~identity[:, op])
                if len(rows) and (rgb or op < 2):
                    x[rows] = np.clip(np.rint(_COLOR_OPS[op](x[rows], factors[rows, op])), 0, 255)
        images = images.copy()
        images[chosen] = x.astype(images.dtype)
        return images, masks, boxes


def _brightness(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    return x * f[:, None, None, None]


def _contrast(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    mean = _gray(x).mean((1, 2, 3)) if x.shape[-1] == 3 else x.mean((1, 2, 3))
    return x * f[:, None, None, None] + (mean * (1 - f))[:, None, None, None]


def _saturation(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    return x * f[:, None, None, None] + _gray(x) * (1 - f)[:, None, None, None]


def _hue(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    # one cv2 call for the batch: the images stacked into one tall image
    m, height, width, _ = x.shape
    hsv = cv2.cvtColor(x.astype(np.uint8).reshape(m * height, width, 3), cv2.COLOR_RGB2HSV).reshape(m, height, width, 3)
    hsv[..., 0] = np.mod(hsv[..., 0] + 180 * f[:, None, None], 180).astype(np.uint8)
    return cv2.cvtColor(hsv.reshape(m * height, width, 3), cv2.COLOR_HSV2RGB).reshape(x.shape).astype(np.float32)


def _gray(x: np.ndarray) -> np.ndarray:
    """cv2's RGB -> grey (ITU-R 601 weights), rounded as its uint8 output is."""
    return np.rint(x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


_COLOR_OPS = (_brightness, _contrast, _saturation, _hue)


class BatchGaussianBlur(BatchTransform):
    """albumentations' `GaussianBlur` for a batch: per chosen sample a sigma from `sigma_limit` and an odd
    kernel size from `blur_limit` (a number k: up to k; 0: from sigma, int(sigma * 3.5) * 2 + 1),
    blurred by cv2. Pixels only."""

    def __init__(self, blur_limit=0, sigma_limit=(0.5, 3.0), p: float = 0.5):
        super().__init__(p)
        low, high = self.range(blur_limit, "blur_limit", single="up_to") if blur_limit else (0, 0)
        self.sizes = [k for k in range(int(low), int(high) + 1) if k % 2 == 1]  # []: from sigma
        self.sigma_limit = self.range(sigma_limit, "sigma_limit", single="up_to")

    def __call__(self, images: np.ndarray, masks: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None):
        chosen = self.chosen(len(images))
        sigmas = self.rng.uniform(*self.sigma_limit, len(chosen))
        sizes = self.rng.choice(self.sizes, len(chosen)) if self.sizes else (sigmas * 3.5).astype(int) * 2 + 1
        images = images.copy()
        for i, sigma, size in zip(chosen, sigmas, sizes):
            images[i] = cv2.GaussianBlur(images[i], (int(size), int(size)), float(sigma)).reshape(images[i].shape)
        return images, masks, boxes


class BatchCoarseDropout(BatchTransform):
    """albumentations' `CoarseDropout` for a batch: per chosen sample a number of holes from
    `num_holes_range`, each of a height and width from `hole_height_range` / `hole_width_range`
    (fractions of the image, or pixels when both bounds are whole numbers >= 1) at a uniform
    position inside the image, filled with `fill` (masks with `fill_mask`, unless None)."""

    def __init__(
        self,
        num_holes_range=(1, 1),
        hole_height_range=(0.1, 0.2),
        hole_width_range=(0.1, 0.2),
        fill: float = 0,
        fill_mask: Optional[float] = None,
        p: float = 0.5,
    ):
        super().__init__(p)
        self.holes = tuple(int(v) for v in self.range(num_holes_range, "num_holes_range", single="fixed"))
        if self.holes[0] < 1:
            raise ValueError(f"BatchCoarseDropout: num_holes_range={num_holes_range!r} must start at 1 or more")
        self.height = self.range(hole_height_range, "hole_height_range", single="fixed")
        self.width = self.range(hole_width_range, "hole_width_range", single="fixed")
        self.fill, self.fill_mask = fill, fill_mask

    def _sizes(self, bounds: tuple[float, float], side: int, shape: tuple[int, int]) -> np.ndarray:
        if bounds[0] >= 1 and float(bounds[0]).is_integer() and float(bounds[1]).is_integer():
            return self.rng.integers(int(bounds[0]), int(bounds[1]) + 1, shape)
        return np.maximum((side * self.rng.uniform(*bounds, shape)).astype(int), 1)

    def __call__(self, images: np.ndarray, masks: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None):
        chosen = self.chosen(len(images))
        m, height, width = len(chosen), images.shape[1], images.shape[2]
        most = self.holes[1]
        counts = self.rng.integers(self.holes[0], most + 1, m)
        heights = np.minimum(self._sizes(self.height, height, (m, most)), height)
        widths = np.minimum(self._sizes(self.width, width, (m, most)), width)
        top = (self.rng.random((m, most)) * (height - heights + 1)).astype(int)
        left = (self.rng.random((m, most)) * (width - widths + 1)).astype(int)
        rows, cols = np.arange(height), np.arange(width)
        in_rows = (rows >= top[..., None]) & (rows < (top + heights)[..., None])  # m x holes x H
        in_cols = (cols >= left[..., None]) & (cols < (left + widths)[..., None])  # m x holes x W
        real = np.arange(most) < counts[:, None]  # m x holes: the holes each sample drew
        holes = (in_rows[..., :, None] & in_cols[..., None, :] & real[..., None, None]).any(1)  # m x H x W
        images = _filled(images, chosen, holes, self.fill)
        if masks is not None and self.fill_mask is not None:
            masks = _filled(masks, chosen, holes, self.fill_mask)
        return images, masks, boxes


def _filled(arrays: np.ndarray, chosen: np.ndarray, holes: np.ndarray, value: float) -> np.ndarray:
    """A copy of `arrays` with `value` in the m x H x W `holes` of the `chosen` samples."""
    arrays = arrays.copy()
    picked = arrays[chosen]
    picked[holes] = value
    arrays[chosen] = picked
    return arrays


def _transform_boxes(boxes: np.ndarray, matrices: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalised boxes through per-sample matrices: the bounds of the moved corners, clipped to the image."""
    x0, y0, x1, y1 = (boxes[:, i] * (width if i % 2 == 0 else height) for i in range(4))
    corners = np.stack(
        [np.stack([x0, y0], -1), np.stack([x1, y0], -1), np.stack([x0, y1], -1), np.stack([x1, y1], -1)], 1
    )
    moved = corners @ matrices[:, :2, :2].transpose(0, 2, 1) + matrices[:, None, :2, 2]
    low, high = moved.min(1), moved.max(1)
    out = np.stack([low[:, 0] / width, low[:, 1] / height, high[:, 0] / width, high[:, 1] / height], -1)
    return np.clip(out, 0.0, 1.0).astype(boxes.dtype)


class Augmentation:
    """The configured transforms in order, on a batch: albumentations stages per sample, batch transforms at once.

    `batch(images, masks, boxes)` is what training calls; calling it like an albumentations Compose
    (image=, mask=, bboxes=, box_labels=) runs one sample through the same stages.
    """

    def __init__(self, transforms: list, with_boxes: bool):
        self.stages: list = []
        for transform in transforms:
            if isinstance(transform, BatchTransform):
                self.stages.append(transform)
            elif self.stages and isinstance(self.stages[-1], list):
                self.stages[-1].append(transform)
            else:
                self.stages.append([transform])
        self.stages = [_compose(s, with_boxes) if isinstance(s, list) else s for s in self.stages]

    def set_random_seed(self, seed: int) -> None:
        for offset, stage in enumerate(self.stages):
            stage.set_random_seed((seed + offset) % 2**32)

    def batch(self, images: np.ndarray, masks: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None):
        """N x H x W x C images, N x H x W masks, N x 4 boxes -> the same, augmented (nothing dropped)."""
        for stage in self.stages:
            images, masks, boxes = self.apply_stage(stage, images, masks, boxes)
        return images, masks, boxes

    @staticmethod
    def apply_stage(stage, images: np.ndarray, masks: Optional[np.ndarray] = None, boxes: Optional[np.ndarray] = None):
        """One of `stages` on a batch: an albumentations Compose sample by sample, a batch transform at once."""
        if isinstance(stage, A.Compose):
            return _per_sample(stage, images, masks, boxes)
        return stage(images, masks, boxes)

    def __call__(self, image: np.ndarray, mask=None, bboxes=None, **_labels) -> dict:
        image = image[:, :, None] if image.ndim == 2 else image
        boxes = np.asarray(bboxes, np.float32).reshape(1, 4) if bboxes is not None and len(bboxes) else None
        images, masks, boxes = self.batch(image[None], mask[None] if mask is not None else None, boxes)
        out = {"image": images[0]}
        if mask is not None:
            out["mask"] = masks[0]
        if bboxes is not None:
            out["bboxes"] = boxes if boxes is not None else np.zeros((0, 4), np.float32)
        return out


def _per_sample(pipeline: A.Compose, images: np.ndarray, masks: Optional[np.ndarray], boxes: Optional[np.ndarray]):
    out_images, out_masks = [], []
    out_boxes = boxes.copy() if boxes is not None else None
    for i in range(len(images)):
        inputs: dict[str, Any] = {"image": images[i]}
        if masks is not None:
            inputs["mask"] = masks[i]
        if boxes is not None:
            inputs["bboxes"] = boxes[i : i + 1]
            inputs[BOX_LABEL_FIELD] = [0]
        for _ in range(REDRAWS):
            out = pipeline(**inputs)
            if boxes is None or len(out["bboxes"]):
                break
        else:
            out = inputs  # the sample is kept unaugmented, never dropped
        image = out["image"]
        out_images.append(image[:, :, None] if image.ndim == 2 else image)
        if masks is not None:
            out_masks.append(out["mask"])
        if boxes is not None:
            out_boxes[i] = np.asarray(out["bboxes"][0], np.float32)
    return np.stack(out_images), (np.stack(out_masks) if masks is not None else None), out_boxes


def _instantiate(train_transforms: Sequence[Any]) -> list:
    kept = (A.BasicTransform, A.BaseCompose, BatchTransform)
    return [t if isinstance(t, kept) else instantiate(t) for t in train_transforms]


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


def build_augmentation(train_transforms: Sequence[Any], *, with_boxes: bool = False) -> Optional[Augmentation]:
    """The configured transforms as one `Augmentation`, or None when there are none.

    `train_transforms` are instantiable configs (the `augment.train` list) or transforms. Masks
    follow the image with nearest interpolation (albumentations' default for masks).
    """
    transforms = _instantiate(train_transforms)
    return Augmentation(transforms, with_boxes) if transforms else None


def build_transform(
    train_transforms: Sequence[Any],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    with_boxes: bool = False,
):
    """The configured transforms, then normalisation with the prepared statistics and tensors, one sample per call.

    Pass [] for evaluation. The DataModule uses the batched equivalent.
    """
    transforms = _instantiate(train_transforms)
    finish = [A.Normalize(mean=list(mean), std=list(std), max_pixel_value=255.0), ToTensorV2()]
    if not any(isinstance(t, BatchTransform) for t in transforms):
        return _compose(transforms + finish, with_boxes)
    augmentation, finishing = Augmentation(transforms, with_boxes), _compose(finish, with_boxes)

    def transform(**sample):
        out = {**sample, **augmentation(**sample)}
        return {**out, **finishing(**out)}

    return transform
