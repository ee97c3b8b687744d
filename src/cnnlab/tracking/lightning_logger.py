"""Lightning's MLflow logger, as cnnlab runs it: metrics through a `MetricOutbox`, status left to TrackedRun."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from mlflow.entities import Metric
from pytorch_lightning import Callback
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from cnnlab.tracking.outbox import MetricOutbox
from cnnlab.tracking.store import client, redact, with_retry

log = logging.getLogger(__name__)


def metric_outbox(uri: str, run_id: str) -> MetricOutbox:
    """An outbox posting to run `run_id` of the store at `uri` (its own client: it sends from its own thread)."""
    sender = client(uri)
    return MetricOutbox(
        lambda points: with_retry(lambda: sender.log_batch(run_id, metrics=points), what="log metrics"),
        where=redact(uri),
    )


class OutboxLogger(MLFlowLogger):
    """Metrics go to the run's outbox (batched, sent from a background thread, kept while the store is
    away). Lightning's finalize would end the run FINISHED before its outputs are logged: the run's
    status is TrackedRun's. Spawned DDP ranks (ddp_spawn) get a copy without the outbox and open
    their own, which they drain when Lightning finalizes them."""

    def __init__(self, *args, outbox: Optional[MetricOutbox] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._outbox, self._owns_outbox = outbox, False

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state.update(_outbox=None, _owns_outbox=False)  # threads and locks do not cross processes
        return state

    @property
    def outbox(self) -> MetricOutbox:
        if self._outbox is None:
            self._outbox, self._owns_outbox = metric_outbox(self._tracking_uri, self.run_id), True
        return self._outbox

    @rank_zero_only
    def log_metrics(self, metrics, step=None) -> None:
        now = int(time.time() * 1000)
        self.outbox.add(
            [
                Metric(re.sub("[^a-zA-Z0-9_/. -]+", "", key), float(value), now, step or 0)
                for key, value in metrics.items()
                if not isinstance(value, str)
            ]
        )

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """The task's own arguments only (num_classes, class_names, mean ...): the nested ones (model,
        optimizer, scheduler) are the config cnnlab logged as `optimizer.lr`, and Lightning's "/" flattening
        would show each twice (`optimizer/lr` beside `optimizer.lr`)."""
        params = params if isinstance(params, Mapping) else vars(params)
        try:
            super().log_hyperparams({key: value for key, value in params.items() if not isinstance(value, Mapping)})
        except Exception as err:  # the store is away: the flattened config went in at the start already
            log.warning("hyperparameters not logged to MLflow (%s); they are in config.yaml", str(err)[:200])

    # No send at a checkpoint: the outbox sends every `interval` s and drains at the end, also on
    # SIGTERM and Ctrl-C. A send per epoch (40 SQLite transactions in the default recipe's 7 s fit,
    # synchronous at first, then woken in the sender thread) cost 0.5 ms per training step. What a
    # killed process had not sent travels in its checkpoint instead (UnsentMetrics).

    def unsent(self) -> list[list]:
        """[key, value, timestamp, step] of each point the store has not confirmed (none without an outbox)."""
        return (
            [[m.key, m.value, m.timestamp, m.step] for m in self._outbox.unsent()] if self._outbox is not None else []
        )

    def send_missing(self, points: list[list]) -> int:
        """Queue those of `points` that the run does not hold yet (same key, step and timestamp); returns how many."""
        missing = points
        try:
            held = set()
            for key in {point[0] for point in points}:
                history = with_retry(lambda: self.experiment.get_metric_history(self.run_id, key), what="read metrics")
                held |= {(key, m.step, m.timestamp) for m in history}
            missing = [p for p in points if (p[0], p[3], p[2]) not in held]
        except Exception as err:  # the store does not answer now: better a point twice than lost
            log.warning(
                "could not read the run's metrics back (%s); re-sending the %d kept in the checkpoint",
                str(err)[:200],
                len(points),
            )
        self.outbox.add(
            [Metric(key, float(value), int(timestamp), int(step)) for key, value, timestamp, step in missing]
        )
        return len(missing)

    def finalize(self, status: str = "success") -> None:
        if self._owns_outbox and self._outbox is not None:
            left = self._outbox.drain(60)
            if left:
                log.warning("MLflow did not answer: %d metric points of this process were not sent", len(left))
            self._outbox = None


class UnsentMetrics(Callback):
    """At each checkpoint, the metric points the store has not confirmed yet go to `<output dir>/unsent_metrics.json`;
    a run resumed from that checkpoint sends those the store lacks. A process killed without cleanup (SIGKILL, out
    of memory, a lost node) loses what its outbox held, up to 2 s of points; resumed, the run still has every epoch
    once. Beside the checkpoint, not in it: the points carry wall-clock times, and a checkpoint must be the same
    bytes for the same training (DVC versions it). A finished fit removes the file."""

    FILE = "unsent_metrics.json"
    KEY = "cnnlab_unsent_metrics"  # where checkpoints of earlier cnnlab versions kept them

    def __init__(self, logger: OutboxLogger, directory: Path):
        self.logger, self.path = logger, Path(directory) / self.FILE

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.is_global_zero:
            partial = self.path.with_name(f".{self.FILE}.tmp")
            partial.write_text(json.dumps(self.logger.unsent()), encoding="utf-8")
            os.replace(partial, self.path)  # a kill mid-write leaves the last whole list

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        points = checkpoint.get(self.KEY) or []
        if self.path.is_file():
            try:
                points = points + _metric_points(json.loads(self.path.read_text(encoding="utf-8")), self.path)
            except (OSError, ValueError) as err:
                log.warning(
                    "%s is unreadable (%s): metric points a killed process had not sent may be missing", self.path, err
                )
        if points and trainer.is_global_zero:
            sent = self.logger.send_missing(points)
            if sent:
                log.info("resumed: %d metric points the killed process had not sent go to the run now", sent)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.path.unlink(missing_ok=True)


_METRIC_KEY = re.compile(r"[a-zA-Z0-9_/. -]+")  # what OutboxLogger.log_metrics writes


def _metric_points(data, path: Path) -> list[list]:
    """The [key, value, timestamp, step] points of a file written by UnsentMetrics; anything else is dropped
    (data read back from a file decides nothing but which points to send)."""
    points = data if isinstance(data, list) else []
    valid = [
        p
        for p in points
        if isinstance(p, list)
        and len(p) == 4
        and isinstance(p[0], str)
        and _METRIC_KEY.fullmatch(p[0])
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p[1:])
    ]
    if len(valid) != len(points) or not isinstance(data, list):
        log.warning("%s: %d entries are not metric points and were left out", path, len(points) - len(valid) or 1)
    return valid
