"""The one owner of an MLflow run's lifecycle.

Opening (a new run, a sweep's child, or an interrupted run reopened to resume), tags, params,
artifacts, and the final status (FINISHED, or FAILED when anything raised: a run is never left
RUNNING). Training, evaluation and sweeps go through `TrackedRun`; nothing else sets a run's state.
What each of them logs lives with it (training_run.py, evaluation.py, sweep.py). The run record
`run.json` in a training output directory ties the directory to its run, so resume and evaluate
find it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

from mlflow.entities import DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from mlflow.utils.validation import _validate_metric_name
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from cnnlab.config import ConfigError
from cnnlab.paths import portable, project_root
from cnnlab.stopping import stop_signal
from cnnlab.tracking.datasets import prepared_dataset
from cnnlab.tracking.environment import environment_record, environment_tags
from cnnlab.tracking.lightning_logger import OutboxLogger, metric_outbox
from cnnlab.tracking.store import (
    client,
    get_or_create_experiment,
    recorded_uri,
    redact,
    restored_environment,
    with_retry,
)

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"  # in a training output directory: the run id, store and summary
PENDING_FILE = "mlflow_pending.json"  # beside it: what an unreachable store could not take, for cnnlab-sync
RERUN_OF_ENV = "CNNLAB_RERUN_OF"  # set by cnnlab-rerun for the sweep it re-runs


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


class TrackedRun:
    """One MLflow run in the store at `uri`: open it, log into it, end it."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self._client = client(uri)
        self.outbox = None  # a MetricOutbox while Lightning logs into this run
        self.files_at_end: Optional[Callable[[], list[Path]]] = (
            None  # logs to attach however the run ends (a SLURM job's)
        )

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def start(
        cls, uri: str, experiment_name: str, run_name: str, tags: dict[str, str], parent_run_id: Optional[str] = None
    ) -> "TrackedRun":
        """A new RUNNING run with cnnlab's standard tags (git state, command line, user, environment) and `tags`."""
        experiment_id = get_or_create_experiment(uri, experiment_name)
        all_tags = {
            **git_state(project_root()),
            **environment_tags(),
            "cnnlab.command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "mlflow.source.name": Path(sys.argv[0]).name,
            "mlflow.user": os.environ.get("USER", "cnnlab"),
            **tags,
        }
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if os.environ.get("DVC_EXP_NAME"):  # a DVC experiment: `dvc exp show` lists it by this name
            all_tags["cnnlab.dvc_experiment"] = os.environ["DVC_EXP_NAME"]
            all_tags["cnnlab.dvc_baseline_rev"] = os.environ.get("DVC_EXP_BASELINE_REV", "unknown")
        if os.environ.get(RERUN_OF_ENV):  # cnnlab-rerun of a sweep: its new parent and children say what they re-run
            all_tags.setdefault("cnnlab.rerun_of", os.environ[RERUN_OF_ENV])
        all_tags = {key: redact(str(value)) for key, value in all_tags.items()}
        mlflow_client = client(uri)
        run = with_retry(
            lambda: mlflow_client.create_run(experiment_id, run_name=run_name, tags=all_tags), what="create run"
        )
        return cls(uri, run.info.run_id)

    @classmethod
    def reopen(cls, uri: str, run_id: str) -> "TrackedRun":
        """An interrupted run, RUNNING again and tagged `cnnlab.resumed`; its step axis continues."""
        run = cls(uri, run_id)
        with_retry(lambda: run._client.update_run(run_id, status="RUNNING"), what="reopen run")
        run.set_tags({"cnnlab.resumed": "true"})
        return run

    @classmethod
    def find(cls, uri: str, run_id: Optional[str]) -> Optional["TrackedRun"]:
        """The run `run_id` if the store at `uri` has it (its status unchanged), else None."""
        if not run_id:
            return None
        run = cls(uri, run_id)
        try:
            run._client.get_run(run_id)
        except Exception:  # MlflowException: RESOURCE_DOES_NOT_EXIST, or a store without it
            return None
        return run

    # ---- content ------------------------------------------------------------------------------
    @property
    def tags(self) -> dict[str, str]:
        return self._client.get_run(self.run_id).data.tags

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            with_retry(lambda: self._client.set_tag(self.run_id, key, redact(str(value))), what="tag run")

    def log_params(self, params: dict[str, str]) -> None:
        items = [Param(k, redact(str(v))) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            batch = items[start : start + 100]
            with_retry(lambda: self._client.log_batch(self.run_id, params=batch), what="log params")

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        with_retry(lambda: self._client.log_batch(self.run_id, metrics=items), what="log metrics")

    def log_metric_points(self, points: list[Metric]) -> None:
        """Metric points as they were recorded (their own timestamps and steps), a thousand at a time."""
        for start in range(0, len(points), 1000):
            batch = points[start : start + 1000]
            with_retry(lambda: self._client.log_batch(self.run_id, metrics=batch), what="log metrics")

    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None:
        with_retry(lambda: self._client.log_artifact(self.run_id, str(path), artifact_path), what="log artifact")

    def log_dataset(
        self, prepared_dir: Path, meta: dict, context: str, splits: tuple[str, ...] = ("train", "val", "test")
    ) -> None:
        """The prepared data in `prepared_dir` as this run's dataset input, with context "training" or "evaluation"."""
        dataset = prepared_dataset(prepared_dir, meta, splits)._to_mlflow_entity()
        inputs = [DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])]
        with_retry(lambda: self._client.log_inputs(self.run_id, datasets=inputs), what="log dataset input")

    def log_environment(self, directory: Path) -> None:
        """environment.json (every installed package, the env tags, thread settings) as an artifact."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "environment.json"
        path.write_text(json.dumps(environment_record(), indent=2) + "\n")
        self.log_artifact(path)

    # ---- ending -------------------------------------------------------------------------------
    def end(self, status: str = "FINISHED") -> None:
        for path in self.files_at_end() if self.files_at_end else []:
            try:  # as far as they got: a log file is still being written while its job runs
                self.log_artifact(path, "slurm")
            except Exception as err:
                log.warning("could not attach %s to run %s: %s", path, self.run_id, err)
        if redact(self.uri) == self.uri:
            with_retry(lambda: self._client.set_terminated(self.run_id, status=status), what="end run")
            return
        # MLflow prints "View run ... at <server URL>" with the URL's password in it: print it redacted instead
        with restored_environment(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true"):
            with_retry(lambda: self._client.set_terminated(self.run_id, status=status), what="end run")
        print(f"View run {self.run_id} ({status}) at: {redact(self.uri).rstrip('/')}/#/runs/{self.run_id}")

    @contextlib.contextmanager
    def failed_on_error(self, record_dir: Optional[Path] = None) -> Iterator["TrackedRun"]:
        """End the run if the block raises: KILLED when the process was told to stop (SIGTERM, Ctrl-C),
        FAILED for anything else; never left RUNNING, which the UI would show as live forever.
        With `record_dir`, its run.json says the same status, and what a store that does not answer
        could not take is saved there for `cnnlab-sync`."""
        try:
            yield self
        except BaseException as err:
            status = "KILLED" if stop_signal(err) else "FAILED"
            if record_dir is None:
                self.end(status)
                raise
            try:
                self.close(record_dir, status, wait=10)
            except Exception as close_error:  # never hide the error that ended the run
                log.warning("could not end MLflow run %s as %s: %s", self.run_id, status, close_error)
            raise

    def answers(self) -> bool:
        """Whether the store answers about this run now."""
        try:
            self._client.get_run(self.run_id)
        except Exception:
            return False
        return True

    def close(
        self, record_dir: Path, status: str, wait: float, before_end: Optional[Callable[[], None]] = None
    ) -> bool:
        """Send the last metrics (waiting at most `wait` s for a store that does not answer), run
        `before_end` (the outputs a finished training logs), end the run `status`, and say so in run.json.

        When the store does not answer, what it could not take (metrics, outputs, the status) is saved
        in record_dir for `cnnlab-sync`, a warning says how to send it, and False is returned.
        """
        left = self.outbox.drain(wait) if self.outbox else []
        self.outbox = None
        try:
            if left:
                raise ConnectionError(f"{len(left)} metric points could not be sent")
            if before_end is not None:
                before_end()
            self.end(status)
        except Exception as err:
            if not left and self.answers():
                raise  # the store is there: a real failure, not an outage
            save_pending(record_dir, left, status, outputs_logged=before_end is None)
            write_run_record(record_dir, {**read_run_record(record_dir), "status": status.lower(), "sync": "pending"})
            log.warning(
                "MLflow at %s does not answer (%s): the run's last metrics, outputs and %s status are saved in %s; "
                "send them once it answers with: cnnlab-sync %s",
                redact(self.uri),
                str(err)[:200],
                status,
                record_dir / PENDING_FILE,
                record_dir,
            )
            return False
        record = {key: value for key, value in read_run_record(record_dir).items() if key != "sync"}
        write_run_record(record_dir, {**record, "status": status.lower()})
        (Path(record_dir) / PENDING_FILE).unlink(missing_ok=True)
        return True

    # ---- what training attaches ---------------------------------------------------------------
    def lightning_logger(self, experiment_name: str):
        """Lightning's MLflow logger for this run: metrics through the run's outbox (batched, sent from a
        background thread, kept while the store is away); the run's status stays TrackedRun's."""
        self.outbox = metric_outbox(self.uri, self.run_id)
        return OutboxLogger(
            experiment_name=experiment_name,
            run_id=self.run_id,
            tracking_uri=self.uri,
            log_model=False,
            outbox=self.outbox,
        )

    @contextlib.contextmanager
    def system_metrics(self, interval: float, resume: bool) -> Iterator[None]:
        """MLflow's sampler of CPU, memory (and GPU with pynvml) into this run while the block runs."""
        monitor = SystemMetricsMonitor(
            self.run_id, sampling_interval=interval, tracking_uri=self.uri, resume_logging=resume
        )
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()


