"""What readers of files on disk share: finding data.root, skipping system files, checking boxes
and mask ids, parsing Pascal VOC annotation XML. Every problem raises `BadSampleError` naming the file."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

import numpy as np

from cnnlab.data.decode import read_bytes
from cnnlab.data.sources.base import BadSampleError

# Files an operating system leaves in folders; not samples, never reported as bad.
SYSTEM_FILES = {"thumbs.db", "desktop.ini", "icon\r"}


def is_system_file(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FILES


def resolve_root(root: Optional[str | Path], dataset: str, hint: str) -> Path:
    """data.root as an existing directory, or FileNotFoundError naming data.root and what it should hold."""
    if root is None or str(root).strip() == "":
        raise FileNotFoundError(f"data.root is not set: data={dataset} reads {hint}; pass data.root=/path/to/it")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data.root={root} does not exist (data={dataset} expects {hint})")
    return path


def inside_root(path: Path, root: str | Path, where: str, named: Optional[str] = None) -> Path:
    """`path`, which a file (a manifest, an annotation, an image list) named as `named`; BadSampleError
    if it resolves (links followed) outside data.root `root` (a file's folder when data.root is a file).

    The one rule for every reader that takes a path from a file: such a path is refused, never opened."""
    root = Path(root).expanduser()
    boundary = (root if root.is_dir() else root.parent).resolve()
    if not Path(path).resolve().is_relative_to(boundary):
        shown = named if named is not None else str(path)
        raise BadSampleError(f"{where}: path {shown!r} resolves outside data.root ({boundary}); refused, not read")
    return Path(path)


def check_box(box: tuple[float, float, float, float], width: int, height: int, where: str) -> None:
    """Raise BadSampleError unless 0 <= x_min < x_max <= width and 0 <= y_min < y_max <= height."""
    x_min, y_min, x_max, y_max = box
    if not (x_max > x_min and y_max > y_min):
        raise BadSampleError(f"{where}: box {tuple(box)} is empty or inverted (needs x_max > x_min and y_max > y_min)")
    if not (0 <= x_min and 0 <= y_min and x_max <= width and y_max <= height):
        raise BadSampleError(f"{where}: box {tuple(box)} is outside the {width}x{height} image")


def snap_border_pixel(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    """Pull coordinates at most one pixel outside the image onto its border.

    Some VOC-format annotations use 0-based indices (xmin = 0) or xmax = width + 1; after the
    1-based conversion those land one pixel outside the image. Anything further out is still an
    error (see `check_box`).
    """
    x_min, y_min, x_max, y_max = box
    return (
        0.0 if -1 <= x_min < 0 else x_min,
        0.0 if -1 <= y_min < 0 else y_min,
        float(width) if width < x_max <= width + 1 else x_max,
        float(height) if height < y_max <= height + 1 else y_max,
    )


def parse_voc_boxes(
    xml_path: Path, classes: Optional[list[str]] = None
) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(class name, box) per <object> of a Pascal VOC annotation file, box in pixel edges.

    VOC stores 1-based inclusive pixel indices, so a box xmin=1..xmax=W covers the whole
    width: it becomes (xmin - 1, ymin - 1, xmax, ymax).
    """
    data = read_bytes(xml_path)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise BadSampleError(f"{xml_path}: not a valid annotation XML ({err})") from None
    objects = []
    for number, obj in enumerate(root.iter("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise BadSampleError(f"{xml_path}: object {number} ({name!r}) has no <bndbox>")
        try:
            coords = [float(bndbox.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise BadSampleError(
                f"{xml_path}: object {number} ({name!r}) has a missing or non-numeric box coordinate"
            ) from None
        if classes is not None and name not in classes:
            raise BadSampleError(f"{xml_path}: object {number} has class {name!r}, not in the declared classes")
        objects.append((name, (coords[0] - 1, coords[1] - 1, coords[2], coords[3])))
    return objects


def check_mask_ids(mask: np.ndarray, num_classes: int, path: str | Path, ignore_index: int = 255) -> None:
    """Raise BadSampleError naming the mask file if it holds ids outside 0..num_classes-1 and ignore_index."""
    ids = np.unique(mask)
    bad = ids[(ids >= num_classes) & (ids != ignore_index)]
    if len(bad):
        raise BadSampleError(
            f"{path}: mask has class ids {bad.tolist()} outside the declared 0..{num_classes - 1} "
            f"(and {ignore_index} = ignore)"
        )
