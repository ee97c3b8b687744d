"""What every reader of raw data produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np


@dataclass
class Sample:
    """One decoded example, before resizing.

    image: HxWxC uint8 (C = 1 or 3); box: (x_min, y_min, x_max, y_max) in pixels of this image;
    mask: HxW uint8 class ids (0 = background, 255 = ignore); split: "train"/"val"/"test" when
    the source defines its own split, else None and `prepare` splits by seed.
    """

    image: np.ndarray
    label: int
    name: str
    box: Optional[tuple[float, float, float, float]] = None
    mask: Optional[np.ndarray] = None
    split: Optional[str] = None


class Source:
    """A raw dataset: class names, which labels it carries, and its samples.

    `items()` lists cheap references (paths, indices) and `load(item)` decodes one, so a bad
    sample fails alone: `load` raises `BadSampleError` naming the file and the problem, and
    `prepare` applies the `data.on_bad_sample` policy to it. Problems with the dataset as a whole
    (a missing split file, an empty class folder) are raised by `items()`.
    `mask_classes` names the mask ids (index = id), background first.
    """

    classes: list[str] = []
    mask_classes: Optional[list[str]] = None
    has_boxes: bool = False
    has_masks: bool = False

    def items(self) -> Sequence[Any]:
        raise NotImplementedError

    def load(self, item: Any) -> Sample:
        raise NotImplementedError

    def encoded_bytes(self, item: Any) -> Optional[bytes]:
        """The item's image file as stored (JPEG/PNG bytes), which data.storage=shards keeps as it is; None
        where the reader decodes something other than one image file (arrays, spectrograms): those are stored
        PNG-encoded."""
        return None

    def item_name(self, item: Any) -> str:
        """How a sample is named in errors and in skipped.csv (a file path, usually)."""
        return str(item)

    def describe(self) -> str:
        """A line for logs and errors: what was read and from where."""
        return type(self).__name__

    def label_kinds(self) -> Optional[list[str]]:
        """What every sample carries: "label", and "box" / "mask" where the reader has them; None while
        that is only known after reading (a manifest's columns). The tasks it serves follow from this."""
        return label_kinds(self.has_boxes, self.has_masks)

    def input_spec(self) -> dict:
        """What the images are made from, and how: {"kind": "image"}, or e.g. the spectrogram settings of
        an audio reader. Stored in the prepared meta as "input" and carried into a logged model's
        metadata, so prediction turns new files into images exactly as this reader did."""
        return {"kind": "image"}


def label_kinds(has_boxes: bool, has_masks: bool) -> list[str]:
    """The label kinds of data with or without boxes and masks: every sample has a class label."""
    return ["label", *(["box"] if has_boxes else []), *(["mask"] if has_masks else [])]


class BadSampleError(ValueError):
    """A sample that cannot be used; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class Unusable:
    """An item that stands for a problem found while listing (a missing split file, an empty
    class folder). `prepare` treats loading it as a bad sample named `name`, so the
    data.on_bad_sample policy and skipped.csv cover dataset-level problems as well."""

    name: str
    reason: str
