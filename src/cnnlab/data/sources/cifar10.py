"""CIFAR-10 in its "python version": the pickled batches of cifar-10-batches-py/.

`root` is the cifar-10-batches-py folder (or the folder that contains it), holding data_batch_1
.. data_batch_5 (-> train; validation is carved from it by data.split_seed), test_batch (-> test)
and batches.meta (class names). Each batch is a dict with b'data' (N x 3072 uint8: the red, green
and blue 32x32 planes of each image in turn) and b'labels'.

The batches are pickles, and unpickling runs code named in the file; they are read with an
unpickler that only admits the builtins and numpy array types these files contain.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Optional, Union

import numpy as np

from cnnlab.data.sources.base import BadSampleError, Sample, Source, Unusable
from cnnlab.data.sources.files import resolve_root

log = logging.getLogger(__name__)

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
}

Item = Union[tuple[str, int], Unusable]


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} (a CIFAR batch holds only arrays, lists and bytes)"
        )


def load_batch_file(path: Path) -> dict:
    """A pickled batch as a dict with bytes keys; BadSampleError naming the file if it is not one."""
    try:
        with open(path, "rb") as handle:
            batch = _ArraysOnlyUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, OSError) as err:
        raise BadSampleError(f"{path}: not a readable CIFAR python batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise BadSampleError(f"{path}: not a CIFAR python batch (holds a {type(batch).__name__}, expected a dict)")
    return batch


class CIFAR10Source(Source):
    """The six pickled batches; class names from batches.meta."""

    def __init__(self, root: Optional[str] = None):
        self.root = root
        self.classes = list(CIFAR10_CLASSES)
        self._batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._items: Optional[list[Item]] = None
        self._dir: Optional[Path] = None

    def describe(self) -> str:
        return f"CIFAR-10 python batches in {self.root}"

    def _directory(self) -> Path:
        root = resolve_root(self.root, "cifar10", "the CIFAR-10 python batches (cifar-10-batches-py/)")
        nested = root / "cifar-10-batches-py"
        return nested if nested.is_dir() and not (root / TEST_BATCH).exists() else root

    def items(self) -> list[Item]:
        if self._items is not None:
            return self._items
        directory = self._dir = self._directory()
        meta_path = directory / "batches.meta"
        if meta_path.is_file():
            meta = load_batch_file(meta_path)
            names = meta.get(b"label_names")
            if not isinstance(names, list) or not names:
                raise BadSampleError(f"{meta_path}: has no b'label_names' list")
            self.classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        else:
            log.warning("%s: missing; using the standard CIFAR-10 class names", meta_path)
        items: list[Item] = []
        for batch_name in (*TRAIN_BATCHES, TEST_BATCH):
            path = directory / batch_name
            if not path.is_file():
                items.append(Unusable(str(path), "missing batch file (a split file of CIFAR-10)"))
                continue
            try:
                batch = load_batch_file(path)
                data, labels = self._arrays(batch, path)
            except BadSampleError as err:
                items.append(Unusable(str(path), str(err).partition(": ")[2]))
                continue
            self._batches[batch_name] = (data, labels)
            items += [(batch_name, i) for i in range(len(data))]
        self._items = items
        return items

    @staticmethod
    def _arrays(batch: dict, path: Path) -> tuple[np.ndarray, np.ndarray]:
        if b"data" not in batch or b"labels" not in batch:
            keys = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in batch)
            hint = " (CIFAR-100 has fine_labels: it is a different dataset)" if b"fine_labels" in batch else ""
            raise BadSampleError(f"{path}: batch lacks b'data' or b'labels' (keys: {keys}){hint}")
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise BadSampleError(f"{path}: b'data' is {data.dtype} {data.shape}, expected N x 3072 uint8")
        if len(labels) != len(data):
            raise BadSampleError(f"{path}: {len(data)} images but {len(labels)} labels")
        return data, labels

    def item_name(self, item: Item) -> str:
        return f"{self._dir / item[0]}[{item[1]}]"

    def load(self, item: Item) -> Sample:
        batch_name, index = item
        data, labels = self._batches[batch_name]
        image = data[index].reshape(3, 32, 32).transpose(1, 2, 0).copy()
        split = "test" if batch_name == TEST_BATCH else "train"
        return Sample(image=image, label=int(labels[index]), name=self.item_name(item), split=split)
