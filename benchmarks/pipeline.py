"""The default pipeline's wall time and test accuracy, and cnnlab-train's start-up time.

Each figure sits next to a baseline measured in the same run:
- `dvc repro` on the embedded defaults (LeNet-5 on digits with normalisation, light affine
  augmentation, a one-cycle schedule, weight decay and label smoothing) vs. the same pipeline with
  `augment=none scheduler=none` and neither regulariser (what a plain LeNet-5 reaches in the same
  epochs); `--seeds` repeats the default pipeline with other `train.seed` values, since one 360-image
  test split moves by 0.28% per image;
- `cnnlab-train --help` vs. Hydra composing the config (`--cfg job`, the work Hydra's own help
  does for every group) and vs. importing the training stack (what --help keeps out of start-up).

    .venv/bin/python benchmarks/pipeline.py [--repeats 5] [--seeds 1,2,3]
    .venv/bin/python benchmarks/pipeline.py --accuracy-seeds 1-10   # the range a newcomer sees, min/mean/max
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import BIN, cli_env, copy_project  # noqa: E402


def timed(command: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def pipeline(root: Path, overrides: dict) -> tuple[float, float]:
    """(seconds for dvc repro from scratch, test accuracy) in a fresh project copy."""
    copy_project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in overrides.items():  # "train.seed" -> params["train"]["seed"]
        *parents, leaf = key.split(".")
        node = params
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = cli_env(root)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, env=env, check=True)
    seconds = timed([str(BIN / "dvc"), "repro"], root, env)
    return seconds, json.loads((root / "artifacts/evaluate/metrics.json").read_text())["test/acc"]


def accuracy_over_seeds(first: int, last: int) -> None:
    """The default pipeline (dvc repro, from scratch) for each train.seed; min / mean / max test accuracy."""
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(first, last + 1):
            seconds, accuracy = pipeline(Path(scratch) / f"seed{seed}", {"train.seed": seed})
            results[seed] = accuracy
            print(f"train.seed={seed}: test accuracy {accuracy:.2%} ({seconds:.0f} s)", flush=True)
    values = list(results.values())
    print(f"\n{len(values)} seeds on {cpu}, {os.cpu_count()} CPUs: min {min(values):.2%}, "
          f"mean {statistics.mean(values):.2%}, max {max(values):.2%}; below 99.0%: "
          f"{[s for s, v in results.items() if v < 0.99] or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="start-up timings per command (median reported)")
    parser.add_argument("--seeds", default="", help="comma-separated extra train.seed values for the default pipeline")
    parser.add_argument("--accuracy-seeds", default="", help="a-b: only the default pipeline's test accuracy for train.seed a..b")
    args = parser.parse_args()
    if args.accuracy_seeds:
        accuracy_over_seeds(*map(int, args.accuracy_seeds.split("-")))
        return
    plain = {"augment": "none", "scheduler": "none", "train.weight_decay": 0.0, "train.label_smoothing": 0.0}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        rows = [("default pipeline (augment=affine, scheduler=onecycle)", *pipeline(scratch / "default", {})),
                ("baseline: augment=none scheduler=none, no weight decay or label smoothing", *pipeline(scratch / "plain", plain))]
        for seed in filter(None, args.seeds.split(",")):
            rows.append((f"default pipeline, train.seed={seed}", *pipeline(scratch / f"seed{seed}", {"train.seed": int(seed)})))  # fmt: skip
        env = cli_env(scratch / "default")
        startup = {
            "cnnlab-train --help": [str(BIN / "cnnlab-train"), "--help"],
            "baseline: cnnlab-train --cfg job (Hydra composes)": [str(BIN / "cnnlab-train"), "--cfg", "job"],
            "baseline: import pytorch_lightning, mlflow": [sys.executable, "-c", "import pytorch_lightning, mlflow"],
        }
        times = {name: statistics.median(timed(cmd, scratch / "default", env) for _ in range(args.repeats)) for name, cmd in startup.items()}
    print("| pipeline | dvc repro from scratch (s) | test accuracy |\n|---|---|---|")
    for name, seconds, accuracy in rows:
        print(f"| {name} | {seconds:.1f} | {accuracy:.2%} |")
    print(f"\n| start-up (median of {args.repeats}) | seconds |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
