"""Freezing and fine-tuning by config (`finetune.*`), on Lightning's BaseFinetuning.

  finetune.freeze=none        everything trains (the default)
  finetune.freeze=backbone    the body (everything the deepest feature map depends on) is frozen:
                              features extracted, only the head (and a task's own heads) train
  finetune.freeze=stageK      the stem and stages 1..K are frozen; deeper stages and the head train
  finetune.unfreeze_at_epoch  at the start of this epoch the frozen part trains again (null: never)
  finetune.backbone_lr        the body's learning rate (null: optimizer.lr x finetune.backbone_lr_mult)

Every parameter is in the optimizer from the start, in two groups ("head" at optimizer.lr and
"backbone" at the body's rate) when the rates differ: a frozen parameter gets no gradient, so the
optimizer leaves it alone (no weight decay either), and unfreezing needs no new param group, which
the LR schedulers (OneCycle's per-group state) would not know. Frozen BatchNorm layers run in eval
mode: their running statistics stay as loaded, and they normalise with them, as at inference.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from pytorch_lightning.callbacks import BaseFinetuning
from torch import nn

from cnnlab.models.stages import modules_owning, parameters_up_to, stage_index

log = logging.getLogger(__name__)


def frozen_parameter_names(backbone: nn.Module, freeze: str, example: torch.Tensor) -> set[str]:
    """The backbone parameters `finetune.freeze=<freeze>` freezes (ConfigError listing the valid stages)."""
    if freeze == "none":
        return set()
    stage = -1 if freeze == "backbone" else stage_index(backbone, freeze, "finetune.freeze")
    return parameters_up_to(backbone, stage, example)


class Finetuning(BaseFinetuning):
    """Freezes `freeze` of the task's backbone before training; unfreezes it at `unfreeze_at_epoch`.

    `names`: the frozen parameter names when the caller has them already (`frozen_parameter_names`
    traces the backbone; training does it once, to log the counts before the run opens)."""

    def __init__(self, freeze: str = "none", unfreeze_at_epoch: Optional[int] = None, names: Optional[set[str]] = None):
        super().__init__()
        self.freeze_mode, self.unfreeze_at_epoch, self.names = freeze, unfreeze_at_epoch, names
        self.frozen: list[nn.Module] = []
        self.counts: dict[str, int] = {}

    def freeze_before_training(self, pl_module) -> None:
        backbone = pl_module.backbone
        names = (
            self.names
            if self.names is not None
            else frozen_parameter_names(backbone, self.freeze_mode, pl_module.example_input_array)
        )
        self.frozen = modules_owning(backbone, names)
        self.freeze(self.frozen, train_bn=False)
        for module in self.frozen:  # Lightning's freeze makes BN use batch statistics; here they stay the loaded ones
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.track_running_stats = True
        self.counts = parameter_counts(pl_module)
        log.info(
            "finetune.freeze=%s: %d parameters frozen, %d trainable",
            self.freeze_mode,
            self.counts["frozen"],
            self.counts["trainable"],
        )

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        if self.frozen and self.unfreeze_at_epoch is not None and epoch >= self.unfreeze_at_epoch:
            self.make_trainable(self.frozen)
            log.info("epoch %d: unfroze %d modules (finetune.unfreeze_at_epoch)", epoch, len(self.frozen))
            self.frozen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Lightning puts the whole module in train mode at each epoch and after validation
        for module in self.frozen:
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """Trainable and frozen parameter counts (elements)."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"trainable": trainable, "frozen": sum(p.numel() for p in module.parameters()) - trainable}
