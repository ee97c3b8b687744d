"""Every named experiment (conf/experiment/*.yaml) composes, passes validation and builds its task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from cnnlab.config import register_configs, validate_config

CONF = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENTS = sorted((CONF / "experiment").glob("*.yaml"))
SHAPES_META = {"classes": ["circle", "square", "triangle", "diamond", "cross", "star"], "channels": 3, "image_size": 64,
               "mean": [0.5] * 3, "std": [0.25] * 3}  # fmt: skip


def test_the_three_task_experiments_exist():
    assert {p.stem for p in EXPERIMENTS} >= {"shapes_classification", "shapes_localization", "shapes_segmentation"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_composes_validates_and_builds(path):
    from cnnlab.tasks import build_task

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={path.stem}"])
    validate_config(cfg)
    assert cfg.data.name == "shapes" and cfg.data.image_size == 64
    meta = dict(SHAPES_META, mask_classes=["background", *SHAPES_META["classes"]])
    task = build_task(cfg, meta)
    with torch.no_grad():
        output = task.eval()(torch.zeros(2, 3, 64, 64))
    expected = {"classification": (2, 6), "localization": (2, 6), "segmentation": (2, 7, 64, 64)}[cfg.task.name]
    assert tuple((output[0] if isinstance(output, tuple) else output).shape) == expected
