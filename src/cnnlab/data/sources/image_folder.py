"""A folder per class (`root/<class>/*.jpg`, the cats-vs-dogs layout), optionally inside
`train/`, `val/` (or `valid/`, `validation/`) and `test/` folders that carry the split.

Every regular file under a class folder is a sample (subfolders included), so a stray text file
is reported as "not an image" rather than passed over; hidden and OS files (.DS_Store, Thumbs.db)
are ignored. A file name that appears under two classes is fine (samples are named by their path)
unless the two files hold the same bytes: one image filed under two classes has no single label,
so both copies are bad samples.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence, Union

from cnnlab.data.decode import decode_image, read_bytes
from cnnlab.data.sources.base import Sample, Source, Unusable
from cnnlab.data.sources.files import is_system_file, resolve_root

log = logging.getLogger(__name__)

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

Item = Union[tuple[str, int, Optional[str]], Unusable]


class ImageFolderSource(Source):
    """Class-per-folder images. `classes` fixes the class list (and order); by default it is the
    sorted folder names. A folder not in a given `classes` list makes its files bad samples."""

    parallel_load = True  # each sample is an independent file: prepare decodes in a process pool

    def __init__(self, root: Optional[str] = None, classes: Optional[Sequence[str]] = None):
        self.root = root
        self.declared = list(classes) if classes else None
        self._items: Optional[list[Item]] = None
        self.classes: list[str] = list(self.declared or [])
        self._min_side: Optional[int] = None

    def encoded_bytes(self, item: Item) -> Optional[bytes]:
        return read_bytes(item[0])

    def set_target_size(self, size: Optional[int]) -> None:
        """prepare resizes to size x size: large JPEGs may be decoded at a reduced scale (see decode_image)."""
        self._min_side = size

    def describe(self) -> str:
        return f"image folder {self.root}"

    def _root(self) -> Path:
        root = resolve_root(self.root, "image_folder", "a folder with one subfolder of images per class")
        if not root.is_dir():
            raise FileNotFoundError(f"data.root={self.root} is not a directory")
        return root

    def _split_dirs(self, root: Path) -> dict[Optional[str], Path]:
        subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not is_system_file(p)}
        if "train" not in subdirs:
            return {None: root}
        layout = {SPLIT_FOLDERS[name]: path for name, path in subdirs.items() if name in SPLIT_FOLDERS}
        others = sorted(p.name for n, p in subdirs.items() if n not in SPLIT_FOLDERS)
        if others:
            log.warning("%s: split layout (train/ ...); ignoring other folders %s", root, others)
        return layout

    def items(self) -> list[Item]:
        if self._items is not None:
            return self._items
        root = self._root()
        layout = self._split_dirs(root)
        found: dict[tuple[Optional[str], str], list[Path]] = {}
        for split, split_dir in layout.items():
            loose = [p.name for p in split_dir.iterdir() if p.is_file() and not is_system_file(p)]
            if loose:
                log.warning(
                    "%s: %d files outside any class folder are not samples (e.g. %s)", split_dir, len(loose), loose[0]
                )
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not is_system_file(p)):
                files = []
                for folder, dirnames, filenames in os.walk(class_dir):
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                    files += [Path(folder) / f for f in sorted(filenames) if not is_system_file(Path(f))]
                found[(split, class_dir.name)] = files
        if not found:
            raise FileNotFoundError(f"data.root={self.root} has no class folders (expected root/<class>/<image files>)")
        if self.declared is None:
            self.classes = sorted({name for _, name in found})
        index = {name: i for i, name in enumerate(self.classes)}
        items: list[Item] = []
        for (split, class_name), files in sorted(found.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            class_dir = layout[split] / class_name
            if not files:
                items.append(Unusable(str(class_dir), "empty class folder: it holds no files"))
            elif class_name not in index:
                reason = f"class folder {class_name!r} is not in the declared classes {self.classes}"
                items += [Unusable(str(f), reason) for f in files]
            else:
                items += [(str(f), index[class_name], split) for f in files]
        self._items = _flag_cross_class_copies(items)
        return self._items

    def item_name(self, item: Item) -> str:
        return item[0]

    def load(self, item: Item) -> Sample:
        path, label, split = item
        return Sample(image=decode_image(path, self._min_side), label=label, name=path, split=split)


def _flag_cross_class_copies(items: list[Item]) -> list[Item]:
    """Replace files whose name and bytes also appear under another class by Unusable items."""
    by_name: dict[tuple, list[int]] = defaultdict(list)
    for position, item in enumerate(items):
        if not isinstance(item, Unusable):
            by_name[(item[2], Path(item[0]).name)].append(position)
    for positions in by_name.values():
        if len({items[p][1] for p in positions}) < 2:
            continue
        by_content: dict[str, list[int]] = defaultdict(list)
        for p in positions:
            try:
                by_content[hashlib.sha1(Path(items[p][0]).read_bytes()).hexdigest()].append(p)
            except OSError:
                pass  # unreadable: load() reports it
        for same in by_content.values():
            labels = {items[p][1] for p in same}
            if len(labels) < 2:
                continue
            paths = [items[p][0] for p in same]
            for p in same:
                others = ", ".join(q for q in paths if q != items[p][0])
                items[p] = Unusable(
                    items[p][0],
                    f"duplicate file name with identical content in another class ({others}): the label is ambiguous",
                )
    return items
