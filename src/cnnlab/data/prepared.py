"""The prepared-data format: decoded once, memory-mappable, split, with normalisation statistics.

A prepared dataset is a directory:
  images.npy  N x H x W x C uint8        labels.npy  N int64
  boxes.npy   N x 4 float32, (x_min, y_min, x_max, y_max) normalised to [0, 1]   (if the source has boxes)
  masks.npy   N x H x W uint8 class ids, 255 = ignore                              (if the source has masks)
  splits.npz  train / val / test index arrays
  skipped.csv samples the reader rejected under on_bad_sample=skip, with the reason
  meta.json   classes, mask classes, size, channels, mean/std of the train split, counts, content hash,
              and the sha256 of each file above
It is written to a temporary sibling and renamed into place, so a failed run never leaves a
half-written dataset and the previous one stays intact until the new one is complete. Reading it
checks each file against its recorded hash (re-hashing only files whose size or mtime changed since
the last check, remembered under $XDG_CACHE_HOME/cnnlab), so an edited file is named, not trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from cnnlab.data.sources.base import label_kinds as source_label_kinds
from cnnlab.tables import write_csv

FORMAT_VERSION = 1
IGNORE_INDEX = 255
SPLITS = ("train", "val", "test")
_ARRAYS = ("images", "labels", "boxes", "masks")


@dataclass
class PreparedArrays:
    images: np.ndarray
    labels: np.ndarray
    splits: dict[str, np.ndarray]
    boxes: Optional[np.ndarray] = None
    masks: Optional[np.ndarray] = None


_FILES = (*(f"{a}.npy" for a in _ARRAYS), "splits.npz")


def content_hash(directory: Path) -> str:
    """sha256 over the arrays and splits: the identity of the data a run trained on."""
    digest = hashlib.sha256()
    for name in _FILES:
        path = directory / name
        if path.exists():
            digest.update(name.encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PreparedDataChanged(ValueError):
    """A prepared file no longer matches the hash recorded when it was written; the message names it."""


def verify_prepared(directory: Path, meta: dict) -> None:
    """PreparedDataChanged naming the first file whose content differs from meta's record.

    Files whose size and mtime match the last successful check are not hashed again. Data
    prepared before per-file hashes were recorded is checked as a whole against its content hash.
    """
    directory = Path(directory)
    cache_path = _verified_cache(directory)
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    expected = meta.get("file_hashes") or {"*": meta.get("content_hash")}
    stats = {
        name: [(directory / name).stat().st_size, (directory / name).stat().st_mtime_ns]
        for name in (*_FILES, *expected)
        if name != "*" and (directory / name).is_file()
    }
    checked = {}
    for name, recorded in expected.items():
        stat = {k: v for k, v in stats.items() if k in _FILES} if name == "*" else stats.get(name)
        if stat is None:
            raise PreparedDataChanged(
                f"{directory / name} is missing; prepare the data again (cnnlab-prepare or dvc repro prepare)"
            )
        if cache.get(name, {}).get("stat") == stat and cache[name].get("hash") == recorded:
            checked[name] = cache[name]
            continue
        actual = content_hash(directory) if name == "*" else file_hash(directory / name)
        if actual != recorded:
            what = "one of its arrays" if name == "*" else str(directory / name)
            raise PreparedDataChanged(
                f"{what} changed since it was prepared (sha256 {actual[:12]} where meta.json records "
                f"{str(recorded)[:12]}); "
                "prepared data is never edited by hand: prepare it again (cnnlab-prepare, or dvc repro prepare)"
            )
        checked[name] = {"stat": stat, "hash": actual}
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(checked))
    except OSError:  # no writable cache: still checked, just not remembered
        pass


def _verified_cache(directory: Path) -> Path:
    """Where the last successful check of `directory` is remembered: outside it, so the data (a DVC output) is
    untouched.
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlab" / "verified"
    return base / f"{hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:32]}.json"


