"""A grid of augmented training samples, as the network sees them (denormalised)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab.viz.figures import image_grid


def plot_augmentation_preview(dataset, task, path: Path, count: int = 16, seed: int = 0) -> Path:
    """`count` draws from the training pipeline, titled with their class."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset), size=min(count, len(dataset)), replace=False)
    items = [dataset[int(i)] for i in picks]
    images = task.denormalize(torch.stack([item["image"] for item in items]))
    names = task.hparams.class_names or []
    titles = [names[int(item["label"])] if int(item["label"]) < len(names) else str(int(item["label"])) for item in items]
    return image_grid(images, titles, path)
