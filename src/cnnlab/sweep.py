"""What a sweep logs: a Hydra callback that gives every multirun one MLflow parent run over its jobs' runs,
and the marker in the sweep directory through which each job finds that parent.

Hydra instantiates this callback when any cnnlab-* command composed from conf/config.yaml starts
(cnnlab-prepare too), so MLflow, Lightning and matplotlib are imported inside the functions that
use them: a command that never sweeps does not pay seconds for them.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

PARENT_RUN_FILE = "mlflow_parent_run.json"  # in a Hydra sweep dir: the sweep's parent run
PARENT_RUN_ENV = "CNNLAB_PARENT_RUN_ID"  # the same, for jobs launched in this process


def find_parent_run(sweep_dir: Path) -> Optional[str]:
    """The parent run a Hydra sweep created (see MLflowSweepCallback), if any."""
    marker = Path(sweep_dir) / PARENT_RUN_FILE
    if marker.is_file():
        return json.loads(marker.read_text())["run_id"]
    return os.environ.get(PARENT_RUN_ENV)


def prepare_optuna_storage(url: str) -> None:
    """Create Optuna's tables in the database at `url` and stamp their schema version, committed.

    hydra-optuna-sweeper 1.3.0 pins optuna 2.10.1, whose RDBStorage stamps the version through a
    connection that SQLAlchemy 2.x no longer autocommits: a new database is left with an empty
    alembic_version table and Optuna fails with an AssertionError (fixed in optuna 3.1, optuna#4390).
    Done here the way optuna 3.1 does it; an existing database keeps its tables and studies."""
    import alembic.command  # lazy: only sweeps with a storage pay for them
    import optuna.storages._rdb as rdb
    import sqlalchemy
    from alembic.config import Config
    from optuna.storages._rdb import models

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            if (
                sqlalchemy.inspect(connection).has_table("alembic_version")
                and connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).first()
            ):
                return  # stamped already (by this or by a working optuna): Optuna checks its version itself
        models.BaseModel.metadata.create_all(engine)
    finally:
        engine.dispose()
    alembic_dir = Path(rdb.__file__).parent
    settings = Config(str(alembic_dir / "alembic.ini"))
    settings.set_main_option("script_location", str(alembic_dir / "alembic"))
    settings.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # ConfigParser interpolation
    alembic.command.stamp(settings, "head")


class MLflowSweepCallback(Callback):
    """on_multirun_start: create the parent run; on_multirun_end: record the best child.

    Jobs find the parent through a file in the sweep directory, which works for in-process,
    joblib and submitit launchers alike (environment variables do not reach remote jobs). Hydra
    skips on_multirun_end when a job raises; the parent is then closed FAILED at exit, never left RUNNING.
    """

    _open: dict[str, tuple[str, str, str]] = {}  # parent run id -> (uri, metric, mode), until closed

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        storage = OmegaConf.select(config, "hydra.sweeper.storage")
        if storage:  # before the sweeper opens it (Hydra calls this callback first)
            prepare_optuna_storage(str(storage))
        if not config.logger.enabled:
            return
        from cnnlab.tracking.run import TrackedRun  # lazy: see the module's docstring
        from cnnlab.tracking.store import check_reachable, redact, resolve_tracking_uri

        uri = resolve_tracking_uri(config.logger.tracking_uri)
        check_reachable(uri)  # before any job is launched or submitted: not minutes of retries
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = list(config.hydra.overrides.task)
        # the sweeper's own settings (an Optuna seed, trial count) are Hydra overrides: kept for cnnlab-rerun
        hydra_overrides = [
            o for o in config.hydra.overrides.hydra if not o.startswith(("hydra.sweep.dir", "hydra.run.dir"))
        ]
        tags = {
            "cnnlab.role": "sweep",
            "cnnlab.sweep_dir": str(sweep_dir),
            "cnnlab.overrides": " ".join(overrides),
            "cnnlab.hydra_overrides": " ".join(hydra_overrides),
            **dict(config.logger.get("tags") or {}),
        }
        run = TrackedRun.start(uri, config.logger.experiment_name, run_name=f"sweep-{sweep_dir.name}", tags=tags)
        sweeper = config.hydra.sweeper.get("_target_", "basic").rsplit(".", 1)[-1]
        with run.failed_on_error():
            run.log_params(
                {
                    "sweep.overrides": " ".join(overrides),
                    "sweep.sweeper": sweeper,
                    "sweep.metric": config.task.monitor,
                    "sweep.mode": config.task.mode,
                }
            )
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / PARENT_RUN_FILE).write_text(json.dumps({"run_id": run.run_id, "tracking_uri": redact(uri)}))
        os.environ[PARENT_RUN_ENV] = run.run_id
        if not self._open:
            atexit.register(self._close_aborted)
        self._open[run.run_id] = (uri, config.task.monitor, config.task.mode)
        log.info("MLflow parent run %s for sweep %s", run.run_id, sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.logger.enabled:
            return
        marker = Path(config.hydra.sweep.dir) / PARENT_RUN_FILE
        if not marker.is_file():
            return
        from cnnlab.tracking.store import resolve_tracking_uri  # lazy: see the module's docstring

        parent = json.loads(marker.read_text())
        os.environ.pop(PARENT_RUN_ENV, None)
        uri = resolve_tracking_uri(config.logger.tracking_uri)  # the marker's copy is redacted
        self._open.pop(parent["run_id"], None)
        record_best_child(uri, parent["run_id"], config.task.monitor, config.task.mode)

    @classmethod
    def _close_aborted(cls) -> None:
        """At exit: a sweep a job's error cut short ends FAILED (its best child so far still recorded)."""
        for run_id, (uri, metric, mode) in list(cls._open.items()):
            try:
                record_best_child(uri, run_id, metric, mode, aborted=True)
            except Exception as err:  # at exit: say it, never raise
                log.warning("could not close the sweep's parent run %s: %s", run_id, err)
        cls._open.clear()


def record_best_child(uri: str, parent_run_id: str, metric: str, mode: str, aborted: bool = False) -> None:
    """Tag the parent with its best child and close it (FAILED if every child failed).

    Children are ranked by `best/<metric>`, the best value over each job's epochs: what a job
    returns to the sweeper, so the parent agrees with Optuna's objective.
    """
    from cnnlab.tracking.run import TrackedRun  # lazy: see the module's docstring
    from cnnlab.tracking.store import client, with_retry
    from cnnlab.viz.sweep import plot_optimization_history

    mlflow_client = client(uri)
    parent = TrackedRun(uri, parent_run_id)
    metric = f"best/{metric}"
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    children = with_retry(
        lambda: mlflow_client.search_runs(
            experiments, filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000
        )
    )
    scored = [
        (run.data.metrics[metric], run)
        for run in children
        if metric in run.data.metrics and not math.isnan(run.data.metrics[metric])
    ]
    finished = sum(run.info.status == "FINISHED" for run in children)
    parent.log_metrics({"sweep.children": len(children), "sweep.finished": finished})
    if scored:
        value, best = (max if mode == "max" else min)(scored, key=lambda pair: pair[0])
        overrides = best.data.tags.get("cnnlab.overrides", "")
        parent.set_tags({"best_child_run_id": best.info.run_id, "best_child_overrides": overrides})
        parent.log_metrics({metric: value})
        best_params = dict(item.split("=", 1) for item in overrides.split() if "=" in item)
        parent.log_params({f"best.{k.lstrip('+')}": v for k, v in best_params.items()})
        trials = sorted(children, key=lambda run: run.info.start_time)
        values = [run.data.metrics.get(metric, math.nan) for run in trials]
        with tempfile.TemporaryDirectory() as scratch:
            plot = plot_optimization_history(values, metric, mode, Path(scratch) / "optimization_history.png")
            parent.log_artifact(plot)
        log.info("sweep best: %s = %.4f (run %s)", metric, value, best.info.run_id)
    parent.end("FINISHED" if scored and not aborted else "FAILED")
