"""Generated sounds: six classes of synthetic clips, made in memory and turned into log-mel images.

Deterministic from a seed (clip i depends only on (seed, i)), so it needs no download and any clip
can be rebuilt alone. Every clip is `clip_seconds` long with one event at a random time, pitch,
length and loudness, over background noise (white to brown, 3-30 dB below the event):

  tone        a steady sine, 150-4000 Hz, 0.15-0.8 s
  chirp_up    a sine sweeping up (logarithmically) by a factor 2-6 from 150-1200 Hz, 0.2-0.8 s
  chirp_down  the same sweep downwards
  noise_burst band-limited noise, 1.5-4 octaves wide between 100 Hz and 7 kHz, 0.1-0.5 s
  clicks      3-10 sharp clicks (1-3 ms decaying impulses), evenly spaced with jitter
  chord       a major or minor triad (root 200-1500 Hz), 0.2-0.8 s

Events peak between -30 and -3 dBFS with 10-30 ms fades. The waveform goes through the same
`cnnlab.data.audio.spectrogram_image` as a file read by `audio_folder`.
"""

from __future__ import annotations

import numpy as np

from cnnlab.data.audio import SpectrogramSettings, spectrogram_image
from cnnlab.data.sources.base import Sample, Source

SOUND_CLASSES = ("tone", "chirp_up", "chirp_down", "noise_burst", "clicks", "chord")


