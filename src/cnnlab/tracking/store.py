"""The MLflow store: which one (the tracking URI), a client for it, retries on a locked SQLite file,
experiments, the flattening of a config into params, and MLflow's environment variables set for a
moment. Runs themselves live in tracking/run.py."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar
from urllib.parse import urlparse

import requests  # MLflow's own HTTP client: it takes user:password@ in the URL as basic auth
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import _validate_metric_name

from cnnlab.config import ConfigError
from cnnlab.paths import default_tracking_uri, portable
from cnnlab.redaction import redact  # noqa: F401  (tracking's modules and the commands redact through here)

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PARAM_LENGTH = 6000  # MLflow 3's limit on a param value


# A tracking server that stops answering must cost seconds, not MLflow's default of minutes of
# retries per call; users can still set these themselves.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """For an http(s) tracking URI: ConfigError naming it if the server does not answer within `timeout` s.

    Also sets cnnlab's shorter MLflow HTTP retry defaults for the rest of the process.
    """
    if not uri.startswith(("http://", "https://")):
        return
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)  # any answer, even a refusal, is reachable
    except requests.RequestException as err:
        reason = redact(str(err))[:200]
        raise ConfigError(
            f"the MLflow tracking server at {redact(uri)} does not answer ({reason}); start it, or point "
            f"logger.tracking_uri / $MLFLOW_TRACKING_URI at one that runs (unset both for the project's SQLite store)"
        ) from None
    # /health is open to every host name; an API call meets MLflow 3's DNS-rebinding guard, which answers only the
    # host names the server was told
    try:
        answer = requests.get(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1", timeout=timeout)
    except requests.RequestException:
        return  # it answered /health: what follows reports any other trouble
    if answer.status_code == 403 and "host header" in answer.text.lower():
        address = urlparse(uri)
        host = f"{address.hostname}:{address.port}" if address.port else address.hostname  # no user:password@
        raise ConfigError(
            f"the MLflow tracking server at {redact(uri)} refuses the host name {host!r} "
            f"({answer.text.strip()[:120]}); start it with --allowed-hosts naming it (make server / "
            "python -m cnnlab.tracking.server --allowed-hosts ...)"
        )


def recorded_uri(uri: Optional[str]) -> Optional[str]:
    """What run.json keeps of the store `uri`: nothing for a SQLite file inside the project (the
    project's own store: it moves with the clone, and cnnlab finds it by default), else the URI redacted."""
    if uri and uri.startswith("sqlite:///"):
        path = "/" + uri.removeprefix("sqlite:///").split("?")[0].lstrip("/")
        if portable(path) != path:
            return None
    return redact(uri) if uri else uri


def resolve_tracking_uri(configured: Optional[str] = None) -> str:
    """logger.tracking_uri, else $MLFLOW_TRACKING_URI, else the project's SQLite file (never ./mlruns)."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


_initialised: set[str] = set()


class _NoRetryWarnings(logging.Filter):
    """urllib3's "Retrying (...)" warning, one per retry of every MLflow call while a server is away:
    cnnlab says so once (the outbox's warning, or the error that names the server)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Retrying (")


_RETRY_FILTER = _NoRetryWarnings()


def client(uri: str):
    """An MlflowClient for `uri`; a SQLite store is created under a file lock the first time.

    MLflow creates a fresh SQLite store's tables (tracking and registry) on first use; two processes
    doing that at once collide ("duplicate column name", "table ... already exists"). One process
    at a time initialises it, holding `<db>.lock`; the others then find the tables made.
    """
    if uri.startswith(("http://", "https://")):
        logging.getLogger("urllib3.connectionpool").addFilter(_RETRY_FILTER)  # once: a logger keeps one of each
    if not uri.startswith("sqlite:") or uri in _initialised:
        return MlflowClient(tracking_uri=uri)
    db_path = Path(uri.split("sqlite:///", 1)[-1].split("?", 1)[0])
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with open(db_path.with_name(db_path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            mlflow_client = MlflowClient(tracking_uri=uri)  # creates (or upgrades) the tracking tables
            _ = mlflow_client._get_registry_client().store  # ... and the registry's
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _initialised.add(uri)
    return mlflow_client


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


# MLflow 3's UI opens an experiment on its GenAI pages (traces, prompts) unless this tag says it
# holds model training; the value is the UI's own (ExperimentKind.CUSTOM_MODEL_DEVELOPMENT)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_EXPERIMENT_KIND = "custom_model_development"


def get_or_create_experiment(uri: str, name: str) -> str:
    """Experiment id by name; new experiments on the embedded store keep artifacts beside mlflow.db.

    The experiments cnnlab uses declare their kind (model training), so the UI opens on their runs;
    a kind set by hand is kept."""
    mlflow_client = client(uri)
    experiment = with_retry(lambda: mlflow_client.get_experiment_by_name(name))
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older cnnlab or by hand
            with_retry(
                lambda: mlflow_client.set_experiment_tag(
                    experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND
                )
            )
        return experiment.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:") and "MLFLOW_ARTIFACT_ROOT" not in os.environ:
        # MLflow's default for a SQLite store is ./mlruns under whatever the cwd is at creation
        db_path = Path(uri.split("sqlite:///", 1)[1].split("?", 1)[0])
        artifact_location = (db_path.parent / "mlartifacts").as_uri()
    elif root := os.environ.get("MLFLOW_ARTIFACT_ROOT"):
        artifact_location = root
    try:
        return with_retry(
            lambda: mlflow_client.create_experiment(
                name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND}
            )
        )
    except Exception as err:  # another job created it first
        if "already exists" not in str(err).lower():
            raise
        return mlflow_client.get_experiment_by_name(name).experiment_id


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"a.b.c": "value"}, values cut to MLflow's param limit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            flat[name] = redact(text)[:MAX_PARAM_LENGTH]
    return flat


_NOT_IN_METRIC_KEYS = re.compile(r"[^\w.\- ]")  # a subset of what MLflow allows: no / (a path) or : (Windows)


def metric_keys(prefix: str, names: list[str]) -> list[str]:
    """One MLflow metric key per class name, `prefix/<name>` where MLflow takes that as it is.

    A name with characters MLflow refuses (`C++`, `cat's`, `a//b`) becomes `prefix/<index>_<name with
    those as _>`: still readable, unique by the index. The true names stay in the task's per-class table.
    """
    keys: list[str] = []
    for index, name in enumerate(names):
        key = f"{prefix}/{name}"
        try:
            _validate_metric_name(key)  # MLflow's own rule (characters, and a path that normalises to itself)
        except MlflowException:
            key = f"{prefix}/{index}_{_NOT_IN_METRIC_KEYS.sub('_', name)}"
        keys.append(key if key not in keys else f"{prefix}/{index}_{key.rsplit('/', 1)[-1]}")
    return keys


@contextlib.contextmanager
def restored_environment(*names: str, **values: str) -> Iterator[None]:
    """Set `values` in os.environ for the block; afterwards they and `names` are exactly as before (unset ones unset).

    `names` are variables something inside the block writes (mlflow.set_tracking_uri writes
    $MLFLOW_TRACKING_URI) that cnnlab reads later to find the store.
    """
    saved = {name: os.environ.get(name) for name in (*names, *values)}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
