"""The default pipeline's wall time and test accuracy, and cnnlab-train's start-up time.

Each figure sits next to a baseline measured in the same run:
- `dvc repro` on the embedded defaults (LeNet-5 on digits with normalisation, light affine
  augmentation, a one-cycle schedule, weight decay and label smoothing) vs. the same pipeline with
  `augment=none scheduler=none` and neither regulariser (what a plain LeNet-5 reaches in the same
  epochs); `--seeds` repeats the default pipeline with other `seed` values, since one 360-image
  test split moves by 0.28% per image;
- with `--stages`, where the default pipeline's time goes: each stage's command (from dvc.lock) run
  again on its own, wall and CPU (user + sys) seconds, training's fit apart from the rest of
  cnnlab-train, and DVC itself (the whole `dvc repro` less its stages; a no-op `dvc repro`);
- `cnnlab-train --help` vs. Hydra composing the config (`--cfg job`, the work Hydra's own help
  does for every group) and vs. importing the training stack (what --help keeps out of start-up).

    .venv/bin/python benchmarks/pipeline.py [--repeats 5] [--seeds 1,2,3] [--stages 3]
    .venv/bin/python benchmarks/pipeline.py --stages 3 --stages-only [--src /tmp/main/src]   # by stage
    .venv/bin/python benchmarks/pipeline.py --accuracy-seeds 1-10   # the range a newcomer sees, min/mean/max
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import BIN, cli_env, copy_project  # noqa: E402

from overhead import recipe_overrides  # noqa: E402  (benchmarks/, this script's directory)

STORE_STARTUP = (
    "import sys, pytorch_lightning, mlflow\n"
    "from mlflow.tracking import MlflowClient\n"
    "MlflowClient(sys.argv[1]).search_experiments(max_results=1)"
)
STARTUP_FLOOR = "floor: a process importing pytorch_lightning and mlflow, opening the store"
FIT_FLOOR = "floor: the plain PyTorch loop's fit (overhead.py)"
EXTRA_ENV: dict[str, str] = {}  # --src: PYTHONPATH for the cnnlab commands (another checkout's src/, as a baseline)


def timed(command: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def cpu_timed(command: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + sys of the command and every process it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def stage_breakdown(root: Path, repeats: int) -> list[tuple[str, float, float]]:
    """(part, median wall s, median CPU s) of the default pipeline in `root`, a project `pipeline` has run.

    Each round: the whole `dvc repro -f`, a no-op `dvc repro` (everything up to date: DVC's start-up,
    hashing and status checks), then each stage's command as dvc.lock records it, its outputs removed
    first as DVC does. "DVC itself" is the whole less its stages. Torch's threads spin while they wait:
    on cores another job is using, CPU seconds of a fit grow with the wall time.

    Two floors close the table: the start-up a train or evaluate process pays on this stack before
    any work (import pytorch_lightning and mlflow, open the run store), and the plain PyTorch loop's
    fit of the same recipe (benchmarks/overhead.py); 2 x start-up + fit is the least a pipeline with
    train and evaluate as separate processes can take.
    """
    env = cli_env(root, DVC_NO_ANALYTICS="1", **EXTRA_ENV)
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    rows: dict[str, list[tuple[float, float]]] = {}
    for _ in range(repeats):
        whole = cpu_timed([str(BIN / "dvc"), "repro", "-f"], root, env)
        rows.setdefault("`dvc repro -f` (whole pipeline)", []).append(whole)
        # before the stages run again by hand: their new outputs (a new run id) would make DVC re-run them
        rows.setdefault("`dvc repro` with nothing to do", []).append(cpu_timed([str(BIN / "dvc"), "repro"], root, env))
        stages = []
        for name, stage in lock.items():
            for out in stage.get("outs", []):
                path = root / out["path"]
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            stages.append(
                cpu_timed(["bash", "-c", stage["cmd"]], root, {**env, "DVC_STAGE": name, "DVC_ROOT": str(root)})
            )
            rows.setdefault(f"stage {name}", []).append(stages[-1])
            if name == "train":  # fit alone, as cnnlab-train measured it
                fit = json.loads((root / "artifacts/train/metrics.json").read_text())["train_seconds"]
                rows.setdefault("  train: trainer.fit", []).append((fit, float("nan")))
                rows.setdefault("  train: all but fit", []).append((stages[-1][0] - fit, float("nan")))
        rows.setdefault("DVC itself (whole less its stages)", []).append(
            (whole[0] - sum(s[0] for s in stages), whole[1] - sum(s[1] for s in stages))
        )
        # the floor of a pipeline whose train and evaluate are processes on this stack: each pays
        # this start-up before any work, and no training is faster than the plain loop
        rows.setdefault(STARTUP_FLOOR, []).append(
            cpu_timed([sys.executable, "-c", STORE_STARTUP, env["MLFLOW_TRACKING_URI"]], root, env)
        )
        plain = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).with_name("overhead.py")),
                "--plain-loop",
                str(root),
                "--",
                *recipe_overrides("default", None),
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        rows.setdefault(FIT_FLOOR, []).append(
            (json.loads(plain.stdout.strip().splitlines()[-1])["fit_s"], float("nan"))
        )
    medians = [
        (name, statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
        for name, values in rows.items()
    ]
    wall = {name: seconds for name, seconds, _ in medians}
    floor = 2 * wall[STARTUP_FLOOR] + wall[FIT_FLOOR]
    return medians + [("floor of train + evaluate as two processes: 2 x start-up + plain fit", floor, float("nan"))]


def pipeline(root: Path, overrides: str = "") -> tuple[float, float]:
    """(seconds for dvc repro from scratch, test accuracy) in a fresh project copy, `overrides` (Hydra's)
    added to params.yaml's."""
    copy_project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["overrides"] = f"{params['overrides']} {overrides}".strip()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = cli_env(root, **EXTRA_ENV)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, env=env, check=True)
    seconds = timed([str(BIN / "dvc"), "repro"], root, env)
    return seconds, json.loads((root / "artifacts/evaluate/metrics.json").read_text())["test/acc"]