def channel_statistics(
    images: np.ndarray, indices: np.ndarray, chunk_values: int = 1 << 24
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (pixel values / 255) of images[indices], in chunks with exact integer sums,
    so a large dataset never needs a float copy of itself."""
    channels = images.shape[-1]
    total = np.zeros(channels, np.uint64)
    total_sq = np.zeros(channels, np.uint64)
    count = 0
    step = max(1, chunk_values // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, len(indices), step):
        block = images[np.sort(indices[start : start + step])].reshape(-1, channels).astype(np.uint32)
        total += block.sum(axis=0, dtype=np.uint64)
        total_sq += (block * block).sum(axis=0, dtype=np.uint64)
        count += len(block)
    if count == 0:
        return np.full(channels, np.nan), np.full(channels, np.nan)
    mean = total.astype(np.float64) / (count * 255.0)
    var = total_sq.astype(np.float64) / (count * 255.0**2) - mean**2
    return mean, np.sqrt(np.maximum(var, 0.0))


def write_prepared(directory: Path, arrays: PreparedArrays, meta: dict, skipped: list[tuple[str, str]]) -> dict:
    """Write atomically; returns the final meta (with statistics, counts and content hash)."""
    with staged_directory(Path(directory)) as staging:
        for name in _ARRAYS:
            value = getattr(arrays, name)
            if value is not None:
                np.save(staging / f"{name}.npy", value)
        np.savez(staging / "splits.npz", **arrays.splits)
        write_csv(staging / "skipped.csv", ["name", "reason"], skipped)
        mean, std = channel_statistics(arrays.images, arrays.splits["train"])
        meta = {
            **meta,
            "format_version": FORMAT_VERSION,
            "num_samples": int(len(arrays.labels)),
            "split_sizes": {s: int(len(arrays.splits[s])) for s in SPLITS},
            "mean": mean.tolist(),
            "std": np.maximum(std, 1e-6).tolist(),
            "has_boxes": arrays.boxes is not None,
            "has_masks": arrays.masks is not None,
            "ignore_index": IGNORE_INDEX,
            "num_skipped": len(skipped),
            "content_hash": content_hash(staging),
            "file_hashes": {name: file_hash(staging / name) for name in _FILES if (staging / name).exists()},
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


@contextlib.contextmanager
def staged_directory(directory: Path) -> Iterator[Path]:
    """A temporary sibling of `directory` to write into (.<name>.tmp-<pid>): moved into place when the block ends
    without an error, removed when it does not. Stale ones of killed processes are removed first."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)
    staging = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        publish_directory(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_directory(staging: Path, directory: Path) -> None:
    """Move a complete `staging` directory into place: the previous `directory` stays until the new one is whole."""
    previous = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    if directory.exists():
        directory.rename(previous)
    staging.rename(directory)
    shutil.rmtree(previous, ignore_errors=True)


def label_kinds(meta: dict) -> list[str]:
    """What every sample of a prepared dataset carries: "label", and "box" / "mask" where it has them."""
    return source_label_kinds(bool(meta.get("has_boxes")), bool(meta.get("has_masks")))


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the staging (.<name>.tmp-<pid>) and replaced (.<name>.old-<pid>) copies that a killed
    prepare left beside `directory`; a live process's are kept. Returns what was removed."""
    removed = []
    for path in directory.parent.glob(f".{directory.name}.*-*"):
        kind, _, pid = path.name[len(directory.name) + 2 :].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class PreparedDataset:
    """Read side of the format: arrays are memory-mapped, nothing is decoded again."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"no prepared dataset at {self.directory} (missing meta.json); run `cnnlab-prepare` "
                f"with the same data= options first (or `dvc repro prepare`)"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("storage") == "shards":
            raise ValueError(
                f"{self.directory} holds shards (data.storage=shards), not decoded arrays: read it with "
                "data.storage=shards"
            )
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{meta_path}: format_version {self.meta.get('format_version')} but this cnnlab reads "
                f"{FORMAT_VERSION}; prepare the data again"
            )
        verify_prepared(self.directory, self.meta)
        self.images = np.load(self.directory / "images.npy", mmap_mode="r")
        self.labels = np.load(self.directory / "labels.npy")
        self.boxes = np.load(self.directory / "boxes.npy") if self.meta["has_boxes"] else None
        self.masks = np.load(self.directory / "masks.npy", mmap_mode="r") if self.meta["has_masks"] else None
        with np.load(self.directory / "splits.npz") as splits:
            self.splits = {name: splits[name] for name in SPLITS}

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    @property
    def mask_classes(self) -> Optional[list[str]]:
        return self.meta.get("mask_classes")
