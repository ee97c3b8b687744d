"""Sound as images: the one audio decoder and log-mel spectrogram that prepare and predict share.

A clip becomes an image in these steps, the same for training data and for files given to
`cnnlab-predict` (the settings travel with the logged model, see `SpectrogramSettings.spec`):

1. read with libsndfile (soundfile): WAV (8/16/24/32-bit integer, float), FLAC, OGG Vorbis and the
   other formats it reads; samples as float in [-1, 1], whatever the bit depth;
2. mix to mono: the mean of the channels;
3. resample to `sample_rate` (librosa.resample, soxr high quality);
4. cut or pad to `clip_seconds`: the first `clip_seconds` are kept, a shorter clip is padded with
   silence at the end;
5. power spectrogram: STFT with a periodic Hann window of `win_length` samples (default `n_fft`),
   `hop_length` between frames, frames centred (the clip is padded with zeros by n_fft // 2 on
   both sides), so a clip of N samples has 1 + N // hop_length frames;
6. mel bands: `n_mels` triangular filters (librosa.filters.mel, Slaney's mel scale) between
   `f_min` and `f_max` (default sample_rate / 2), each with a peak weight of 1;
7. decibels: 10 log10(band power / reference), the reference being the power of a full-scale sine
   in one FFT bin, (win_length / 4)^2, so a full-scale tone reads about 0 dB in its band;
8. pixels: `db_floor`..`db_ceiling` mapped linearly onto 0..255 (clipped at both ends, rounded), so
   silence is 0 and the scale never depends on the clip; rows are flipped so that the top row is
   the highest band (a spectrogram as people draw it).

The image is n_mels x frames x 1 uint8. prepare and prediction then resize it to
data.image_size x data.image_size and normalise it like any other image.
"""

from __future__ import annotations

import functools
import re
import struct
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import librosa
import numpy as np
import soundfile

from cnnlab.data.sources.base import BadSampleError

# What listing (prepare's folders, cnnlab-predict's directories) treats as audio files.
AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".mp3"}
INPUT_KIND = "audio"


@dataclass(frozen=True)
class SpectrogramSettings:
    """How a clip becomes a log-mel image (see the module docstring); the keys of data.source."""

    sample_rate: int = 16000
    clip_seconds: float = 1.0
    n_mels: int = 64
    n_fft: int = 512
    hop_length: int = 160
    win_length: Optional[int] = None  # None: n_fft
    f_min: float = 0.0
    f_max: Optional[float] = None  # None: sample_rate / 2
    db_floor: float = -80.0
    db_ceiling: float = 0.0

    def __post_init__(self) -> None:
        def need(ok: bool, key: str, value, expected: str) -> None:
            if not ok:
                raise ValueError(f"data.source.{key}={value!r} is not valid; expected {expected}")

        need(
            _is_int(self.sample_rate) and self.sample_rate > 0,
            "sample_rate",
            self.sample_rate,
            "a sample rate in Hz > 0",
        )
        need(_is_number(self.clip_seconds) and self.clip_seconds > 0, "clip_seconds", self.clip_seconds, "seconds > 0")
        need(_is_int(self.n_mels) and self.n_mels >= 1, "n_mels", self.n_mels, "an integer >= 1")
        need(_is_int(self.n_fft) and self.n_fft >= 16, "n_fft", self.n_fft, "an integer >= 16")
        need(_is_int(self.hop_length) and self.hop_length >= 1, "hop_length", self.hop_length, "an integer >= 1")
        need(
            self.win_length is None or (_is_int(self.win_length) and 2 <= self.win_length <= self.n_fft),
            "win_length",
            self.win_length,
            f"null or an integer in 2..n_fft={self.n_fft}",
        )
        nyquist = self.sample_rate / 2
        need(_is_number(self.f_min) and 0 <= self.f_min < nyquist, "f_min", self.f_min, f"Hz in [0, {nyquist:g})")
        need(
            self.f_max is None or (_is_number(self.f_max) and self.f_min < self.f_max <= nyquist),
            "f_max",
            self.f_max,
            f"null or Hz in (f_min={self.f_min:g}, sample_rate / 2 = {nyquist:g}]",
        )
        need(
            _is_number(self.db_floor) and _is_number(self.db_ceiling) and self.db_floor < self.db_ceiling,
            "db_floor",
            self.db_floor,
            f"a level in dB below data.source.db_ceiling={self.db_ceiling}",
        )
        need(
            self.clip_samples >= self.window,
            "clip_seconds",
            self.clip_seconds,
            f"a clip of at least one window ({self.window} samples = {self.window / self.sample_rate:g} s at "
            f"{self.sample_rate} Hz)",
        )
        empty = int((mel_basis(self).max(axis=1) == 0).sum())
        need(
            empty == 0,
            "n_mels",
            self.n_mels,
            f"fewer bands: {empty} of {self.n_mels} mel filters fall between FFT bins and would always be empty "
            f"(raise data.source.n_fft={self.n_fft} or lower n_mels)",
        )

    @property
    def window(self) -> int:
        return int(self.win_length or self.n_fft)

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        return 1 + self.clip_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int, int]:
        """The spectrogram image's shape: n_mels x frames x 1."""
        return (self.n_mels, self.frames, 1)

    def spec(self) -> dict:
        """The input description a prepared dataset and a logged model carry: {"kind": "audio", settings...}."""
        return {"kind": INPUT_KIND, **asdict(self)}

    @classmethod
    def from_spec(cls, spec: dict) -> "SpectrogramSettings":
        return cls(**{key: value for key, value in spec.items() if key != "kind"})


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: Optional[float]) -> np.ndarray:
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max, norm=None).astype(
        np.float32
    )


