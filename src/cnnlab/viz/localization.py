"""Localisation pictures: test images with the true box (green) and the predicted one (red)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.patches import Rectangle

from cnnlab.viz.figures import image_grid


def plot_box_grid(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    ious: np.ndarray,
    true_boxes: np.ndarray,
    boxes: np.ndarray,
    class_names: Sequence[str],
    path: Path,
) -> Path:
    """Titles 'predicted class / IoU'; a wrong class or IoU < 0.5 is titled in red.

    Boxes are normalised (x_min, y_min, x_max, y_max) and drawn on the pixel grid of the image.
    """
    height, width = images.shape[1:3]

    def draw(axis, i: int) -> None:
        for box, color in ((true_boxes[i], "lime"), (boxes[i], "red")):
            x0, y0, x1, y1 = box * (width, height, width, height)
            # imshow puts pixel centres on integers, so pixel edges sit at -0.5
            axis.add_patch(
                Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.2)
            )

    titles = [f"{class_names[p]} IoU {iou:.2f}\ntrue {class_names[t]}" for t, p, iou in zip(labels, predicted, ious)]
    colors = ["black" if t == p and iou >= 0.5 else "red" for t, p, iou in zip(labels, predicted, ious)]
    return image_grid(images, titles, path, draw=draw, title_colors=colors)