def _fade(length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """An envelope of `length` samples with linear fade-in and fade-out of 10-30 ms."""
    envelope = np.ones(length, np.float64)
    ramp = min(length // 2, int(rng.uniform(0.01, 0.03) * rate))
    if ramp > 0:
        envelope[:ramp] = np.linspace(0, 1, ramp)
        envelope[-ramp:] = np.linspace(1, 0, ramp)
    return envelope


def _sweep(start_hz: float, end_hz: float, length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A sine whose frequency moves logarithmically from start_hz to end_hz (constant when equal)."""
    t = np.arange(length) / rate
    duration = length / rate
    if abs(end_hz - start_hz) < 1e-9:
        phase = 2 * np.pi * start_hz * t
    else:  # instantaneous frequency start * k^(t / duration)
        k = end_hz / start_hz
        phase = 2 * np.pi * start_hz * duration * (k ** (t / duration) - 1) / np.log(k)
    return np.sin(phase + rng.uniform(0, 2 * np.pi))


def _band_noise(length: int, rate: int, low_hz: float, high_hz: float, rng: np.random.Generator) -> np.ndarray:
    """White noise kept between low_hz and high_hz (in the frequency domain)."""
    spectrum = np.fft.rfft(rng.normal(size=length))
    freqs = np.fft.rfftfreq(length, 1 / rate)
    spectrum[(freqs < low_hz) | (freqs > high_hz)] = 0
    return np.fft.irfft(spectrum, length)


def _background(length: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured noise of unit RMS: power falling as f^-alpha, alpha in [0, 2] (white, pink, brown)."""
    spectrum = np.fft.rfft(rng.normal(size=length))
    freqs = np.fft.rfftfreq(length, 1 / rate)
    spectrum *= np.maximum(freqs, 20.0) ** (-rng.uniform(0, 2) / 2)
    noise = np.fft.irfft(spectrum, length)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def synthesize(kind: int, rng: np.random.Generator, rate: int, clip_samples: int) -> np.ndarray:
    """One clip of class SOUND_CLASSES[kind] as float32 samples in [-1, 1]."""
    name = SOUND_CLASSES[kind]
    if name == "noise_burst":
        seconds = rng.uniform(0.1, 0.5)
    elif name == "clicks":
        seconds = rng.uniform(0.3, 0.9)
    else:
        seconds = rng.uniform(0.15 if name == "tone" else 0.2, 0.8)
    length = min(clip_samples, max(16, int(seconds * rate)))
    nyquist = rate / 2
    if name == "tone":
        event = _sweep(*(2 * [np.exp(rng.uniform(np.log(150), np.log(min(4000, 0.45 * rate))))]), length, rate, rng)
    elif name in ("chirp_up", "chirp_down"):
        low = np.exp(rng.uniform(np.log(150), np.log(1200)))
        high = min(low * rng.uniform(2, 6), 0.45 * rate)
        event = _sweep(low, high, length, rate, rng) if name == "chirp_up" else _sweep(high, low, length, rate, rng)
    elif name == "noise_burst":
        octaves = rng.uniform(1.5, 4)
        low = np.exp(rng.uniform(np.log(100), np.log(max(101, min(7000, 0.45 * rate) / 2**octaves))))
        event = _band_noise(length, rate, low, min(low * 2**octaves, nyquist), rng)
    elif name == "clicks":
        count = int(rng.integers(3, 11))
        event = np.zeros(length)
        spacing = length / count
        for c in range(count):
            at = int(np.clip((c + 0.5 + rng.uniform(-0.2, 0.2)) * spacing, 0, length - 1))
            width = max(2, int(rng.uniform(0.001, 0.003) * rate))
            tail = min(width, length - at)
            event[at : at + tail] += rng.normal(size=tail) * np.exp(-np.arange(tail) / (width / 4))
    else:  # chord: major (4, 7 semitones) or minor (3, 7)
        root = np.exp(rng.uniform(np.log(200), np.log(1500)))
        third = 4 if rng.random() < 0.5 else 3
        event = sum(
            _sweep(root * 2 ** (step / 12), root * 2 ** (step / 12), length, rate, rng) for step in (0, third, 7)
        )
    if name != "clicks":
        event = event * _fade(length, rate, rng)
    event = event / (np.abs(event).max() + 1e-12) * 10 ** (rng.uniform(-30, -3) / 20)
    clip = _background(clip_samples, rate, rng)
    event_rms = np.sqrt(np.mean(event**2))
    clip *= event_rms * 10 ** (-rng.uniform(3, 30) / 20)
    start = int(rng.integers(0, clip_samples - length + 1))
    clip[start : start + length] += event
    return np.clip(clip, -1, 1).astype(np.float32)


class SoundsSource(Source):
    """`num_samples` generated clips, classes balanced (clip i is class i mod 6); spectrogram settings
    are `SpectrogramSettings`' fields, as for `audio_folder`."""

    classes = list(SOUND_CLASSES)
    parallel_load = True  # each clip is generated and transformed alone: prepare may use a process pool

    def __init__(
        self,
        num_samples: int = 1800,
        seed: int = 0,
        **spectrogram,  # SpectrogramSettings' keys: sample_rate, clip_seconds, n_mels, n_fft, hop_length, ...
    ):
        if not (isinstance(num_samples, int) and num_samples >= len(SOUND_CLASSES)):
            raise ValueError(
                f"data.source.num_samples={num_samples!r} is not valid; expected an integer >= {len(SOUND_CLASSES)}"
            )
        self.num_samples, self.seed = num_samples, seed
        self.settings = SpectrogramSettings(
            **spectrogram
        )  # an unknown key: TypeError naming it, a ConfigError in prepare

    def describe(self) -> str:
        return f"generated sounds ({self.num_samples} clips, seed {self.seed})"

    def input_spec(self) -> dict:
        return self.settings.spec()

    def items(self) -> list[int]:
        return list(range(self.num_samples))

    def item_name(self, item: int) -> str:
        return f"sounds/{item:05d}-{SOUND_CLASSES[item % len(SOUND_CLASSES)]}"

    def waveform(self, item: int) -> np.ndarray:
        """Clip `item` as float32 samples at settings.sample_rate."""
        rng = np.random.default_rng([self.seed, item])
        return synthesize(item % len(SOUND_CLASSES), rng, self.settings.sample_rate, self.settings.clip_samples)

    def load(self, item: int) -> Sample:
        name = self.item_name(item)
        image = spectrogram_image(self.waveform(item)[:, None], self.settings.sample_rate, self.settings, name)
        return Sample(image=image, label=item % len(SOUND_CLASSES), name=name)
