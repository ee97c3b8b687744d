"""What a training job logs: its MLflow run opened with the config, data and environment, closed
with its outputs (config, run record, history, best checkpoint, augmentation preview, model), and
what a store that did not answer could not take sent later by cnnlab-sync."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

from mlflow.entities import Metric
from omegaconf import OmegaConf

from cnnlab import slurm
from cnnlab.config import ConfigError
from cnnlab.data.prepare import data_location
from cnnlab.dvc_experiment import params_changed_from_baseline, warn_about_changes
from cnnlab.paths import from_root
from cnnlab.redaction import REDACTED
from cnnlab.restore import TrainingDirectory
from cnnlab.sweep import find_parent_run
from cnnlab.tracking.model_registry import example_inputs, log_model, registered_model_name
from cnnlab.tracking.run import PENDING_FILE, RUN_RECORD, TrackedRun, read_pending, read_run_record, write_run_record
from cnnlab.tracking.store import MAX_PARAM_LENGTH, flatten, redact, resolve_tracking_uri
from cnnlab.viz.augment import plot_augmentation_preview

log = logging.getLogger(__name__)


def training_run_name(cfg, job_num: Optional[int]) -> str:
    """logger.run_name, else the DVC experiment's name, else <model>-<data>[-<job number in a sweep>]."""
    if cfg.logger.get("run_name"):
        return cfg.logger.run_name
    if os.environ.get("DVC_EXP_NAME") and job_num is None:
        return os.environ["DVC_EXP_NAME"]
    name = f"{cfg.model.name}-{cfg.data.name}"
    return name if job_num is None else f"{name}-{job_num}"


def config_params(cfg, output_dir: Path) -> dict[str, str]:
    """The composed config as MLflow params, less where this run lives (paths.output_dir, the checkpoint
    folders): those differ from run to run without being a setting, and MLflow's compare view opens its
    parallel-coordinates plot on the first params that differ. The tag cnnlab.output_dir keeps the place."""
    here = {str(output_dir), str(Path(output_dir).resolve())}
    return {
        key: value
        for key, value in flatten(OmegaConf.to_container(cfg, resolve=True)).items()
        if not any(value == place or value.startswith(place + os.sep) for place in here)
    }


def open_training_run(
    cfg,
    uri: str,
    meta: dict,
    output_dir: Path,
    sweep_dir: Optional[Path],
    job_num: Optional[int],
    overrides: list[str],
    resuming: bool,
    params: Optional[dict] = None,
    tags: Optional[dict] = None,
) -> TrackedRun:
    """The run of one training job: the interrupted one named in run.json when resuming, else a new
    run (a child of the sweep's parent inside a multirun) holding the flattened config as params.

    run.json is written at once, not at the end, so a killed job can be resumed into this run.
    `params` and `tags` are more of a new run's (where its weights came from, what is frozen).
    """
    if resuming:
        run_id = read_run_record(output_dir).get("run_id")
        if not run_id:
            raise FileNotFoundError(f"resume=true: {output_dir / RUN_RECORD} names no MLflow run to continue")
        run = TrackedRun.reopen(uri, run_id)
        run.set_tags(slurm.tags())  # a requeued job: its restart count
    else:
        tags = {
            "cnnlab.task": cfg.task.name,
            "cnnlab.model": cfg.model.name,
            "cnnlab.data": cfg.data.name,
            "cnnlab.data_hash": meta["content_hash"],
            "cnnlab.overrides": " ".join(overrides),
            "cnnlab.output_dir": str(output_dir),
            **slurm.tags(),
            **(tags or {}),
            **dict(cfg.logger.get("tags") or {}),
        }
        changes = params_changed_from_baseline()  # a DVC experiment: what it runs beyond its commit
        if changes is not None:
            tags["cnnlab.dvc_params_changed"] = "; ".join(changes)[:MAX_PARAM_LENGTH] or "none"
            warn_about_changes(changes)
        parent = find_parent_run(sweep_dir) if sweep_dir else None
        run = TrackedRun.start(uri, cfg.logger.experiment_name, training_run_name(cfg, job_num), tags, parent)
        with run.failed_on_error():
            run.log_params({**config_params(cfg, output_dir), **(params or {})})
            run.log_dataset(data_location(cfg.data), meta, "training")
            if meta.get("storage") == "shards":  # the data's identity, shard by shard
                shard_list = output_dir / "data_shards.json"
                shard_list.write_text(json.dumps({k: meta[k] for k in ("content_hash", "shards", "file_hashes")}))
                run.log_artifact(shard_list)
            run.log_environment(output_dir)
    run.files_at_end = slurm.log_files
    write_run_record(output_dir, {"run_id": run.run_id, "tracking_uri": uri, "status": "running"})
    log.info("MLflow run %s in %s", run.run_id, redact(uri))
    return run


