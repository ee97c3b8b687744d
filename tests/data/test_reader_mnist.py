"""MNIST idx files, gzipped or not: pixels and labels as written, train/t10k as the split."""

from __future__ import annotations

import gzip

import cv2
import numpy as np
import pytest
from data_writers import idx_bytes, read_skipped, write_mnist

from cnnlab.data.sources.base import BadSampleError
from cnnlab.data.sources.mnist import MNISTSource


@pytest.mark.parametrize("gzipped", [True, False])
def test_idx_files_read_as_written(tmp_path, prepare, gzipped):
    written = write_mnist(tmp_path / "mnist", train=12, test=6, gzipped=gzipped)
    prepared, meta = prepare(MNISTSource(str(tmp_path / "mnist")), image_size=28, channels=1, val_fraction=0.25)
    assert meta["classes"] == [str(d) for d in range(10)]
    assert meta["split_sizes"] == {"train": 9, "val": 3, "test": 6}  # val carved from train, t10k is test
    images = np.concatenate([written["train"][0], written["t10k"][0]])[..., None]
    labels = np.concatenate([written["train"][1], written["t10k"][1]])
    np.testing.assert_array_equal(prepared.images, images)  # 28 -> 28: untouched
    np.testing.assert_array_equal(prepared.labels, labels)
    np.testing.assert_array_equal(np.sort(prepared.splits["test"]), np.arange(12, 18))


def test_resized_to_32_like_lenet_expects(tmp_path, prepare):
    written = write_mnist(tmp_path / "mnist", train=4, test=2)
    prepared, _ = prepare(MNISTSource(str(tmp_path / "mnist")), image_size=32, channels=1)
    expected = cv2.resize(written["train"][0][0], (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(prepared.images[0, :, :, 0], expected)


def test_missing_test_files_are_a_missing_split_file(tmp_path, prepare):
    write_mnist(tmp_path / "mnist", train=10, test=4)
    for path in (tmp_path / "mnist").glob("t10k-*"):
        path.unlink()
    with pytest.raises(BadSampleError, match=r"t10k-images-idx3-ubyte\[\.gz\]: missing split file"):
        prepare(MNISTSource(str(tmp_path / "mnist")), channels=1)
    prepared, meta = prepare(MNISTSource(str(tmp_path / "mnist")), channels=1, on_bad_sample="skip", test_fraction=0.2)
    assert meta["num_samples"] == 10 and meta["num_skipped"] == 1
    assert meta["split_sizes"]["test"] == 2  # carved from train instead
    assert "missing split file" in read_skipped(tmp_path / "prepared")[0][1]


def test_truncated_images_file_skips_only_the_missing_records(tmp_path, prepare):
    images = np.arange(5 * 28 * 28, dtype=np.int64).reshape(5, 28, 28) % 256
    root = tmp_path / "mnist"
    write_mnist(root, train=5, test=2)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)[: -28 * 28 - 10]))
    with pytest.raises(BadSampleError, match=r"train-images-idx3-ubyte\.gz\[3\]: file is truncated"):
        prepare(MNISTSource(str(root)), channels=1)
    _, meta = prepare(MNISTSource(str(root)), channels=1, on_bad_sample="skip")
    assert meta["num_samples"] == 5 and meta["num_skipped"] == 2  # records 3 and 4 of train


def test_wrong_magic_names_the_file(tmp_path, prepare):
    root = tmp_path / "mnist"
    write_mnist(root, train=4, test=2, gzipped=False)
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros((4, 2), np.uint8)))
    with pytest.raises(BadSampleError, match=r"train-labels-idx1-ubyte: not an idx file of this kind"):
        prepare(MNISTSource(str(root)), channels=1)


def test_label_outside_the_classes_is_a_bad_sample(tmp_path, prepare):
    root = tmp_path / "mnist"
    write_mnist(root, train=4, test=2, gzipped=False)
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 2, 12, 3], np.uint8)))
    with pytest.raises(
        BadSampleError, match=r"train-images-idx3-ubyte\[2\]: label 12 is not in the 10 declared classes"
    ):
        prepare(MNISTSource(str(root)), channels=1)
