"""What every task shares: backbone from config, optimiser and schedule from config, test report."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate


class CNNTask(pl.LightningModule):
    """Base LightningModule. Subclasses add heads, losses, metrics and `write_test_report`.

    Arguments are plain dicts and lists (saved as hyperparameters), so `load_from_checkpoint`
    rebuilds the exact network without the Hydra config. Shared by every task: `label_smoothing` of
    the class cross-entropy, and `channels_last`, which feeds the network NHWC images (the same
    numbers; oneDNN's depthwise convolutions, as in MobileNet and EfficientNet, run 1.4-1.6x faster on CPU).
    """

    def __init__(
        self,
        model: dict,
        num_classes: int,
        in_channels: int,
        image_size: int,
        optimizer: dict,
        scheduler: Optional[dict] = None,
        class_names: Optional[list[str]] = None,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = self.build_backbone()
        self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)
        self.epoch_history: list[dict[str, float]] = []  # per-epoch metrics, written as history.csv

    def on_train_epoch_end(self) -> None:
        # validation has run by now (Lightning 2), so the epoch's val/ metrics are here too
        row = {"epoch": self.current_epoch}
        for key, value in self.trainer.callback_metrics.items():
            if value.numel() == 1 and (key.startswith("val/") or key.endswith("_epoch")):
                row[key.replace("_epoch", "")] = round(float(value), 6)
        self.epoch_history.append(row)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["cnnlab_epoch_history"] = self.epoch_history

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a resumed run's history.csv keeps the epochs before the interruption
        self.epoch_history = list(checkpoint.get("cnnlab_epoch_history", []))

    def build_backbone(self, num_classes: Optional[int] = None) -> torch.nn.Module:
        hp = self.hparams
        return instantiate(
            hp.model, num_classes=num_classes or hp.num_classes, in_channels=hp.in_channels, image_size=hp.image_size
        )

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the memory format the network runs in."""
        if self.hparams.get("channels_last", False):
            return images.contiguous(memory_format=torch.channels_last)
        return images

    # ---- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer, params=self.parameters())
        spec = self.hparams.scheduler or {}
        if not spec.get("scheduler"):
            return optimizer
        scheduler_cfg = dict(spec["scheduler"])
        accepted = inspect.signature(get_class(scheduler_cfg["_target_"])).parameters
        steps = int(self.trainer.estimated_stepping_batches)
        epochs = int(self.trainer.max_epochs or 1)
        interval = spec.get("interval", "step")
        # lengths a schedule needs but only the trainer knows
        runtime = {"total_steps": steps, "T_max": steps if interval == "step" else epochs}
        extra = {k: v for k, v in runtime.items() if k in accepted and k not in scheduler_cfg}
        scheduler = instantiate(scheduler_cfg, optimizer=optimizer, **extra)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # ---- helpers for subclasses ---------------------------------------------------------------
    def denormalize(self, images: torch.Tensor) -> np.ndarray:
        """Network inputs back to N x H x W x C uint8 for pictures."""
        mean = torch.tensor(self.hparams.mean or [0.0] * images.shape[1]).view(1, -1, 1, 1)
        std = torch.tensor(self.hparams.std or [1.0] * images.shape[1]).view(1, -1, 1, 1)
        pixels = (images.detach().cpu().float() * std + mean).clamp(0, 1) * 255
        return pixels.round().byte().permute(0, 2, 3, 1).numpy()

    def write_test_report(self, directory: Path) -> dict[str, Path]:
        """After `trainer.test`: write the task's plots and tables; returns {name: path}."""
        return {}
