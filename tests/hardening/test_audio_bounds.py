"""Audio readers decode only the clip they keep (plus a little for the resampler), not the whole file:
a long recording costs what its first clip_seconds cost."""

from __future__ import annotations

import tracemalloc

import numpy as np
import soundfile

from cnnlab.data.audio import SpectrogramSettings, read_spectrogram


def test_a_long_wav_is_read_only_as_far_as_the_clip(tmp_path):
    rate, minutes = 22050, 10  # 26 MB of 16-bit samples; whole, decoded as float32: 53 MB
    path = tmp_path / "long.wav"
    with soundfile.SoundFile(path, "w", rate, 1, "PCM_16") as handle:
        second = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
        for _ in range(minutes * 60):
            handle.write(second)
    short = tmp_path / "short.wav"
    soundfile.write(short, np.tile(second, 3), rate, "PCM_16")
    settings = SpectrogramSettings(clip_seconds=1.0)

    tracemalloc.start()
    try:
        image = read_spectrogram(path, settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 1 s clip of a {minutes}-minute file"
    np.testing.assert_array_equal(image, read_spectrogram(short, settings))  # the same clip, the same image
