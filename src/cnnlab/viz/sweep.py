"""The picture of a sweep: each trial's value and the best so far."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.viz.figures import pyplot, save


def plot_optimization_history(values: list[float], metric: str, mode: str, path: Path) -> Path:
    """Each trial's value in start order, and the best so far (Optuna's history plot, for any sweeper)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    trials = np.arange(len(values))
    array = np.array(values, dtype=float)
    filled = np.where(np.isnan(array), -np.inf if mode == "max" else np.inf, array)
    best = np.maximum.accumulate(filled) if mode == "max" else np.minimum.accumulate(filled)
    axis.plot(trials, array, "o", label="trial")
    axis.step(trials, np.where(np.isinf(best), np.nan, best), where="post", label=f"best ({mode})")
    axis.set_xlabel("trial (start order)")
    axis.set_ylabel(metric)
    axis.set_title("optimisation history")
    axis.legend()
    return save(figure, path)