def mel_basis(settings: SpectrogramSettings) -> np.ndarray:
    """n_mels x (1 + n_fft // 2) triangular filters with peak 1 (librosa.filters.mel, norm=None)."""
    with warnings.catch_warnings():  # empty filters are reported by SpectrogramSettings as a config error
        warnings.simplefilter("ignore", UserWarning)
        return _mel_basis(
            settings.sample_rate,
            settings.n_fft,
            settings.n_mels,
            float(settings.f_min),
            None if settings.f_max is None else float(settings.f_max),
        )


# ---- reading --------------------------------------------------------------------------------------
HEADER_BYTES = 1 << 16  # where a WAV's fmt chunk is looked for
RESAMPLER_MARGIN_SECONDS = 1.0  # read past the clip, so resampling ends the same as on the whole file


def read_audio(path: str | Path, seconds: Optional[float] = None) -> tuple[np.ndarray, int]:
    """(samples x channels float32 in [-1, 1], sample rate) of an audio file; BadSampleError naming it otherwise.

    With `seconds`, only the first `seconds` (plus RESAMPLER_MARGIN_SECONDS) are decoded: a two-hour
    recording costs what a clip costs, not its whole length in memory."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER_BYTES)
    except FileNotFoundError:
        raise BadSampleError(f"{path}: file not found") from None
    except OSError as err:
        raise BadSampleError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not head:
        raise BadSampleError(f"{path}: empty file (0 bytes), not audio")
    header_problem = _wav_header_problem(head)
    if header_problem:
        raise BadSampleError(f"{path}: {header_problem}")
    try:
        with soundfile.SoundFile(path) as handle:
            rate, log = handle.samplerate, handle.extra_info
            truncated = _truncation(log)
            if truncated:
                raise BadSampleError(f"{path}: truncated {handle.format} file: {truncated}")
            frames = -1 if seconds is None or rate <= 0 else int(np.ceil((seconds + RESAMPLER_MARGIN_SECONDS) * rate))
            samples = handle.read(frames, dtype="float32", always_2d=True)
    except BadSampleError:
        raise
    except soundfile.LibsndfileError as err:
        reason = str(err).split(":", 1)[-1].strip() or "unreadable"
        if "not recognised" in reason.lower() or "unknown format" in reason.lower():
            raise BadSampleError(
                f"{path}: not an audio file libsndfile can read (WAV, FLAC, OGG, ...): {reason}"
            ) from None
        raise BadSampleError(f"{path}: corrupt audio file, cannot be decoded ({reason})") from None
    except (RuntimeError, ValueError, TypeError) as err:
        raise BadSampleError(f"{path}: corrupt audio file, cannot be decoded ({err})") from None
    if rate <= 0:
        raise BadSampleError(f"{path}: sample rate {rate} in the header; a clip needs a rate > 0")
    if samples.shape[0] == 0:
        raise BadSampleError(f"{path}: holds no samples (0 frames)")
    if not np.isfinite(samples).all():
        raise BadSampleError(f"{path}: holds NaN or infinite samples")
    return samples, int(rate)


def _wav_header_problem(data: bytes) -> Optional[str]:
    """What libsndfile would only call an internal error in a RIFF/WAVE header: a zero rate or channel count."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position : position + 4], struct.unpack("<I", data[position + 4 : position + 8])[0]
        if chunk == b"fmt " and position + 16 <= len(data):
            channels, rate = struct.unpack("<HI", data[position + 10 : position + 16])
            if rate == 0:
                return "sample rate 0 in the WAV header; a clip needs a rate > 0"
            if channels == 0:
                return "0 channels in the WAV header"
            return None
        position += 8 + size + (size & 1)
    return None


