"""Typed schemas for the Hydra config tree, and the checks that need more than one key.

The schemas are registered in Hydra's ConfigStore and sit under the YAML files of `conf/`, so a
typo in a key or a value of the wrong type fails at composition time with the key's full path.
Free-form nodes (`model`, `optimizer`, `scheduler`, `callbacks`, `task.module`) are checked by
instantiating them before training starts (see `check_buildable`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from cnnlab.paths import project_root


class ConfigError(ValueError):
    """A configuration that composes but cannot work; the message names the key and the fix."""


# Choices are plain strings checked by `validate_config`: enum-typed nodes would stringify as
# "Mode.max" when interpolated into other nodes (callbacks read ${task.mode}). Task names are the
# task classes' own (cnnlab.tasks.task_class_for checks them).
CHOICES = {
    "task.mode": ("min", "max"),
    "scheduler.interval": ("step", "epoch"),
}
DATA_CHOICES = {"on_bad_sample": ("error", "skip"), "channels": (1, 3), "normalize": ("auto", "dataset")}
FREEZE_MODES = ("none", "backbone")  # or a stage name, checked against the model when it is built
DATA_MINIMUMS = {"image_size": 1, "batch_size": 1, "eval_batch_size": 1, "num_workers": 0, "max_image_pixels": 1}


@dataclass
class TaskConfig:
    name: str = MISSING  # the task class's declared name (cnnlab.tasks.available_tasks)
    monitor: str = MISSING  # metric that picks the best checkpoint and the best sweep child
    mode: str = MISSING  # min or max
    module: Any = MISSING  # instantiable LightningModule arguments


@dataclass
class DataConfig:
    name: str = MISSING
    source: Any = MISSING  # instantiable reader of the raw data, see cnnlab.data.sources
    root: Optional[str] = None  # where raw data lives on disk; None for embedded datasets
    image_size: int = 32
    channels: int = 1
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    train_fraction: float = 1.0  # train on this stratified share of the train split (val and test stay whole)
    split_seed: int = 0  # fixed apart from `seed` so a new training seed does not re-split the data
    normalize: str = "auto"  # auto: the mean/std model.weights declare (else the data's); dataset: the data's own
    on_bad_sample: str = "error"  # error: stop at the first bad sample; skip: leave it out, listed
    max_image_pixels: int = 64_000_000  # larger images (decompression bombs) are bad samples, never decoded
    prepared_dir: str = MISSING
    batch_size: int = 64
    eval_batch_size: int = 256
    num_workers: int = 0


@dataclass
class AugmentConfig:
    name: str = MISSING
    train: List[Any] = field(default_factory=list)  # albumentations transforms, in order
    preview: bool = True  # log a grid of augmented training samples to MLflow


@dataclass
class SchedulerConfig:
    name: str = "none"
    interval: str = "step"  # Lightning's lr_scheduler interval: step or epoch
    scheduler: Any = None  # instantiable torch.optim.lr_scheduler, partial


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: str = "32-true"
    max_epochs: int = 20
    min_epochs: Optional[int] = None
    max_steps: int = -1
    max_time: Optional[str] = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    check_val_every_n_epoch: int = 1
    log_every_n_steps: int = 10
    deterministic: Any = True
    benchmark: Optional[bool] = None
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    num_sanity_val_steps: int = 2


@dataclass
class LoggerConfig:
    enabled: bool = True
    tracking_uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else the project's SQLite file
    experiment_name: str = "cnnlab"
    run_name: Optional[str] = None
    log_checkpoint: bool = True
    log_model: bool = True  # the best checkpoint's network as an MLflow model (signature, example)
    system_metrics: bool = True  # CPU, memory (and GPU where present) sampled into the run
    system_metrics_interval: float = 10.0  # seconds between samples
    unreachable_wait: float = (
        120.0  # at the end, seconds to wait for a store that stopped answering (then: cnnlab-sync)
    )
    tags: Dict[str, str] = field(default_factory=dict)


@dataclass
class FinetuneConfig:
    """Freezing and fine-tuning (cnnlab.finetune); model.weights says what the network starts from."""

    freeze: str = "none"  # none, backbone, or a stage name (stage1 ... stageN): frozen up to and including it
    unfreeze_at_epoch: Optional[int] = None  # at this epoch the frozen part trains again; null: never
    backbone_lr: Optional[float] = None  # the body's learning rate; null: optimizer.lr x backbone_lr_mult
    backbone_lr_mult: float = 1.0


@dataclass
class PathsConfig:
    root: str = MISSING
    data_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class CnnlabConfig:
    task: TaskConfig = MISSING
    model: Any = MISSING
    data: DataConfig = MISSING
    augment: AugmentConfig = MISSING
    optimizer: Any = MISSING
    scheduler: SchedulerConfig = MISSING
    trainer: TrainerConfig = MISSING
    callbacks: Dict[str, Any] = field(default_factory=dict)
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seed: int = 42
    ckpt_path: Optional[str] = None  # start from this Lightning checkpoint ("last": resume, as resume=true)
    resume: bool = False  # continue the run in hydra.run.dir from checkpoints/last.ckpt, same MLflow run
    evaluate: Dict[str, Any] = field(default_factory=dict)
    register: bool = False  # register the logged model as cnnlab-<task>-<model> (a new version per run)
    promote_alias: Optional[str] = (
        "champion"  # evaluate moves this alias to a version that beats its holder; null: never
    )


def register_configs() -> None:
    """Put the schemas where conf/ refers to them, and the resolvers the YAML files use."""
    cs = ConfigStore.instance()
    cs.store(name="cnnlab_schema", node=CnnlabConfig)
    if not OmegaConf.has_resolver("cnnlab.root"):
        OmegaConf.register_new_resolver("cnnlab.root", lambda: str(project_root()))


def _check_choice(key: str, value: Any, allowed: tuple) -> None:
    if value is not None and value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; expected one of: {', '.join(map(str, allowed))}")


def validate_data_config(data: DictConfig) -> None:
    """The data keys prepare and training read, checked before anything is read or opened (ConfigError)."""
    for key, allowed in DATA_CHOICES.items():
        _check_choice(f"data.{key}", data.get(key), allowed)
    for key, minimum in DATA_MINIMUMS.items():
        value = data.get(key)
        if value is not None and value < minimum:
            raise ConfigError(f"data.{key}={value} is not valid; expected an integer >= {minimum}")
    for key in ("val_fraction", "test_fraction"):
        if not 0 <= data[key] < 1:
            raise ConfigError(f"data.{key}={data[key]} is not valid; expected a fraction in [0, 1)")
    if not 0 < data.get("train_fraction", 1.0) <= 1:
        raise ConfigError(f"data.train_fraction={data.train_fraction} is not valid; expected a fraction in (0, 1]")
    if data.val_fraction + data.test_fraction >= 1:
        raise ConfigError(
            f"data.val_fraction={data.val_fraction} and data.test_fraction={data.test_fraction} leave no training "
            "data; their sum must be below 1"
        )


def validate_config(cfg: DictConfig) -> None:
    """Checks that span keys or need the allowed values named, run before any MLflow run opens; raises ConfigError."""
    for key, allowed in CHOICES.items():
        _check_choice(key, OmegaConf.select(cfg, key), allowed)
    validate_data_config(cfg.data)
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if isinstance(lr, (int, float)) and not lr > 0:
        raise ConfigError(f"optimizer.lr={lr} is not valid; expected a learning rate > 0")
    known = [f.name for f in fields(TrainerConfig)]
    for key in cfg.trainer:  # `+trainer.<key>=...` can add keys the schema does not have
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean trainer.{close[0]}?" if close else f"; expected one of: {', '.join(known)}"
            raise ConfigError(f"trainer.{key} is not a Trainer setting cnnlab knows{hint}")
    validate_transfer_config(cfg)
    trainer = cfg.trainer
    if trainer.max_epochs == 0 or trainer.max_epochs < -1:
        raise ConfigError(
            f"trainer.max_epochs={trainer.max_epochs} is not valid; expected at least 1 (or -1 with trainer.max_steps)"
        )
    if trainer.max_epochs == -1 and trainer.max_steps <= 0 and not trainer.max_time:
        raise ConfigError("trainer.max_epochs=-1 trains forever: set trainer.max_steps or trainer.max_time too")


def validate_transfer_config(cfg: DictConfig) -> None:
    """model.weights and finetune.*, as far as they can be checked without the model (stage names are checked when it
    is built).
    """
    weights = OmegaConf.select(cfg, "model.weights")
    if weights is not None and (not isinstance(weights, str) or not weights.strip()):
        raise ConfigError(
            f"model.weights={weights!r} is not valid; expected null, imagenet (or IMAGENET1K_V1, ...), a file or "
            "directory path, runs:/<run id>/model, models:/<name>@<alias> or models:/<name>/<version>"
        )
    finetune = cfg.get("finetune")
    if finetune is None:
        return
    freeze = finetune.freeze
    if not (freeze in FREEZE_MODES or (isinstance(freeze, str) and freeze.startswith("stage"))):
        raise ConfigError(
            f"finetune.freeze={freeze!r} is not valid; expected none, backbone or a stage name (stage1, stage2, ...)"
        )
    if finetune.unfreeze_at_epoch is not None and finetune.unfreeze_at_epoch < 0:
        raise ConfigError(
            f"finetune.unfreeze_at_epoch={finetune.unfreeze_at_epoch} is not valid; expected an epoch >= 0 or null"
        )
    if finetune.backbone_lr is not None and not finetune.backbone_lr > 0:
        raise ConfigError(
            f"finetune.backbone_lr={finetune.backbone_lr} is not valid; expected a learning rate > 0 or null"
        )
    if not finetune.backbone_lr_mult > 0:
        raise ConfigError(f"finetune.backbone_lr_mult={finetune.backbone_lr_mult} is not valid; expected a factor > 0")


def backbone_lr(cfg: DictConfig) -> Optional[float]:
    """The body's learning rate when it differs from optimizer.lr (None: one rate for all)."""
    finetune = cfg.get("finetune")
    if finetune is None:
        return None
    if finetune.backbone_lr is not None:
        return float(finetune.backbone_lr)
    lr = OmegaConf.select(cfg, "optimizer.lr")
    return float(lr) * finetune.backbone_lr_mult if finetune.backbone_lr_mult != 1.0 and lr is not None else None