def accuracy_over_seeds(first: int, last: int) -> None:
    """The default pipeline (dvc repro, from scratch) for each seed; min / mean / max test accuracy."""
    import platform

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(first, last + 1):
            seconds, accuracy = pipeline(Path(scratch) / f"seed{seed}", f"seed={seed}")
            results[seed] = accuracy
            print(f"seed={seed}: test accuracy {accuracy:.2%} ({seconds:.0f} s)", flush=True)
    values = list(results.values())
    print(
        f"\n{len(values)} seeds on {cpu}, {os.cpu_count()} CPUs: min {min(values):.2%}, "
        f"mean {statistics.mean(values):.2%}, max {max(values):.2%}; below 99.0%: "
        f"{[s for s, v in results.items() if v < 0.99] or 'none'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="start-up timings per command (median reported)")
    parser.add_argument("--seeds", default="", help="comma-separated extra seed values for the default pipeline")
    parser.add_argument(
        "--stages", type=int, default=0, help="rounds of the per-stage breakdown of the default pipeline (0: none)"
    )
    parser.add_argument(
        "--stages-only", action="store_true", help="only the per-stage breakdown (no baseline, no start-up)"
    )
    parser.add_argument(
        "--src",
        default="",
        help="run the cnnlab commands from this src/ directory (PYTHONPATH), e.g. an older checkout's, as a baseline",
    )
    parser.add_argument(
        "--accuracy-seeds", default="", help="a-b: only the default pipeline's test accuracy for seed a..b"
    )
    args = parser.parse_args()
    if args.src:
        EXTRA_ENV["PYTHONPATH"] = str(Path(args.src).resolve())
    if args.accuracy_seeds:
        accuracy_over_seeds(*map(int, args.accuracy_seeds.split("-")))
        return
    if args.stages_only:
        with tempfile.TemporaryDirectory() as scratch:
            seconds, accuracy = pipeline(Path(scratch) / "default")
            print(
                f"dvc repro from scratch: {seconds:.1f} s, test accuracy {accuracy:.2%}; load average {os.getloadavg()}"
            )
            print_breakdown(stage_breakdown(Path(scratch) / "default", max(args.stages, 1)))
        return
    plain = "augment=none scheduler=none optimizer.weight_decay=0.0 task.module.label_smoothing=0.0"
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        rows = [
            ("default pipeline (augment=affine, scheduler=onecycle)", *pipeline(scratch / "default")),
            (
                "baseline: augment=none scheduler=none, no weight decay or label smoothing",
                *pipeline(scratch / "plain", plain),
            ),
        ]
        for seed in filter(None, args.seeds.split(",")):
            rows.append((f"default pipeline, seed={seed}", *pipeline(scratch / f"seed{seed}", f"seed={int(seed)}")))
        env = cli_env(scratch / "default")
        startup = {
            "cnnlab-train --help": [str(BIN / "cnnlab-train"), "--help"],
            "baseline: cnnlab-train --cfg job (Hydra composes)": [str(BIN / "cnnlab-train"), "--cfg", "job"],
            "baseline: import pytorch_lightning, mlflow": [sys.executable, "-c", "import pytorch_lightning, mlflow"],
        }
        times = {
            name: statistics.median(timed(cmd, scratch / "default", env) for _ in range(args.repeats))
            for name, cmd in startup.items()
        }
        breakdown = stage_breakdown(scratch / "default", args.stages) if args.stages else []
    print("| pipeline | dvc repro from scratch (s) | test accuracy |\n|---|---|---|")
    for name, seconds, accuracy in rows:
        print(f"| {name} | {seconds:.1f} | {accuracy:.2%} |")
    print(f"\n| start-up (median of {args.repeats}) | seconds |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.2f} |")
    if breakdown:
        print_breakdown(breakdown)


def print_breakdown(breakdown: list[tuple[str, float, float]]) -> None:
    print("\n| default pipeline, part (median) | wall s | CPU s (user + sys) |\n|---|---|---|")
    for name, wall, cpu in breakdown:
        print(f"| {name} | {wall:.2f} | {'-' if cpu != cpu else f'{cpu:.2f}'} |")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
