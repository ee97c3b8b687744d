"""Shared matplotlib plumbing: a headless backend and an image grid."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (servers, CI, DDP ranks have no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
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
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for i, axis in enumerate(axes.flat):
        axis.axis("off")
        if i >= count:
            continue
        image = images[i]
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        axis.set_title(titles[i], fontsize=7, color=(title_colors[i] if title_colors else "black"))
        if draw:
            draw(axis, i)
    figure.tight_layout()
    return save(figure, path)
