"""SIGTERM stops a fit wherever it lands: during fit's setup, before Lightning has installed its own handler
(the `docker stop` the container test once saw train on to SIGKILL), and during training, at the next batch."""

from __future__ import annotations

import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException

from cnnlab.stopping import stop_on_sigterm


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(64, 2)), batch_size=4)


class TermAt(pl.Callback):
    """SIGTERM this process in the named hook."""

    def __init__(self, hook: str):
        setattr(self, hook, self._term)

    def _term(self, *args, **kwargs) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def _fit(hook: str) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=50,
        callbacks=[TermAt(hook)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with stop_on_sigterm(), pytest.raises(SIGTERMException):
        trainer.fit(Tiny())
    return trainer


@pytest.mark.parametrize("hook", ["setup", "on_fit_start"])
def test_a_sigterm_during_fits_setup_stops_before_any_step(hook):
    assert _fit(hook).global_step == 0


def test_a_sigterm_during_training_stops_at_the_next_batch():
    assert _fit("on_train_batch_start").global_step <= 1  # 16 batches an epoch, 50 epochs


def test_the_previous_handler_is_back_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_sigterm():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
