"""One training job from a composed config: data -> task -> trainer -> MLflow run -> outputs."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cnnlab import slurm
from cnnlab.checkpointing import AtomicCheckpointIO
from cnnlab.config import ConfigError, validate_config
from cnnlab.data.datamodule import datamodule_from_config, network_normalization
from cnnlab.data.prepare import data_location, declared_label_kinds, ensure_prepared
from cnnlab.data.prepared import label_kinds
from cnnlab.finetune import Finetuning, frozen_parameter_names
from cnnlab.models.registry import check_image_size
from cnnlab.models.weights import load_weights, read_weights
from cnnlab.paths import portable
from cnnlab.stopping import stop_on_sigterm
from cnnlab.tables import write_csv
from cnnlab.tasks import build_task, check_data_labels, task_class_for
from cnnlab.tracking.lightning_logger import UnsentMetrics
from cnnlab.tracking.run import read_run_record, write_run_record
from cnnlab.tracking.store import check_reachable, redact, resolve_tracking_uri
from cnnlab.training_run import finish_training_run, open_training_run

log = logging.getLogger(__name__)


@dataclass
class HydraJob:
    """Where Hydra put this job: its output dir and, inside a multirun, the sweep dir and job number."""

    output_dir: Path
    sweep_dir: Optional[Path]
    job_num: Optional[int]
    overrides: list[str]

    @classmethod
    def current(cls) -> "HydraJob":
        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        return cls(
            Path(hc.runtime.output_dir),
            Path(hc.sweep.dir) if multirun else None,
            hc.job.num if multirun else None,
            list(hc.overrides.task),
        )


def train(cfg: DictConfig) -> float:
    """Train, log and save; returns the best value of task.monitor (what sweepers optimise)."""
    validate_config(cfg)
    slurm.check_allocation(cfg.trainer)
    job = HydraJob.current()
    resuming = cfg.resume or cfg.ckpt_path == "last"
    if not resuming and not slurm.restarts() and pl.utilities.rank_zero_only.rank == 0:
        _check_output_dir_free(job.output_dir)  # DDP's other ranks start after rank 0 wrote run.json
    task_class = task_class_for(cfg, declared_label_kinds(cfg.data))
    if "box" in task_class.labels and OmegaConf.select(cfg, "data.shards.random_resized_crop"):
        raise ConfigError(
            f"data.shards.random_resized_crop with task={cfg.task.name}: a random crop can cut the one box out of "
            "the image; set data.shards.random_resized_crop=null (augment= shifts and scales keep the box)"
        )
    check_image_size(cfg.model.name, cfg.data.image_size, bool(OmegaConf.select(cfg, "model.small_input")))
    uri = resolve_tracking_uri(cfg.logger.tracking_uri) if cfg.logger.enabled else None
    if uri:
        check_reachable(uri)  # in seconds, before any work: not minutes of retries after it
    weights = _read_weights(cfg) if not resuming else None  # a bad source fails before prepare and before any run
    pl.seed_everything(cfg.seed, workers=True)
    meta = ensure_prepared(cfg.data)
    check_data_labels(task_class, label_kinds(meta), meta["source"], cfg.data.name)
    normalization = weights.normalization(meta["channels"]) if weights and cfg.data.normalize == "auto" else None
    if normalization:  # the inputs the weights were trained on: their mean and std, not this data's
        meta = {**meta, "mean": normalization[0], "std": normalization[1]}
    task = build_task(cfg, meta)
    transfer_params, transfer_tags, finetuning = _transfer(cfg, task, weights)
    datamodule = datamodule_from_config(cfg, task_class.labels, normalization=network_normalization(task))
    callbacks = [instantiate(spec) for spec in cfg.callbacks.values() if spec is not None] + finetuning
    # best.ckpt's callback monitors a metric; last.ckpt's (monitor null) keeps the latest epoch
    checkpoint = next((c for c in callbacks if isinstance(c, pl.callbacks.ModelCheckpoint) and c.monitor), None)
    ckpt_path = _resume_checkpoint(job.output_dir) if resuming else cfg.ckpt_path
    if slurm.restarts() and read_run_record(job.output_dir).get("run_id"):
        # requeued by SLURM (pre-emption, Lightning's requeue on SIGUSR1): the same run, from the last
        # complete epoch, so the result equals an uninterrupted run's. Lightning's mid-epoch hpc_ckpt
        # is not exact with these loaders; it is used only when no epoch completed (ckpt_path None).
        resuming = True
        ckpt_path = _existing(_last_checkpoint(job.output_dir))
        log.info(
            "SLURM job %s restart %d: resuming from %s",
            slurm.job_id(),
            slurm.restarts(),
            ckpt_path or "Lightning's hpc checkpoint",
        )

    run = None
    rank_zero = pl.utilities.rank_zero_only.rank == 0
    if uri and rank_zero:  # other DDP ranks must not open a second run
        run = open_training_run(
            cfg,
            uri,
            meta,
            job.output_dir,
            job.sweep_dir,
            job.job_num,
            job.overrides,
            resuming,
            params=transfer_params,
            tags=transfer_tags,
        )
    else:  # logger=none, or a DDP rank other than 0: nothing to monitor the LR into
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]

    with run.failed_on_error(job.output_dir) if run else contextlib.nullcontext(), stop_on_sigterm():
        with (
            run.system_metrics(cfg.logger.system_metrics_interval, resuming)
            if run and cfg.logger.system_metrics
            else contextlib.nullcontext()
        ):
            logger = run.lightning_logger(cfg.logger.experiment_name) if run else None
            if logger is not None:  # each checkpoint has the points not yet sent beside it (a killed run loses none)
                callbacks.append(UnsentMetrics(logger, job.output_dir))
            trainer = pl.Trainer(
                **_trainer_arguments(cfg, job),
                callbacks=callbacks,
                logger=[logger] if logger else False,
                default_root_dir=str(job.output_dir),
                plugins=[AtomicCheckpointIO()],
            )
            # deterministic=true also NaN-fills every fresh tensor (torch's guard against kernels that read
            # uninitialised memory): a quarter of a ResNet-18 step on CPU. cnnlab's kernels write what they
            # read, so the results are the same bits without the fill (the committed pipeline's history.csv)
            torch.utils.deterministic.fill_uninitialized_memory = False
            started = time.time()  # train_seconds: fit alone (what benchmarks/overhead.py compares)
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
            fit_seconds = round(time.time() - started, 2)  # before the system-metrics sampler is joined
        summary = {
            "run_id": run.run_id if run else None,
            "tracking_uri": run.uri if run else None,
            "experiment_name": cfg.logger.experiment_name if run else None,
            "monitor": cfg.task.monitor,
            "mode": cfg.task.mode,
            "best_score": _best_score(trainer, cfg.task.monitor, cfg.task.mode),
            "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
            "last_checkpoint": _existing(_last_checkpoint(job.output_dir)),
            "prepared_dir": data_location(cfg.data),
            "data_hash": meta["content_hash"],
            "epochs": trainer.current_epoch,
            "train_seconds": fit_seconds,
        }
        if rank_zero:
            _write_outputs(cfg, job.output_dir, summary, trainer)
            if run:
                finish_training_run(run, cfg, job.output_dir, summary, datamodule, task)
    return summary["best_score"]


def _read_weights(cfg: DictConfig):
    """model.weights read (not yet loaded), or None; ConfigError naming the source when it cannot be."""
    source = OmegaConf.select(cfg, "model.weights")
    if not source:
        return None
    needs_store = str(source).startswith(("runs:/", "models:/"))
    uri = resolve_tracking_uri(cfg.logger.tracking_uri) if needs_store else None
    return read_weights(str(source), uri, model_name=cfg.model.name)


def _transfer(cfg: DictConfig, task, weights) -> tuple[dict, dict, list]:
    """Load `weights` into the task's backbone and set up finetune.*: (run params, run tags, callbacks).

    Runs before the MLflow run opens, so weights of another architecture or an unknown stage name
    leave no run behind.
    """
    params, tags = {}, {}
    if weights is not None:
        report = load_weights(task.backbone, weights, task.example_input_array, cfg.model.name)
        params.update(report.params(weights))
        tags.update(report.tags(weights))
        log.info(
            "model.weights=%s: %d tensors loaded, %d newly initialised%s",
            weights.source,
            report.loaded,
            len(report.new),
            f" ({report.channel_rule})" if report.channel_rule else "",
        )
    freeze = cfg.finetune.freeze
    frozen = frozen_parameter_names(task.backbone, freeze, task.example_input_array)  # ConfigError: lists the stages
    frozen_count = sum(p.numel() for name, p in task.backbone.named_parameters() if name in frozen)
    total = sum(p.numel() for p in task.parameters())
    params.update(
        {"finetune.trainable_parameters": str(total - frozen_count), "finetune.frozen_parameters": str(frozen_count)}
    )
    callbacks = [Finetuning(freeze, cfg.finetune.unfreeze_at_epoch, names=frozen)] if freeze != "none" else []
    return params, tags, callbacks


def _trainer_arguments(cfg: DictConfig, job: HydraJob) -> dict:
    arguments = OmegaConf.to_container(cfg.trainer, resolve=True)

    if job.sweep_dir is not None and arguments.get("strategy") == "ddp" and not slurm.manages_tasks():
        # Lightning's ddp relaunches the script with its argv: inside a multirun that would start
        # the whole sweep again in every rank. Spawned ranks run this job only. Under SLURM, srun
        # started every rank already (hydra/launcher=slurm with tasks_per_node > 1).
        log.info("multirun job: trainer.strategy ddp -> ddp_spawn")
        arguments["strategy"] = "ddp_spawn"
    return arguments


def _check_output_dir_free(output_dir: Path) -> None:
    """ConfigError when `output_dir` holds another run: its run.json or checkpoints would be mixed with
    this one's (best-v1.ckpt beside best.ckpt, evaluate scoring the old one). DVC removes a stage's outs
    (checkpoints/, run.json) before re-running it, so pipelines retrain into the same directory."""
    record = read_run_record(output_dir)
    checkpoints = sorted((output_dir / "checkpoints").glob("*.ckpt"))
    if not record and not checkpoints:
        return
    what = f"run {record['run_id']}" if record.get("run_id") else f"the checkpoints of another run ({checkpoints[0]})"
    if record.get("run_id") and record.get("status"):
        what += f", {record['status']}"
    raise ConfigError(
        f"hydra.run.dir={output_dir} already holds {what}: continue it with cnnlab-train resume=true "
        f"hydra.run.dir={output_dir}, or pick another hydra.run.dir (or remove that directory)"
    )


def _resume_checkpoint(output_dir: Path) -> str:
    last = _last_checkpoint(output_dir)
    if not last.is_file():
        raise FileNotFoundError(
            f"resume=true: no {last}. Point hydra.run.dir at the output directory of the run to "
            f"continue (the one holding checkpoints/last.ckpt and run.json)"
        )
    return str(last)


def _best_score(trainer, monitor: str, mode: str) -> float:
    """The best epoch value of task.monitor (what a sweep optimises), whichever checkpoint was kept."""
    history = [row[monitor] for row in getattr(trainer.lightning_module, "epoch_history", []) if monitor in row]
    if history:
        return float(max(history) if mode == "max" else min(history))
    score = trainer.callback_metrics.get(monitor)
    return float(score) if score is not None else math.nan


def _last_checkpoint(output_dir: Path) -> Path:
    """Where conf/callbacks' last_checkpoint writes every epoch, and resume reads."""
    return output_dir / "checkpoints" / "last.ckpt"


def _existing(path: Path) -> Optional[str]:
    return str(path) if path.is_file() else None


def _write_outputs(cfg: DictConfig, output_dir: Path, summary: dict, trainer) -> None:
    """run.json (for evaluate), metrics.json and history.csv (for DVC), config.yaml (resolved)."""
    write_run_record(output_dir, {**summary, "status": "finished"})
    # paths inside the project relative to its root (TrainingDirectory reads them back): the same file in every clone
    resolved = OmegaConf.create(portable(OmegaConf.to_container(cfg, resolve=True)))
    (output_dir / "config.yaml").write_text(redact(OmegaConf.to_yaml(resolved)))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
    metrics.update(
        {
            f"best/{summary['monitor']}": summary["best_score"],
            "epochs": summary["epochs"],
            "train_seconds": summary["train_seconds"],
        }
    )
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    history = getattr(trainer.lightning_module, "epoch_history", None)
    if history:
        columns = sorted({key for row in history for key in row})
        cell = lambda value: round(value, 6) if isinstance(value, float) else value  # noqa: E731  (the row keeps full precision)
        write_csv(output_dir / "history.csv", columns, ([cell(row.get(c, "")) for c in columns] for row in history))
