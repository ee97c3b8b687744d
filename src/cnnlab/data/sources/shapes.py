"""Generated shapes: one object per image on a varied background, with class, box and mask.

Deterministic from a seed, so it serves all three tasks without a download.
"""

from __future__ import annotations

import cv2
import numpy as np

from cnnlab.data.sources.base import Sample, Source

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if kind == "square":
        ang = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif kind == "triangle":
        ang = angle + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, r)
    elif kind == "diamond":  # a rhombus: long and short axes
        ang = angle + np.arange(4) * np.pi / 2
        radii = np.array([r, 0.6 * r, r, 0.6 * r])
    elif kind == "star":
        ang = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    elif kind == "cross":
        # plus sign: 12 corners of two bars of half-width r/3
        w = r / 3
        pts = np.array(
            [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
        )
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        return (pts @ rot.T + (cx, cy)).astype(np.float32)
    else:
        raise ValueError(kind)
    return np.stack([cx + radii * np.cos(ang), cy + radii * np.sin(ang)], axis=1).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear colour gradient plus noise, so the object is not found by colour alone."""
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    grad = start + (end - start) * t
    grad = np.broadcast_to(grad, (size, size, 3))
    if rng.random() < 0.5:
        grad = grad.transpose(1, 0, 2)
    noise = rng.normal(0, 12, (size, size, 3))
    return np.clip(grad + noise, 0, 255).astype(np.uint8)


def render_shape(rng: np.random.Generator, size: int, kind_index: int) -> tuple[np.ndarray, np.ndarray]:
    """One image with one shape: (HxWx3 uint8 image, HxW bool mask of the object)."""
    kind = SHAPES[kind_index]
    image = _background(rng, size)
    r = rng.uniform(0.15, 0.35) * size
    cx, cy = rng.uniform(r, size - r, 2)
    mask = np.zeros((size, size), np.uint8)
    if kind == "circle":
        # integer geometry at 16x sub-pixel precision so small circles stay round
        cv2.circle(mask, (int(cx * 16), int(cy * 16)), int(r * 16), 1, -1, cv2.LINE_8, shift=4)
    else:
        pts = _polygon(kind, cx, cy, r, rng.uniform(0, 2 * np.pi))
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    # object colour far enough from the local background to be visible
    background_mean = image[mask.astype(bool)].mean(axis=0)
    colour = rng.uniform(0, 255, 3)
    while np.abs(colour - background_mean).sum() < 150:
        colour = rng.uniform(0, 255, 3)
    image[mask.astype(bool)] = colour.astype(np.uint8)
    return image, mask.astype(bool)


class ShapesSource(Source):
    """`num_samples` images of `size` px, classes balanced, mask ids = class index + 1."""

    classes = list(SHAPES)
    mask_classes = ["background", *SHAPES]
    has_boxes = True
    has_masks = True

    def __init__(self, num_samples: int = 3000, size: int = 64, seed: int = 0):
        self.num_samples, self.size, self.seed = num_samples, size, seed

    def items(self) -> range:
        return range(self.num_samples)

    def item_name(self, item: int) -> str:
        return f"shapes/{item:05d}"

    def load(self, item: int) -> Sample:
        # one generator per image, seeded by (seed, index): any sample renders alone, in any order
        rng = np.random.default_rng([self.seed, item])
        label = item % len(SHAPES)
        image, obj = render_shape(rng, self.size, label)
        ys, xs = np.nonzero(obj)
        # box edges enclose the object's pixels: [x_min, x_max + 1) in pixel coordinates
        box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        mask = obj.astype(np.uint8) * (label + 1)
        return Sample(image=image, label=label, name=self.item_name(item), box=box, mask=mask)

    def describe(self) -> str:
        return f"generated shapes (n={self.num_samples}, size={self.size}, seed={self.seed})"
