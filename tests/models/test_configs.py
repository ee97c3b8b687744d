"""Every conf/model/*.yaml builds its model through Hydra, with only keys its builder accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cnnlab.models import Backbone, available_models

MODEL_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "conf" / "model").glob("*.yaml"))


def test_every_registered_model_has_a_config():
    assert sorted(path.stem for path in MODEL_CONFIGS) == available_models()


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_model_config_instantiates(path):
    cfg = OmegaConf.load(path)
    assert cfg._target_ == "cnnlab.models.build_backbone"
    assert cfg.name == path.stem
    size = 299 if path.stem == "xception" else 224
    with torch.device("meta"):
        model = instantiate(cfg, num_classes=10, in_channels=3, image_size=size, _convert_="all")
    assert isinstance(model, Backbone)
    with torch.device("meta"):
        assert model(torch.empty(1, 3, size, size)).shape == (1, 10)
