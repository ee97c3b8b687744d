"""Time to accuracy on the real Fashion-MNIST (issue 28): a speedrun recipe three ways, and its ablation.

Every side trains the recipe's fixed number of epochs and is then scored on the official 10,000 test images; a
side reaches the target when that score does (a miss counts as a miss, however close). Two clocks:
- `fit_s`: training with a validation pass each epoch, from building the loaders (cnnlab-train's `trainer.fit`,
  recorded in run.json as train_seconds; the plain loop's and Keras' own clock over the same work);
- `wall_s`: the user's wait, from starting the process(es) to the test accuracy: imports, the MLflow run, the
  checkpoints, and for cnnlab also `cnnlab-evaluate` (a second process, as `dvc repro` runs it).
The prepared arrays are made once before the rounds (`cnnlab-prepare`, timed apart), as a pipeline does.

three-way   cnnlab-train + cnnlab-evaluate (logger=mlflow, the default); the plain PyTorch loop of
            benchmarks/overhead.py on the same config (`plain_loop(test=True)`: same arrays, batch transforms,
            network and initial weights, optimizer, one-cycle schedule, bf16 autocast, channels-last, flip TTA);
            Keras 3 on its torch backend (benchmarks/keras_side.py). Rounds interleaved, each side a fresh process.
ablation    cnnlab-train with one ingredient of the recipe taken out at a time, over seeds.

    .venv/bin/python benchmarks/speedrun.py three-way [--recipe fashion_speed91] [--rounds 3] [--target 0.91]
    .venv/bin/python benchmarks/speedrun.py ablation [--recipe fashion_speed91] [--seeds 1,2] [--target 0.91]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import BIN, cli_env, copy_project  # noqa: E402

QUIET = ["trainer.enable_progress_bar=false"]

# what each ablation row takes out of the recipe, as cnnlab-train overrides
ABLATIONS = {
    "full recipe": [],
    "fp32 (no bf16 autocast)": ["trainer.precision=32-true"],
    "NCHW (no channels-last)": ["task.module.channels_last=false"],
    "no flip TTA": ["task.module.tta_flip=false"],
    "no label smoothing": ["task.module.label_smoothing=0.0"],
    "no augmentation": ["augment=none"],
    "constant lr 0.05 (no one-cycle)": ["scheduler=none", "optimizer.lr=0.05"],
    "LeNet-5 at 32 px (no compact net)": ["model=lenet5", "~model.widths", "data.image_size=32"],
}


def run(command: list[str], env: dict, cwd: Path) -> float:
    """Wall seconds of a command; its output shown when it fails."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def cnnlab_side(project: Path, overrides: list[str], env: dict, name: str) -> dict:
    out = project / "outputs" / name
    wall = run([str(BIN / "cnnlab-train"), *overrides, *QUIET, f"hydra.run.dir={out}"], env, project)
    wall += run([str(BIN / "cnnlab-evaluate"), f"evaluate.train_dir={out}"], env, project)
    record = json.loads((out / "run.json").read_text())
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    return {
        "fit_s": record["train_seconds"],
        "wall_s": wall,
        "test_acc": metrics["test/acc"],
        "epochs": record["epochs"],
    }


def script_side(script: str, project: Path, overrides: list[str], env: dict) -> dict:
    """A side run as `python <script> <project> -- <overrides>`, which prints one JSON line."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), str(project), "--", *overrides],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{script} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - started}


def summary(results: list[dict], target: float, images: int) -> dict:
    accuracy = [r["test_acc"] for r in results]
    return {
        "test_acc": [round(a, 4) for a in accuracy],
        "hits": f"{sum(a >= target for a in accuracy)}/{len(accuracy)}",
        "fit_s": [round(r["fit_s"], 1) for r in results],
        "wall_s": [round(r["wall_s"], 1) for r in results],
        "fit_s_median": round(statistics.median(r["fit_s"] for r in results), 1),
        "wall_s_median": round(statistics.median(r["wall_s"] for r in results), 1),
        "images_per_s": round(images / statistics.median(r["fit_s"] for r in results)),
    }


def prepare(project: Path, recipe: str, env: dict) -> float:
    return run([str(BIN / "cnnlab-prepare"), f"experiment={recipe}"], env, project)


def three_way(project: Path, env: dict, recipe: str, rounds: int, seed: int, target: float) -> dict:
    overrides = [f"experiment={recipe}", f"seed={seed}"]
    sides: dict[str, list[dict]] = {"cnnlab": [], "plain": [], "keras": []}
    for number in range(rounds):
        sides["cnnlab"].append(cnnlab_side(project, overrides, env, f"three-way-{number}"))
        sides["plain"].append(script_side("speedrun.py", project, ["--plain", *overrides], env))
        sides["keras"].append(script_side("keras_side.py", project, overrides, {**env, "KERAS_BACKEND": "torch"}))
        print(json.dumps({"round": number, **{k: v[-1] for k, v in sides.items()}}), flush=True)
    images = sides["plain"][0]["images"]
    report = {side: summary(results, target, images) for side, results in sides.items()}
    report["ratio_to_plain"] = {
        side: {
            clock: round(report["plain"][clock] / report[side][clock], 3) for clock in ("fit_s_median", "wall_s_median")
        }
        for side in sides
    }
    return {"recipe": recipe, "seed": seed, "target": target, "rounds": rounds, **report}


def ablation(project: Path, env: dict, recipe: str, seeds: list[int], target: float) -> dict:
    rows = {}
    for name, extra in ABLATIONS.items():
        results = [
            cnnlab_side(project, [f"experiment={recipe}", f"seed={seed}", *extra], env, f"ablation-{len(rows)}-{seed}")
            for seed in seeds
        ]
        rows[name] = {
            "overrides": extra,
            "test_acc": [round(r["test_acc"], 4) for r in results],
            "test_acc_mean": round(statistics.mean(r["test_acc"] for r in results), 4),
            "hits": f"{sum(r['test_acc'] >= target for r in results)}/{len(results)}",
            "fit_s_mean": round(statistics.mean(r["fit_s"] for r in results), 1),
        }
        print(json.dumps({name: rows[name]}), flush=True)
    return {"recipe": recipe, "seeds": seeds, "target": target, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["three-way", "ablation"])
    parser.add_argument("--recipe", default="fashion_speed91", help="a conf/experiment/ name")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1, help="three-way: the seed of every round")
    parser.add_argument("--seeds", default="1,2", help="ablation: comma list")
    parser.add_argument("--target", type=float, default=0.91, help="test accuracy a side must reach")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        project = copy_project(Path(scratch) / "project")
        env = cli_env(project)
        print(
            f"# {os.cpu_count()} CPUs, torch threads default; prepare {prepare(project, args.recipe, env):.1f} s "
            "(once, before the rounds)",
            flush=True,
        )
        if args.what == "three-way":
            report = three_way(project, env, args.recipe, args.rounds, args.seed, args.target)
        else:
            report = ablation(project, env, args.recipe, [int(s) for s in args.seeds.split(",")], args.target)
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[2] == "--" and sys.argv[3] == "--plain":  # a side's own process
        from benchmarks.overhead import plain_loop

        print(json.dumps(plain_loop(Path(sys.argv[1]), sys.argv[4:], test=True)))
    else:
        main()
