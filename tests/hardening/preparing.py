"""Prepare a source into 8 px arrays with bad samples skipped: what the path-rule tests inspect."""

from __future__ import annotations

import numpy as np

from cnnlab.data.prepare import build_prepared_dataset


def prepare_skipping(source, tmp_path):
    """(meta.json facts, images.npy, skipped.csv's text) of `source` prepared under tmp_path/prepared."""
    meta = build_prepared_dataset(
        source,
        tmp_path / "prepared",
        name="p",
        image_size=8,
        channels=3,
        val_fraction=0,
        test_fraction=0,
        seed=0,
        on_bad_sample="skip",
        workers=1,
    )
    images = np.load(tmp_path / "prepared" / "images.npy")
    return meta, images, (tmp_path / "prepared" / "skipped.csv").read_text()
