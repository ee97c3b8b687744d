"""GPU readiness (issue 28): what cnnlab trains on one GPU machine, next to a plain PyTorch loop.

For ResNet-50 at 224 px (generated shapes, no download) and the speedrun recipe (experiment=fashion_speed91;
data=digits where Fashion-MNIST's files are missing), one JSON line a measurement:

- `cnnlab-train`: fit images/s (training images / run.json's train_seconds, validation included), the
  val accuracy, and the GPU memory MLflow's system metrics saw (they need nvidia-ml-py; else null);
- `plain`: the same config in a hand-written loop (benchmarks/overhead.py `plain_loop`): bf16 autocast,
  channels-last, the GPU's peak allocated memory, val and test accuracy;
- `plain+compile`: the same with `torch.compile`, where this torch can compile;
- `input`: images/s the train DataLoader supplies alone against images/s the training step consumes
  (one batch held on the device); supply/consume >= 1: the loader keeps the GPU busy;
- `ddp`: cnnlab-train under DDP over all visible GPUs, and how many MLflow runs it made (one).

The GPU mode is sized from CPU measurements and typical GPU speeds, not yet timed on a GPU: each line's
`elapsed_s` shows where the time goes. Everything runs in a scratch copy of the project with its own
MLflow store (sqlite, in the copy).
Without a GPU, or with --tiny, it runs the CPU tiny mode: the same code paths on a handful of small
batches, DDP over 2 CPU processes, in about a minute (CI runs it: tests/benchmarks/test_gpu_script.py).

    benchmarks/gpu.sh                 # on a GPU machine: the full measurement, sized for under 8 minutes
    benchmarks/gpu.sh --tiny          # on CPU: the smoke version
    benchmarks/gpu.sh --workdir DIR   # keep the project copy, its outputs and MLflow store in DIR
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import overhead  # noqa: E402
from overhead import BIN, cli_env, copy_project  # noqa: E402

DDP_EXPERIMENT = "gpu-sh-ddp"


class Failure(Exception):
    """A measurement that did not complete; its message says which and why."""


@dataclass
class Settings:
    """What one mode measures; `gpu()` and `cpu_tiny()` are the two modes."""

    tiny: bool
    device: str  # cuda | cpu
    devices: int  # DDP's processes: all visible GPUs, or 2 CPU processes
    resnet_size: int
    resnet_samples: int
    resnet_batch: int
    resnet_epochs: int
    speedrun_epochs: int | None  # None: the recipe's
    num_workers: int  # ResNet-50's loader processes (the speedrun keeps its recipe's)
    max_batches: int | None  # a cap on every epoch's batches (trainer.limit_*_batches); None: whole epochs
    supply_batches: int
    consume_steps: int
    compile_models: tuple[str, ...]  # which models the compile measurement runs
    timeout: int  # seconds each cnnlab-train may take
    threads: int | None  # torch's threads in every process; None: torch's default
    trainer: list[str] = field(default_factory=list)

    @classmethod
    def gpu(cls, gpus: int) -> Settings:
        return cls(
            tiny=False,
            device="cuda",
            devices=gpus,
            resnet_size=224,
            resnet_samples=2560,  # 1792 training images: 14 full batches of 128 (no recompile for a short last one)
            resnet_batch=128,
            resnet_epochs=6,
            speedrun_epochs=None,
            num_workers=max(1, min(8, (os.cpu_count() or 2) - 2)),
            max_batches=None,
            supply_batches=40,
            consume_steps=30,
            compile_models=("resnet50", "speedrun"),
            timeout=600,
            threads=None,
            trainer=["trainer=gpu", "trainer.precision=bf16-mixed"],
        )

    @classmethod
    def cpu_tiny(cls) -> Settings:
        return cls(
            tiny=True,
            device="cpu",
            devices=2,
            resnet_size=32,
            resnet_samples=64,
            resnet_batch=8,
            resnet_epochs=1,
            speedrun_epochs=1,
            num_workers=0,
            max_batches=2,
            supply_batches=4,
            consume_steps=2,
            compile_models=("speedrun",),  # inductor takes minutes over ResNet-50 on 2 cores
            timeout=300,
            # one thread a process: two threads that wait on each other at every op crawl on a busy machine
            # (a ResNet-50 step at 32 px took 7 s instead of 0.2 s beside two other busy processes)
            threads=1,
            trainer=["trainer.accelerator=cpu", "trainer.precision=bf16-mixed"],
        )

    def limits(self) -> list[str]:
        if self.max_batches is None:
            return []
        n = self.max_batches
        return [f"trainer.limit_train_batches={n}", f"trainer.limit_val_batches={n}", "trainer.num_sanity_val_steps=0"]


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def note(text: str) -> None:
    print(f"# {text}", flush=True)


def fashion_mnist_present(project: Path) -> tuple[bool, str]:
    """Whether conf/data/fashion_mnist.yaml's root holds the four idx files; (present, that root)."""
    from cnnlab.data.sources.mnist import find_idx_file

    root = Path(yaml.safe_load((project / "conf" / "data" / "fashion_mnist.yaml").read_text())["root"])
    wanted = [(prefix, kind) for prefix in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")]
    return all(find_idx_file(root, prefix, kind) for prefix, kind in wanted), str(root)


def recipes(settings: Settings, fashion: bool) -> dict[str, list[str]]:
    """The Hydra overrides of each model's recipe on this machine (single device)."""
    common = ["callbacks.early_stopping=null", "trainer.enable_progress_bar=false", *settings.limits()]
    resnet = [
        "experiment=none",
        "model=resnet50",
        "data=shapes",
        f"data.source.num_samples={settings.resnet_samples}",
        f"data.image_size={settings.resnet_size}",
        f"data.batch_size={settings.resnet_batch}",
        f"data.eval_batch_size={2 * settings.resnet_batch}",
        f"data.num_workers={settings.num_workers}",
        "augment=shapes",
        "task.module.channels_last=true",
        f"trainer.max_epochs={settings.resnet_epochs}",
    ]
    speedrun = ["experiment=fashion_speed91"] + ([] if fashion else ["data=digits", "data.image_size=28"])
    speedrun += [f"trainer.max_epochs={settings.speedrun_epochs}"] if settings.speedrun_epochs else []
    return {"resnet50": resnet + settings.trainer + common, "speedrun": speedrun + settings.trainer + common}


def ddp_overrides(settings: Settings, resnet: list[str]) -> list[str]:
    """ResNet-50's recipe under trainer=ddp over all of this machine's devices, in its own MLflow experiment."""
    single = set(settings.trainer)
    accelerator = "gpu" if settings.device == "cuda" else "cpu"
    extra = ["trainer.benchmark=true"] if settings.device == "cuda" else []
    return [o for o in resnet if o not in single] + [
        "trainer=ddp",
        f"trainer.accelerator={accelerator}",
        f"trainer.devices={settings.devices}",
        "trainer.precision=bf16-mixed",
        *extra,
        f"logger.experiment_name={DDP_EXPERIMENT}",
    ]


def cnnlab_train(project: Path, name: str, overrides: list[str], env: dict, timeout: int) -> dict:
    """`cnnlab-train` in its own process: run.json, metrics.json and the wall time of the command."""
    out = project / "outputs" / name
    command = [
        str(BIN / "cnnlab-train"),
        *overrides,
        "logger.log_model=false",  # after the fit: costs wall time, not images/s
        "logger.system_metrics_interval=1",
        f"hydra.run.dir={out}",
    ]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise Failure(f"cnnlab-train ({name}) ran past {timeout} s: {' '.join(command)}") from err
    if done.returncode != 0:
        raise Failure(
            f"cnnlab-train ({name}) exited {done.returncode}: {' '.join(command)}\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    record = json.loads((out / "run.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return {**record, "metrics": metrics, "wall_s": time.perf_counter() - started, "output_dir": out}


def gpu_memory_from_mlflow(uri: str, run_id: str) -> float | None:
    """The largest GPU memory MLflow's system metrics sampled for a run (MB), None when none was sampled."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("system/gpu") and "memory_usage_mega" in k]
    values = [m.value for k in keys for m in client.get_metric_history(run_id, k)]
    return max(values) if values else None


def compile_support(device: str) -> str | None:
    """None where torch.compile works on `device` (a tiny function compiled and run); else why not."""
    import torch

    try:
        torch.compile(lambda x: (x.relu() * 2).sum())(torch.ones(8, device=device))
    except Exception as err:  # any backend failure means: not supported on this machine
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]
    return None


def input_balance(project: Path, overrides: list[str], settings: Settings) -> dict:
    """Images/s the train loader supplies (no model) against images/s the training step consumes on one batch
    held on the device (forward, loss, backward, optimizer step; autocast and channels-last as configured)."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from cnnlab.data.datamodule import datamodule_from_config
    from cnnlab.tasks import build_task

    cfg, meta = overhead.prepared(project, overrides)
    target = overhead.plain_device(cfg, settings.device)
    overhead.configure_backends(cfg, target)
    loader = datamodule_from_config(cfg, ("label",)).train_dataloader()
    count, wall, _, first = overhead.drain(loader, settings.supply_batches * cfg.data.batch_size)
    supply = count / wall

    channels_last = bool(cfg.task.module.get("channels_last", False))
    batch = overhead.device_batch(first, target, channels_last)
    network = build_task(cfg, meta).backbone.to(target).train()
    optimizer = instantiate(cfg.optimizer, params=network.parameters())
    dtype = overhead.autocast_dtype(cfg)
    smoothing = float(cfg.task.module.get("label_smoothing", 0.0))

    def step() -> None:
        with overhead.autocast_context(target, dtype):
            loss = F.cross_entropy(network(batch["image"]), batch["label"], label_smoothing=smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def synchronize() -> None:
        if target.type == "cuda":
            torch.cuda.synchronize(target)

    for _ in range(max(1, settings.consume_steps // 5)):  # warm-up: cuDNN's autotuning, the allocator
        step()
    synchronize()
    wall = time.perf_counter()
    for _ in range(settings.consume_steps):
        step()
    synchronize()
    consume = settings.consume_steps * len(batch["label"]) / (time.perf_counter() - wall)
    ratio = supply / consume
    verdict = (
        "fed: the loader supplies more than the step consumes"
        if ratio >= 1
        else "input-bound: the step waits on the loader (more data.num_workers, or cheaper augmentation)"
    )
    return {
        "num_workers": int(cfg.data.num_workers),
        "batch_size": int(cfg.data.batch_size),
        "supply_images_per_s": round(supply, 1),
        "consume_images_per_s": round(consume, 1),
        "supply_over_consume": round(ratio, 2),
        "verdict": verdict,
    }


def ddp_images(train_size: int, devices: int, batch_size: int, limit: int | None, epochs: int) -> int:
    """Training images all ranks of a DDP fit see: the sampler pads the split to equal shares, each rank
    batches its own share, and trainer.limit_train_batches caps each rank's batches."""
    share = math.ceil(train_size / devices)
    sizes = [batch_size] * (share // batch_size) + ([share % batch_size] if share % batch_size else [])
    return devices * sum(sizes[:limit] if limit is not None else sizes) * epochs


def free_device_memory() -> None:
    import torch

    gc.collect()  # the plain loop's network, loaders and workers
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(project: Path, settings: Settings, env: dict, started: float) -> None:
    """Every measurement, one JSON line each (raises Failure on the first that fails)."""
    import torch

    uri = env["MLFLOW_TRACKING_URI"]
    fashion, fashion_root = fashion_mnist_present(project)
    if not fashion:
        note(f"Fashion-MNIST's idx files are not in {fashion_root}: the speedrun runs on data=digits (28 px)")
    overrides = recipes(settings, fashion)
    emit(
        {
            "side": "setup",
            "mode": "cpu-tiny" if settings.tiny else "gpu",
            "device": torch.cuda.get_device_name(0) if settings.device == "cuda" else "cpu",
            "visible_gpus": torch.cuda.device_count(),
            "ddp_devices": settings.devices,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "speedrun_data": "fashion_mnist" if fashion else "digits",
            "resnet50_image_size": settings.resnet_size,
            "tracking_uri": uri,
        }
    )

    def elapsed() -> float:
        return round(time.perf_counter() - started, 1)

    epochs: dict[str, int] = {}
    for name, recipe in overrides.items():  # prepared once here, read by every side
        prepare_started = time.perf_counter()
        cfg, meta = overhead.prepared(project, recipe)
        epochs[name] = int(cfg.trainer.max_epochs)
        emit(
            {
                "model": name,
                "side": "prepare",
                "data": meta["name"],
                "image_size": meta["image_size"],
                "split_sizes": meta["split_sizes"],
                "seconds": round(time.perf_counter() - prepare_started, 1),
            }
        )

    plain: dict[str, dict] = {}
    single: dict[str, dict] = {}
    for name, recipe in overrides.items():
        result = plain[name] = attempt(
            f"the plain loop ({name})",
            overhead.plain_loop,
            project,
            recipe,
            test=True,
            max_batches=settings.max_batches,
        )
        free_device_memory()
        emit(
            {
                "model": name,
                "side": "plain",
                "images_per_s": round(result["images_per_s"], 1),
                "after_first_epoch_images_per_s": after_first_epoch(result),
                "fit_s": round(result["fit_s"], 2),
                "images": result["images"],
                "gpu_max_allocated_mb": _rounded(result["max_memory_allocated_mb"]),
                "val_acc": round(result["val_acc"], 4),
                "test_acc": round(result["test_acc"], 4),
                "elapsed_s": elapsed(),
            }
        )
        run = cnnlab_train(project, name, recipe, env, settings.timeout)
        single[name] = run
        if run["epochs"] != epochs[name]:
            raise Failure(f"cnnlab-train ({name}) trained {run['epochs']} epochs, the plain loop {epochs[name]}")
        memory = gpu_memory_from_mlflow(uri, run["run_id"]) if settings.device == "cuda" else None
        emit(
            {
                "model": name,
                "side": "cnnlab-train",
                "images_per_s": round(result["images"] / run["train_seconds"], 1),
                "fit_s": run["train_seconds"],
                "images": result["images"],
                "wall_s": round(run["wall_s"], 1),
                "gpu_memory_mb": _rounded(memory),
                "gpu_memory_source": (
                    "MLflow system metrics (whole process, sampled each second)"
                    if memory is not None
                    else "not recorded (no GPU, or no nvidia-ml-py for MLflow's sampler): see the plain loop's"
                ),
                "val_acc": _rounded(run["metrics"].get("val/acc"), 4),
                "ratio_to_plain": round(result["fit_s"] / run["train_seconds"], 3),
                "run_id": run["run_id"],
                "elapsed_s": elapsed(),
            }
        )
        balance = attempt(f"the input measurement ({name})", input_balance, project, recipe, settings)
        free_device_memory()
        emit({"model": name, "side": "input", **balance, "elapsed_s": elapsed()})

    ddp = ddp_overrides(settings, overrides["resnet50"])
    run = cnnlab_train(project, "ddp", ddp, env, settings.timeout)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(DDP_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    stored = client.get_run(run["run_id"])
    _, meta = overhead.prepared(project, overrides["resnet50"])
    images = ddp_images(
        meta["split_sizes"]["train"], settings.devices, settings.resnet_batch, settings.max_batches, run["epochs"]
    )
    emit(
        {
            "model": "resnet50",
            "side": "ddp",
            "devices": settings.devices,
            "accelerator": "gpu" if settings.device == "cuda" else "cpu",
            "images_per_s": round(images / run["train_seconds"], 1),
            "fit_s": run["train_seconds"],
            "scaling_over_one_device": round(
                images / run["train_seconds"] / (plain["resnet50"]["images"] / single["resnet50"]["train_seconds"]), 2
            ),
            "mlflow_runs": len(runs),
            "run_id": run["run_id"],
            "run_status": stored.info.status,
            "run_devices_param": stored.data.params.get("trainer.devices"),
            "elapsed_s": elapsed(),
        }
    )
    one_run = len(runs) == 1 and runs[0].info.run_id == run["run_id"] and stored.info.status == "FINISHED"
    if not one_run or stored.data.params.get("trainer.devices") != str(settings.devices):
        raise Failure(
            f"DDP over {settings.devices} devices made {len(runs)} MLflow runs in experiment {DDP_EXPERIMENT} "
            f"(expected one: {run['run_id']}, FINISHED with trainer.devices={settings.devices}; it is "
            f"{stored.info.status} with trainer.devices={stored.data.params.get('trainer.devices')})"
        )

    reason = compile_support(settings.device)
    for name, recipe in overrides.items():
        if reason is not None:
            emit({"model": name, "side": "plain+compile", "supported": False, "reason": reason})
            continue
        if name not in settings.compile_models:
            emit(
                {
                    "model": name,
                    "side": "plain+compile",
                    "skipped": "tiny mode: inductor takes minutes to compile ResNet-50 on a few CPU cores",
                }
            )
            continue
        result = attempt(
            f"the compiled plain loop ({name})",
            overhead.plain_loop,
            project,
            recipe,
            compile=True,
            test=True,
            max_batches=settings.max_batches,
        )
        free_device_memory()
        emit(
            {
                "model": name,
                "side": "plain+compile",
                "supported": True,
                "images_per_s": round(result["images_per_s"], 1),
                "after_first_epoch_images_per_s": after_first_epoch(result),
                "fit_s": round(result["fit_s"], 2),
                "first_epoch_s": round(result["epoch_s"][0], 2),  # compilation included
                "gpu_max_allocated_mb": _rounded(result["max_memory_allocated_mb"]),
                "val_acc": round(result["val_acc"], 4),
                "test_acc": round(result["test_acc"], 4),
                "elapsed_s": elapsed(),
            }
        )


def attempt(what: str, function, *args, **kwargs):
    """`function(*args, **kwargs)`; a Failure naming `what`, with the traceback, when it raises."""
    try:
        return function(*args, **kwargs)
    except Exception as err:
        raise Failure(f"{what}: {type(err).__name__}: {err}\n{traceback.format_exc()}") from err


def after_first_epoch(result: dict) -> float | None:
    """Images/s of a plain loop's epochs after the first (warmed up, compiled), None for a single epoch."""
    seconds = result["epoch_s"][1:]
    return round(result["images"] * len(seconds) / len(result["epoch_s"]) / sum(seconds), 1) if seconds else None


def _rounded(value, digits: int = 1):
    return None if value is None else round(float(value), digits)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/gpu.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the CPU smoke mode (automatic without a GPU)")
    parser.add_argument(
        "--workdir", type=Path, help="where the project copy, outputs and MLflow store go (kept); default: a temp dir"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.tiny:
        settings = Settings.cpu_tiny()
        note("CPU tiny mode (--tiny): the same code paths on a few small batches, DDP over 2 CPU processes")
    elif gpus == 0:
        settings = Settings.cpu_tiny()
        note("no GPU visible: running the CPU tiny mode (the same code paths on a few small batches)")
    else:
        settings = Settings.gpu(gpus)
        note(f"GPU mode: {gpus} visible GPU(s), {settings.num_workers} loader workers for ResNet-50")
    workdir = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="cnnlab-gpu-"))
    project = workdir / "project"
    if project.exists():
        print(f"gpu.py: {project} exists; give --workdir an empty or new directory", file=sys.stderr)
        return 2
    try:
        copy_project(project)
        (project / "outputs").mkdir()
        env = cli_env(project)
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
            env.update(OMP_NUM_THREADS=str(settings.threads), MKL_NUM_THREADS=str(settings.threads))
        os.environ["CNNLAB_ROOT"] = str(project)  # this process prepares and runs the plain loops in the copy
        measure(project, settings, env, started)
    except Failure as err:
        print(f"gpu.py: FAILED: {err}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print("gpu.py: FAILED: an unexpected error (above)", file=sys.stderr)
        return 1
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = round(time.perf_counter() - started, 1)
    emit({"side": "done", "wall_s": wall})
    budget = 120 if settings.tiny else 480
    if wall > budget:
        note(f"over this mode's budget of {budget} s: see each line's elapsed_s for where the time went")
    return 0


if __name__ == "__main__":
    sys.exit(main())
