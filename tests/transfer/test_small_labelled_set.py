"""data.train_fraction: a stratified, fixed small labelled set out of the train split."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.data.datamodule import CNNDataModule
from cnnlab.data.prepare import build_prepared_dataset
from cnnlab.data.sources.digits import DigitsSource


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    directory = tmp_path_factory.mktemp("digits") / "prepared"
    build_prepared_dataset(
        DigitsSource(),
        directory,
        name="digits",
        image_size=16,
        channels=1,
        val_fraction=0.1,
        test_fraction=0.2,
        seed=0,
        workers=1,
    )
    return directory


def test_train_fraction_keeps_a_stratified_fixed_subset(digits):
    full = CNNDataModule(str(digits)).dataset("train", augment=False)
    small = CNNDataModule(str(digits), train_fraction=0.1, split_seed=0).dataset("train", augment=False)
    again = CNNDataModule(str(digits), train_fraction=0.1, split_seed=0).dataset("train", augment=False)
    other = CNNDataModule(str(digits), train_fraction=0.1, split_seed=1).dataset("train", augment=False)
    assert len(small) == pytest.approx(0.1 * len(full), abs=10)
    assert set(small.indices) <= set(full.indices) and np.array_equal(small.indices, again.indices)
    assert not np.array_equal(small.indices, other.indices)
    counts = np.bincount(small.prepared.labels[small.indices], minlength=10)
    assert counts.min() >= 10 and counts.max() <= 15  # ~10% of each class's ~125 training images
    module = CNNDataModule(str(digits), train_fraction=0.1)
    assert len(module.dataset("val", augment=False)) == len(CNNDataModule(str(digits)).dataset("val", augment=False))


def test_train_fraction_is_validated(tmp_path):
    from omegaconf import OmegaConf

    from cnnlab.config import ConfigError, DataConfig, validate_data_config

    data = OmegaConf.structured(DataConfig(name="x", source=None, prepared_dir=str(tmp_path), train_fraction=0.0))
    with pytest.raises(ConfigError, match=r"data.train_fraction=0.0 is not valid; expected a fraction in \(0, 1\]"):
        validate_data_config(data)
