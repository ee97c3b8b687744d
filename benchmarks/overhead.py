"""What cnnlab costs over a plain PyTorch loop: training overhead, MLflow per step, input supply.

Three measurements, each next to its baseline in the same run (issue 14):

1. **Overhead.** The fit throughput (training images per second of `trainer.fit`, validation each
   epoch included) of `cnnlab-train logger=none` and `logger=mlflow` (the default), over a plain
   PyTorch loop written below: the same composed config, prepared arrays, albumentations transforms,
   batched normalisation, network and initial weights, optimizer and schedule, a validation pass
   each epoch; once bare (val accuracy only) and once computing the same epoch metrics cnnlab-train
   records (`plain+metrics`: train loss and accuracy, val loss, the task's torchmetrics collection);
   and `lightning-floor`, the plain loop's work in a minimal LightningModule fitted by a bare
   `pl.Trainer` (no callbacks, logger, checkpoints or sanity check): the fastest any trainer built on
   Lightning's loop can be. Each side's clock covers what `trainer.fit` covers, from building the
   loaders to the last validation pass. Rounds are interleaved (plain, plain+metrics, floor, none,
   mlflow, plain, ...) and medians reported, each side in a fresh process with torch's default threads.
2. **MLflow per step:** (fit time with logger=mlflow - fit time with logger=none) / training steps,
   and every metric point counted back from the store against what the run's history promises.
3. **Input:** images/s the training DataLoader supplies (no model) against images/s the model's
   training step consumes on a batch held in memory (forward, backward, optimizer step), for
   `num_workers` 0 (the loader in the training process) and 2 (persistent workers), per augment;
   and the cost per image of each stage of `augment=strong`, next to albumentations' per-sample
   namesakes of its batch transforms.

Recipes: `default` is params.yaml's, experiment=digits_lenet5 (LeNet-5 on digits at 32 px, batch 64, AdamW + one-cycle,
label smoothing, augment=affine); `resnet` is experiment=shapes_classification (ResNet-18, width 0.25).

    .venv/bin/python benchmarks/overhead.py [--recipes default,resnet] [--rounds 3] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import BIN, cli_env, copy_project  # noqa: E402


def recipe_overrides(name: str, epochs: int | None) -> list[str]:
    """The Hydra overrides of a recipe (default: params.yaml's recipe and overrides, as dvc.yaml passes them)."""
    if name == "default":
        p = yaml.safe_load((ROOT / "params.yaml").read_text())
        overrides = [f"experiment={p['experiment']}", *shlex.split(p["overrides"])]
        overrides += [f"trainer.max_epochs={epochs}"] if epochs else []
    elif name == "resnet":
        overrides = ["experiment=shapes_classification"] + ([f"trainer.max_epochs={epochs}"] if epochs else [])
    else:
        raise SystemExit(f"unknown recipe {name!r}; expected default or resnet")
    # no early stop: both sides train the same number of epochs
    return overrides + ["callbacks.early_stopping=null", "trainer.enable_progress_bar=false"]


def compose(project: Path, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from cnnlab.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(project / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def prepared(project: Path, overrides: list[str]):
    """(composed config, prepared data's meta) of a recipe in `project`, seeded as cnnlab-train seeds it."""
    import pytorch_lightning as pl

    from cnnlab.data.prepare import ensure_prepared

    os.chdir(project)
    cfg = compose(project, overrides)
    pl.seed_everything(cfg.seed, workers=True)
    return cfg, ensure_prepared(cfg.data)


def optimizer_and_schedule(cfg, network, total_steps: int):
    """The config's optimizer over `network`, and its per-step schedule (None without one)."""
    import inspect

    from hydra.utils import get_class, instantiate

    optimizer = instantiate(cfg.optimizer, params=network.parameters())
    schedule = dict(cfg.scheduler.get("scheduler") or {})
    if not schedule:
        return optimizer, None
    extra = (
        {"total_steps": total_steps}
        if "total_steps" in inspect.signature(get_class(schedule["_target_"])).parameters
        else {}
    )
    return optimizer, instantiate(schedule, optimizer=optimizer, **extra)


def plain_device(cfg, device: str | None = None):
    """The torch device the plain loop runs on: `device` if given, else the config's trainer.accelerator
    (gpu/cuda: cuda; auto: cuda when one is visible; anything else: cpu)."""
    import torch

    if device is None:
        accelerator = str(cfg.trainer.get("accelerator", "cpu")).lower()
        auto_cuda = accelerator == "auto" and torch.cuda.is_available()
        device = "cuda" if accelerator in ("gpu", "cuda") or auto_cuda else "cpu"
    return torch.device(device)


def configure_backends(cfg, device) -> None:
    """torch's determinism and cuDNN autotuning as cnnlab-train's Trainer sets them for `device`."""
    import torch

    deterministic = bool(cfg.trainer.get("deterministic", False))
    if device.type == "cuda":
        if deterministic:  # cuBLAS refuses deterministic mode without a workspace setting (Lightning sets the same)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        benchmark = cfg.trainer.get("benchmark")  # None: torch's setting, off under deterministic (Lightning's rule)
        if benchmark is not None or deterministic:
            torch.backends.cudnn.benchmark = bool(benchmark)
    torch.use_deterministic_algorithms(deterministic)
    # as cnnlab-train does (training.py): deterministic mode's NaN-fill of every fresh tensor is off
    torch.utils.deterministic.fill_uninitialized_memory = False


def autocast_dtype(cfg):
    """The autocast dtype of the config's trainer.precision (Lightning's names), None for full precision."""
    import torch

    precision = str(cfg.trainer.get("precision", "32-true"))
    dtypes = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32-true": None, "32": None}
    if precision not in dtypes:
        raise ValueError(f"the plain loop runs trainer.precision {sorted(dtypes)}, not {precision!r}")
    return dtypes[precision]


def autocast_context(device, dtype):
    """torch.autocast on the device's type in `dtype`; no autocast for None."""
    import contextlib

    import torch

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def device_batch(batch: dict, device, channels_last: bool) -> dict:
    """A batch's tensors on `device`, the images NHWC with `channels_last` (what CNNTask.network_input feeds)."""
    import torch

    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    if channels_last:
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    return batch


def plain_loop(
    project: Path,
    overrides: list[str],
    metrics: bool = False,
    *,
    device: str | None = None,
    compile: bool = False,
    test: bool = False,
    max_batches: int | None = None,
) -> dict:
    """The baseline: the same config trained by a hand-written loop (no Lightning, no logging).

    With `metrics`, the loop also computes what cnnlab-train records of each epoch (train loss and
    accuracy means, val loss, and the task's torchmetrics collection: accuracy, top-5, macro F1),
    the numbers a user of either gets; without, only the val accuracy.

    As cnnlab-train, it runs on the config's trainer.accelerator (or `device`: "cpu", "cuda"), under
    autocast for trainer.precision bf16-mixed (16-mixed: float16 with a gradient scaler), and feeds NHWC
    images when task.module.channels_last is true. `compile`: the training steps run `torch.compile`'s
    network; validation and test run the eager one (the same parameters), sparing a second compilation
    for eval mode. `test`: after training, the accuracy on the prepared test split (`test_acc`), the
    logits averaged with the mirror image's when task.module.tta_flip is true (as ClassificationNetwork
    evaluates). `images_per_s`: training images per second of the fit window (validation included);
    `epoch_s`: each epoch's seconds (its validation included; the first also builds the loaders);
    `max_memory_allocated_mb`: the peak of torch's CUDA allocator over the fit (None on CPU).
    `max_batches`: at most this many batches an epoch of training, of validation and of the test (as
    Lightning's trainer.limit_*_batches=<int>), for smoke runs."""
    import itertools

    import torch
    import torch.nn.functional as F

    from cnnlab.data.datamodule import datamodule_from_config
    from cnnlab.tasks import build_task

    cfg, meta = prepared(project, overrides)
    target = plain_device(cfg, device)
    configure_backends(cfg, target)
    datamodule = datamodule_from_config(cfg, ("label",))
    task = build_task(cfg, meta)
    network = task.backbone.to(target)  # the same network and initial weights as cnnlab-train's
    trained = torch.compile(network) if compile else network
    val_metrics = task.val_metrics.clone().to(target) if metrics else None
    dtype = autocast_dtype(cfg)
    scaler = torch.amp.GradScaler(target.type) if dtype is torch.float16 else None

    channels_last = bool(cfg.task.module.get("channels_last", False))
    tta_flip = bool(cfg.task.module.get("tta_flip", False))  # validation and test, as ClassificationNetwork in eval

    def autocast():
        return autocast_context(target, dtype)

    def on_device(batch: dict) -> dict:
        return device_batch(batch, target, channels_last)

    def limited(loader):
        return itertools.islice(loader, max_batches) if max_batches is not None else loader

    def synchronize() -> None:
        if target.type == "cuda":
            torch.cuda.synchronize(target)

    if target.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target)
    # the window trainer.fit has: from building the loaders (which imports albumentations), optimizer
    # and schedule to the last validation pass
    started, cpu = time.perf_counter(), time.process_time()
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    epochs = int(cfg.trainer.max_epochs)
    epoch_steps = min(len(train_loader), max_batches) if max_batches is not None else len(train_loader)
    optimizer, scheduler = optimizer_and_schedule(cfg, network, epochs * epoch_steps)
    smoothing = float(cfg.task.module.get("label_smoothing", 0.0))
    steps, images, accuracy = 0, 0, 0.0
    history: list[dict] = []
    epoch_ends: list[float] = []
    for epoch in range(epochs):
        train_loader.sampler.set_epoch(epoch)
        network.train()
        sums, epoch_images = torch.zeros(2, device=target), 0
        for batch in limited(train_loader):
            batch = on_device(batch)
            with autocast():
                logits = trained(batch["image"])
                loss = F.cross_entropy(logits, batch["label"], label_smoothing=smoothing)
            optimizer.zero_grad()
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if metrics:
                sums += torch.stack([loss.detach().float(), (logits.argmax(1) == batch["label"]).float().mean()]) * len(
                    batch["label"]
                )
            steps, images, epoch_images = steps + 1, images + len(batch["label"]), epoch_images + len(batch["label"])
        network.eval()
        correct = total = 0
        val_loss = 0.0
        with torch.no_grad():
            for batch in limited(val_loader):
                batch = on_device(batch)
                with autocast():
                    logits = eval_logits(network, batch["image"], tta_flip)
                correct += int((logits.argmax(1) == batch["label"]).sum())
                total += len(batch["label"])
                if metrics:
                    val_loss += float(F.cross_entropy(logits.float(), batch["label"], label_smoothing=smoothing)) * len(
                        batch["label"]
                    )
                    val_metrics.update(logits.float(), batch["label"])
        accuracy = correct / total
        if metrics:  # the epoch's row, as cnnlab-train's history.csv has it
            history.append(
                {
                    "train/loss": float(sums[0]) / epoch_images,
                    "train/acc": float(sums[1]) / epoch_images,
                    "val/loss": val_loss / total,
                    **{k: float(v) for k, v in val_metrics.compute().items()},
                }
            )
            val_metrics.reset()
        synchronize()
        epoch_ends.append(time.perf_counter() - started)
    fit_s = time.perf_counter() - started
    result = {
        "fit_s": fit_s,
        "fit_cpu_s": time.process_time() - cpu,
        "steps": steps,
        "images": images,
        "val_acc": accuracy,
        "last_epoch": history[-1] if history else None,
        "images_per_s": images / fit_s,
        "epoch_s": [end - start for start, end in zip([0.0, *epoch_ends], epoch_ends)],
        "device": str(target),
        "max_memory_allocated_mb": (torch.cuda.max_memory_allocated(target) / 2**20 if target.type == "cuda" else None),
    }
    if test:
        result["test_acc"] = evaluate_accuracy(
            network,
            limited(datamodule.test_dataloader()),
            on_device,
            autocast,
            tta_flip,
        )
    return result


def eval_logits(network, images, tta_flip: bool):
    """The network's logits in eval mode; `tta_flip`: averaged with the mirror image's (ClassificationNetwork)."""
    logits = network(images)
    return (logits + network(images.flip(-1))) / 2 if tta_flip else logits


def evaluate_accuracy(network, loader, on_device, autocast, tta_flip: bool) -> float:
    """Top-1 accuracy of `network` over `loader`; `tta_flip`: logits averaged with the mirror image's."""
    import torch

    network.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            batch = on_device(batch)
            with autocast():
                logits = eval_logits(network, batch["image"], tta_flip).float()
            correct += int((logits.argmax(1) == batch["label"]).sum())
            total += len(batch["label"])
    return correct / max(total, 1)


def lightning_floor(project: Path, overrides: list[str]) -> dict:
    """What Lightning's Trainer costs by itself: the plain loop's work (same network, initial weights,
    loaders, optimizer, schedule, val accuracy) in a minimal LightningModule, fitted by a Trainer with
    no callbacks, logger, checkpoint, sanity check, summary or progress bar. No trainer built on
    `pl.Trainer` can be faster than this."""
    import pytorch_lightning as pl
    import torch.nn.functional as F

    from cnnlab.data.datamodule import datamodule_from_config
    from cnnlab.tasks import build_task

    cfg, meta = prepared(project, overrides)
    datamodule = datamodule_from_config(cfg, ("label",))
    network = build_task(cfg, meta).backbone
    smoothing = float(cfg.task.module.get("label_smoothing", 0.0))
    epochs = int(cfg.trainer.max_epochs)

    class Minimal(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.network, self.correct, self.total = network, 0, 0

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self.network(batch["image"]), batch["label"], label_smoothing=smoothing)

        def on_validation_epoch_start(self):
            self.correct, self.total = 0, 0  # the last epoch's accuracy, as the plain loop reports

        def validation_step(self, batch, batch_idx):
            self.correct += int((self.network(batch["image"]).argmax(1) == batch["label"]).sum())
            self.total += len(batch["label"])

        def configure_optimizers(self):
            optimizer, scheduler = optimizer_and_schedule(
                cfg, self.network, int(self.trainer.estimated_stepping_batches)
            )
            return (
                {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
                if scheduler
                else optimizer
            )

    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        deterministic=bool(cfg.trainer.get("deterministic", False)),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    module = Minimal()
    started, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, datamodule=datamodule)
    return {
        "fit_s": time.perf_counter() - started,
        "fit_cpu_s": time.process_time() - cpu,
        "val_acc": module.correct / max(module.total, 1),
    }


def cnnlab_train(project: Path, overrides: list[str], logger: str, env: dict) -> dict:
    """`cnnlab-train` in its own process; fit time from its run.json, steps from its history."""
    out = Path(tempfile.mkdtemp(dir=project / "outputs"))
    extra = ["logger=none"] if logger == "none" else []
    subprocess.run(
        [str(BIN / "cnnlab-train"), *overrides, *extra, f"hydra.run.dir={out}"],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    record = json.loads((out / "run.json").read_text())
    return {
        "fit_s": record["train_seconds"],
        "run_id": record.get("run_id"),
        "output_dir": str(out),
        "epochs": record["epochs"],
    }


def count_points(project: Path, run_id: str, env: dict) -> dict:
    """Metric points of a run in the store, by key (MLflow's full history, not the latest value)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    keys = client.get_run(run_id).data.metrics.keys()
    return {key: len(client.get_metric_history(run_id, key)) for key in keys}


def overhead(project: Path, recipe: str, rounds: int, epochs: int | None, env: dict) -> dict:
    overrides = recipe_overrides(recipe, epochs)
    sides: dict[str, list[dict]] = {"plain": [], "plain+metrics": [], "lightning-floor": [], "none": [], "mlflow": []}
    for _ in range(rounds):
        for side, flag in (
            ("plain", "--plain-loop"),
            ("plain+metrics", "--plain-loop-metrics"),
            ("lightning-floor", "--lightning-floor"),
        ):
            result = subprocess.run(
                [sys.executable, __file__, flag, str(project), "--", *overrides],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            sides[side].append(json.loads(result.stdout.strip().splitlines()[-1]))
        sides["none"].append(cnnlab_train(project, overrides, "none", env))
        sides["mlflow"].append(cnnlab_train(project, overrides, "mlflow", env))
    images = sides["plain"][0]["images"]
    steps = sides["plain"][0]["steps"]
    fit = {side: statistics.median(r["fit_s"] for r in runs) for side, runs in sides.items()}
    report = {
        "recipe": recipe,
        "rounds": rounds,
        "steps": steps,
        "images": images,
        "images_per_s": {side: round(images / seconds) for side, seconds in fit.items()},
        "ratio_to_plain": {side: round(fit["plain"] / seconds, 3) for side, seconds in fit.items()},
        "ratio_to_plain+metrics": {side: round(fit["plain+metrics"] / seconds, 3) for side, seconds in fit.items()},
        "fit_s_all": {side: [round(r["fit_s"], 2) for r in runs] for side, runs in sides.items()},
        "mlflow_ms_per_step": round((fit["mlflow"] - fit["none"]) / steps * 1000, 3),
    }
    # no point lost: every logged step of every run is in the store
    last = sides["mlflow"][-1]
    points = count_points(project, last["run_id"], env)
    history = (Path(last["output_dir"]) / "history.csv").read_text().splitlines()
    log_every = 10  # conf: trainer.log_every_n_steps
    report["mlflow_points"] = {
        "train/loss_step": points.get("train/loss_step"),
        "expected_train/loss_step": steps // log_every,
        "val/acc": points.get("val/acc"),
        "expected_val/acc (epochs)": len(history) - 1,
    }
    return report


def drain(loader, images: int) -> tuple[int, float, float, dict]:
    """Draw batches from a training `loader`, across epochs, until `images` images: (images drawn, wall s, CPU s,
    the first batch). The first batch is not timed: workers started, first batch out: start-up is not supply."""
    iterator, count, epoch = iter(loader), 0, 0
    first = next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    while count < images:
        try:
            count += len(next(iterator)["label"])
        except StopIteration:
            epoch += 1
            loader.sampler.set_epoch(epoch)
            iterator = iter(loader)
    return count, time.perf_counter() - wall, time.process_time() - cpu, first


def input_supply(project: Path, recipe: str, augment: str | None, workers: int, batches: int = 200) -> dict:
    """Images/s the train loader supplies vs. images/s the training step consumes."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from cnnlab.data.datamodule import datamodule_from_config
    from cnnlab.tasks import build_task

    overrides = (
        recipe_overrides(recipe, None) + ([f"augment={augment}"] if augment else []) + [f"data.num_workers={workers}"]
    )
    cfg, meta = prepared(project, overrides)
    loader = datamodule_from_config(cfg, ("label",)).train_dataloader()
    count, wall, cpu, _ = drain(loader, batches * cfg.data.batch_size)
    supply = count / wall
    batch = next(iter(datamodule_from_config(cfg, ("label",)).train_dataloader()))
    network = build_task(cfg, meta).backbone.train()
    optimizer = instantiate(cfg.optimizer, params=network.parameters())
    for _ in range(5):  # warm-up
        F.cross_entropy(network(batch["image"]), batch["label"]).backward()

    def consume(seconds: float = 3.0) -> tuple[float, float]:
        """(images per second of wall time, per CPU second) of the training step on one batch."""
        wall, cpu, steps = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - wall < seconds:
            loss = F.cross_entropy(network(batch["image"]), batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
        images = steps * len(batch["label"])
        return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)

    consume_wall, _ = consume()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core: the per-core comparison with a loader in the training process
    _, consume_core = consume()
    torch.set_num_threads(threads)
    report = {
        "recipe": recipe,
        "augment": cfg.augment.name,
        "num_workers": workers,
        "supply_images_per_s": round(supply),
        "consume_images_per_s": round(consume_wall),
        "supply_over_consume": round(supply / consume_wall, 2),
    }
    if workers == 0:  # the loader runs in this process, on one thread: its CPU time is its cost per core
        report.update(
            supply_per_core=round(count / cpu),
            consume_per_core=round(consume_core),
            per_core_ratio=round(count / cpu / consume_core, 2),
        )
    return report


def augment_cost(augment: str, images: int = 64, repeats: int = 50) -> dict:
    """Microseconds an image of each stage of conf/augment/<augment>.yaml on 32 px digits-like images,
    one thread, next to the same list with albumentations' per-sample namesakes of the batch transforms."""
    import albumentations as A
    import cv2
    import numpy as np
    from omegaconf import OmegaConf

    from cnnlab.data.augment import build_augmentation

    cv2.setNumThreads(1)
    batch = np.random.default_rng(0).integers(0, 256, (images, 32, 32, 1), dtype=np.uint8)
    listed = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "augment" / f"{augment}.yaml").train)
    namesakes = [
        {**t, "_target_": t["_target_"].replace("cnnlab.data.augment.Batch", "albumentations.")} for t in listed
    ]
    report = {"augment": augment}
    for side, transforms in (("batch", listed), ("albumentations per sample", namesakes)):
        augmentation = build_augmentation(transforms)
        costs = {}
        for stage in augmentation.stages:
            name = (
                "+".join(type(t).__name__ for t in stage.transforms)
                if isinstance(stage, A.Compose)
                else type(stage).__name__
            )
            cpu = time.process_time()
            for _ in range(repeats):
                augmentation.apply_stage(stage, batch)
            costs[name] = round((time.process_time() - cpu) / repeats / images * 1e6, 1)
        report[side] = {"us_per_image": costs, "total": round(sum(costs.values()), 1)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default="default,resnet")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="override max_epochs (default: the recipe's)")
    parser.add_argument(
        "--resnet-epochs", type=int, default=3, help="epochs of the resnet recipe (its 30 take minutes a side)"
    )
    parser.add_argument("--skip", default="", help="comma list of: overhead,input")
    parser.add_argument("--plain-loop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plain-loop-metrics", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lightning-floor", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--input-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_loop or args.plain_loop_metrics:
        print(
            json.dumps(
                plain_loop(
                    args.plain_loop or args.plain_loop_metrics, args.overrides, metrics=bool(args.plain_loop_metrics)
                )
            )
        )
        return
    if args.lightning_floor:
        print(json.dumps(lightning_floor(args.lightning_floor, args.overrides)))
        return
    if args.input_only:
        recipe, augment, workers = args.overrides
        print(json.dumps(input_supply(args.input_only, recipe, augment if augment != "-" else None, int(workers))))
        return
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "project"
        copy_project(project)
        (project / "outputs").mkdir()
        env = cli_env(project)
        print(f"# {os.cpu_count()} CPUs, torch threads default; {args.rounds} interleaved rounds, medians", flush=True)
        for recipe in args.recipes.split(","):
            epochs = args.epochs if recipe == "default" else (args.epochs or args.resnet_epochs)
            if "overhead" not in skip:
                print(json.dumps(overhead(project, recipe, args.rounds, epochs, env)), flush=True)
            if "input" not in skip and recipe == "default":
                print(json.dumps(augment_cost("strong")), flush=True)
            if "input" not in skip:
                augments = ["-", "strong"] if recipe == "default" else ["-"]
                for augment in augments:
                    for workers in (0, 2):
                        result = subprocess.run(
                            [
                                sys.executable,
                                __file__,
                                "--input-only",
                                str(project),
                                "--",
                                recipe,
                                augment,
                                str(workers),
                            ],
                            env=env,
                            check=True,
                            capture_output=True,
                            text=True,
                        )
                        print(result.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
