"""Fashion-MNIST: the real files of Debian's dataset-fashion-mnist, and what a broken copy says."""

from __future__ import annotations

import collections
import gzip
from pathlib import Path

import numpy as np
import pytest
from data_writers import idx_bytes, write_mnist

from cnnlab.config import ConfigError
from cnnlab.data.prepare import build_source, prepare_from_config
from cnnlab.data.sources.base import BadSampleError
from cnnlab.data.sources.mnist import MNISTSource

PACKAGE_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
needs_package = pytest.mark.skipif(
    not (PACKAGE_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed (CI installs it)",
)


@needs_package
def test_the_real_files_are_70000_balanced_photos_with_their_names(compose_config):
    cfg = compose_config("data=fashion_mnist")
    source = build_source(cfg.data)
    assert str(PACKAGE_DIR) == cfg.data.root and source.classes == CLASSES
    items = source.items()
    assert len(items) == 70_000 and items[59_999] == ("train", 59_999) and items[60_000] == ("t10k", 0)
    sample = source.load(items[0])
    assert sample.image.shape == (28, 28, 1) and sample.label == 9 and sample.split == "train"  # an ankle boot
    test_labels = collections.Counter(source.load(item).label for item in items[60_000:])
    assert test_labels == {label: 1000 for label in range(10)}  # the published balance: 1,000 of each class


def test_a_missing_root_says_how_to_get_the_files(compose_config, tmp_path):
    cfg = compose_config("data=fashion_mnist", f"data.root={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError) as err:
        prepare_from_config(cfg.data)
    message = str(err.value)
    assert f"data.root={tmp_path / 'nowhere'} does not exist (data=fashion_mnist)" in message
    assert "apt-get install dataset-fashion-mnist" in message and "zalandoresearch/fashion-mnist" in message


def test_missing_files_in_an_existing_root_say_how_to_get_them(tmp_path, prepare):
    write_mnist(tmp_path / "fm", train=10, test=4)
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    source = MNISTSource(str(tmp_path / "fm"), dataset="fashion_mnist", how_to_get="apt-get install it")
    with pytest.raises(
        BadSampleError, match=r"t10k-labels-idx1-ubyte\[\.gz\]: missing split file .*apt-get install it"
    ):
        prepare(source, channels=1)


def test_labels_that_disagree_with_the_images_in_count_are_one_error(tmp_path, prepare):
    root = tmp_path / "fm"
    write_mnist(root, train=6, test=2)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.arange(5, dtype=np.uint8))))
    with pytest.raises(BadSampleError, match=r"train-labels-idx1-ubyte.gz: 5 labels for the 6 images"):
        prepare(MNISTSource(str(root)), channels=1)


def test_a_truncated_gzip_names_the_file(tmp_path, prepare):
    root = tmp_path / "fm"
    write_mnist(root, train=6, test=2)
    data = (root / "train-images-idx3-ubyte.gz").read_bytes()
    (root / "train-images-idx3-ubyte.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadSampleError, match=r"train-images-idx3-ubyte.gz: cannot be read or decompressed"):
        prepare(MNISTSource(str(root)), channels=1)
