"""Creating, tagging and closing MLflow runs against an explicit tracking URI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from cnnlab.paths import default_tracking_uri, project_root

log = logging.getLogger(__name__)
T = TypeVar("T")

PARENT_RUN_FILE = "mlflow_parent_run.json"  # in a Hydra sweep dir: the sweep's parent run
MAX_PARAM_LENGTH = 6000  # MLflow 3's limit on a param value


def resolve_tracking_uri(configured: Optional[str] = None) -> str:
    """logger.tracking_uri, else $MLFLOW_TRACKING_URI, else the project's SQLite file (never ./mlruns)."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def with_retry(action: Callable[[], T], attempts: int = 8, what: str = "MLflow call") -> T:
    """Run an MLflow call, waiting and retrying while SQLite reports the database locked."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as err:  # MlflowException wraps the driver's OperationalError
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            delay = 0.5 * 2**attempt
            log.warning("%s: database is locked, retrying in %.1fs", what, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def get_or_create_experiment(uri: str, name: str) -> str:
    """Experiment id by name; new experiments on the embedded store keep artifacts beside mlflow.db."""
    mlflow_client = client(uri)
    experiment = with_retry(lambda: mlflow_client.get_experiment_by_name(name))
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:") and "MLFLOW_ARTIFACT_ROOT" not in os.environ:
        # MLflow's default for a SQLite store is ./mlruns under whatever the cwd is at creation
        db_path = Path(uri.split("sqlite:///", 1)[1].split("?", 1)[0])
        artifact_location = (db_path.parent / "mlartifacts").as_uri()
    elif root := os.environ.get("MLFLOW_ARTIFACT_ROOT"):
        artifact_location = root
    try:
        return with_retry(lambda: mlflow_client.create_experiment(name, artifact_location=artifact_location))
    except Exception as err:  # another job created it first
        if "already exists" not in str(err).lower():
            raise
        return mlflow_client.get_experiment_by_name(name).experiment_id


def git_state(root: Path) -> dict[str, str]:
    """Commit and dirty flag of the project checkout ("unknown" outside git)."""

    def git(*args: str) -> Optional[str]:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"mlflow.source.git.commit": "unknown", "git.dirty": "unknown"}
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"mlflow.source.git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"}, values cut to MLflow's param limit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


def log_params(uri: str, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    mlflow_client = client(uri)
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow's batch limit
        batch = items[start : start + 100]
        with_retry(lambda: mlflow_client.log_batch(run_id, params=batch), what="log params")


def start_run(
    uri: str,
    experiment_name: str,
    run_name: str,
    tags: dict[str, str],
    parent_run_id: Optional[str] = None,
) -> str:
    """Create a RUNNING run with cnnlab's standard tags; returns its id."""
    experiment_id = get_or_create_experiment(uri, experiment_name)
    all_tags = {
        **git_state(project_root()),
        "cnnlab.command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "mlflow.source.name": Path(sys.argv[0]).name,
        "mlflow.user": os.environ.get("USER", "cnnlab"),
        **tags,
    }
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    mlflow_client = client(uri)
    run = with_retry(lambda: mlflow_client.create_run(experiment_id, run_name=run_name, tags=all_tags), what="create run")
    return run.info.run_id


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    with_retry(lambda: client(uri).set_terminated(run_id, status=status), what="end run")


def log_artifact(uri: str, run_id: str, path: Path, artifact_path: Optional[str] = None) -> None:
    with_retry(lambda: client(uri).log_artifact(run_id, str(path), artifact_path), what="log artifact")


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    with_retry(lambda: client(uri).log_batch(run_id, metrics=items), what="log metrics")


def find_parent_run(sweep_dir: Path) -> Optional[str]:
    """The parent run a Hydra sweep created (see sweep.MLflowSweepCallback), if any."""
    marker = Path(sweep_dir) / PARENT_RUN_FILE
    if marker.is_file():
        return json.loads(marker.read_text())["run_id"]
    return os.environ.get("CNNLAB_PARENT_RUN_ID")
