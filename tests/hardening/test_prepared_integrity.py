"""Prepared data is checked against its recorded hashes where it is read, and a killed prepare's
temporaries are cleaned by the next one."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from cnnlab.data.prepare import build_prepared_dataset
from cnnlab.data.prepared import PreparedDataChanged, PreparedDataset
from cnnlab.data.sources.shapes import ShapesSource


@pytest.fixture
def prepared(tmp_path):
    directory = tmp_path / "prepared" / "shapes-16"
    build_prepared_dataset(
        ShapesSource(num_samples=60, size=16, seed=0),
        directory,
        name="shapes",
        image_size=16,
        channels=3,
        val_fraction=0.2,
        test_fraction=0.2,
        seed=0,
        workers=1,
    )
    return directory


def test_an_edited_array_is_named_and_not_trusted(prepared):
    PreparedDataset(prepared)  # intact: reads
    labels = np.load(prepared / "labels.npy")
    labels[:5] = (labels[:5] + 1) % 6  # what a hand edit does
    np.save(prepared / "labels.npy", labels)
    with pytest.raises(PreparedDataChanged, match=r"labels.npy changed since it was prepared"):
        PreparedDataset(prepared)


def test_one_changed_byte_is_caught_by_the_hash(prepared):
    PreparedDataset(prepared)
    path = prepared / "images.npy"
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a new mtime: hashed again
    with pytest.raises(PreparedDataChanged, match="images.npy"):
        PreparedDataset(prepared)


def test_a_killed_prepares_temporaries_are_removed_but_a_live_ones_kept(prepared, tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    stale = prepared.with_name(f".{prepared.name}.tmp-{dead}")
    (stale / "part").mkdir(parents=True)
    (stale / "part" / "images.npy").write_bytes(b"\0" * 1024)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = prepared.with_name(f".{prepared.name}.tmp-{sleeper.pid}")
        live.mkdir()
        build_prepared_dataset(
            ShapesSource(num_samples=60, size=16, seed=1),
            prepared,
            name="shapes",
            image_size=16,
            channels=3,
            val_fraction=0.2,
            test_fraction=0.2,
            seed=0,
            workers=1,
        )
        assert not stale.exists() and live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