# ---- the run record of a training output directory -----------------------------------------------
def write_run_record(output_dir: Path, record: dict) -> None:
    """run.json, credentials redacted (it is logged as an artifact); the URI to connect with is the config's.

    Paths inside the project are kept relative to its root and the project's own SQLite store is not
    named (readers: `cnnlab.paths.from_root`, the configured store), so a clone anywhere writes the same file.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    if "tracking_uri" in record:
        record = {**record, "tracking_uri": recorded_uri(record["tracking_uri"])}
    temporary = output_dir / f".{RUN_RECORD}.tmp-{os.getpid()}"
    try:  # renamed into place: a full disk leaves the previous run.json, never half of one
        temporary.write_text(redact(json.dumps(portable(record), indent=2)) + "\n")
        os.replace(temporary, output_dir / RUN_RECORD)
    finally:
        temporary.unlink(missing_ok=True)


class PendingPoint(BaseModel):
    """One metric point of mlflow_pending.json, as MLflow's Metric takes it."""

    model_config = ConfigDict(extra="forbid", strict=True)
    key: str
    value: float
    timestamp: int
    step: int

    @field_validator("key")
    @classmethod
    def _mlflow_key(cls, key: str) -> str:
        try:
            _validate_metric_name(key)
        except MlflowException:
            raise ValueError(f"{key!r} is not a metric name MLflow takes") from None
        return key