def finish_training_run(run: TrackedRun, cfg, output_dir: Path, summary: dict, datamodule, task) -> bool:
    """After fit: the last metrics, the outputs, then FINISHED. A store away for longer than
    logger.unreachable_wait leaves all of it saved in output_dir for `cnnlab-sync`; returns whether it all went out."""
    return run.close(
        output_dir,
        "FINISHED",
        wait=cfg.logger.unreachable_wait,
        before_end=lambda: log_training_outputs(run, cfg, output_dir, summary, datamodule, task),
    )


def sync_training_run(output_dir: Path, uri: Optional[str] = None) -> str:
    """Send what `save_pending` kept in output_dir to its run (`cnnlab-sync`); returns the run id.

    The store is `uri`, else $MLFLOW_TRACKING_URI, else the one in config.yaml (whose credentials,
    if any, were redacted: pass those through the environment).
    """
    output_dir = Path(output_dir)
    pending_path, record = output_dir / PENDING_FILE, read_run_record(output_dir)
    if not record.get("run_id"):
        raise FileNotFoundError(
            f"{output_dir / RUN_RECORD} names no MLflow run: is {output_dir} a cnnlab-train output directory?"
        )
    if not pending_path.is_file():
        raise FileNotFoundError(f"nothing to sync in {output_dir}: no {PENDING_FILE} (everything reached MLflow)")
    pending = read_pending(output_dir)  # before anything is sent: a crafted status cannot reopen a run
    training = TrainingDirectory.open(output_dir)
    cfg = training.config
    uri = uri or resolve_tracking_uri(None if REDACTED in str(cfg.logger.tracking_uri) else cfg.logger.tracking_uri)
    run = TrackedRun.find(uri, record["run_id"])
    if run is None:
        raise ConfigError(
            f"MLflow at {redact(uri)} has no run {record['run_id']} (or does not answer); it must be the store the "
            "training logged to"
        )
    run.log_metric_points([Metric(m.key, m.value, m.timestamp, m.step) for m in pending.metrics])
    pending_path.write_text(pending.model_copy(update={"metrics": []}).model_dump_json() + "\n")  # sent: never twice
    before_end = None
    if not pending.outputs_logged:
        task = training.load_task(from_root(record["best_checkpoint"]))
        datamodule = training.datamodule(task)
        before_end = lambda: log_training_outputs(run, cfg, output_dir, record, datamodule, task)  # noqa: E731
    if not run.close(output_dir, pending.status, wait=0, before_end=before_end):
        raise ConfigError(
            f"MLflow at {redact(uri)} stopped answering while syncing; run cnnlab-sync {output_dir} again"
        )
    return run.run_id


def log_training_outputs(run: TrackedRun, cfg, output_dir: Path, summary: dict, datamodule, task) -> None:
    """What a finished training adds to its run: config, record, history, best checkpoint, preview, model."""
    run.log_artifact(output_dir / "config.yaml")
    run.log_artifact(output_dir / RUN_RECORD)
    if (output_dir / "history.csv").exists():
        run.log_artifact(output_dir / "history.csv")
    if cfg.logger.log_checkpoint and summary["best_checkpoint"]:
        run.log_artifact(from_root(summary["best_checkpoint"]), "checkpoints")
    run.log_metrics({f"best/{summary['monitor']}": summary["best_score"], "train_seconds": summary["train_seconds"]})
    if cfg.augment.get("preview") and cfg.augment.train:
        run.log_artifact(
            plot_augmentation_preview(
                datamodule.dataset("train", augment=True), task, output_dir / "augmentation_preview.png"
            )
        )
    if cfg.logger.log_model and summary["best_checkpoint"]:
        best = type(task).load_from_checkpoint(from_root(summary["best_checkpoint"]), map_location="cpu")
        register_name = registered_model_name(task.name, cfg.model.name) if cfg.register else None
        log_model(
            run.uri,
            run.run_id,
            best,
            register_name,
            example=example_inputs(datamodule.dataset("val", augment=False)),
            data_name=cfg.data.name,
        )
