"""A folder of audio clips per class (`root/<class>/*.wav`), read as log-mel spectrogram images.

The layout, the optional train/ val/ test/ split folders, empty class folders and files filed
under two classes are handled exactly as `image_folder` handles them (this reader lists files the
same way); each file becomes the n_mels x frames x 1 image of `cnnlab.data.audio`, so the prepared
data, every model, the augmentation configs, DVC and MLflow see an image dataset. WAV (any bit
depth, mono or multichannel), FLAC and OGG are read; a file libsndfile cannot read (a stray text
file, a truncated or corrupt WAV, a zero sample rate, a clip shorter than one window) is a bad
sample named by its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from cnnlab.data.audio import SpectrogramSettings, read_spectrogram
from cnnlab.data.sources.base import Sample
from cnnlab.data.sources.files import resolve_root
from cnnlab.data.sources.image_folder import ImageFolderSource, Item


class AudioFolderSource(ImageFolderSource):
    """Class-per-folder audio clips; the spectrogram settings are `SpectrogramSettings`' fields."""

    def __init__(
        self,
        root: Optional[str] = None,
        classes: Optional[Sequence[str]] = None,
        **spectrogram,  # SpectrogramSettings' keys: sample_rate, clip_seconds, n_mels, n_fft, hop_length, ...
    ):
        super().__init__(root, classes)
        self.settings = SpectrogramSettings(
            **spectrogram
        )  # an unknown key: TypeError naming it, a ConfigError in prepare

    def set_target_size(self, size: int) -> None:
        """A spectrogram is computed at its own size; prepare resizes it afterwards."""

    def describe(self) -> str:
        return f"audio folder {self.root}"

    def input_spec(self) -> dict:
        return self.settings.spec()

    def _root(self) -> Path:
        root = resolve_root(
            self.root, "audio_folder", "a folder with one subfolder of audio files (WAV, FLAC, OGG) per class"
        )
        if not root.is_dir():
            raise FileNotFoundError(f"data.root={self.root} is not a directory")
        return root

    def load(self, item: Item) -> Sample:
        path, label, split = item
        return Sample(image=read_spectrogram(path, self.settings), label=label, name=path, split=split)
