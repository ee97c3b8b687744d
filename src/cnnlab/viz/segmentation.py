"""Segmentation pictures: true and predicted masks laid over the test images."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cnnlab.viz.figures import image_grid, pyplot

IGNORE_COLOR = (1.0, 1.0, 1.0)  # ignored pixels (object boundaries) in white


def class_colors(count: int) -> np.ndarray:
    """count x 3 RGB in [0, 1]; class 0 (background) is never drawn, the others from tab10/tab20."""
    cmap = pyplot().get_cmap("tab10" if count <= 11 else "tab20")
    return np.array([cmap((i - 1) % cmap.N)[:3] for i in range(count)])


def overlay_mask(
    image: np.ndarray, mask: np.ndarray, colors: np.ndarray, ignore_index: int = 255, alpha: float = 0.55
) -> np.ndarray:
    """H x W x C uint8 image with every non-background class tinted in its colour and outlined in it
    at full strength; returns H x W x 3 uint8.

    The outline is what makes a mask legible on a uniformly coloured object, where a tint alone only
    looks like another colour of the same object: a predicted edge off the object's edge shows.
    """
    rgb = image.astype(np.float64) / 255
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    tint = np.zeros_like(rgb)
    painted = (mask > 0) & (mask != ignore_index) & (mask < len(colors))
    tint[painted] = colors[mask[painted]]
    ignored = mask == ignore_index
    tint[ignored] = IGNORE_COLOR
    weight = (painted | ignored)[..., None] * alpha
    weight[painted & region_edges(mask)] = 1.0
    return np.round((rgb * (1 - weight) + tint * weight) * 255).astype(np.uint8)


def region_edges(mask: np.ndarray) -> np.ndarray:
    """H x W bool: pixels with a 4-neighbour of another value (the image border is no edge)."""
    edges = np.zeros(mask.shape, bool)
    vertical, horizontal = mask[1:] != mask[:-1], mask[:, 1:] != mask[:, :-1]
    edges[1:] |= vertical
    edges[:-1] |= vertical
    edges[:, 1:] |= horizontal
    edges[:, :-1] |= horizontal
    return edges


def plot_mask_grid(
    images: np.ndarray,
    true_masks: np.ndarray,
    predicted_masks: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    *,
    ignore_index: int = 255,
) -> Path:
    """Each test image twice, side by side: the true mask, then the predicted one (titled with its IoU).

    The IoU in the title is over the image's non-background classes, ignored pixels left out.
    """
    colors = class_colors(len(class_names))
    panels, titles, title_colors = [], [], []
    for image, truth, predicted in zip(images, true_masks, predicted_masks):
        valid = truth != ignore_index
        present = sorted(set(np.unique(truth[valid]).tolist()) - {0})
        names = "+".join(class_names[c] for c in present) or class_names[0]
        predicted_names = sorted(set(np.unique(predicted[valid]).tolist()) - {0})
        object_truth, object_predicted = (truth > 0) & valid, (predicted > 0) & valid
        union = (object_truth | object_predicted).sum()
        same_class = ((truth == predicted) & object_truth).sum()
        iou = same_class / union if union else 1.0
        panels += [
            overlay_mask(image, truth, colors, ignore_index),
            overlay_mask(image, predicted, colors, ignore_index),
        ]
        titles += [
            f"true {names}",
            f"pred {'+'.join(class_names[c] for c in predicted_names) or class_names[0]}\nIoU {iou:.2f}",
        ]
        title_colors += ["black", "black" if iou >= 0.5 else "red"]
    return image_grid(np.stack(panels), titles, path, columns=8, title_colors=title_colors)
