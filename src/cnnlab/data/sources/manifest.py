"""A CSV manifest: `path,label[,x_min,y_min,x_max,y_max][,mask_path]`, one sample per row.

`root` is the CSV file, or a folder holding `file` (manifest.csv). Paths in it are relative to
the CSV's folder (or absolute), and must resolve, symbolic links followed, inside data.root (the
CSV's folder when root is the file): a path outside it is a bad sample, never read. With a header row, columns are found
by name (path, label, x_min, y_min, x_max, y_max, mask_path, and optionally split = train/val/test); without one, by
count: 2 = path,label; 3 = path,label,mask_path; 6 = path,label,box; 7 = path,label,box,mask_path.
Boxes are in pixels of the original image (x_max = right edge); masks are single-channel or
palette images whose values are class ids (0 = background, 255 = ignore).
Classes are `classes` if given (a label outside it is a bad sample), else the sorted labels.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence, Union

from cnnlab.data.decode import decode_image, decode_mask
from cnnlab.data.sources.base import BadSampleError, Sample, Source, Unusable
from cnnlab.data.sources.files import check_box, check_mask_ids, inside_root, resolve_root

BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
POSITIONAL = {
    2: ("path", "label"),
    3: ("path", "label", "mask_path"),
    6: ("path", "label", *BOX_COLUMNS),
    7: ("path", "label", *BOX_COLUMNS, "mask_path"),
}

Item = Union[tuple[int, dict], Unusable]


class ManifestSource(Source):
    """Samples listed in a CSV file; see the module docstring for columns and paths."""

    parallel_load = True

    def __init__(
        self,
        root: Optional[str] = None,
        file: str = "manifest.csv",
        classes: Optional[Sequence[str]] = None,
        mask_classes: Optional[Sequence[str]] = None,
    ):
        self.root, self.file = root, file
        self.declared = [str(c) for c in classes] if classes else None
        self.declared_mask_classes = list(mask_classes) if mask_classes else None
        self.classes: list[str] = list(self.declared or [])
        self.mask_classes: Optional[list[str]] = None
        self.has_boxes = self.has_masks = False
        self._csv: Optional[Path] = None
        self._items: Optional[list[Item]] = None

    def describe(self) -> str:
        return f"CSV manifest {self._csv or self.root}"

    def label_kinds(self) -> Optional[list[str]]:
        return super().label_kinds() if self._items is not None else None  # the columns decide

    def _csv_path(self) -> Path:
        root = resolve_root(self.root, "manifest", "a CSV file (path,label[,x_min,y_min,x_max,y_max][,mask_path])")
        path = root / self.file if root.is_dir() else root
        if not path.is_file():
            raise FileNotFoundError(f"data.root={self.root}: no manifest file {path}")
        return path

    def items(self) -> list[Item]:
        if self._items is not None:
            return self._items
        path = self._csv = self._csv_path()
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = [
                (number, row) for number, row in enumerate(csv.reader(handle), start=1) if any(c.strip() for c in row)
            ]
        if not rows:
            raise BadSampleError(f"{path}: empty manifest (no rows)")
        first = [c.strip().lower() for c in rows[0][1]]
        if "path" in first:
            columns = first
            rows = rows[1:]
            if "label" not in columns:
                raise BadSampleError(f"{path}: header {first} has no 'label' column")
            missing_box = [c for c in BOX_COLUMNS if c not in columns]
            if len(missing_box) not in (0, len(BOX_COLUMNS)):
                raise BadSampleError(f"{path}: header has some box columns but not {missing_box}")
        else:
            width = len(rows[0][1])
            if width not in POSITIONAL:
                raise BadSampleError(
                    f"{path}: line {rows[0][0]} has {width} columns; without a header the manifest needs 2, 3, 6 or 7 "
                    f"(path,label[,x_min,y_min,x_max,y_max][,mask_path])"
                )
            columns = list(POSITIONAL[width])
        self.has_boxes = all(c in columns for c in BOX_COLUMNS)
        self.has_masks = "mask_path" in columns
        items: list[Item] = []
        for number, row in rows:
            where = f"{path}: line {number}"
            if len(row) != len(columns):
                items.append(
                    Unusable(where, f"{len(row)} columns where the manifest has {len(columns)} ({','.join(columns)})")
                )
                continue
            items.append((number, {c: v.strip() for c, v in zip(columns, row)}))
        if self.declared is None:
            labels = {r["label"] for _, r in (i for i in items if not isinstance(i, Unusable)) if r["label"]}
            numeric = all(label.lstrip("-").isdigit() for label in labels)
            self.classes = sorted(labels, key=int if numeric else str)
        if self.has_masks:
            self.mask_classes = self.declared_mask_classes or ["background", *self.classes]
        self._items = items
        return items

    def item_name(self, item: Item) -> str:
        return f"{self._csv}: line {item[0]} ({item[1]['path']})"

    def _resolve(self, value: str, where: str) -> Path:
        """The file a manifest path names; BadSampleError if it resolves outside data.root."""
        path = Path(value).expanduser()
        return inside_root(path if path.is_absolute() else self._csv.parent / path, self.root, where, value)

    def load(self, item: Item) -> Sample:
        number, row = item
        where = f"{self._csv}: line {number}"
        if not row["path"]:
            raise BadSampleError(f"{where}: empty path")
        if row["label"] not in self.classes:
            raise BadSampleError(f"{where}: label {row['label']!r} is not in the class list {self.classes}")
        image_path = self._resolve(row["path"], where)
        image = decode_image(image_path)
        height, width = image.shape[:2]
        box = None
        if self.has_boxes:
            try:
                box = tuple(float(row[c]) for c in BOX_COLUMNS)
            except ValueError:
                raise BadSampleError(
                    f"{where} ({image_path}): box {[row[c] for c in BOX_COLUMNS]} is not four numbers"
                ) from None
            check_box(box, width, height, f"{where} ({image_path})")
        mask = None
        if self.has_masks:
            if not row["mask_path"]:
                raise BadSampleError(f"{where} ({image_path}): empty mask_path")
            mask_path = self._resolve(row["mask_path"], where)
            mask = decode_mask(mask_path)
            if mask.shape != (height, width):
                raise BadSampleError(
                    f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                    f"{width}x{height}"
                )
            check_mask_ids(mask, len(self.mask_classes), mask_path)
        split = row.get("split") or None
        if split is not None and split not in ("train", "val", "test"):
            raise BadSampleError(f"{where}: split {split!r} is not train, val or test")
        return Sample(
            image=image, label=self.classes.index(row["label"]), name=str(image_path), box=box, mask=mask, split=split
        )
