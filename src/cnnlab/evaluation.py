"""Score a trained checkpoint on the held-out test split and log it next to its training."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from cnnlab.config import ConfigError
from cnnlab.restore import MissingTrainingFile, TrainingDirectory
from cnnlab.tracking.model_registry import held_out_metric, promote_run_model
from cnnlab.tracking.run import TrackedRun
from cnnlab.tracking.store import redact, resolve_tracking_uri

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test metrics of the checkpoint in evaluate.train_dir; writes metrics.json, plots, MLflow."""
    train_dir = training_directory(str(cfg.evaluate.train_dir), Path(cfg.paths.root), cfg.logger.tracking_uri)
    output_dir = Path(cfg.evaluate.output_dir) if cfg.evaluate.output_dir else train_dir / "evaluate"
    log.info("evaluating %s into %s", train_dir, output_dir)
    try:
        training = TrainingDirectory.open(train_dir)
    except MissingTrainingFile as err:
        raise FileNotFoundError(
            f"{err.path} not found: evaluate.train_dir must be a cnnlab-train output directory"
        ) from None
    train_cfg, run_info = training.config, training.record
    try:
        task = training.load_task(cfg.evaluate.checkpoint)
    except MissingTrainingFile as err:
        raise FileNotFoundError(
            f"no checkpoint at {err.path} (evaluate.checkpoint={cfg.evaluate.checkpoint}, "
            f"evaluate.train_dir={train_dir}); train first (`dvc repro train` or cnnlab-train "
            f"hydra.run.dir={train_dir})"
        ) from None
    datamodule = training.datamodule(task)
    if datamodule.meta["content_hash"] != run_info.get("data_hash", datamodule.meta["content_hash"]):
        raise ConfigError(
            f"the prepared data at {train_cfg.data.prepared_dir} changed since training "
            f"(hash {datamodule.meta['content_hash'][:12]} vs {run_info['data_hash'][:12]} in "
            f"{train_dir / 'run.json'}); "
            f"train again on it before evaluating"
        )
    trainer = pl.Trainer(
        accelerator="auto", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    results = trainer.test(task, datamodule=datamodule, verbose=False)[0]
    metrics = {key: float(value) for key, value in sorted(results.items())}

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    files = task.write_test_report(output_dir / "plots")
    predictions = output_dir / "plots" / "predictions.csv"
    if not predictions.exists():  # dvc.yaml declares it for every task
        predictions.parent.mkdir(parents=True, exist_ok=True)
        predictions.write_text("actual,predicted\n")
    explained: list[Path] = []
    if cfg.evaluate.get("explain"):  # off by default: seconds to a minute more (gradient ascent, CAMs)
        # imported only when asked for: Captum and SciPy add seconds to every cnnlab-evaluate's start
        from cnnlab.explain.report import explain_evaluation, log_pictures

        explained = explain_evaluation(task, train_cfg, cfg.evaluate, output_dir / "plots" / "explain")
    elif (output_dir / "plots" / "explain").is_dir():  # pictures of an earlier evaluation with explain on
        shutil.rmtree(output_dir / "plots" / "explain")
    if cfg.logger.enabled:
        log_evaluation(cfg, run_info, metrics, [output_dir / "metrics.json", *files.values()], datamodule.prepared)
        if explained:
            run = TrackedRun.find(resolve_tracking_uri(cfg.logger.tracking_uri), run_info.get("run_id"))
            if run is not None:
                log_pictures(run, output_dir / "plots" / "explain", explained)
    return metrics


def training_directory(train_dir: str, root: Path, tracking_uri=None) -> Path:
    """evaluate.train_dir as a directory: `latest` (the cnnlab-train output directory under outputs/ or
    multirun/ whose run.json changed last), an MLflow run id or runs:/<id> (its cnnlab.output_dir tag), or a path."""
    if train_dir == "latest":
        records = [p for folder in ("outputs", "multirun") for p in (root / folder).glob("**/run.json")]
        if not records:
            raise FileNotFoundError(
                f"evaluate.train_dir=latest: no cnnlab-train output directory (run.json) under {root}/outputs or "
                f"{root}/multirun; train first (cnnlab-train) or name a directory or an MLflow run id"
            )
        return max(records, key=lambda p: p.stat().st_mtime).parent
    run_id = train_dir.removeprefix("runs:/").split("/")[0]
    if re.fullmatch(r"[0-9a-f]{32}", run_id) and not Path(train_dir).exists():
        run = TrackedRun.find(resolve_tracking_uri(tracking_uri), run_id)
        output_dir = run.tags.get("cnnlab.output_dir") if run is not None else None
        if not output_dir:
            raise FileNotFoundError(
                f"evaluate.train_dir={train_dir}: no cnnlab-train run {run_id} in this MLflow store"
            )
        return Path(output_dir)
    return Path(train_dir).expanduser()


def log_evaluation(cfg, run_info: dict, metrics: dict[str, float], files: list[Path], prepared=None) -> None:
    """Test metrics and plots go into the training's run, so one run holds the whole result; a
    training whose run is not in this store gets a small "evaluate" run of its own instead.
    `prepared` (the PreparedDataset evaluated on) becomes the run's "evaluation" dataset input."""
    uri = resolve_tracking_uri(cfg.logger.tracking_uri)
    run = TrackedRun.find(uri, run_info.get("run_id"))
    if run is None:
        if run_info.get("run_id"):
            log.warning(
                "training run %s is not in %s; logging the evaluation to a new run", run_info["run_id"], redact(uri)
            )
        run = TrackedRun.start(
            uri,
            cfg.logger.experiment_name,
            "evaluate",
            {"cnnlab.role": "evaluate", "cnnlab.train_run_id": run_info.get("run_id") or "unknown"},
        )
        run.end()
    run.log_metrics(metrics)
    if prepared is not None:
        run.log_dataset(prepared.directory, prepared.meta, "evaluation", splits=("test",))
    if cfg.evaluate.checkpoint == "best":  # the registered model is the best checkpoint
        promote_run_model(
            uri,
            run.run_id,
            metrics,
            held_out_metric(run_info.get("monitor")),
            run_info.get("mode", "max"),
            cfg.promote_alias,
        )
    for path in files:
        run.log_artifact(path, "evaluation")
    log.info("test metrics logged to MLflow run %s", run.run_id)