class Pending(BaseModel):
    """mlflow_pending.json: what `save_pending` kept. Only a final status: sync never reopens a run."""

    model_config = ConfigDict(extra="forbid", strict=True)
    status: Literal["FINISHED", "FAILED", "KILLED"]
    outputs_logged: bool
    metrics: list[PendingPoint]


def read_pending(record_dir: Path) -> Pending:
    """mlflow_pending.json of `record_dir`, held to its schema; ConfigError naming the file when it is not."""
    path = Path(record_dir) / PENDING_FILE
    try:
        return Pending.model_validate_json(path.read_bytes())
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            f"{path} is not a pending file cnnlab-train wrote ({where + ': ' if where else ''}{first['msg']}; "
            f"{err.error_count()} problem(s)); expected status FINISHED, FAILED or KILLED, outputs_logged true or "
            "false, and metrics [{key, value, timestamp, step}]. Nothing was sent"
        ) from None


def save_pending(record_dir: Path, points: list, status: str, outputs_logged: bool) -> None:
    """Metric points, whether the outputs still need logging, and the final status that the store
    could not take, for `cnnlab-sync` (points from an earlier save stay first, in order)."""
    path = Path(record_dir) / PENDING_FILE
    earlier = [point.model_dump() for point in read_pending(record_dir).metrics] if path.is_file() else []
    metrics = earlier + [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in points]
    path.write_text(json.dumps({"status": status, "outputs_logged": outputs_logged, "metrics": metrics}) + "\n")


def read_run_record(directory: Path) -> dict:
    """run.json of a training output directory ({} when there is none); ConfigError naming it when it is
    not a JSON object."""
    path = Path(directory) / RUN_RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err}); it is the run record cnnlab-train writes") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path} holds a JSON {type(record).__name__}, not the object cnnlab-train writes")
    return record
