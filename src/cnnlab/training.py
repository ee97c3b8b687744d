"""One training job from a composed config: data -> task -> trainer -> MLflow run -> outputs."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from cnnlab.config import ConfigError, to_plain_dict, validate_config

log = logging.getLogger(__name__)


def build_task(cfg: DictConfig, meta: dict):
    """The task's LightningModule for this config and prepared dataset (raises ConfigError)."""
    from hydra.utils import instantiate

    classes = meta["mask_classes"] if cfg.task.name == "segmentation" and meta.get("mask_classes") else meta["classes"]
    try:
        return instantiate(
            cfg.task.module,
            model=OmegaConf.to_container(cfg.model, resolve=True),
            num_classes=len(classes),
            in_channels=meta["channels"],
            image_size=meta["image_size"],
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            class_names=list(classes),
            mean=meta["mean"],
            std=meta["std"],
            _convert_="all",
            _recursive_=False,  # model/optimizer/scheduler stay configs: the task builds them itself
        )
    except ConfigError:
        raise
    except Exception as err:  # Hydra wraps constructor errors in InstantiationException
        cause = err.__cause__ if isinstance(err.__cause__, ConfigError) else None
        if cause:
            raise cause from err
        raise ConfigError(f"cannot build task={cfg.task.name} with model={cfg.model.name}: {err}") from err


def build_datamodule(cfg: DictConfig, seed: int):
    from cnnlab.data.datamodule import CNNDataModule

    return CNNDataModule(
        prepared_dir=cfg.data.prepared_dir,
        train_transforms=OmegaConf.to_container(cfg.augment.train, resolve=True),
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        boxes=cfg.task.name == "localization",
        masks=cfg.task.name == "segmentation",
        seed=seed,
    )


def build_callbacks(cfg: DictConfig) -> list:
    from hydra.utils import instantiate

    return [instantiate(spec) for spec in cfg.callbacks.values() if spec is not None]


def run_name(cfg: DictConfig, job_num: Optional[int]) -> str:
    if cfg.logger.get("run_name"):
        return cfg.logger.run_name
    name = f"{cfg.model.name}-{cfg.data.name}"
    return name if job_num is None else f"{name}-{job_num}"


def _hydra_context() -> tuple[Path, Optional[Path], Optional[int], list[str]]:
    """(output dir, sweep dir or None, job number in a sweep or None, this job's overrides)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return (
        Path(hc.runtime.output_dir),
        Path(hc.sweep.dir) if multirun else None,
        hc.job.num if multirun else None,
        list(hc.overrides.task),
    )


def train(cfg: DictConfig) -> float:
    """Train, log and save; returns the best value of task.monitor (what sweepers optimise)."""
    import pytorch_lightning as pl

    from cnnlab.data.build import ensure_prepared
    from cnnlab.tracking import mlflow_runs

    validate_config(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    output_dir, sweep_dir, job_num, overrides = _hydra_context()
    meta = ensure_prepared(cfg.data)
    datamodule = build_datamodule(cfg, cfg.seed)
    task = build_task(cfg, meta)
    callbacks = build_callbacks(cfg)
    checkpoint = next((c for c in callbacks if isinstance(c, pl.callbacks.ModelCheckpoint)), None)

    resuming = cfg.resume or cfg.ckpt_path == "last"
    ckpt_path = _resume_checkpoint(output_dir) if resuming else cfg.ckpt_path
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    if sweep_dir is not None and trainer_args.get("strategy") == "ddp":
        # Lightning's ddp relaunches the script with its argv: inside a multirun that would start
        # the whole sweep again in every rank. Spawned ranks run this job only.
        log.info("multirun job: trainer.strategy ddp -> ddp_spawn")
        trainer_args["strategy"] = "ddp_spawn"

    uri: Optional[str] = None
    run_id: Optional[str] = None
    loggers: list = []
    rank_zero = pl.utilities.rank_zero_only.rank == 0
    if cfg.logger.enabled and rank_zero:  # other DDP ranks must not open a second run
        from pytorch_lightning.loggers import MLFlowLogger

        uri = mlflow_runs.resolve_tracking_uri(cfg.logger.tracking_uri)
        run_id = _reopen_run(uri, output_dir) if resuming else _open_run(cfg, uri, meta, output_dir, sweep_dir, job_num, overrides)
        # written now, not at the end: a killed job can be resumed into this same run
        _write_run_json(output_dir, {"run_id": run_id, "tracking_uri": uri, "status": "running"})
        loggers.append(MLFlowLogger(experiment_name=cfg.logger.experiment_name, run_id=run_id, tracking_uri=uri, log_model=False))
        log.info("MLflow run %s in %s", run_id, uri)

    started = time.time()
    monitor = _system_metrics_monitor(cfg, uri, run_id)
    try:
        if not loggers:  # logger=none, or a DDP rank other than 0: nothing to monitor the LR into
            callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
        trainer = pl.Trainer(**trainer_args, callbacks=callbacks, logger=loggers or False, default_root_dir=str(output_dir))
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    except BaseException:
        if run_id:  # never leave a run RUNNING: the UI would show it as live forever
            mlflow_runs.end_run(uri, run_id, "FAILED")
        raise
    finally:
        if monitor:
            monitor.finish()
    elapsed = time.time() - started

    best_score = _best_score(trainer, checkpoint, cfg.task.monitor)
    summary = {
        "run_id": run_id,
        "tracking_uri": uri,
        "experiment_name": cfg.logger.experiment_name if run_id else None,
        "monitor": cfg.task.monitor,
        "mode": cfg.task.mode,
        "best_score": best_score,
        "best_checkpoint": checkpoint.best_model_path if checkpoint else None,
        "last_checkpoint": checkpoint.last_model_path if checkpoint else None,
        "prepared_dir": str(cfg.data.prepared_dir),
        "data_hash": meta["content_hash"],
        "epochs": trainer.current_epoch,
        "train_seconds": round(elapsed, 2),
    }
    if rank_zero:
        try:
            _write_outputs(cfg, output_dir, summary, trainer)
            if run_id:
                _log_run_outputs(cfg, uri, run_id, output_dir, summary, datamodule, task)
        except BaseException:
            if run_id:
                mlflow_runs.end_run(uri, run_id, "FAILED")
            raise
        if run_id:
            mlflow_runs.end_run(uri, run_id, "FINISHED")
    return best_score


def _open_run(cfg, uri: str, meta: dict, output_dir: Path, sweep_dir, job_num, overrides: list[str]) -> str:
    """A new run: standard tags, the job's parent if it is part of a sweep, the flattened config."""
    from cnnlab.tracking import mlflow_runs

    tags = {
        "cnnlab.task": cfg.task.name,
        "cnnlab.model": cfg.model.name,
        "cnnlab.data": cfg.data.name,
        "cnnlab.data_hash": meta["content_hash"],
        "cnnlab.overrides": " ".join(overrides),
        "cnnlab.output_dir": str(output_dir),
        **dict(cfg.logger.get("tags") or {}),
    }
    parent = mlflow_runs.find_parent_run(sweep_dir) if sweep_dir else None
    run_id = mlflow_runs.start_run(uri, cfg.logger.experiment_name, run_name(cfg, job_num), tags, parent)
    mlflow_runs.log_params(uri, run_id, mlflow_runs.flatten(to_plain_dict(cfg)))
    return run_id