_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMED = {0, 0xFFFFFFFF}  # sizes a streaming writer leaves in the header: unknown length, not damage


def _truncation(log: str) -> Optional[str]:
    """libsndfile's own report (in its header log) of a data chunk longer than the file."""
    match = _DATA_SIZE.search(log or "")
    if not match:
        return None
    declared, present = int(match.group(1)), int(match.group(2))
    if declared in _STREAMED or present >= declared:
        return None
    return f"the header declares {declared} bytes of samples but the file holds {present}"


# ---- the clip and its spectrogram -----------------------------------------------------------------
def to_clip(samples: np.ndarray, rate: int, settings: SpectrogramSettings, name: str) -> np.ndarray:
    """samples (x channels) at `rate` -> mono float32 at settings.sample_rate, cut or padded to clip_seconds."""
    mono = samples.mean(axis=1, dtype=np.float32) if samples.ndim == 2 else samples.astype(np.float32)
    if rate != settings.sample_rate:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=settings.sample_rate, res_type="soxr_hq").astype(
            np.float32
        )
    if len(mono) < settings.window:
        raise BadSampleError(
            f"{name}: clip is {len(mono)} samples long at {settings.sample_rate} Hz, shorter than one analysis window "
            f"(data.source.win_length/n_fft = {settings.window} samples); it has no full spectrogram frame"
        )
    wanted = settings.clip_samples
    if len(mono) >= wanted:
        return np.ascontiguousarray(mono[:wanted])
    return np.concatenate([mono, np.zeros(wanted - len(mono), np.float32)])


def log_mel(clip: np.ndarray, settings: SpectrogramSettings) -> np.ndarray:
    """A clip of settings.clip_samples samples -> n_mels x frames log-mel levels in dB (see the module docstring)."""
    stft = librosa.stft(
        clip,
        n_fft=settings.n_fft,
        hop_length=settings.hop_length,
        win_length=settings.window,
        window="hann",
        center=True,
        pad_mode="constant",
    )
    power = np.abs(stft) ** 2
    # einsum, not @: a matrix this small costs 0.5 ms in numpy's own loop, but 5-20 ms through a
    # multi-threaded BLAS whose threads compete with prepare's other processes for the cores
    bands = np.einsum("mf,ft->mt", mel_basis(settings), power)
    reference = (settings.window / 4.0) ** 2
    amin = reference * 10.0 ** ((settings.db_floor - 10.0) / 10.0)  # below the floor: clipped anyway
    return (10.0 * np.log10(np.maximum(bands, amin) / reference)).astype(np.float32)


def db_to_pixels(levels: np.ndarray, settings: SpectrogramSettings) -> np.ndarray:
    """dB levels -> uint8: db_floor -> 0, db_ceiling -> 255, clipped; rows flipped (top row = highest band)."""
    scaled = (levels - settings.db_floor) * (255.0 / (settings.db_ceiling - settings.db_floor))
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)[::-1].copy()


def pixels_to_db(pixels: np.ndarray, db_floor: float = -80.0, db_ceiling: float = 0.0) -> np.ndarray:
    """The inverse of db_to_pixels' scaling (rows left as they are): for augmentations that mix power."""
    return db_floor + pixels.astype(np.float32) * ((db_ceiling - db_floor) / 255.0)


def spectrogram_image(samples: np.ndarray, rate: int, settings: SpectrogramSettings, name: str) -> np.ndarray:
    """Decoded samples -> the n_mels x frames x 1 uint8 image a model sees (before its resize)."""
    clip = to_clip(samples, rate, settings, name)
    return db_to_pixels(log_mel(clip, settings), settings)[:, :, None]


def read_spectrogram(path: str | Path, settings: SpectrogramSettings) -> np.ndarray:
    """An audio file -> its spectrogram image (n_mels x frames x 1 uint8); BadSampleError naming the file."""
    samples, rate = read_audio(path, settings.clip_seconds)
    return spectrogram_image(samples, rate, settings, str(path))
