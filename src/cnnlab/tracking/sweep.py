"""A Hydra callback that gives every multirun one MLflow parent run over its jobs' runs."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnlab.tracking import mlflow_runs

log = logging.getLogger(__name__)


class MLflowSweepCallback(Callback):
    """on_multirun_start: create the parent run; on_multirun_end: record the best child.

    Jobs find the parent through a file in the sweep directory, which works for in-process,
    joblib and submitit launchers alike (environment variables do not reach remote jobs).
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.logger.enabled:
            return
        uri = mlflow_runs.resolve_tracking_uri(config.logger.tracking_uri)
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = list(config.hydra.overrides.task)
        run_id = mlflow_runs.start_run(
            uri,
            config.logger.experiment_name,
            run_name=f"sweep-{sweep_dir.name}",
            tags={"cnnlab.role": "sweep", "cnnlab.sweep_dir": str(sweep_dir), "cnnlab.overrides": " ".join(overrides)},
        )
        sweeper = config.hydra.sweeper.get("_target_", "basic").rsplit(".", 1)[-1]
        mlflow_runs.log_params(uri, run_id, {"sweep.overrides": " ".join(overrides), "sweep.sweeper": sweeper,
                                             "sweep.metric": config.task.monitor, "sweep.mode": config.task.mode})  # fmt: skip
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / mlflow_runs.PARENT_RUN_FILE).write_text(json.dumps({"run_id": run_id, "tracking_uri": uri}))
        os.environ["CNNLAB_PARENT_RUN_ID"] = run_id
        log.info("MLflow parent run %s for sweep %s", run_id, sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.logger.enabled:
            return
        marker = Path(config.hydra.sweep.dir) / mlflow_runs.PARENT_RUN_FILE
        if not marker.is_file():
            return
        parent = json.loads(marker.read_text())
        os.environ.pop("CNNLAB_PARENT_RUN_ID", None)
        record_best_child(parent["tracking_uri"], parent["run_id"], config.task.monitor, config.task.mode)


def record_best_child(uri: str, parent_run_id: str, metric: str, mode: str) -> None:
    """Tag the parent with its best child by `metric` and close it (FAILED if every child failed)."""
    mlflow_client = mlflow_runs.client(uri)
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    children = mlflow_runs.with_retry(
        lambda: mlflow_client.search_runs(experiments, filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000)
    )
    scored = [(run.data.metrics[metric], run) for run in children if metric in run.data.metrics
              and not math.isnan(run.data.metrics[metric])]  # fmt: skip
    finished = sum(run.info.status == "FINISHED" for run in children)
    mlflow_runs.log_metrics(uri, parent_run_id, {"sweep.children": len(children), "sweep.finished": finished})
    if scored:
        value, best = (max if mode == "max" else min)(scored, key=lambda pair: pair[0])
        mlflow_client.set_tag(parent_run_id, "best_child_run_id", best.info.run_id)
        mlflow_client.set_tag(parent_run_id, "best_child_overrides", best.data.tags.get("cnnlab.overrides", ""))
        mlflow_runs.log_metrics(uri, parent_run_id, {f"best/{metric}": value})
        log.info("sweep best: %s = %.4f (run %s)", metric, value, best.info.run_id)
    mlflow_runs.end_run(uri, parent_run_id, "FINISHED" if scored else "FAILED")
