"""Audio (issue 17): prepare speed in clips per second, and the sounds experiment's test accuracy next
to a majority-class baseline measured on the same test split.

Prepare speed: N generated clips are written as 16-bit WAV files at 22,050 Hz (one folder per class),
then `data=audio_folder` prepares them at the default settings (resample to 16 kHz, 1 s, 64 mel
bands, 64 px) with 1 and with 2 decode processes; and `data=sounds` (clips made in memory, the
same spectrogram code) with 2. Clips per second = clips / wall seconds of build_prepared_dataset
(listing, decoding, resizing, splitting, statistics, writing; not interpreter start-up).

Accuracy: `cnnlab-train experiment=sounds_classification logger=none seed=<s>` per seed, in a
subprocess; its best checkpoint scored on the test split with `trainer.test` (what cnnlab-evaluate
does). The baseline predicts the training split's most frequent class for every test clip.

    .venv/bin/python benchmarks/audio.py [--clips 600] [--seeds 1,2,3] [--skip-train]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def write_wav_folder(root: Path, clips: int, rate: int = 22050) -> None:
    import soundfile

    from cnnlab.data.sources.sounds import SOUND_CLASSES, SoundsSource

    source = SoundsSource(num_samples=clips, seed=7, sample_rate=rate)
    for i in range(clips):
        folder = root / SOUND_CLASSES[i % len(SOUND_CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        soundfile.write(folder / f"clip{i:05d}.wav", source.waveform(i), rate, subtype="PCM_16")


def prepare_speed(clips: int) -> list[tuple[str, int, float]]:
    """(what, workers, clips per second) for the audio folder and the generated sounds."""
    from cnnlab.data.prepare import build_prepared_dataset
    from cnnlab.data.sources.audio_folder import AudioFolderSource
    from cnnlab.data.sources.sounds import SoundsSource

    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-audio-bench-") as scratch:
        scratch = Path(scratch)
        write_wav_folder(scratch / "wav", clips)
        settings = dict(name="bench", image_size=64, channels=1, val_fraction=0.1, test_fraction=0.2, seed=0)
        cases = [
            (
                f"audio_folder: {clips} WAV files, 22.05 kHz 16-bit -> 16 kHz",
                1,
                lambda: AudioFolderSource(str(scratch / "wav")),
            ),
            (
                f"audio_folder: {clips} WAV files, 22.05 kHz 16-bit -> 16 kHz",
                2,
                lambda: AudioFolderSource(str(scratch / "wav")),
            ),
            (f"sounds: {clips} clips generated in memory, 16 kHz", 2, lambda: SoundsSource(num_samples=clips)),
        ]
        for what, workers, make in cases:
            started = time.perf_counter()
            meta = build_prepared_dataset(make(), scratch / f"prepared-{workers}", workers=workers, **settings)
            seconds = time.perf_counter() - started
            assert meta["num_samples"] == clips, meta
            rows.append((what, workers, clips / seconds))
            print(f"{what}, {workers} process(es): {clips / seconds:.0f} clips/s ({seconds:.1f} s)", flush=True)
    return rows


def train_and_score(seed: int, output_dir: Path, data_dir: Path) -> dict:
    from task_targets import (
        score,
    )  # the same scoring of the best checkpoint as the task benchmarks (beside this script)

    command = [
        str(BIN / "cnnlab-train"),
        "experiment=sounds_classification",
        "logger=none",
        f"seed={seed}",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={output_dir}",
        "trainer.enable_progress_bar=false",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    metrics, run, _ = score(output_dir)
    return {
        "seed": seed,
        "acc": metrics["test/acc"],
        "f1": metrics.get("test/f1_macro"),
        "seconds": seconds,
        "train_seconds": run["train_seconds"],
        "epochs": run["epochs"],
        "prepared_dir": run["prepared_dir"],
    }


def majority_baseline(prepared_dir: str) -> tuple[float, str, int]:
    from cnnlab.data.prepared import PreparedDataset

    data = PreparedDataset(prepared_dir)
    labels = np.asarray(data.labels)
    train, test = np.asarray(data.splits["train"]), np.asarray(data.splits["test"])
    majority = int(np.bincount(labels[train]).argmax())
    return float((labels[test] == majority).mean()), data.classes[majority], len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=600)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-prepare", action="store_true")
    args = parser.parse_args()
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    print(f"{cpu}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    if not args.skip_prepare:
        prepare_speed(args.clips)
    if args.skip_train:
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-audio-train-") as scratch:
        for seed in [int(s) for s in args.seeds.split(",")]:
            results.append(train_and_score(seed, Path(scratch) / f"seed{seed}", Path(scratch) / "data"))
            row = results[-1]
            print(
                f"seed {seed}: test accuracy {row['acc']:.4f} (macro F1 {row['f1']:.4f}), {row['epochs']} epochs, "
                f"training {row['train_seconds']:.0f} s, command {row['seconds']:.0f} s",
                flush=True,
            )
        accuracy, name, count = majority_baseline(results[0]["prepared_dir"])
    accs = np.array([r["acc"] for r in results])
    print(f"majority-class baseline ({name}): {accuracy:.4f} on the same {count} test clips")
    print(
        f"sounds_classification over {len(accs)} seeds: mean {accs.mean():.4f}, min {accs.min():.4f}, max "
        f"{accs.max():.4f}"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
