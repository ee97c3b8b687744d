"""How input files become images, per kind of input: the reader that prepared data and a logged
model name in their "input" spec (`Source.input_spec`), so prediction reads new files exactly as
prepare read the training data.

  {"kind": "image"}                      image files, through cnnlab.data.decode
  {"kind": "audio", "sample_rate": ...}  audio files, through cnnlab.data.audio's log-mel spectrogram
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from cnnlab.data.audio import AUDIO_SUFFIXES, SpectrogramSettings, read_spectrogram
from cnnlab.data.decode import decode_image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".pnm"})


@dataclass(frozen=True)
class InputReader:
    """One kind of input: the file suffixes a directory listing picks, and the file -> H x W x C uint8 image
    function (raising BadSampleError naming the file)."""

    kind: str
    suffixes: frozenset[str]
    read: Callable[[Path], np.ndarray]


def _image_reader(spec: dict) -> InputReader:
    return InputReader("image", IMAGE_SUFFIXES, decode_image)


def _audio_reader(spec: dict) -> InputReader:
    settings = SpectrogramSettings.from_spec(spec)
    return InputReader("audio", frozenset(AUDIO_SUFFIXES), lambda path: read_spectrogram(path, settings))


READERS: dict[str, Callable[[dict], InputReader]] = {"image": _image_reader, "audio": _audio_reader}


def all_suffixes() -> frozenset[str]:
    """Every suffix some reader lists (what an input directory is checked for before a model is loaded)."""
    return IMAGE_SUFFIXES | frozenset(AUDIO_SUFFIXES)


def input_reader(spec: Optional[dict]) -> InputReader:
    """The reader an "input" spec names (None: images); ValueError for a kind this cnnlab does not know."""
    spec = dict(spec or {"kind": "image"})
    kind = spec.get("kind", "image")
    if kind not in READERS:
        raise ValueError(f"input kind {kind!r} is not one this cnnlab reads ({', '.join(READERS)})")
    return READERS[kind](spec)
