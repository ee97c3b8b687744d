"""The one owner of an MLflow run's lifecycle.

Opening (a new run, a sweep's child, or an interrupted run reopened to resume), tags, params,
the outputs logged at the end, and the final status (FINISHED, or FAILED when anything raised:
a run is never left RUNNING). Training, evaluation and sweeps go through `TrackedRun`; nothing else
sets a run's state. The run record `run.json` in a training output directory ties the directory
to its run, so resume and evaluate find it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

from cnnlab.paths import project_root
from cnnlab.tracking.store import client, flatten, get_or_create_experiment, redact, with_retry

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"  # in a training output directory: the run id, store and summary
PENDING_FILE = "mlflow_pending.json"  # beside it: what an unreachable store could not take, for cnnlab-sync
PARENT_RUN_FILE = "mlflow_parent_run.json"  # in a Hydra sweep dir: the sweep's parent run
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
        from cnnlab.tracking.environment import environment_tags

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
    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            with_retry(lambda: self._client.set_tag(self.run_id, key, redact(str(value))), what="tag run")

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(str(v))) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's batch limit
            batch = items[start : start + 100]
            with_retry(lambda: self._client.log_batch(self.run_id, params=batch), what="log params")

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        with_retry(lambda: self._client.log_batch(self.run_id, metrics=items), what="log metrics")

    def log_artifact(self, path: Path, artifact_path: Optional[str] = None) -> None:
        with_retry(lambda: self._client.log_artifact(self.run_id, str(path), artifact_path), what="log artifact")

    def log_dataset(
        self, prepared_dir: Path, meta: dict, context: str, splits: tuple[str, ...] = ("train", "val", "test")
    ) -> None:
        """The prepared data in `prepared_dir` as this run's dataset input, with context "training" or "evaluation"."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        from cnnlab.tracking.datasets import prepared_dataset

        dataset = prepared_dataset(prepared_dir, meta, splits)._to_mlflow_entity()
        inputs = [DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])]
        with_retry(lambda: self._client.log_inputs(self.run_id, datasets=inputs), what="log dataset input")

    def log_environment(self, directory: Path) -> None:
        """environment.json (every installed package, the env tags, thread settings) as an artifact."""
        from cnnlab.tracking.environment import environment_record

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
        with _environment(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true"):
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
            status = "KILLED" if is_termination(err) else "FAILED"
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
        from cnnlab.tracking.lightning_logger import OutboxLogger, metric_outbox

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
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            self.run_id, sampling_interval=interval, tracking_uri=self.uri, resume_logging=resume
        )
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_termination(err: BaseException) -> bool:
    """The process was asked to stop: Ctrl-C, or SIGTERM (Lightning raises SIGTERMException, a SystemExit)."""
    return isinstance(err, KeyboardInterrupt) or type(err).__name__ == "SIGTERMException"


# ---- the run record of a training output directory -----------------------------------------------
def write_run_record(output_dir: Path, record: dict) -> None:
    """run.json, credentials redacted (it is logged as an artifact); the URI to connect with is the config's."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / RUN_RECORD).write_text(redact(json.dumps(record, indent=2)) + "\n")


def redact_saved_config(output_dir: Path) -> None:
    """Hydra saves the command line and config under <output dir>/.hydra before a job starts: redact them too."""
    for path in (output_dir / ".hydra").glob("*.yaml"):
        text = path.read_text()
        if redact(text) != text:
            path.write_text(redact(text))


def save_pending(record_dir: Path, points: list, status: str, outputs_logged: bool) -> None:
    """Metric points, whether the outputs still need logging, and the final status that the store
    could not take, for `cnnlab-sync` (points from an earlier save stay first, in order)."""
    path = Path(record_dir) / PENDING_FILE
    earlier = json.loads(path.read_text())["metrics"] if path.is_file() else []
    metrics = earlier + [{"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step} for m in points]
    path.write_text(json.dumps({"status": status, "outputs_logged": outputs_logged, "metrics": metrics}) + "\n")


def read_run_record(directory: Path) -> dict:
    """run.json of a training output directory ({} when there is none)."""
    path = Path(directory) / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


# ---- training -----------------------------------------------------------------------------------
def training_run_name(cfg, job_num: Optional[int]) -> str:
    """logger.run_name, else the DVC experiment's name, else <model>-<data>[-<job number in a sweep>]."""
    if cfg.logger.get("run_name"):
        return cfg.logger.run_name
    if os.environ.get("DVC_EXP_NAME") and job_num is None:
        return os.environ["DVC_EXP_NAME"]
    name = f"{cfg.model.name}-{cfg.data.name}"
    return name if job_num is None else f"{name}-{job_num}"


