"""Transfer learning (issue 25): ImageNet MobileNetV2 -> Fashion-MNIST from a small labelled set.

Source: torchvision's ImageNet MobileNetV2 (`model.weights=imagenet`, `mobilenet_v2-b0353104.pth`,
top-1 71.878; `make weights` puts it in the cache offline). Target: Fashion-MNIST (Debian's
dataset-fashion-mnist), real 28x28 grey photos of clothing resized to 64 px, with only N labelled
training images (--sizes, default 1000 and 100: `data.train_fraction` = N / 54,000, stratified,
N / 10 per class); val (capped at --val-batches batches) and the 10,000 test photos stay whole.
The first convolution's colour kernels are summed to grey (the channel rule), the inputs are
normalised with ImageNet's statistics averaged to grey, and the 1000-class head is replaced by a
new 10-class one.

Three ways to learn the target, each over the same seeds:
  scratch    random initialisation, everything trains
  frozen     the ImageNet body frozen (BatchNorm in eval mode), only the new head trains
  finetuned  the ImageNet body trains too, at 0.1x the head's learning rate

Every run is `cnnlab-train experiment=none ... logger=none` in a subprocess; accuracy is the best
checkpoint's on the 10,000 test photos, training time the run's own `train_seconds` (fit only).

    .venv/bin/python benchmarks/transfer.py [--seeds 1,2,3] [--sizes 1000,100] [--image-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAIN_IMAGES = 54_000  # Fashion-MNIST's 60,000 training photos less the 6,000 carved for validation
MODEL = ("model=mobilenet_v2",)
COMMON = (
    "experiment=none",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "data=fashion_mnist",
    "augment=basic",
    "data.batch_size=32",
)
MODES = {
    "scratch": (),
    "frozen": ("model.weights=imagenet", "finetune.freeze=backbone"),
    "finetuned": ("model.weights=imagenet", "finetune.backbone_lr_mult=0.1"),
}


def cnnlab_train(overrides: list[str], output_dir: Path) -> dict:
    command = [str(BIN / "cnnlab-train"), *overrides, f"hydra.run.dir={output_dir}"]
    done = subprocess.run(command, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return json.loads((output_dir / "run.json").read_text())


def test_accuracy(output_dir: Path) -> float:
    """The best checkpoint's accuracy on the test split, normalised as the network expects (cnnlab-evaluate's way)."""
    import pytorch_lightning as pl
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from cnnlab.data.datamodule import datamodule_from_config, network_normalization

    run = json.loads((output_dir / "run.json").read_text())
    cfg = OmegaConf.load(output_dir / "config.yaml")
    task_class = get_class(cfg.task.module._target_)
    task = task_class.load_from_checkpoint(run["best_checkpoint"], map_location="cpu")
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    datamodule = datamodule_from_config(cfg, task_class.labels, normalization=network_normalization(task))
    return float(trainer.test(task, datamodule=datamodule, verbose=False)[0]["test/acc"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--sizes", default="1000,100", help="labelled training images (a multiple of 10)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", default="1000:15,100:40", help="epochs per size, size:epochs,...")
    parser.add_argument("--val-batches", type=int, default=4, help="validation batches per epoch (256 each)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    epochs = {int(k): int(v) for k, v in (pair.split(":") for pair in args.epochs.split(","))}

    results: dict[tuple[int, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="cnnlab-transfer-") as scratch:
        scratch = Path(scratch)
        for size in sizes:
            for seed in seeds:
                for mode, extra in MODES.items():
                    out = scratch / f"{size}-{mode}-{seed}"
                    overrides = [
                        *COMMON,
                        *MODEL,
                        f"data.image_size={args.image_size}",
                        f"data.train_fraction={size / TRAIN_IMAGES:.8f}",
                        f"trainer.max_epochs={epochs.get(size, 15)}",
                        f"trainer.limit_val_batches={args.val_batches}",
                        f"seed={seed}",
                        *extra,
                    ]
                    run = cnnlab_train(overrides, out)
                    accuracy = test_accuracy(out)
                    results.setdefault((size, mode), []).append((accuracy, run["train_seconds"]))
                    print(
                        f"{size} images, seed {seed}, {mode:9s}: test acc {accuracy:.4f}, "
                        f"fit {run['train_seconds']:.1f} s",
                        flush=True,
                    )
                    shutil.rmtree(out / "checkpoints", ignore_errors=True)

    print(f"\n| labelled images | mode | test accuracy, mean (min-max) over seeds {args.seeds} | fit s (mean) |")
    print("|---:|---|---|---:|")
    for (size, mode), rows in results.items():
        accs = [a for a, _ in rows]
        print(
            f"| {size} | {mode} | {statistics.mean(accs):.2%} ({min(accs):.2%}-{max(accs):.2%}) | "
            f"{statistics.mean(t for _, t in rows):.1f} |"
        )


if __name__ == "__main__":
    main()
