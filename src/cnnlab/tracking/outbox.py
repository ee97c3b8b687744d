"""Metric points on their way to an MLflow run: sent in batches from a background thread, kept while
the tracking store does not answer, so training neither waits on MLflow nor stops when it is away.

Training steps only append to a list. A daemon thread sends what has gathered every `interval`
seconds (or at `batch` points) in one `log_batch` call. When the store fails, the points stay,
one warning says so, and the thread tries again every `retry_seconds`; when it answers again, the
kept points go out in order and a second line says how many. `drain` (end of training) waits a
bounded time for the last points; what still could not be sent is handed back to be saved locally.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # MLflow's log_batch limit on metrics per call


class MetricOutbox:
    """A run's outgoing metric points; `send(points)` posts one batch (raises when the store is away)."""

    def __init__(
        self,
        send: Callable[[list], None],
        where: str,
        interval: float = 2.0,
        batch: int = MAX_BATCH,
        retry_seconds: float = 15.0,
    ):
        self._send, self.where = send, where
        self.interval, self.batch, self.retry_seconds = interval, min(batch, MAX_BATCH), retry_seconds
        self._points: list = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.sent = 0
        self.unreachable_since: Optional[float] = None
        self._thread = threading.Thread(target=self._run, name="cnnlab-mlflow-outbox", daemon=True)
        self._thread.start()

    def add(self, points: list) -> None:
        with self._lock:
            self._points.extend(points)
            if len(self._points) >= self.batch:
                self._wake.set()

    def unsent(self) -> list:
        """The points not yet confirmed by the store, oldest first (a send in flight included)."""
        with self._lock:
            return list(self._points)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._points)

    def _send_some(self) -> bool:
        """Send what is kept, in order; False (points kept) if the store does not answer."""
        while True:
            with self._lock:
                chunk = self._points[: self.batch]
            if not chunk:
                return True
            try:
                self._send(chunk)
            except Exception as err:  # a store that is away raises MlflowException, requests' or OSError's kinds
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                    log.warning(
                        "MLflow at %s does not answer (%s): training goes on, its metrics are kept and sent "
                        "when it answers again (retrying every %.0f s)",
                        self.where,
                        reason,
                        self.retry_seconds,
                    )
                return False
            with self._lock:
                del self._points[: len(chunk)]
                self.sent += len(chunk)
            if self.unreachable_since is not None:
                log.warning(
                    "MLflow at %s answers again after %.0f s; sending the metrics kept meanwhile",
                    self.where,
                    time.monotonic() - self.unreachable_since,
                )
                self.unreachable_since = None

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.retry_seconds if self.unreachable_since is not None else self.interval)
            self._wake.clear()
            if not self._closed:
                self._send_some()

    def drain(self, timeout: float) -> list:
        """Send everything now, trying for at most `timeout` seconds; stops the thread and returns the
        points that could not be sent (empty when all went out)."""
        self._closed = True
        self._wake.set()
        self._thread.join()
        deadline = time.monotonic() + timeout
        while not self._send_some() and time.monotonic() < deadline:  # the thread has ended: no other sender
            time.sleep(min(self.retry_seconds, max(0.0, deadline - time.monotonic())))
        with self._lock:
            left, self._points = self._points, []
        return left
