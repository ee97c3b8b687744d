"""MNIST (and same-format sets such as Fashion-MNIST) from its four idx files, gzipped or not.

`root` holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
t10k-labels-idx1-ubyte, each optionally ending in .gz (the `train-images.idx3-ubyte` spelling of
some mirrors is accepted too). train -> the train split (validation is carved from it by
data.split_seed), t10k -> test.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from cnnlab.data.sources.base import BadSampleError, Sample, Source, Unusable
from cnnlab.data.sources.files import resolve_root

SPLITS = {"train": "train", "t10k": "test"}
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801  # unsigned bytes, 3 dims / 1 dim

Item = Union[tuple[str, int], Unusable]


def find_idx_file(root: Path, prefix: str, kind: str) -> Optional[Path]:
    """root/<prefix>-<kind>-ubyte[.gz] in either spelling, or None."""
    stem, dims = kind.split("-")
    for name in (f"{prefix}-{stem}-{dims}-ubyte", f"{prefix}-{stem}.{dims}-ubyte"):
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_idx(path: Path, magic: int) -> tuple[tuple[int, ...], np.ndarray]:
    """(dimensions from the header, the flat uint8 payload as present in the file)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise BadSampleError(f"{path}: cannot be read or decompressed ({err})") from None
    if len(raw) < 4:
        raise BadSampleError(f"{path}: too short for an idx header ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise BadSampleError(f"{path}: not an idx file of this kind (magic {found:#010x}, expected {magic:#010x})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise BadSampleError(f"{path}: truncated idx header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return dims, np.frombuffer(raw, np.uint8, offset=header)


class MNISTSource(Source):
    """The four idx files; `classes` names the labels 0..9 (Fashion-MNIST: its ten item names)."""

    def __init__(
        self,
        root: Optional[str] = None,
        classes: Optional[Sequence[str]] = None,
        dataset: str = "mnist",
        how_to_get: Optional[str] = None,
    ):
        self.root, self.dataset, self.how_to_get = root, dataset, how_to_get
        self.classes = list(classes) if classes else [str(d) for d in range(10)]
        self._data: dict[str, tuple[Path, np.ndarray, Path, np.ndarray, tuple[int, int]]] = {}
        self._items: Optional[list[Item]] = None

    def describe(self) -> str:
        return f"{self.dataset} idx files in {self.root}"

    def _missing(self, what: str) -> str:
        return f"{what}; {self.how_to_get}" if self.how_to_get else what

    def items(self) -> list[Item]:
        if self._items is not None:
            return self._items
        hint = self._missing("the four idx files (train-images-idx3-ubyte[.gz], ...)")
        root = resolve_root(self.root, self.dataset, hint)
        items: list[Item] = []
        for prefix in SPLITS:
            images_path = find_idx_file(root, prefix, "images-idx3")
            labels_path = find_idx_file(root, prefix, "labels-idx1")
            missing = [
                f"{prefix}-{k}-ubyte[.gz]"
                for k, p in (("images-idx3", images_path), ("labels-idx1", labels_path))
                if p is None
            ]
            if missing:
                reason = self._missing(f"missing split file ({', '.join(missing)} not found in {root})")
                items.append(Unusable(str(root / missing[0]), reason))
                continue
            try:
                dims, pixels = read_idx(images_path, IMAGES_MAGIC)
                label_dims, labels = read_idx(labels_path, LABELS_MAGIC)
                if len(dims) != 3 or len(label_dims) != 1:
                    raise BadSampleError(
                        f"{images_path}: expected 3-d images and 1-d labels, found {dims} and {label_dims}"
                    )
            except BadSampleError as err:
                path, _, reason = str(err).partition(": ")
                items.append(Unusable(path, reason))
                continue
            count, height, width = dims
            if label_dims[0] != count:  # every image needs its label: a mismatch is a broken pair of files
                reason = f"{label_dims[0]} labels for the {count} images of {images_path.name}: the two files disagree"
                items.append(Unusable(str(labels_path), reason))
                continue
            self._data[prefix] = (images_path, pixels, labels_path, labels, (height, width))
            items += [(prefix, i) for i in range(count)]
        self._items = items
        return items

    def item_name(self, item: Item) -> str:
        return f"{self._data[item[0]][0]}[{item[1]}]"

    def load(self, item: Item) -> Sample:
        prefix, index = item
        images_path, pixels, labels_path, labels, (height, width) = self._data[prefix]
        size = height * width
        name = f"{images_path}[{index}]"
        record = pixels[index * size : (index + 1) * size]
        if len(record) < size:
            raise BadSampleError(f"{name}: file is truncated (image {index} is past its end)")
        if index >= len(labels):
            raise BadSampleError(f"{labels_path}[{index}]: labels file is truncated or shorter than {images_path.name}")
        image = record.reshape(height, width, 1).copy()
        return Sample(image=image, label=int(labels[index]), name=name, split=SPLITS[prefix])
