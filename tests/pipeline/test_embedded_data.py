"""The embedded datasets and the prepared format they are written in."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.data.prepare import build_prepared_dataset
from cnnlab.data.prepared import PreparedDataset
from cnnlab.data.sources.digits import DigitsSource
from cnnlab.data.sources.shapes import SHAPES, ShapesSource


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> PreparedDataset:
    directory = tmp_path_factory.mktemp("prepared") / "digits-32"
    build_prepared_dataset(
        DigitsSource(), directory, name="digits", image_size=32, channels=1, val_fraction=0.1, test_fraction=0.2, seed=0
    )
    return PreparedDataset(directory)


def test_digits_split_is_stratified_disjoint_and_complete(digits):
    splits = digits.splits
    assert digits.meta["num_samples"] == 1797 and digits.images.shape == (1797, 32, 32, 1)
    assert len(splits["test"]) == 360  # 20% of 1,797, rounded up by scikit-learn
    everything = np.concatenate([splits[s] for s in ("train", "val", "test")])
    assert len(np.unique(everything)) == 1797 == len(everything)
    # every class holds its share of the test split (stratified), within one image
    counts = np.bincount(digits.labels[splits["test"]], minlength=10)
    shares = np.bincount(digits.labels, minlength=10) * 360 / 1797
    assert np.all(np.abs(counts - shares) <= 1)


def test_normalisation_statistics_come_from_the_train_split(digits):
    train = np.asarray(digits.images)[digits.splits["train"]].astype(np.float64) / 255
    assert digits.meta["mean"] == pytest.approx([train.mean()], abs=1e-9)
    assert digits.meta["std"] == pytest.approx([train.std()], abs=1e-9)
    assert digits.classes == [str(d) for d in range(10)]


def test_images_are_memory_mapped(digits):
    assert isinstance(digits.images, np.memmap)


def test_digits_pixels_match_scikit_learn(digits):
    import cv2
    from sklearn.datasets import load_digits

    raw = load_digits()
    # each prepared image is the scan on the 0..255 scale, linearly upscaled to 32x32
    for index in (0, 500, 1796):
        scan = np.round(raw.images[index] * 255 / 16).astype(np.uint8)
        expected = cv2.resize(scan, (32, 32), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(digits.images[index][:, :, 0], expected)
    assert np.array_equal(digits.labels, raw.target)


def test_shapes_are_deterministic_by_seed(tmp_path):
    def prepared(seed: int, folder: str) -> dict:
        settings = dict(name="s", image_size=48, channels=3, val_fraction=0.1, test_fraction=0.2, seed=0)
        return build_prepared_dataset(ShapesSource(60, 48, seed=seed), tmp_path / folder, **settings)

    meta_a, meta_b, meta_c = prepared(3, "a"), prepared(3, "b"), prepared(4, "c")
    assert meta_a["content_hash"] == meta_b["content_hash"] != meta_c["content_hash"]


def test_shapes_box_and_mask_describe_the_same_object():
    source = ShapesSource(num_samples=len(SHAPES) * 3, size=64, seed=0)
    labels = set()
    for item in source.items():
        sample = source.load(item)
        labels.add(sample.label)
        ids = set(np.unique(sample.mask)) - {0}
        assert ids == {sample.label + 1}  # mask id = class index + 1, background 0
        ys, xs = np.nonzero(sample.mask)
        assert sample.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
    assert labels == set(range(len(SHAPES)))


def test_prepared_shapes_carry_normalised_boxes_and_masks(tmp_path):
    build_prepared_dataset(
        ShapesSource(60, 64, seed=0),
        tmp_path / "s",
        name="shapes",
        image_size=32,
        channels=3,
        val_fraction=0.1,
        test_fraction=0.2,
        seed=0,
    )
    prepared = PreparedDataset(tmp_path / "s")
    assert prepared.meta["mask_classes"] == ["background", *SHAPES]
    for index in range(60):
        x_min, y_min, x_max, y_max = prepared.boxes[index] * 32
        ys, xs = np.nonzero(prepared.masks[index])
        # the box scaled with the image matches the nearest-resized mask; halving the size may drop
        # a one-pixel star tip from the mask, hence two pixels of slack
        assert abs(xs.min() - x_min) <= 2 and abs(xs.max() + 1 - x_max) <= 2
        assert abs(ys.min() - y_min) <= 2 and abs(ys.max() + 1 - y_max) <= 2
