"""Transfer learning (issue 12): pretrain on generated shapes, then learn digits from 10% of their training split.

Source: `shapes` (6 classes of coloured polygons on noisy gradients, 32x32 RGB). Target: `digits`
(sklearn's 8x8 handwritten scans upscaled to 32x32 grey), with only `data.train_fraction=0.1` of the
training split (~130 images, ~13 per class); val and test stay whole. Why it could help: both are
strokes and edges on a background, and a network that has learnt edge, corner and blob detectors on
3,000 images needs fewer labelled digits than one that starts from random filters. The first
convolution's colour kernels are summed to grey (the documented channel rule) and the head is new
(6 -> 10 classes).

Three ways to learn the target, each over the same seeds:
  scratch    random initialisation, everything trains
  frozen     pretrained body frozen (BatchNorm in eval mode), only the new head trains
  finetuned  pretrained body trains too, at 0.3x the head's learning rate

Every run is `cnnlab-train ... logger=none` in a subprocess; accuracy is the best checkpoint's on the
digits test split (360 images), training time is the run's own `train_seconds` (fit only).

    .venv/bin/python benchmarks/transfer.py [--seeds 1,2,3] [--epochs 30] [--pretrain-epochs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = ("model=simple_cnn", "model.batch_norm=true")
COMMON = (
    "experiment=none",  # the plain defaults of conf/, as the transfer pipeline trains
    "logger=none",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "augment=none",
    "optimizer.lr=0.003",
)
MODES = {
    "scratch": (),
    "frozen": ("model.weights={weights}", "finetune.freeze=backbone"),
    "finetuned": ("model.weights={weights}", "finetune.backbone_lr_mult=0.3"),
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
    parser.add_argument("--epochs", type=int, default=30, help="fine-tuning epochs on the small digits set")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--fraction", type=float, default=0.1, help="data.train_fraction of digits")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    with tempfile.TemporaryDirectory(prefix="cnnlab-transfer-") as scratch:
        scratch = Path(scratch)
        pretrain = cnnlab_train(
            [
                *COMMON,
                *MODEL,
                "scheduler=onecycle",
                "data=shapes",
                "data.image_size=32",
                "data.source.num_samples=3000",
                f"trainer.max_epochs={args.pretrain_epochs}",
                "seed=0",
            ],
            scratch / "pretrain",
        )
        source_acc = test_accuracy(scratch / "pretrain")
        print(f"pretrain on shapes: {pretrain['train_seconds']:.1f} s, test acc {source_acc:.4f}", flush=True)
        weights = pretrain["best_checkpoint"]
        results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
        for seed in seeds:
            for mode, extra in MODES.items():
                out = scratch / f"{mode}-{seed}"
                overrides = [
                    *COMMON,
                    *MODEL,
                    "scheduler=none",
                    "data=digits",
                    "data.image_size=32",
                    f"data.train_fraction={args.fraction}",
                    f"trainer.max_epochs={args.epochs}",
                    f"seed={seed}",
                    *(e.format(weights=weights) for e in extra),
                ]
                run = cnnlab_train(overrides, out)
                accuracy = test_accuracy(out)
                results[mode].append((accuracy, run["train_seconds"]))
                print(f"seed {seed} {mode:9s} test acc {accuracy:.4f}  train {run['train_seconds']:.1f} s", flush=True)

    print(
        f"\npretrain (shapes, 32 px, {args.pretrain_epochs} epochs): {pretrain['train_seconds']:.1f} s, shapes "
        f"test acc {source_acc:.4f}"
    )
    print(
        f"\n| digits, {args.fraction:.0%} of train, {args.epochs} epochs | test accuracy, mean (min-max) over "
        f"seeds {args.seeds} | train s (mean) |"
    )
    print("|---|---|---|")
    for mode, rows in results.items():
        accs = [a for a, _ in rows]
        print(
            f"| {mode} | {statistics.mean(accs):.2%} ({min(accs):.2%}-{max(accs):.2%}) | "
            f"{statistics.mean(t for _, t in rows):.1f} |"
        )


if __name__ == "__main__":
    main()
