"""Shared fixtures of the data tests: a prepare helper and Hydra composition of conf/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.data.prepare import build_prepared_dataset
from cnnlab.data.prepared import PreparedDataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prepare(tmp_path):
    """prepare(source, **overrides) -> (PreparedDataset, meta); writes under tmp_path/prepared."""

    def run(source, directory=None, **overrides):
        settings = dict(name="test", image_size=16, channels=3, val_fraction=0.0, test_fraction=0.0, seed=0, workers=1)
        settings.update(overrides)
        directory = Path(directory or tmp_path / "prepared")
        meta = build_prepared_dataset(source, directory, **settings)
        assert json.loads((directory / "meta.json").read_text()) == meta
        return PreparedDataset(directory), meta

    return run


@pytest.fixture(scope="session")
def compose_config():
    """compose_config(*overrides) -> the composed cnnlab config (Hydra), from this checkout's conf/."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cnnlab.config import register_configs

    register_configs()

    def run(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return run
