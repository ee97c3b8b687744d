"""Explain (issue 13): do the class-activation maps point at the object, depend on the weights, and what do they cost?

On a trained `shapes_classification` run (train it first:
`cnnlab-train experiment=shapes_classification logger.tracking_uri=sqlite:////tmp/explain-bench/mlflow.db
hydra.run.dir=/tmp/explain-bench/train`):

- Pointing game (Zhang et al. 2016) on the whole test split: the share of images whose map maximum
  lies inside the object's mask (and within 4 px of it: the paper's 15 px at 224 px, scaled to
  64 px), for each CAM method at each stage, one pass and smoothed (cnnlab-explain's default), for
  the true class;
  baselines in the same run: a uniformly random point (seeded) and the image centre.
- Model randomisation (Adebayo et al. 2018): weights re-initialised block by block from the top;
  the Spearman rank correlation of each step's maps with the trained model's, next to two runs of
  the trained model.
- Cost: wall time of `cnnlab-explain run=<dir> num_images=16` (all pictures, logged into the run),
  as a subprocess.

    .venv/bin/python benchmarks/explain.py --run /tmp/explain-bench/train [--uri sqlite:////tmp/explain-bench/mlflow.db]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

BIN = Path(sys.executable).parent


def pointing_game(task, source, stages: list[str], batch_size: int = 100) -> dict[str, float]:
    from cnnlab.data.datamodule import PreparedSplit
    from cnnlab.data.prepared import PreparedDataset
    from cnnlab.explain.cam import CAM_METHODS, class_maps, pointing_hits
    from cnnlab.explain.layers import resolve_layer

    split = PreparedSplit(PreparedDataset(source.train_cfg.data.prepared_dir), "test", None, boxes=False, masks=True)
    hits: dict[str, list[np.ndarray]] = {}
    rng = np.random.default_rng(0)
    correct = []
    for start in range(0, len(split), batch_size):
        batch = split.__getitems__(list(range(start, min(start + batch_size, len(split)))))
        images, labels, masks = batch["image"], batch["label"], batch["mask"].numpy()
        objects = (masks != 0) & (masks != 255)
        n, height, width = objects.shape
        with torch.no_grad():
            correct.append((task(images).argmax(1) == labels).numpy())
        for stage in stages:
            ref = resolve_layer(task.backbone, stage, "stage")
            for method in CAM_METHODS:
                for smooth in (False, True):
                    maps = class_maps(task, images, ref, labels, method, smooth)
                    name = f"{method} {stage}{' smoothed' if smooth else ''}"
                    hits.setdefault(name, []).append(pointing_hits(maps, objects))
                    hits.setdefault(f"{name} (4 px tolerance)", []).append(pointing_hits(maps, objects, 4))
        random_points = np.zeros((n, height, width))
        random_points[np.arange(n), rng.integers(0, height, n), rng.integers(0, width, n)] = 1
        hits.setdefault("baseline: random point", []).append(pointing_hits(random_points, objects))
        hits.setdefault("baseline: random point (4 px tolerance)", []).append(pointing_hits(random_points, objects, 4))
        centre = np.zeros((n, height, width))
        centre[:, height // 2, width // 2] = 1
        hits.setdefault("baseline: image centre", []).append(pointing_hits(centre, objects))
        hits.setdefault("baseline: image centre (4 px tolerance)", []).append(pointing_hits(centre, objects, 4))
    print(f"test images: {len(split)}, accuracy of the model: {np.concatenate(correct).mean():.4f}")
    return {name: float(np.concatenate(parts).mean()) for name, parts in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a shapes_classification training output directory")
    parser.add_argument("--uri", default=None, help="its tracking URI (default: run.json's)")
    parser.add_argument("--sanity-images", type=int, default=32)
    parser.add_argument("--stages", default="stage3,stage4", help="stages the pointing game scores")
    args = parser.parse_args()

    from cnnlab.explain.cam import CAM_METHODS, cascading_randomisation, class_maps, rank_correlation
    from cnnlab.explain.layers import resolve_layer, stage_names
    from cnnlab.explain.source import open_source, test_images

    record = json.loads((Path(args.run) / "run.json").read_text())
    uri = args.uri or record["tracking_uri"]
    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, load average: {os.getloadavg()}")
    with open_source(args.run, uri) as source:
        task = source.task
        stages = stage_names(task.backbone)
        print(f"model: {type(task.backbone).__name__}, stages: {stages}")

        print("\n## pointing game (true class; whole test split)")
        for name, value in pointing_game(task, source, args.stages.split(",")).items():
            print(f"{name:28s} {value:.4f}")

        print(f"\n## model randomisation (first {args.sanity_images} test images, true class, deepest stage)")
        batch = test_images(source, args.sanity_images)
        ref = resolve_layer(task.backbone, stages[-1], "stage")
        for method in CAM_METHODS:
            for smooth in (False, True):
                label = f"{method}{' smoothed' if smooth else ''}"
                again = rank_correlation(
                    class_maps(task, batch.inputs, ref, batch.labels, method, smooth),
                    class_maps(task, batch.inputs, ref, batch.labels, method, smooth),
                ).mean()
                print(f"{label}: two runs of the trained model: {again:.4f}")
                for block, value in cascading_randomisation(
                    task, batch.inputs, stages[-1], batch.labels, method, depth=3, smooth=smooth
                ):
                    print(f"{label}: randomised down to {block:28s} {value:.4f}")

    print("\n## cost: cnnlab-explain on 16 images")
    out = Path(args.run) / "explain-bench"
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "cnnlab-explain"), f"run={args.run}", "num_images=16", f"output_dir={out}", f"tracking_uri={uri}"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(done.stdout.strip(), done.stderr.strip()[-500:])
    print(
        f"cnnlab-explain num_images=16: {seconds:.1f} s wall, {cpu:.1f} s CPU (exit {done.returncode}), "
        f"load average after: {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
