"""Classification pictures: the confusion matrix and a grid of predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cnnlab.viz.figures import image_grid, pyplot, save


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Counts per (true, predicted) pair, rows normalised for the colour, counts written in."""
    plt = pyplot()
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(n), class_names, rotation=90 if n > 10 else 45, fontsize=8)
    axis.set_yticks(range(n), class_names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    accuracy = np.trace(confusion) / max(confusion.sum(), 1)
    axis.set_title(f"confusion matrix (accuracy {accuracy:.2%}, n={int(confusion.sum())})")
    if n <= 30:
        for t in range(n):
            for p in range(n):
                if confusion[t, p]:
                    axis.text(
                        p,
                        t,
                        int(confusion[t, p]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rates[t, p] > 0.5 else "black",
                    )
    return save(figure, path)


def plot_prediction_grid(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    class_names: Sequence[str],
    path: Path,
) -> Path:
    """Test images titled 'predicted (confidence) / true', wrong ones in red."""
    titles = [f"{class_names[p]} {c:.0%}\ntrue {class_names[t]}" for t, p, c in zip(labels, predicted, confidence)]
    colors = ["black" if t == p else "red" for t, p in zip(labels, predicted)]
    return image_grid(images, titles, path, title_colors=colors)
