"""A grid of augmented training samples, as the network sees them (denormalised)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch

from cnnlab.viz.figures import image_grid

# How each input kind (the task's hparams.input_spec, see Source.input_spec) is best looked at:
# spectrograms in a perceptual colour map (dark = quiet), the top row their highest band.
COLOUR_MAPS = {"audio": "magma"}


def colour_mapped(images: np.ndarray, cmap: str) -> np.ndarray:
    """N x H x W x 1 uint8 -> N x H x W x 3 uint8 through a matplotlib colour map (0..255 over the map)."""
    lookup = (matplotlib.colormaps[cmap](np.arange(256))[:, :3] * 255).round().astype(np.uint8)
    return lookup[images[..., 0]]


def plot_augmentation_preview(dataset, task, path: Path, count: int = 16, seed: int = 0) -> Path:
    """`count` draws from the training pipeline, titled with their class."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(count, len(dataset)), replace=False)
    items = [dataset[int(i)] for i in picks]
    images = task.denormalize(torch.stack([item["image"] for item in items]))
    cmap = COLOUR_MAPS.get(((task.hparams.get("input_spec") or {}).get("kind")))
    if cmap and images.shape[-1] == 1:
        images = colour_mapped(images, cmap)
    names = task.hparams.class_names or []
    titles = [
        names[int(item["label"])] if int(item["label"]) < len(names) else str(int(item["label"])) for item in items
    ]
    return image_grid(images, titles, path)
