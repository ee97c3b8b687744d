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

    from cnnlab.data.datamodule import datamodule_from_config, network_normalization
    from cnnlab.tracking.run import log_evaluation, read_run_record

    train_dir, output_dir = Path(cfg.evaluate.train_dir), Path(cfg.evaluate.output_dir)
    config_file = train_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: evaluate.train_dir must be a cnnlab-train output directory")
    train_cfg = OmegaConf.load(config_file)
    run_info = read_run_record(train_dir)
    checkpoint = resolve_checkpoint(train_dir, cfg.evaluate.checkpoint)

    task_class = get_class(train_cfg.task.module._target_)
    task = task_class.load_from_checkpoint(checkpoint, map_location="cpu")
    datamodule = datamodule_from_config(train_cfg, task_class.labels, normalization=network_normalization(task))
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
        from cnnlab.explain.report import explain_evaluation

        explained = explain_evaluation(task, train_cfg, cfg.evaluate, output_dir / "plots" / "explain")
    elif (output_dir / "plots" / "explain").is_dir():  # pictures of an earlier evaluation with explain on
        import shutil

        shutil.rmtree(output_dir / "plots" / "explain")
    if cfg.logger.enabled:
        log_evaluation(cfg, run_info, metrics, [output_dir / "metrics.json", *files.values()], datamodule.prepared)
        if explained:
            from cnnlab.explain.report import log_pictures
            from cnnlab.tracking.run import TrackedRun
            from cnnlab.tracking.store import resolve_tracking_uri

            run = TrackedRun.find(resolve_tracking_uri(cfg.logger.tracking_uri), run_info.get("run_id"))
            if run is not None:
                log_pictures(run, output_dir / "plots" / "explain", explained)
    return metrics
