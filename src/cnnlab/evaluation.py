"""Score a trained checkpoint on the held-out test split and log it next to its training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cnnlab.config import ConfigError

log = logging.getLogger(__name__)


def resolve_checkpoint(train_dir: Path, checkpoint: str) -> Path:
    """best / last -> train_dir/checkpoints/<name>.ckpt; anything else is a path."""
    path = train_dir / "checkpoints" / f"{checkpoint}.ckpt" if checkpoint in ("best", "last") else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path} (evaluate.checkpoint={checkpoint}, evaluate.train_dir={train_dir}); "
            f"train first (`dvc repro train` or cnnlab-train hydra.run.dir={train_dir})"
        )
    return path


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test metrics of the checkpoint in evaluate.train_dir; writes metrics.json, plots, MLflow."""
    import pytorch_lightning as pl
    from hydra.utils import get_class

    from cnnlab.training import build_datamodule

    train_dir, output_dir = Path(cfg.evaluate.train_dir), Path(cfg.evaluate.output_dir)
    config_file = train_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: evaluate.train_dir must be a cnnlab-train output directory")
    train_cfg = OmegaConf.load(config_file)
    run_info = json.loads((train_dir / "run.json").read_text()) if (train_dir / "run.json").is_file() else {}
    checkpoint = resolve_checkpoint(train_dir, cfg.evaluate.checkpoint)

    task_class = get_class(train_cfg.task.module._target_)
    task = task_class.load_from_checkpoint(checkpoint, map_location="cpu")
    datamodule = build_datamodule(train_cfg, train_cfg.seed)
    if datamodule.meta["content_hash"] != run_info.get("data_hash", datamodule.meta["content_hash"]):
        raise ConfigError(
            f"the prepared data at {train_cfg.data.prepared_dir} changed since training "
            f"(hash {datamodule.meta['content_hash'][:12]} vs {run_info['data_hash'][:12]} in {train_dir / 'run.json'}); "
            f"train again on it before evaluating"
        )
    trainer = pl.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(task, datamodule=datamodule, verbose=False)[0]
    metrics = {key: float(value) for key, value in sorted(results.items())}

    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    files = task.write_test_report(output_dir / "plots")
    predictions = output_dir / "plots" / "predictions.csv"
    if not predictions.exists():  # dvc.yaml declares it for every task
        predictions.parent.mkdir(parents=True, exist_ok=True)
        predictions.write_text("actual,predicted\n")
    _log_to_training_run(cfg, run_info, metrics, [output_dir / "metrics.json", *files.values()])
    return metrics


def _log_to_training_run(cfg: DictConfig, run_info: dict, metrics: dict, files: list[Path]) -> None:
    """Test metrics and plots go into the training run, so one run holds the whole result."""
    if not cfg.logger.enabled:
        return
    from cnnlab.tracking import mlflow_runs

    uri = mlflow_runs.resolve_tracking_uri(cfg.logger.tracking_uri)
    run_id = run_info.get("run_id")
    if run_id:
        try:
            mlflow_runs.client(uri).get_run(run_id)
        except Exception:
            log.warning("training run %s is not in %s; logging the evaluation to a new run", run_id, uri)
            run_id = None
    if run_id is None:
        run_id = mlflow_runs.start_run(uri, cfg.logger.experiment_name, "evaluate", {"cnnlab.role": "evaluate",
                                       "cnnlab.train_run_id": run_info.get("run_id") or "unknown"})  # fmt: skip
        mlflow_runs.end_run(uri, run_id)
    mlflow_runs.log_metrics(uri, run_id, metrics)
    if cfg.evaluate.checkpoint == "best":  # the registered model is the best checkpoint
        from cnnlab.tracking.models import held_out_metric, promote_run_model

        promote_run_model(uri, run_id, metrics, held_out_metric(run_info.get("monitor")), run_info.get("mode", "max"), cfg.promote_alias)
    for path in files:
        mlflow_runs.log_artifact(uri, run_id, path, "evaluation")
    log.info("test metrics logged to MLflow run %s", run_id)
