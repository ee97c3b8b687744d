"""What every task shares, and what each task declares about itself.

A task is one class in tasks/<name>.py (plus conf/task/<name>.yaml). Besides its LightningModule
hooks it declares, as class attributes and methods, everything that is particular to it; training,
evaluation, the model registry and prediction read those declarations and never branch on a
task's name:

  name                   the task's name (conf/task/<name>.yaml, registry names)
  labels                 what each sample must carry: "label", "box" and/or "mask" (a dataset serves
                         the task when its reader carries them)
  output                 what the network's `predict` returns, in words: the logged model's contract
  prediction_columns     the columns of cnnlab-predict's CSV between "file" and "error"
  output_classes(meta)   the classes the network outputs, for a prepared dataset's meta
  build_network()        the task's plain network (cnnlab.models.networks): backbone + head, whose
                         `forward` gives the loss its inputs and `predict` what a logged model serves
  prediction_row(...)    one CSV row (and any mask file) from one image's inference output
  write_test_report(dir) evaluation's pictures and tables
  cam_target(out, k)     per image, the score a class-activation map explains for class k (cnnlab-explain)
  cam_prediction(out)    what the network predicted, for the explain pictures: classes, boxes or masks
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from torch import nn

from cnnlab.config import ConfigError
from cnnlab.data.preprocess import PADDING
from cnnlab.models.base import Backbone
from cnnlab.models.networks import ClassificationNetwork, TaskNetwork
from cnnlab.models.stages import parameters_up_to

LABEL_KINDS = {"label": "labels", "box": "boxes", "mask": "masks"}  # what a sample can carry (cnnlab.data.prepared)
LEGACY_PREFIXES = ("backbone.", "head.", "box_head.")  # a task's own modules before they moved into `network`
_TASKS: dict[str, type["CNNTask"]] = {}  # name -> class, filled as task classes are defined


@dataclass
class PredictionInput:
    """What `CNNTask.prediction_row` knows of one input image besides the network's output."""

    height: int  # the input image's own size, for boxes and masks in its pixels
    width: int
    class_names: list[str]
    top_k: int
    save_mask: Callable[[np.ndarray], str]  # writes an H x W class-id mask, returns its path in the CSV


@dataclass
class CamPrediction:
    """What `CNNTask.cam_prediction` reads off a batch's forward output, for cnnlab-explain's pictures.

    `classes` None means the task has no one class per image (segmentation): every class gets a map.
    """

    classes: Optional[torch.Tensor] = None  # N predicted classes
    scores: Optional[torch.Tensor] = None  # N probabilities of those classes
    boxes: Optional[torch.Tensor] = None  # N x 4 normalised x_min, y_min, x_max, y_max
    masks: Optional[torch.Tensor] = None  # N x H x W predicted class ids