def find_parent_run(sweep_dir: Path) -> Optional[str]:
    """The parent run a Hydra sweep created (see sweep.MLflowSweepCallback), if any."""
    marker = Path(sweep_dir) / PARENT_RUN_FILE
    if marker.is_file():
        return json.loads(marker.read_text())["run_id"]
    return os.environ.get("CNNLAB_PARENT_RUN_ID")


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
    from omegaconf import OmegaConf

    from cnnlab import slurm

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
        parent = find_parent_run(sweep_dir) if sweep_dir else None
        run = TrackedRun.start(uri, cfg.logger.experiment_name, training_run_name(cfg, job_num), tags, parent)
        with run.failed_on_error():
            run.log_params({**flatten(OmegaConf.to_container(cfg, resolve=True)), **(params or {})})
            run.log_dataset(Path(cfg.data.prepared_dir), meta, "training")
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
    from omegaconf import OmegaConf

    from cnnlab.config import ConfigError
    from cnnlab.tracking.store import resolve_tracking_uri

    output_dir = Path(output_dir)
    pending_path, record = output_dir / PENDING_FILE, read_run_record(output_dir)
    if not record.get("run_id"):
        raise FileNotFoundError(
            f"{output_dir / RUN_RECORD} names no MLflow run: is {output_dir} a cnnlab-train output directory?"
        )
    if not pending_path.is_file():
        raise FileNotFoundError(f"nothing to sync in {output_dir}: no {PENDING_FILE} (everything reached MLflow)")
    pending = json.loads(pending_path.read_text())
    cfg = OmegaConf.load(output_dir / "config.yaml")
    uri = uri or resolve_tracking_uri(None if "***@" in str(cfg.logger.tracking_uri) else cfg.logger.tracking_uri)
    run = TrackedRun.find(uri, record["run_id"])
    if run is None:
        raise ConfigError(
            f"MLflow at {redact(uri)} has no run {record['run_id']} (or does not answer); it must be the store the "
            "training logged to"
        )
    from mlflow.entities import Metric

    points = [Metric(m["key"], m["value"], m["timestamp"], m["step"]) for m in pending["metrics"]]
    for start in range(0, len(points), 1000):
        with_retry(lambda: run._client.log_batch(run.run_id, metrics=points[start : start + 1000]), what="log metrics")
    pending_path.write_text(json.dumps({**pending, "metrics": []}) + "\n")  # sent: never twice
    before_end = None
    if not pending.get("outputs_logged", True):
        from hydra.utils import get_class

        from cnnlab.data.datamodule import datamodule_from_config, network_normalization

        task_class = get_class(cfg.task.module._target_)
        task = task_class.load_from_checkpoint(record["best_checkpoint"], map_location="cpu")
        datamodule = datamodule_from_config(cfg, task_class.labels, normalization=network_normalization(task))
        before_end = lambda: log_training_outputs(run, cfg, output_dir, record, datamodule, task)  # noqa: E731
    if not run.close(output_dir, pending["status"], wait=0, before_end=before_end):
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
        run.log_artifact(Path(summary["best_checkpoint"]), "checkpoints")
    run.log_metrics({f"best/{summary['monitor']}": summary["best_score"], "train_seconds": summary["train_seconds"]})
    if cfg.augment.get("preview") and cfg.augment.train:
        from cnnlab.viz.augment import plot_augmentation_preview

        run.log_artifact(
            plot_augmentation_preview(
                datamodule.dataset("train", augment=True), task, output_dir / "augmentation_preview.png"
            )
        )
    if cfg.logger.log_model and summary["best_checkpoint"]:
        from cnnlab.tracking.model_registry import example_inputs, log_model, registered_model_name

        best = type(task).load_from_checkpoint(summary["best_checkpoint"], map_location="cpu")
        register_name = registered_model_name(task.name, cfg.model.name) if cfg.register else None
        log_model(
            run.uri, run.run_id, best, register_name, example=example_inputs(datamodule.dataset("val", augment=False))
        )


# ---- evaluation ---------------------------------------------------------------------------------
def log_evaluation(cfg, run_info: dict, metrics: dict[str, float], files: list[Path], prepared=None) -> None:
    """Test metrics and plots go into the training's run, so one run holds the whole result; a
    training whose run is not in this store gets a small "evaluate" run of its own instead.
    `prepared` (the PreparedDataset evaluated on) becomes the run's "evaluation" dataset input."""
    from cnnlab.tracking.store import resolve_tracking_uri

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
        from cnnlab.tracking.model_registry import held_out_metric, promote_run_model

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
