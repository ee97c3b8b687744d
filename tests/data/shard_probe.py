"""A callback that records which samples each rank trained on (data.storage=shards), for the exactly-once tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytorch_lightning as pl

from cnnlab.data.preprocess import PADDING


class RecordSamples(pl.Callback):
    """Writes <directory>/rank<r>.json: per epoch, a digest of every image the rank trained on (augment=none: the
    image identifies its sample), its steps, and how many of them were padding."""

    def __init__(self, directory: str):
        self.directory = Path(directory)
        self.epochs: dict[int, dict] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = self.epochs.setdefault(trainer.current_epoch, {"samples": [], "steps": 0, "padding": 0})
        epoch["steps"] += 1
        if batch.get(PADDING):
            epoch["padding"] += 1
            return
        images = batch["image"].detach().cpu().numpy()
        epoch["samples"] += [hashlib.sha1(image.round(4).tobytes()).hexdigest()[:16] for image in images]

    def on_train_end(self, trainer, pl_module) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.epochs))


def read_ranks(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(directory).glob("rank*.json"))]