class CNNTask(pl.LightningModule):
    """Base LightningModule. Subclasses add their network's head, losses, metrics and the declarations above.

    The trained weights live in `self.network` (a plain nn.Module, what is logged and exported); the task
    adds what training needs around it. Checkpoints written before the network existed (`backbone.*`,
    `head.*`, `box_head.*` keys) still load: their keys are moved under `network.` on load.

    Arguments are plain dicts and lists (saved as hyperparameters), so `load_from_checkpoint`
    rebuilds the exact network without the Hydra config. Shared by every task: `label_smoothing` of
    the class cross-entropy, and `channels_last`, which feeds the network NHWC images (the same
    numbers; oneDNN's depthwise convolutions, as in MobileNet and EfficientNet, run 1.4-1.6x faster on CPU).
    """

    name: ClassVar[str] = ""
    labels: ClassVar[tuple[str, ...]] = ("label",)
    output: ClassVar[str] = ""
    prediction_columns: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "training_step" in cls.__dict__:
            cls.training_step = _skipping_padding(cls.__dict__["training_step"])
        if cls.__dict__.get("name"):  # a subclass that keeps its parent's name does not replace it
            unknown = set(cls.labels) - set(LABEL_KINDS)
            if unknown:
                raise TypeError(f"{cls.__name__}.labels has {sorted(unknown)}; expected some of {list(LABEL_KINDS)}")
            _TASKS[cls.name] = cls

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
        input_spec: Optional[
            dict
        ] = None,  # the prepared data's "input" (Source.input_spec): what prediction reproduces
        backbone_lr: Optional[float] = None,  # the body's own learning rate (finetune.backbone_lr); None: optimizer.lr
    ):
        super().__init__()
        self.save_hyperparameters()
        self.network = self.build_network()
        self.register_load_state_dict_pre_hook(_move_legacy_keys)
        self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)
        self.epoch_history: list[dict[str, float]] = []  # per-epoch metrics, written as history.csv
        self._train_sums: dict[str, torch.Tensor] = {}  # this epoch's batch-size-weighted sums (log_training)
        self._train_samples = 0
        self._per_step: set[str] = set()
        self._padding_step = False

    # ---- training metrics -----------------------------------------------------------------------
    def log_training(
        self, values: dict[str, torch.Tensor], batch_size: int, per_step: tuple[str, ...] = ("train/loss",)
    ) -> None:
        """A training step's metrics: the epoch's mean of each (logged as `<name>` at the epoch's end, and
        `<name>_epoch` for those in `per_step`), and the step's own value of those in `per_step` as
        `<name>_step`, on the steps the logger records (trainer.log_every_n_steps).

        The same metrics Lightning's `self.log(on_step, on_epoch)` gives, at a fraction of the cost: each
        self.log call walks Lightning's result metadata (about 0.3 ms on one core), which at every
        step was a quarter of LeNet-5's step time (benchmarks/overhead.py)."""
        if self._padding_step:  # a DDP rank's filler step (cnnlab.data.shards): no sample of the epoch
            return
        for name, value in values.items():
            weighted = value.detach().float() * batch_size
            self._train_sums[name] = self._train_sums[name] + weighted if name in self._train_sums else weighted
        self._train_samples += batch_size
        self._per_step.update(per_step)
        trainer = self._trainer  # None outside a Trainer (a step called by hand): nothing to log to
        if trainer is not None and (trainer._logger_connector.should_update_logs or trainer.fast_dev_run):
            for name in per_step:
                self.log(f"{name}_step", values[name].detach(), on_step=True, on_epoch=False, prog_bar=True)

    def on_train_epoch_start(self) -> None:
        self._train_sums, self._train_samples = {}, 0

    def on_train_epoch_end(self) -> None:
        # validation has run by now (Lightning 2), so the epoch's val/ metrics are here too
        row: dict[str, float] = {"epoch": self.current_epoch}
        for key, value in self.trainer.callback_metrics.items():
            if value.numel() == 1 and (key.startswith("val/") or key.endswith("_epoch")):  # a task's own self.log too
                row[key.replace("_epoch", "")] = float(value)
        for name, total in self._train_sums.items():
            mean = total / max(self._train_samples, 1)
            self.log(
                f"{name}_epoch" if name in self._per_step else name, mean, on_step=False, on_epoch=True, sync_dist=True
            )
            row[name] = float(mean)
        self.epoch_history.append(row)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["cnnlab_epoch_history"] = self.epoch_history
        # the epoch's training sums so far: a checkpoint taken mid-epoch resumes them (shards' every_n_train_steps)
        checkpoint["cnnlab_train_sums"] = {
            "sums": {name: float(value) for name, value in self._train_sums.items()},
            "samples": self._train_samples,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a resumed run's history.csv keeps the epochs before the interruption
        self.epoch_history = list(checkpoint.get("cnnlab_epoch_history", []))
        sums = checkpoint.get("cnnlab_train_sums") or {}  # an epoch's start resets them: only mid-epoch matters
        self._train_sums = {name: torch.tensor(value) for name, value in (sums.get("sums") or {}).items()}
        self._train_samples = int(sums.get("samples") or 0)

    @property
    def backbone(self) -> Backbone:
        """The network's backbone (what weights, freezing, per-group learning rates and explain/ act on)."""
        return self.network.backbone

    def build_network(self) -> TaskNetwork:
        """The task's network; by default the backbone with its classifier (logits, softmax probabilities)."""
        return ClassificationNetwork(self.build_backbone())

    def forward(self, images: torch.Tensor) -> Any:
        """The network's output for a batch of normalised images (what the loss takes)."""
        return self.network(self.network_input(images))

    def build_backbone(self, num_classes: Optional[int] = None) -> nn.Module:
        hp = self.hparams
        # model.weights says where training starts from (cnnlab.models.weights), not how to build
        spec = {k: v for k, v in hp.model.items() if k != "weights"}
        return instantiate(
            spec, num_classes=num_classes or hp.num_classes, in_channels=hp.in_channels, image_size=hp.image_size
        )

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the memory format the network runs in."""
        if self.hparams.get("channels_last", False):
            return images.contiguous(memory_format=torch.channels_last)
        return images

    # ---- optimisation -------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """One group of all parameters, or with `backbone_lr`, "head" (everything but the body) and "backbone" (the
        body).
        """
        backbone_lr = self.hparams.get("backbone_lr")
        if backbone_lr is None:
            return [{"params": list(self.parameters())}]
        body = {f"network.backbone.{n}" for n in parameters_up_to(self.backbone, -1, self.example_input_array)}
        named = list(self.named_parameters())
        return [
            {"params": [p for n, p in named if n not in body], "name": "head"},
            {"params": [p for n, p in named if n in body], "name": "backbone", "lr": float(backbone_lr)},
        ]

    def configure_optimizers(self) -> Any:
        groups = self.parameter_groups()
        optimizer = instantiate(self.hparams.optimizer, _partial_=True)(groups)  # groups as they are, not as configs
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
        warmup = scheduler_cfg.get("pct_start")
        # OneCycleLR divides by (pct_start x total_steps - 1): a warm-up of exactly one step is a division by zero
        if "total_steps" in extra and warmup is not None and math.isclose(float(warmup) * steps, 1.0):
            raise ConfigError(
                f"scheduler: this run has {steps} optimizer steps, and a warm-up of pct_start={warmup} of them is "
                "exactly one step, which OneCycleLR cannot schedule; train for more epochs or batches, or use "
                "scheduler=none"
            )
        if len(groups) > 1 and "max_lr" in scheduler_cfg:  # OneCycle: each group peaks at its own rate
            base, peak = float(self.hparams.optimizer["lr"]), float(scheduler_cfg.pop("max_lr"))
            extra["max_lr"] = [peak * g["lr"] / base for g in optimizer.param_groups]
        scheduler = instantiate(scheduler_cfg, _partial_=True)(optimizer=optimizer, **extra)  # lists stay lists
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}

    # ---- helpers for subclasses ---------------------------------------------------------------
    def denormalize(self, images: torch.Tensor) -> np.ndarray:
        """Network inputs back to N x H x W x C uint8 for pictures."""
        mean = torch.tensor(self.hparams.mean or [0.0] * images.shape[1]).view(1, -1, 1, 1)
        std = torch.tensor(self.hparams.std or [1.0] * images.shape[1]).view(1, -1, 1, 1)
        pixels = (images.detach().cpu().float() * std + mean).clamp(0, 1) * 255
        return pixels.round().byte().permute(0, 2, 3, 1).numpy()

    # ---- what the task declares ----------------------------------------------------------------
    @classmethod
    def output_classes(cls, meta: dict) -> list[str]:
        """The classes the network outputs, for a prepared dataset's meta (its `classes` by default)."""
        return list(meta["classes"])

    @property
    def class_names(self) -> list[str]:
        return list(self.hparams.class_names or [str(i) for i in range(self.hparams.num_classes)])

    def model_metadata(self) -> dict:
        """Task-specific entries of a logged model's cnnlab metadata (beyond the common ones)."""
        return {}

    @classmethod
    def prediction_row(cls, output: np.ndarray, image: PredictionInput) -> dict[str, str]:
        """The `prediction_columns` of one image from its row of the network's `predict` output."""
        raise NotImplementedError

    def write_test_report(self, directory: Path) -> dict[str, Path]:
        """After `trainer.test`: write the task's plots and tables; returns {name: path}."""
        return {}

    def cam_target(self, output: Any, class_index: torch.Tensor) -> torch.Tensor:
        """N scores, one per image, whose gradient a class-activation map follows: `output` is this
        task's forward output for N images, `class_index` the N classes to explain (long tensor)."""
        raise NotImplementedError(
            f"{type(self).__name__} declares no cam_target: cnnlab-explain cannot draw its class-activation maps"
        )

    def cam_prediction(self, output: Any) -> CamPrediction:
        """What the network predicted for each image (`output`: this task's forward output)."""
        raise NotImplementedError(f"{type(self).__name__} declares no cam_prediction")


def _skipping_padding(training_step):
    """A task's training_step that gives a padding batch (data.storage=shards under DDP: a rank whose part of
    the epoch ran out) zero weight: the loss and gradients are 0 and no training metric counts it, so every
    sample of the epoch counts once while every rank still takes the step DDP synchronises."""

    @functools.wraps(training_step)
    def step(self, batch: dict, batch_idx: int):
        if not (isinstance(batch, dict) and batch.get(PADDING)):
            return training_step(self, batch, batch_idx)
        self._padding_step = True
        try:
            loss = training_step(self, {k: v for k, v in batch.items() if k != PADDING}, batch_idx)
        finally:
            self._padding_step = False
        return loss * 0.0

    return step


def _move_legacy_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """`backbone.*` -> `network.backbone.*` (likewise `head.*`, `box_head.*`): checkpoints from before `network`."""
    for key in list(state_dict):
        local = key[len(prefix) :]
        if key.startswith(prefix) and local.startswith(LEGACY_PREFIXES):
            state_dict[f"{prefix}network.{local}"] = state_dict.pop(key)


def class_prediction(probabilities: np.ndarray, image: PredictionInput) -> dict[str, str]:
    """label, score and top_k ("name:p;name:p", most probable first) from class probabilities."""
    names = image.class_names
    best = int(np.argmax(probabilities))
    order = np.argsort(-probabilities, kind="stable")[: min(image.top_k, len(names))]
    top_k = ";".join(f"{names[i]}:{probabilities[i]:.4f}" for i in order)
    return {"label": names[best], "score": f"{probabilities[best]:.6f}", "top_k": top_k}
