"""Every named experiment (conf/experiment/*.yaml) composes, passes validation and builds its task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from cnnlab.config import register_configs, validate_config

CONF = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENTS = sorted(
    p for p in (CONF / "experiment").glob("*.yaml") if p.stem != "none"
)  # none: no recipe (params.yaml)
SHAPES_META = {
    "classes": ["circle", "square", "triangle", "diamond", "cross", "star"],
    "channels": 3,
    "image_size": 64,
    "mean": [0.5] * 3,
    "std": [0.25] * 3,
}
SOUNDS_META = {
    "classes": ["tone", "chirp_up", "chirp_down", "noise_burst", "clicks", "chord"],
    "channels": 1,
    "image_size": 64,
    "mean": [0.3],
    "std": [0.2],
}
DATA_META = {"shapes": SHAPES_META, "sounds": SOUNDS_META}  # both 6 classes at 64 px


def test_the_three_task_experiments_exist():
    assert {p.stem for p in EXPERIMENTS} >= {"shapes_classification", "shapes_localization", "shapes_segmentation"}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_composes_validates_and_builds(path):
    from cnnlab.tasks import build_task

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={path.stem}"])
    validate_config(cfg)
    assert cfg.data.name in DATA_META and cfg.data.image_size == 64
    data_meta = DATA_META[cfg.data.name]
    meta = dict(data_meta, mask_classes=["background", *data_meta["classes"]])
    task = build_task(cfg, meta)
    with torch.no_grad():
        output = task.eval()(torch.zeros(2, data_meta["channels"], 64, 64))
    expected = {"classification": (2, 6), "localization": (2, 6), "segmentation": (2, 7, 64, 64)}[cfg.task.name]
    assert tuple((output[0] if isinstance(output, tuple) else output).shape) == expected
