"""Every named experiment (conf/experiment/*.yaml) composes, passes validation and builds its task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from cnnlab.config import register_configs, validate_config
from cnnlab.models import hub

CONF = Path(__file__).resolve().parents[2] / "conf"
EXPERIMENTS = sorted(
    p for p in (CONF / "experiment").glob("*.yaml") if p.stem != "none"
)  # none: no recipe, the plain defaults of conf/
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
DIGITS_META = {
    "classes": [str(digit) for digit in range(10)],
    "channels": 1,
    "image_size": 32,
    "mean": [0.3],
    "std": [0.4],
}
FASHION_META = {
    "classes": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "channels": 1,
    "image_size": 32,
    "mean": [0.29],
    "std": [0.35],
}
DATA_META = {"shapes": SHAPES_META, "sounds": SOUNDS_META, "digits": DIGITS_META, "fashion_mnist": FASHION_META}


def test_the_three_task_experiments_exist():
    assert {p.stem for p in EXPERIMENTS} >= {"shapes_classification", "shapes_localization", "shapes_segmentation"}


def test_the_default_recipe_is_one_of_them():
    """conf/config.yaml's default recipe (what cnnlab-train and dvc repro train) is a named experiment."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    assert cfg.hydra.runtime.choices.experiment in {p.stem for p in EXPERIMENTS}


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_composes_validates_and_builds(path):
    from cnnlab.tasks import build_task

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={path.stem}"])
    validate_config(cfg)
    assert cfg.data.name in DATA_META
    if cfg.data.name == "fashion_mnist" and cfg.model.weights:  # only the ImageNet recipe sets its own size
        assert (cfg.model.weights, cfg.data.image_size) == ("imagenet", 64)
    elif path.stem.startswith("fashion_speed"):  # the speedrun trains at the photos' own 28 px, not LeNet-5's 32
        assert cfg.data.image_size == 28
    else:  # a recipe leaves the size to its data config
        assert cfg.data.image_size == DATA_META[cfg.data.name]["image_size"]
    data_meta = dict(DATA_META[cfg.data.name], image_size=cfg.data.image_size)
    size, classes = data_meta["image_size"], len(data_meta["classes"])
    if cfg.model.weights and not (hub.cache_dir() / hub.published_file(cfg.model.name, cfg.model.weights)).is_file():
        cfg.model.weights = None  # `make weights` not run: the architecture still builds (tests/transfer: loading)
    meta = dict(data_meta, mask_classes=["background", *data_meta["classes"]])
    task = build_task(cfg, meta)
    with torch.no_grad():
        output = task.eval()(torch.zeros(2, data_meta["channels"], size, size))
    expected = {
        "classification": (2, classes),
        "localization": (2, classes),
        "segmentation": (2, classes + 1, size, size),
    }[cfg.task.name]
    assert tuple((output[0] if isinstance(output, tuple) else output).shape) == expected
