"""Training-batch throughput: prepared data + an augmentation pipeline, against one image file per sample.

Three loaders yield the same batches (image float N x C x H x W normalised, label int64) through
the same albumentations transforms (conf/augment/<augment>.yaml), one process, one thread:

  prepared     CNNDataModule's train loader: memory-mapped arrays, batched reads, per-sample
               augmentation, batched Normalize + tensor conversion          (what training uses)
  per-sample   the same prepared arrays through the classic per-item path: Dataset.__getitem__ ->
               augmentation + A.Normalize + ToTensorV2 per sample -> default_collate
  files        the baseline: the per-sample path reading and decoding one PNG file per sample

Reports images per second of wall time and per CPU second of the process (per core: the loader
runs in one process on one thread, so CPU seconds are what it costs; on a shared machine wall
time also counts the time other processes held the core).

    .venv/bin/python benchmarks/data_loading.py [--num-images 10000] [--size 32] [--augment basic]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cnnlab.data.augment import build_transform  # noqa: E402
from cnnlab.data.datamodule import CNNDataModule  # noqa: E402
from cnnlab.data.prepare import build_prepared_dataset  # noqa: E402
from cnnlab.data.prepared import PreparedDataset  # noqa: E402
from cnnlab.data.sources.shapes import ShapesSource  # noqa: E402


class PerSampleDataset(Dataset):
    """The classic path: one sample per call, the whole albumentations pipeline per sample."""

    def __init__(self, read, labels: np.ndarray, transform):
        self.read, self.labels, self.transform = read, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        out = self.transform(image=self.read(index))
        return {"image": out["image"].float(), "label": torch.as_tensor(self.labels[index], dtype=torch.long)}


def measure(loader, repeats: int) -> dict:
    """Best of `repeats` full passes: images/s of wall time and per CPU second."""
    best = None
    for _ in range(repeats):
        count, wall, cpu = 0, time.perf_counter(), time.process_time()
        for batch in loader:
            count += len(batch["label"])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        result = {
            "images": count,
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "images_per_s": round(count / wall),
            "images_per_cpu_s": round(count / cpu),
        }
        if best is None or result["images_per_cpu_s"] > best["images_per_cpu_s"]:
            best = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=10000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--augment", default="basic", help="a conf/augment/*.yaml name")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=ROOT / "benchmarks" / ".scratch" / "data_loading")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    scratch = args.scratch / f"n{args.num_images}-{args.size}"
    prepared_dir, files_dir = scratch / "prepared", scratch / "files"
    if not (prepared_dir / "meta.json").is_file():
        build_prepared_dataset(
            ShapesSource(args.num_images, args.size, seed=0),
            prepared_dir,
            name="bench",
            image_size=args.size,
            channels=3,
            val_fraction=0.0,
            test_fraction=0.0,
            seed=0,
        )
    prepared = PreparedDataset(prepared_dir)
    if not files_dir.is_dir():
        staging = files_dir.with_name("files.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for i, image in enumerate(prepared.images):
            cv2.imwrite(str(staging / f"{i:06d}.png"), cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
        staging.rename(files_dir)
    files = sorted(files_dir.glob("*.png"))

    train = yaml.safe_load((ROOT / "conf" / "augment" / f"{args.augment}.yaml").read_text())["train"]
    mean, std = prepared.meta["mean"], prepared.meta["std"]
    labels = prepared.labels

    datamodule = CNNDataModule(str(prepared_dir), train_transforms=train, batch_size=args.batch_size, num_workers=0)
    loaders = {
        "prepared": datamodule.train_dataloader(),
        "per-sample": DataLoader(
            PerSampleDataset(lambda i: np.asarray(prepared.images[i]), labels, build_transform(train, mean, std)),
            batch_size=args.batch_size,
            shuffle=True,
        ),
        "files": DataLoader(
            PerSampleDataset(
                lambda i: cv2.cvtColor(cv2.imread(str(files[i]), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB),
                labels,
                build_transform(train, mean, std),
            ),
            batch_size=args.batch_size,
            shuffle=True,
        ),
    }
    results = {name: measure(loader, args.repeats) for name, loader in loaders.items()}
    base = results["files"]["images_per_cpu_s"]
    print(
        f"augment={args.augment}, {args.num_images} images of {args.size}x{args.size}x3, batch {args.batch_size}, "
        f"1 process, 1 thread, best of {args.repeats} epochs"
    )
    print(f"{'loader':12s} {'images/s (wall)':>16s} {'images/CPU-s':>13s} {'vs files':>9s}")
    for name, r in results.items():
        print(f"{name:12s} {r['images_per_s']:16d} {r['images_per_cpu_s']:13d} {r['images_per_cpu_s'] / base:8.1f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
