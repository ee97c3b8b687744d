"""Shared matplotlib plumbing: a headless backend and an image grid."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (servers, CI, DDP ranks have no display)."""
    matplotlib.use("Agg", force=True)  # pyplot picks its backend at the first figure: this one, set here
    return plt


def save(figure, path: Path, tight: bool = True) -> Path:
    """`figure` as a PNG at `path`; `tight` crops it to what is drawn (one extra draw of the figure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    pyplot().close(figure)
    return path


def image_grid(
    images: np.ndarray,
    titles: Sequence[str],
    path: Path,
    *,
    columns: int = 8,
    draw: Optional[Callable[[object, int], None]] = None,
    title_colors: Optional[Sequence[str]] = None,
) -> Path:
    """Save N x H x W x C uint8 images as a grid; `draw(axis, i)` adds overlays (boxes, masks)."""
    plt = pyplot()
    count = len(images)
    columns = min(columns, count)
    rows = int(np.ceil(count / columns))
    # a fixed layout (each cell 1.6 x 1.8 in: the image, two lines of title above it) instead of
    # tight_layout and a tight crop, which draw the whole figure twice more: half the time of a grid
    figure, axes = plt.subplots(
        rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False, gridspec_kw=_grid_spacing(rows, columns)
    )
    for i, axis in enumerate(axes.flat):
        axis.axis("off")
        if i >= count:
            continue
        image = images[i]
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        axis.set_title(titles[i], fontsize=7, color=(title_colors[i] if title_colors else "black"))
        if draw:
            draw(axis, i)
    return save(figure, path, tight=False)


def _grid_spacing(rows: int, columns: int) -> dict:
    """Subplot spacing for cells of 1.6 x 1.8 inches: 0.05 in around the grid, 0.35 in above each image (its title)."""
    width, height = 1.6 * columns, 1.8 * rows
    return {
        "left": 0.05 / width,
        "right": 1 - 0.05 / width,
        "bottom": 0.05 / height,
        "top": 1 - 0.35 / height,
        "wspace": 0.1 / 1.5,
        "hspace": 0.35 / 1.45,
    }
