"""A callback that holds training at a step until the scheduler's signal has been handled: so a
test can signal, requeue or cancel a job at a known point (an epoch and a half in)."""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl


class HoldAtStep(pl.Callback):
    """At optimiser step `step`, once (the `marker` file says it happened): write `marker`, then wait
    until a SIGTERM reached Lightning (requeue, scancel, time limit), at most `seconds`."""

    def __init__(self, step: int, marker: str, seconds: float = 240):
        self.step, self.marker, self.seconds = step, Path(marker), seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step != self.step or self.marker.exists():
            return
        self.marker.write_text(str(trainer.global_step))
        deadline = time.monotonic() + self.seconds
        while not trainer._signal_connector.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.1)
