"""Audio as spectrogram images: the reader (formats, resampling, channel mixing), the spectrogram's
shape and levels against hand-computed values, every bad input under data.on_bad_sample, the
generated sounds, and the spectrogram augmentations."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile
from data_writers import read_skipped

from cnnlab.data.audio import SpectrogramSettings, read_audio, read_spectrogram, spectrogram_image
from cnnlab.data.sources.audio_folder import AudioFolderSource
from cnnlab.data.sources.base import BadSampleError

# 8 kHz, 0.25 s clips (2000 samples), 256-point FFT (31.25 Hz bins), hop 64: 1 + 2000 // 64 = 32 frames
SMALL = dict(sample_rate=8000, clip_seconds=0.25, n_mels=16, n_fft=256, hop_length=64)
PITCH = {"low": 500.0, "high": 2000.0}  # whole FFT bins at 8 kHz (16 and 64): no leakage beyond the main lobe


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(int(round(rate * seconds))) / rate)).astype(np.float32)


def write_clip(path, samples: np.ndarray, rate: int, subtype: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def write_folder(root, per_class: int = 2):
    for name, freq in PITCH.items():
        for i in range(per_class):
            write_clip(root / name / f"{name}{i}.wav", tone(freq, 8000, 0.25, 0.2 + 0.1 * i), 8000, "PCM_16")
    return root


def peak_row(image: np.ndarray) -> int:
    return int(np.argmax(image[:, :, 0].astype(np.int64).sum(axis=1)))


# ---- the spectrogram ----------------------------------------------------------------------------
def test_spectrogram_shape_and_levels_match_the_hand_computed_case():
    settings = SpectrogramSettings(**SMALL)
    assert settings.shape == (16, 32, 1)  # n_mels x (1 + 2000 // 64) x 1
    t = np.arange(2000) / 8000
    loud = spectrogram_image((0.5 * np.sin(2 * np.pi * 1000 * t))[:, None], 8000, settings, "loud")
    quiet = spectrogram_image((0.25 * np.sin(2 * np.pi * 1000 * t))[:, None], 8000, settings, "quiet")
    assert loud.shape == (16, 32, 1) and loud.dtype == np.uint8
    # the band whose triangle peaks nearest 1 kHz holds the tone; top row = highest band
    import librosa

    centres = librosa.mel_frequencies(n_mels=16 + 2, fmin=0.0, fmax=4000.0)[1:-1]
    band = int(np.argmin(np.abs(centres - 1000)))
    assert peak_row(loud) == 15 - band
    # half the amplitude is 6.02 dB lower: 6.02 / 80 * 255 = 19.2 pixels on the default -80..0 dB scale
    row = 15 - band
    difference = loud[row, 4:-4, 0].astype(int) - quiet[row, 4:-4, 0].astype(int)
    assert np.all(np.abs(difference - 19.2) <= 1), difference
    # silence is the floor everywhere; a full-scale tone reads about 0 dB in its band (pixel ~255)
    assert spectrogram_image(np.zeros((2000, 1), np.float32), 8000, settings, "silent").max() == 0
    full = spectrogram_image(np.sin(2 * np.pi * 1000 * t)[:, None], 8000, settings, "full")
    assert full[row, 4:-4, 0].min() >= 250


def test_longer_clips_are_cut_shorter_ones_padded_with_silence():
    settings = SpectrogramSettings(**SMALL)
    long = spectrogram_image(tone(1000, 8000, 1.0)[:, None], 8000, settings, "long")
    short = spectrogram_image(tone(1000, 8000, 0.1)[:, None], 8000, settings, "short")
    assert long.shape == short.shape == (16, 32, 1)
    assert short[:, -8:].max() == 0 and short[:, :8].max() > 200  # 0.1 s of tone, then the floor


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match=r"data.source.sample_rate=0 is not valid"):
        SpectrogramSettings(sample_rate=0)
    with pytest.raises(ValueError, match=r"data.source.n_mels=128 .*n_fft"):
        SpectrogramSettings(sample_rate=16000, n_mels=128, n_fft=256)
    with pytest.raises(ValueError, match=r"data.source.f_max=9000"):
        SpectrogramSettings(sample_rate=16000, f_max=9000)


# ---- the reader -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "suffix, subtype",
    [(".wav", "PCM_16"), (".wav", "PCM_24"), (".wav", "FLOAT"), (".flac", "PCM_16"), (".ogg", "VORBIS")],
)
def test_formats_and_bit_depths_read_to_the_same_spectrogram(tmp_path, suffix, subtype):
    settings = SpectrogramSettings(**SMALL)
    samples = tone(1000, 8000, 0.25)
    path = write_clip(tmp_path / f"clip{suffix}", samples, 8000, subtype)
    decoded, rate = read_audio(path)
    assert rate == 8000 and decoded.shape == (2000, 1)
    assert np.max(np.abs(decoded[:, 0] - samples)) < (
        0.05 if subtype == "VORBIS" else 1e-3
    )  # 24-bit read at full scale
    reference = spectrogram_image(samples[:, None], 8000, settings, "reference")
    image = read_spectrogram(path, settings)
    tolerance = 12 if subtype == "VORBIS" else 1  # lossy: its quiet bands differ, the tone does not
    row = peak_row(reference)
    assert peak_row(image) == row and np.abs(image[row].astype(int) - reference[row].astype(int)).max() <= tolerance


def test_resampling_keeps_the_pitch_and_the_clip_length(tmp_path):
    settings = SpectrogramSettings(**SMALL)
    native = read_spectrogram(write_clip(tmp_path / "at8k.wav", tone(1000, 8000, 0.25), 8000), settings)
    resampled = read_spectrogram(write_clip(tmp_path / "at22k.wav", tone(1000, 22050, 0.25), 22050), settings)
    assert resampled.shape == native.shape == (16, 32, 1)
    assert peak_row(resampled) == peak_row(native)
    assert np.abs(resampled.astype(int) - native.astype(int))[:, 2:-2].max() <= 3  # up to soxr's filter edges


def test_stereo_is_mixed_to_mono(tmp_path):
    settings = SpectrogramSettings(**SMALL)
    left, right = tone(500, 8000, 0.25), tone(2000, 8000, 0.25)
    stereo = read_spectrogram(
        write_clip(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 8000, "PCM_24"), settings
    )
    mixed = spectrogram_image(((left + right) / 2)[:, None], 8000, settings, "mixed")
    assert np.abs(stereo.astype(int) - mixed.astype(int)).max() <= 1
    opposite = read_spectrogram(
        write_clip(tmp_path / "opposite.wav", np.stack([left, -left], axis=1), 8000, "FLOAT"), settings
    )
    assert opposite.max() == 0  # the mean of a channel and its inverse is silence


def test_audio_folder_prepares_one_channel_images_and_carries_its_settings(tmp_path, prepare):
    source = AudioFolderSource(str(write_folder(tmp_path / "clips")), **SMALL)
    prepared, meta = prepare(source, channels=1)
    assert meta["classes"] == ["high", "low"] and meta["num_samples"] == 4
    assert prepared.images.shape == (4, 16, 16, 1)
    assert meta["input"] == {
        "kind": "audio",
        **SMALL,
        "win_length": None,
        "f_min": 0.0,
        "f_max": None,
        "db_floor": -80.0,
        "db_ceiling": 0.0,
    }
    high, low = (prepared.images[prepared.labels == k][0, :, :, 0] for k in (0, 1))
    assert np.argmax(high.sum(axis=1)) < np.argmax(low.sum(axis=1))  # the higher tone sits higher in the image


# ---- bad inputs -------------------------------------------------------------------------------------
def not_audio(root):
    path = root / "low" / "notes.wav"
    path.write_text("these are my recordings\n")
    return [path], "not an audio file"


def truncated_wav(root):
    path = root / "high" / "cut.wav"
    write_clip(path, tone(2000, 8000, 0.25), 8000, "PCM_16")
    path.write_bytes(path.read_bytes()[:1500])
    return [path], "truncated WAV"


def zero_sample_rate(root):
    path = root / "low" / "rate0.wav"
    data = bytearray(write_clip(path, tone(500, 8000, 0.25), 8000, "PCM_16").read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 12 : fmt + 16] = struct.pack("<I", 0)
    path.write_bytes(bytes(data))
    return [path], "sample rate 0"


def shorter_than_a_window(root):
    path = write_clip(root / "high" / "blip.wav", tone(2000, 8000, 0.01), 8000)  # 80 samples < n_fft 256
    return [path], "shorter than one analysis window"


def empty_class(root):
    (root / "middle").mkdir()
    return [root / "middle"], "empty class folder"


BAD_INPUTS = [not_audio, truncated_wav, zero_sample_rate, shorter_than_a_window, empty_class]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__)
def test_bad_input_stops_prepare_naming_the_file(tmp_path, prepare, make_bad):
    root = write_folder(tmp_path / "clips")
    paths, problem = make_bad(root)
    with pytest.raises(BadSampleError) as err:
        prepare(AudioFolderSource(str(root), **SMALL), channels=1, on_bad_sample="error")
    message = str(err.value)
    assert any(str(p) in message for p in paths) and problem in message, message
    assert "data.on_bad_sample=error" in message
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__)
def test_bad_input_is_skipped_and_listed(tmp_path, prepare, make_bad):
    root = write_folder(tmp_path / "clips")
    paths, problem = make_bad(root)
    _, meta = prepare(AudioFolderSource(str(root), **SMALL), channels=1, on_bad_sample="skip")
    skipped = read_skipped(tmp_path / "prepared")
    assert sorted(name for name, _ in skipped) == sorted(str(p) for p in paths)
    assert all(problem in reason for _, reason in skipped)
    assert meta["num_samples"] == 4 and meta["num_skipped"] == len(paths)


def test_silent_clip_is_valid_and_reads_as_the_floor(tmp_path, prepare):
    root = write_folder(tmp_path / "clips")
    write_clip(root / "low" / "silence.wav", np.zeros(2000, np.float32), 8000, "PCM_16")
    prepared, meta = prepare(AudioFolderSource(str(root), **SMALL), channels=1)
    assert meta["num_samples"] == 5 and meta["num_skipped"] == 0
    assert any(image.max() == 0 for image in prepared.images)


# ---- generated sounds and augmentation --------------------------------------------------------------
def test_generated_sounds_are_deterministic_balanced_and_distinct(prepare):
    from cnnlab.data.sources.sounds import SOUND_CLASSES, SoundsSource

    source = SoundsSource(num_samples=24, seed=3, **SMALL)
    first, again = source.load(7), SoundsSource(num_samples=24, seed=3, **SMALL).load(7)
    np.testing.assert_array_equal(first.image, again.image)
    assert first.image.shape == (16, 32, 1) and first.label == 1 and SOUND_CLASSES[1] == "chirp_up"
    waves = [source.waveform(i) for i in range(24)]
    assert all(len(w) == 2000 and np.abs(w).max() <= 1 for w in waves)
    prepared, meta = prepare(source, channels=1)
    assert meta["classes"] == list(SOUND_CLASSES) and np.bincount(prepared.labels).tolist() == [4] * 6
    assert meta["input"]["kind"] == "audio"


def test_spectrogram_augmentations_shift_mix_and_mask():
    import albumentations as A

    from cnnlab.data.audio_augment import BackgroundNoise, TimeShift

    image = np.zeros((16, 32, 1), np.uint8)
    image[5, 10:14] = 200
    rolled = TimeShift(max_fraction=0.25, p=1.0).apply(image, shift=3)
    np.testing.assert_array_equal(rolled[5, 13:17, 0], [200] * 4)
    silent = TimeShift(mode="silence", p=1.0).apply(image, shift=-12)
    assert silent[:, -12:].max() == 0 and silent[5, 0:2].max() == 200
    # power mixing: -40 dB noise on the floor lifts it to about -40 dB (pixel 127.5); a -10 dB pixel stays
    noisy = BackgroundNoise(p=1.0).apply(image, noise_power=np.full((16, 32), 1e-4, np.float32))
    assert abs(int(noisy[0, 0, 0]) - 128) <= 1 and abs(int(noisy[5, 11, 0]) - 200) <= 1
    pipeline = A.Compose(
        [
            TimeShift(p=1.0),
            BackgroundNoise(p=1.0),
            A.XYMasking(num_masks_x=1, mask_x_length=4, num_masks_y=1, mask_y_length=3, fill=0, p=1.0),
        ],
        seed=0,
    )
    out = pipeline(image=image)["image"]
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[..., 0] == 0).any(axis=0).sum() >= 4  # a time mask: whole columns at the floor
    with pytest.raises(ValueError, match="level_db"):
        BackgroundNoise(level_db=(-10.0, -50.0))
