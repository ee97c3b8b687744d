"""Spectrogram augmentations as albumentations transforms, for `augment.train` lists (augment=specaugment).

Prepared audio is an image (cnnlab.data.audio: rows = mel bands, top row highest; columns = time
frames; pixel 0..255 = db_floor..db_ceiling dB), so the SpecAugment masks of Park et al. (2019) are
albumentations' own XYMasking (x = time, y = frequency). Two transforms that need to know they look
at a spectrogram live here:

- `TimeShift`: moves the clip in time by whole frames, wrapping round or filling with silence;
- `BackgroundNoise`: mixes generated noise into the spectrogram, adding powers (not pixels), at a
  random level and spectral tilt (white-like to rumble-heavy), with the per-bin fluctuation of a
  noise periodogram.

Both read and write uint8 images of any size (after prepare's resize) and draw from the random
generators albumentations seeds, so the DataModule's per-epoch seeding covers them.
"""

from __future__ import annotations

from typing import Any, Literal

import albumentations as A
import numpy as np
from pydantic import Field, model_validator

from cnnlab.data.audio import pixels_to_db


def _db_to_pixels(levels: np.ndarray, db_floor: float, db_ceiling: float) -> np.ndarray:
    return np.clip(np.round((levels - db_floor) * (255.0 / (db_ceiling - db_floor))), 0, 255).astype(np.uint8)


class TimeShift(A.ImageOnlyTransform):
    """Shift a spectrogram along time (the image's width) by up to `max_fraction` of its frames.

    mode "roll" wraps the frames that leave one end round to the other (a clip of steady noise stays
    steady); "silence" fills them with the floor (pixel 0), as if the clip had started later or earlier.
    """

    class InitSchema(A.ImageOnlyTransform.InitSchema):
        max_fraction: float = Field(ge=0, le=1)
        mode: Literal["roll", "silence"]

    def __init__(self, max_fraction: float = 0.2, mode: Literal["roll", "silence"] = "roll", p: float = 0.5):
        super().__init__(p=p)
        self.max_fraction, self.mode = max_fraction, mode

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        frames = params["shape"][1]
        limit = int(round(self.max_fraction * frames))
        return {"shift": self.py_random.randint(-limit, limit) if limit else 0}

    def apply(self, img: np.ndarray, shift: int = 0, **params: Any) -> np.ndarray:
        if shift == 0:
            return img
        if self.mode == "roll":
            return np.roll(img, shift, axis=1)
        out = np.zeros_like(img)
        if shift > 0:
            out[:, shift:] = img[:, :-shift]
        else:
            out[:, :shift] = img[:, -shift:]
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_fraction", "mode")


class BackgroundNoise(A.ImageOnlyTransform):
    """Mix noise into a log-mel spectrogram image, in power: 10 log10(10^(clip/10) + 10^(noise/10)).

    level_db: the noise's mean level in dB (the spectrogram's scale: 0 dB = a full-scale tone), drawn
    uniformly from the range; tilt_db: how much quieter the top (highest) band is than the bottom
    one, drawn from the range (0: white-like, 20: rumble); every bin's power is the mean times an
    exponential draw, as a periodogram of noise fluctuates. db_floor/db_ceiling must be the data's
    (data.source.db_floor/db_ceiling, -80 and 0 by default): they say what the pixels mean.
    """

    class InitSchema(A.ImageOnlyTransform.InitSchema):
        level_db: tuple[float, float]
        tilt_db: tuple[float, float]
        db_floor: float
        db_ceiling: float

        @model_validator(mode="after")
        def _ranges(self):
            for name in ("level_db", "tilt_db"):
                low, high = getattr(self, name)
                if low > high:
                    raise ValueError(f"{name}=[{low}, {high}]: expected [low, high] with low <= high")
            if self.db_floor >= self.db_ceiling:
                raise ValueError(f"db_floor={self.db_floor} must be below db_ceiling={self.db_ceiling}")
            return self

    def __init__(
        self,
        level_db: tuple[float, float] = (-70.0, -40.0),
        tilt_db: tuple[float, float] = (0.0, 20.0),
        db_floor: float = -80.0,
        db_ceiling: float = 0.0,
        p: float = 0.5,
    ):
        super().__init__(p=p)
        self.level_db, self.tilt_db = tuple(level_db), tuple(tilt_db)
        self.db_floor, self.db_ceiling = db_floor, db_ceiling

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        level = self.py_random.uniform(*self.level_db)
        tilt = self.py_random.uniform(*self.tilt_db)
        # row 0 is the highest band: it is `tilt` dB below the bottom row
        rows = level - tilt * (1.0 - np.arange(height, dtype=np.float32) / max(1, height - 1))[:, None]
        fluctuation = self.random_generator.exponential(1.0, (height, width)).astype(np.float32)
        return {"noise_power": 10.0 ** (rows / 10.0) * fluctuation}

    def apply(self, img: np.ndarray, noise_power: np.ndarray | None = None, **params: Any) -> np.ndarray:
        if noise_power is None:
            return img
        levels = pixels_to_db(img, self.db_floor, self.db_ceiling)
        noise = noise_power.reshape(noise_power.shape + (1,) * (img.ndim - 2))
        mixed = 10.0 * np.log10(10.0 ** (levels / 10.0) + noise)
        return _db_to_pixels(mixed, self.db_floor, self.db_ceiling)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("level_db", "tilt_db", "db_floor", "db_ceiling")
