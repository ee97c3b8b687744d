"""Per-epoch seeding: every epoch's randomness (shuffle, augmentation, dropout, mixup) from (seed, epoch).

The data side (`EpochShuffleSampler`) and the model side (the `EpochSeed` callback, configured in
conf/callbacks) draw from the same `epoch_seed`, so a resumed run retraces the uninterrupted one.
"""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a function of the run's seed and the epoch number only."""
    return (seed * 1_000_003 + epoch) % (2**31 - 1)


class EpochSeed(pl.Callback):
    """Reseed every random source at the start of each training epoch.

    Seeding once at start-up makes a run reproducible only from its beginning; a run resumed
    from a checkpoint would draw different dropout masks, mixup weights, shuffles and
    augmentations from there on. Seeding per epoch makes epoch k the same whether the run got
    there directly or through a resume. The data side (sampler order and augmentation) follows
    the same epoch seed through `set_epoch`, which Lightning calls on the sampler.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = epoch_seed(self.seed, trainer.current_epoch) + trainer.global_rank
        if pl_module.device.type == "cpu":
            # the CPU generator is the only one a CPU run draws from; torch.manual_seed also queues a seed for
            # each accelerator not yet initialised, formatting a stack trace each time (2 ms an epoch)
            torch.default_generator.manual_seed(value)
        else:
            torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)
