"""A callback that sends its own process SIGTERM, as a scheduler, `docker stop` or `kill` would."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class TermAtStep(pl.Callback):
    """SIGTERM this process when the optimiser has taken `step` steps."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # a fresh fit only: a resume replays the run's overrides, this callback among them
        if trainer.ckpt_path is None and trainer.global_step == self.step and not trainer.received_sigterm:
            os.kill(os.getpid(), signal.SIGTERM)
