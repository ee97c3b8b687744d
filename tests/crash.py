"""A callback that kills its own process, to test resuming after a real crash (no clean-up runs)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillAtStep(pl.Callback):
    """SIGKILL this process when the optimiser has taken `step` steps: what an OOM kill or a pulled plug does."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # a fresh fit only: a resume replays the run's overrides, this callback among them
        if trainer.ckpt_path is None and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class RaiseAtStep(pl.Callback):
    """Raise an ordinary error when the optimiser has taken `step` steps: a crash after the run opened."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")
