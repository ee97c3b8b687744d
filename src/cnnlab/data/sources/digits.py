"""scikit-learn's handwritten digits (1,797 images, 8x8, values 0..16), shipped inside the package."""

from __future__ import annotations

from functools import cached_property

import numpy as np
from sklearn.datasets import load_digits

from cnnlab.data.sources.base import Sample, Source


class DigitsSource(Source):
    """The UCI optical digits as scikit-learn ships them; upscaled to `data.image_size` by prepare."""

    classes = [str(d) for d in range(10)]

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        digits = load_digits()
        # 0..16 ink levels -> 0..255 so every source shares one pixel range
        return np.round(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target

    def items(self) -> range:
        return range(len(self._arrays[1]))

    def item_name(self, item: int) -> str:
        return f"digits/{item:04d}"

    def load(self, item: int) -> Sample:
        images, targets = self._arrays
        return Sample(image=images[item][:, :, None], label=int(targets[item]), name=self.item_name(item))

    def describe(self) -> str:
        return "scikit-learn load_digits (embedded)"
