"""CIFAR-10 python batches with the real keys: pixels (plane order), labels, names, split."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from data_writers import read_skipped, write_cifar10

from cnnlab.data.sources.base import BadSampleError
from cnnlab.data.sources.cifar10 import CIFAR10Source


def test_batches_read_as_written(tmp_path, prepare):
    written = write_cifar10(tmp_path, per_batch=4)
    prepared, meta = prepare(CIFAR10Source(str(tmp_path)), image_size=32, val_fraction=0.2)
    assert meta["classes"][:3] == ["airplane", "automobile", "bird"]
    assert meta["split_sizes"] == {"train": 16, "val": 4, "test": 4}
    order = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    np.testing.assert_array_equal(prepared.images, np.concatenate([written[b][0] for b in order]))
    np.testing.assert_array_equal(prepared.labels, np.concatenate([written[b][1] for b in order]))
    np.testing.assert_array_equal(prepared.splits["test"], np.arange(20, 24))


def test_root_may_be_the_batches_folder_itself(tmp_path, prepare):
    write_cifar10(tmp_path, per_batch=2)
    _, meta = prepare(CIFAR10Source(str(tmp_path / "cifar-10-batches-py")))
    assert meta["num_samples"] == 12


def test_missing_batch_is_named_and_skippable(tmp_path, prepare):
    write_cifar10(tmp_path, per_batch=2)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(BadSampleError, match=r"test_batch: missing batch file"):
        prepare(CIFAR10Source(str(tmp_path)))
    _, meta = prepare(CIFAR10Source(str(tmp_path)), on_bad_sample="skip", test_fraction=0.2)
    assert meta["num_samples"] == 10 and meta["split_sizes"]["test"] == 2
    assert read_skipped(tmp_path / "prepared")[0][0].endswith("test_batch")


def test_corrupt_batch_and_foreign_pickles_are_refused(tmp_path, prepare):
    write_cifar10(tmp_path, per_batch=2)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_2").write_bytes(b"\x80\x02}q\x00(X")  # cut off mid-pickle

    class Payload:
        def __reduce__(self):
            return (print, ("pickles can run code",))

    (folder / "data_batch_3").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(BadSampleError, match=r"data_batch_2: not a readable CIFAR python batch"):
        prepare(CIFAR10Source(str(tmp_path)))
    _, meta = prepare(CIFAR10Source(str(tmp_path)), on_bad_sample="skip")
    reasons = dict(read_skipped(tmp_path / "prepared"))
    assert "refusing to load builtins.print" in reasons[str(folder / "data_batch_3")]
    assert meta["num_samples"] == 8


def test_label_outside_the_class_list(tmp_path, prepare):
    write_cifar10(tmp_path, per_batch=2)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    batch[b"labels"] = [3, 10]
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    with pytest.raises(BadSampleError, match=r"data_batch_1\[1\]: label 10 is not in the 10 declared classes"):
        prepare(CIFAR10Source(str(tmp_path)))
