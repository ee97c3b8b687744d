"""Task targets on shapes 64x64 (issue 4): each named experiment trained, timed and scored on its test split.

Each experiment runs as `cnnlab-train experiment=<name> logger=none` in a subprocess (the wall time
includes start-up and, on first use, preparing the data); its best checkpoint is then scored on the
test split with `trainer.test`, as `cnnlab-evaluate` does. Next to every figure: a trivial predictor
on the same test split (the majority class; the majority class with the mean training box; an
all-background mask), so the table shows what the network adds.

    .venv/bin/python benchmarks/task_targets.py [--only localization,segmentation] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# task -> (experiment, [(test metric, target)])
EXPERIMENTS = {
    "classification": ("shapes_classification", [("test/acc", 0.98)]),
    "localization": ("shapes_localization", [("test/loc_acc", 0.90), ("test/box_iou", 0.75)]),
    "segmentation": ("shapes_segmentation", [("test/miou", 0.85)]),
}
TIME_LIMIT_S = 600  # the budget: 10 minutes of training


def train(experiment: str, output_dir: Path, threads: int | None) -> float:
    """Run cnnlab-train; returns the command's wall seconds."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [
        str(BIN / "cnnlab-train"),
        f"experiment={experiment}",
        "logger=none",
        f"hydra.run.dir={output_dir}",
        "trainer.enable_progress_bar=false",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return seconds


def score(output_dir: Path) -> tuple[dict, dict, object]:
    """(test metrics of the best checkpoint, run.json, the resolved config)."""
    import pytorch_lightning as pl
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from cnnlab.data.datamodule import datamodule_from_config

    run = json.loads((output_dir / "run.json").read_text())
    cfg = OmegaConf.load(output_dir / "config.yaml")
    task_class = get_class(cfg.task.module._target_)
    task = task_class.load_from_checkpoint(run["best_checkpoint"], map_location="cpu")
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    metrics = trainer.test(task, datamodule=datamodule_from_config(cfg, task_class.labels), verbose=False)[0]
    return metrics, run, cfg


def baseline(task_name: str, prepared_dir: str) -> dict:
    """The trivial predictor's test metrics: what a network must beat."""
    import torch

    from cnnlab.data.prepared import PreparedDataset

    data = PreparedDataset(prepared_dir)
    train, test = np.asarray(data.splits["train"]), np.asarray(data.splits["test"])
    labels = np.asarray(data.labels)
    majority = np.bincount(labels[train]).argmax()
    accuracy = float((labels[test] == majority).mean())
    if task_name == "classification":
        return {"test/acc": accuracy}
    if task_name == "localization":
        from cnnlab.tasks.boxes import box_iou

        boxes = torch.as_tensor(np.asarray(data.boxes, dtype=np.float32))
        mean_box = boxes[train].mean(0, keepdim=True)
        ious = box_iou(mean_box.expand(len(test), 4), boxes[test])
        right = torch.as_tensor(labels[test] == majority)
        return {
            "test/acc": accuracy,
            "test/box_iou": float(ious.mean()),
            "test/loc_acc": float((right & (ious >= 0.5)).float().mean()),
        }
    from torchmetrics.classification import MulticlassConfusionMatrix

    from cnnlab.tasks.segmentation import segmentation_scores

    masks = torch.as_tensor(np.asarray(data.masks)[test].astype(np.int64))
    confusion = MulticlassConfusionMatrix(len(data.meta["mask_classes"]), ignore_index=255)
    confusion.update(torch.zeros_like(masks), masks)
    scores = segmentation_scores(confusion.compute())
    return {f"test/{key}": float(scores[key]) for key in ("miou", "pixel_acc", "dice")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(EXPERIMENTS), help="comma-separated tasks to run")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for training (default: torch's own)")
    parser.add_argument("--output", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    tasks = [t.strip() for t in args.only.split(",") if t.strip()]
    with tempfile.TemporaryDirectory() as scratch:
        base = args.output or Path(scratch)
        rows = []
        for task_name in tasks:
            experiment, targets = EXPERIMENTS[task_name]
            output_dir = base / experiment
            load_before = os.getloadavg()[0]
            wall = train(experiment, output_dir, args.threads)
            load_after = os.getloadavg()[0]
            metrics, run, cfg = score(output_dir)
            trivial = baseline(task_name, run["prepared_dir"])
            rows.append((task_name, experiment, targets, metrics, trivial, wall, run, cfg, (load_before, load_after)))
            print(
                f"{experiment}: wall {wall:.0f}s, fit {run['train_seconds']:.0f}s, "
                + ", ".join(
                    f"{m}={metrics[m]:.4f} (target {t}, baseline {trivial.get(m, float('nan')):.4f})"
                    for m, t in targets
                ),
                flush=True,
            )

    print(
        "\n| task | experiment | model | metric | target | measured | trivial baseline | met | epochs | fit s | "
        "wall s |"
    )
    print("|---|---|---|---|---:|---:|---:|:-:|---:|---:|---:|")
    for task_name, experiment, targets, metrics, trivial, wall, run, cfg, _ in rows:
        for metric, target in targets:
            met = "yes" if metrics[metric] >= target and run["train_seconds"] <= TIME_LIMIT_S else "no"
            print(
                f"| {task_name} | {experiment} | {cfg.model.name} | {metric} | {target:.2f} | "
                f"**{metrics[metric]:.4f}** | "
                f"{trivial[metric]:.4f} | {met} | {run['epochs']} | {run['train_seconds']:.0f} | {wall:.0f} |"
            )
    print("\nother test metrics:")
    for task_name, _, targets, metrics, trivial, _, _, _, load in rows:
        shown = {k: round(v, 4) for k, v in metrics.items() if k not in dict(targets)}
        print(
            f"- {task_name} (load average {load[0]:.1f} -> {load[1]:.1f}): {shown}; trivial: "
            f"{ {k: round(v, 4) for k, v in trivial.items()} }"
        )


if __name__ == "__main__":
    main()
