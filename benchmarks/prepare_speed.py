"""`cnnlab-prepare` of a 10,000-image ImageFolder at 64x64: decoding in a process pool against one process.

Generates a cats-vs-dogs-like folder once (benchmarks/.scratch/prepare_speed/images/{cat,dog}/*.jpg,
JPEG quality 90, sides drawn from 200..500 px like the Kaggle photos), then times the real command
end to end (interpreter start, Hydra composition, listing, decoding, resizing, statistics, the
atomic write):

    cnnlab-prepare data=image_folder data.root=<folder> data.image_size=64 paths.data_dir=<scratch>

once with the default pool (one process per usable core) and once with CNNLAB_PREPARE_WORKERS=1
(the serial baseline), and checks that both wrote the same content hash.

    .venv/bin/python benchmarks/prepare_speed.py [--num-images 10000] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PREPARE = ROOT / ".venv" / "bin" / "cnnlab-prepare"


def make_image(rng: np.random.Generator) -> np.ndarray:
    """A photo-like image: smooth gradient background, a few filled shapes, mild noise."""
    height, width = (int(v) for v in rng.integers(200, 501, 2))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (x / width * rng.uniform(0.2, 1) + y / height * rng.uniform(0.2, 1))[..., None] / 2
    image = start + (end - start) * t
    for _ in range(int(rng.integers(2, 6))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(10, width // 2)), int(rng.integers(10, height // 2)))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, rng.uniform(0, 255, 3).tolist(), -1)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def generate(folder: Path, count: int) -> None:
    if (folder / ".complete").is_file() and len(list(folder.glob("*/*.jpg"))) == count:
        return
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        kind = ("cat", "dog")[index % 2]
        (folder / kind).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / kind / f"{kind}.{index // 2}.jpg"), make_image(rng), [cv2.IMWRITE_JPEG_QUALITY, 90])
    (folder / ".complete").write_text("")


def run_prepare(folder: Path, data_dir: Path, size: int, workers: str | None) -> tuple[float, dict]:
    env = dict(os.environ)
    env.pop("CNNLAB_PREPARE_WORKERS", None)
    if workers:
        env["CNNLAB_PREPARE_WORKERS"] = workers
    command = [
        str(PREPARE),
        "data=image_folder",
        f"data.root={folder}",
        f"data.image_size={size}",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={data_dir}/hydra",
    ]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    meta = json.loads((data_dir / "prepared" / f"image_folder-{size}" / "meta.json").read_text())
    return elapsed, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--skip-serial", action="store_true", help="time only the default (pooled) prepare")
    parser.add_argument("--scratch", type=Path, default=ROOT / "benchmarks" / ".scratch" / "prepare_speed")
    args = parser.parse_args()

    folder = args.scratch / f"images-{args.num_images}"
    started = time.perf_counter()
    generate(folder, args.num_images)
    print(
        f"image folder: {folder} ({args.num_images} JPEGs, generated/checked in {time.perf_counter() - started:.1f} s)"
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    runs = {"pool": None} if args.skip_serial else {"pool": None, "serial": "1"}
    results = {}
    for name, workers in runs.items():
        data_dir = args.scratch / f"data-{name}"
        shutil.rmtree(data_dir / "prepared", ignore_errors=True)
        elapsed, meta = run_prepare(folder, data_dir, args.size, workers)
        results[name] = {
            "seconds": round(elapsed, 2),
            "images_per_s": round(meta["num_samples"] / elapsed),
            "num_samples": meta["num_samples"],
            "content_hash": meta["content_hash"],
        }
        print(
            f"{name:7s} ({'1 process' if workers else f'{cores} processes'}): {elapsed:6.1f} s, "
            f"{meta['num_samples'] / elapsed:6.0f} images/s, {meta['num_samples']} samples"
        )
    if "serial" in results:
        same = results["pool"]["content_hash"] == results["serial"]["content_hash"]
        print(f"speed-up {results['serial']['seconds'] / results['pool']['seconds']:.2f}x; identical output: {same}")
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