def _resume_checkpoint(output_dir: Path) -> str:
    last = output_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(
            f"resume=true: no {last}. Point hydra.run.dir at the output directory of the run to "
            f"continue (the one holding checkpoints/last.ckpt and run.json)"
        )
    return str(last)


def _reopen_run(uri: str, output_dir: Path) -> str:
    """The MLflow run of an interrupted job, set RUNNING again; its step axis continues."""
    from cnnlab.tracking import mlflow_runs

    record = output_dir / "run.json"
    run_id = json.loads(record.read_text()).get("run_id") if record.is_file() else None
    if not run_id:
        raise FileNotFoundError(f"resume=true: {record} names no MLflow run to continue")
    mlflow_client = mlflow_runs.client(uri)
    mlflow_runs.with_retry(lambda: mlflow_client.update_run(run_id, status="RUNNING"), what="reopen run")
    mlflow_client.set_tag(run_id, "cnnlab.resumed", "true")
    return run_id


def _write_run_json(output_dir: Path, record: dict) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n")


def _system_metrics_monitor(cfg, uri: Optional[str], run_id: Optional[str]):
    """MLflow's sampler of CPU, memory (and GPU with pynvml) into the run, or None."""
    if not (run_id and cfg.logger.system_metrics):
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=cfg.logger.system_metrics_interval, tracking_uri=uri,
                                   resume_logging=cfg.resume or cfg.ckpt_path == "last")  # fmt: skip
    monitor.start()
    return monitor


def _best_score(trainer, checkpoint, monitor: str) -> float:
    score = checkpoint.best_model_score if checkpoint is not None else None
    if score is None:
        score = trainer.callback_metrics.get(monitor)
    return float(score) if score is not None else math.nan


def _write_outputs(cfg: DictConfig, output_dir: Path, summary: dict, trainer) -> None:
    """run.json (for evaluate), metrics.json and history.csv (for DVC), config.yaml (resolved)."""
    _write_run_json(output_dir, {**summary, "status": "finished"})
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
    metrics.update({f"best/{summary['monitor']}": summary["best_score"], "epochs": summary["epochs"], "train_seconds": summary["train_seconds"]})
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    history = getattr(trainer.lightning_module, "epoch_history", None)
    if history:
        columns = sorted({key for row in history for key in row})
        lines = [",".join(columns)] + [",".join(f"{row.get(c, '')}" for c in columns) for row in history]
        (output_dir / "history.csv").write_text("\n".join(lines) + "\n")


def _log_run_outputs(cfg, uri: str, run_id: str, output_dir: Path, summary: dict, datamodule, task) -> None:
    from cnnlab.tracking import mlflow_runs

    mlflow_runs.log_artifact(uri, run_id, output_dir / "config.yaml")
    mlflow_runs.log_artifact(uri, run_id, output_dir / "run.json")
    if (output_dir / "history.csv").exists():
        mlflow_runs.log_artifact(uri, run_id, output_dir / "history.csv")
    if cfg.logger.log_checkpoint and summary["best_checkpoint"]:
        mlflow_runs.log_artifact(uri, run_id, Path(summary["best_checkpoint"]), "checkpoints")
    mlflow_runs.log_metrics(uri, run_id, {f"best/{summary['monitor']}": summary["best_score"], "train_seconds": summary["train_seconds"]})
    if cfg.augment.get("preview") and cfg.augment.train:
        from cnnlab.viz.augment import plot_augmentation_preview

        preview = plot_augmentation_preview(datamodule.dataset("train", augment=True), task, output_dir / "augmentation_preview.png")
        mlflow_runs.log_artifact(uri, run_id, preview)
    if cfg.logger.log_model and summary["best_checkpoint"]:
        from cnnlab.tracking.models import example_inputs, log_model, registered_model_name

        best = type(task).load_from_checkpoint(summary["best_checkpoint"], map_location="cpu")
        register_name = registered_model_name(cfg.task.name, cfg.model.name) if cfg.register else None
        log_model(uri, run_id, best, register_name, example=example_inputs(datamodule.dataset("val", augment=False)))
