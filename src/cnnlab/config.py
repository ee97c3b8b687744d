"""Typed schemas for the Hydra config tree, and the checks that need more than one key.

The schemas are registered in Hydra's ConfigStore and sit under the YAML files of `conf/`, so a
typo in a key or a value of the wrong type fails at composition time with the key's full path.
Free-form nodes (`model`, `optimizer`, `scheduler`, `callbacks`, `task.module`) are checked by
instantiating them before training starts (see `check_buildable`).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, get_type_hints

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from cnnlab.paths import config_dir, project_root, source_config_dir


class ConfigError(ValueError):
    """A configuration that composes but cannot work; the message names the key and the fix."""


# Choices are plain strings checked by `validate_config`: enum-typed nodes would stringify as
# "Mode.max" when interpolated into other nodes (callbacks read ${task.mode}). Task names are the
# task classes' own (cnnlab.tasks.task_class_for checks them).
CHOICES = {
    "task.mode": ("min", "max"),
    "scheduler.interval": ("step", "epoch"),
}
DATA_CHOICES = {
    "on_bad_sample": ("error", "skip"),
    "channels": (1, 3),
    "normalize": ("auto", "dataset"),
    "storage": ("arrays", "shards"),
}
FREEZE_MODES = ("none", "backbone")  # or a stage name, checked against the model when it is built
# nodes that go whole to the constructor their _target_ names: their keys are that class's arguments
TARGET_ARGUMENTS = ("optimizer", "scheduler.scheduler", "data.source")


def minimum(value: Any, least: int | float) -> Any:
    """A dataclass field whose value must be at least `least` (None allowed where the field is Optional):
    `check_bounds` reads it, so every command states its numeric limits where it declares the option."""
    return field(default=value, metadata={"minimum": least})


@dataclass
class TaskConfig:
    name: str = MISSING  # the task class's declared name (cnnlab.tasks.available_tasks)
    monitor: str = MISSING  # metric that picks the best checkpoint and the best sweep child
    mode: str = MISSING  # min or max
    module: Any = MISSING  # instantiable LightningModule arguments


@dataclass
class ShardsConfig:
    """data.storage=shards (cnnlab.data.shards, README "Large datasets")."""

    url: Optional[str] = None  # s3://bucket/prefix to stream from; None: the local data.prepared_dir
    samples_per_shard: int = minimum(1000, 1)  # one changed image rewrites one shard of this many samples
    max_side: Optional[int] = minimum(None, 1)  # re-encode images whose longer side is larger; None: original bytes
    random_resized_crop: Optional[List[float]] = None  # [scale_min, scale_max]: train crops of the original image
    cache_dir: Optional[str] = None  # where streamed shards are cached; None: <data_dir>/shard-cache/<name>
    cache_limit: str = "10GB"  # the cache stays below this; older shards are evicted


@dataclass
class DataConfig:
    name: str = MISSING
    source: Any = MISSING  # instantiable reader of the raw data, see cnnlab.data.sources
    root: Optional[str] = None  # where raw data lives on disk; None for embedded datasets
    image_size: int = minimum(32, 1)
    channels: int = 1
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    train_fraction: float = 1.0  # train on this stratified share of the train split (val and test stay whole)
    split_seed: int = 0  # fixed apart from `seed` so a new training seed does not re-split the data
    normalize: str = "auto"  # auto: the mean/std model.weights declare (else the data's); dataset: the data's own
    on_bad_sample: str = "error"  # error: stop at the first bad sample; skip: leave it out, listed
    max_image_pixels: int = minimum(64_000_000, 1)  # larger images (decompression bombs) are bad samples, never decoded
    prepared_dir: str = MISSING
    storage: str = "arrays"  # arrays: decoded once into images.npy; shards: the encoded images, streamed
    shards: ShardsConfig = field(default_factory=ShardsConfig)
    batch_size: int = minimum(64, 1)
    eval_batch_size: int = minimum(256, 1)
    num_workers: int = minimum(0, 0)


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
    num_nodes: int = minimum(1, 1)
    strategy: Any = "auto"
    precision: str = "32-true"
    max_epochs: int = 20
    min_epochs: Optional[int] = None
    max_steps: int = -1
    max_time: Optional[str] = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    check_val_every_n_epoch: int = minimum(1, 1)
    log_every_n_steps: int = minimum(10, 1)
    deterministic: Any = True
    benchmark: Optional[bool] = None
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = minimum(1, 1)
    enable_progress_bar: bool = True
    enable_model_summary: bool = True
    num_sanity_val_steps: int = minimum(2, -1)  # -1: the whole validation set


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


def _did_you_mean(key: str, known: list[str], prefix: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"; did you mean {prefix}{close[0]}?"
    return f"; expected one of: {', '.join(known)}" if known else "; it takes none"


def _schema_fields(schema: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = get_type_hints(schema)
    return {f.name: (f, hints[f.name]) for f in fields(schema)}


def check_bounds(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Every numeric option of `schema` (and its nested schemas) declared with `minimum(...)`, checked (ConfigError)."""
    for name, (spec, hint) in _schema_fields(schema).items():
        node = cfg._get_node(name) if name in cfg else None  # unresolved: paths interpolate Hydra's runtime
        if dataclasses.is_dataclass(hint) and isinstance(node, DictConfig):
            check_bounds(node, hint, f"{prefix}{name}.")
        least = spec.metadata.get("minimum")
        value = cfg.get(name) if least is not None else None
        if least is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value < least:
            kind = "an integer" if isinstance(least, int) else "a number"
            raise ConfigError(f"{prefix}{name}={value} is not valid; expected {kind} >= {least}")


def check_known_keys(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """No key that `schema` lacks: Hydra's `+key=value` adds keys past a structured config's struct flag, so a typo
    (`+data.batchsize=3`) would be ignored silently. Free-form nodes (Any, dicts) are the classes' own: see
    `check_target_arguments`."""
    known = _schema_fields(schema)
    for key in cfg:
        if key not in known:
            raise ConfigError(
                f"{prefix}{key} is not a setting cnnlab knows{_did_you_mean(str(key), list(known), prefix)}"
            )
        hint, node = known[key][1], cfg._get_node(key)
        if dataclasses.is_dataclass(hint) and isinstance(node, DictConfig):
            check_known_keys(node, hint, f"{prefix}{key}.")


@lru_cache(maxsize=8)
def _targets_under(conf: Path) -> frozenset[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("_target_"), str):
                found.add(node["_target_"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(conf.rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return frozenset(found)


def conf_targets() -> frozenset[str]:
    """Every `_target_` the project's conf/ tree or cnnlab's own names: the classes a config read back from a run
    may build (cnnlab's own too: `cnnlab-sync <dir>` may run outside any project)."""
    trees = {config_dir().resolve(), source_config_dir().resolve()}
    return frozenset().union(*(_targets_under(tree) for tree in trees if tree.is_dir()))


def targets_in(cfg: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(key, value) of every `_target_` in a config, nested dicts and lists included, without resolving it."""
    found = []
    if isinstance(cfg, DictConfig):
        for key in cfg.keys():
            node = cfg._get_node(key)
            path = f"{prefix}{key}"
            if key == "_target_":
                found.append((path, node._value()))
            elif isinstance(node, (DictConfig, ListConfig)):
                found += targets_in(node, f"{path}.")
    elif isinstance(cfg, ListConfig):
        for index in range(len(cfg)):
            node = cfg._get_node(index)
            if isinstance(node, (DictConfig, ListConfig)):
                found += targets_in(node, f"{prefix}{index}.")
    return found


def check_targets(cfg: DictConfig, where: str) -> None:
    """ConfigError unless every `_target_` in `cfg` (a config read back from a run or a directory: data) is one that
    cnnlab's conf/ tree names. Nothing is imported to check."""
    allowed = conf_targets()
    for key, value in targets_in(cfg):
        if value not in allowed:
            raise ConfigError(
                f"{where}: {key}={value!r} is not a class cnnlab's conf/ names; a config read back from a run "
                f"may only build those (e.g. {', '.join(sorted(allowed)[:3])}, ...)"
            )


def check_target_arguments(cfg: DictConfig) -> None:
    """The keys of each node in TARGET_ARGUMENTS, against the signature of the class its `_target_` names; a class
    outside conf/'s targets is left to its own constructor (nothing is imported here that conf/ does not name)."""
    from hydra.utils import get_class  # Hydra's loader of conf/'s classes; here only for those

    for path in TARGET_ARGUMENTS:
        node = OmegaConf.select(cfg, path)
        if not isinstance(node, DictConfig) or node.get("_target_") not in conf_targets():
            continue
        parameters = inspect.signature(get_class(node._target_)).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            continue
        names = [name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        for key in node:
            if not str(key).startswith("_") and key not in names:
                raise ConfigError(
                    f"{path}.{key} is not an argument of {node._target_}{_did_you_mean(str(key), names, path + '.')}"
                )


def validate_data_config(data: DictConfig) -> None:
    """The data keys prepare and training read, checked before anything is read or opened (ConfigError)."""
    for key, allowed in DATA_CHOICES.items():
        _check_choice(f"data.{key}", data.get(key), allowed)
    check_bounds(data, DataConfig, "data.")
    for key in ("val_fraction", "test_fraction"):
        if not 0 <= data[key] < 1:
            raise ConfigError(f"data.{key}={data[key]} is not valid; expected a fraction in [0, 1)")
    if not 0 < data.get("train_fraction", 1.0) <= 1:
        raise ConfigError(f"data.train_fraction={data.train_fraction} is not valid; expected a fraction in (0, 1]")
    if data.get("storage", "arrays") == "shards":
        _validate_shards(data.shards)
    elif "shards" in data:  # a shard setting under the array format would be dropped silently
        defaults = dataclasses.asdict(ShardsConfig())
        changed = [key for key in data.shards if data.shards.get(key) != defaults.get(key)]
        if changed:
            raise ConfigError(
                f"data.shards.{changed[0]}={data.shards.get(changed[0])} applies to data.storage=shards; "
                'add data.storage=shards (README "Large datasets") or drop the setting'
            )
    if data.val_fraction + data.test_fraction >= 1:
        raise ConfigError(
            f"data.val_fraction={data.val_fraction} and data.test_fraction={data.test_fraction} leave no training "
            "data; their sum must be below 1"
        )


def _validate_shards(shards: DictConfig) -> None:
    """data.shards.* of data.storage=shards (ConfigError naming the key); the numbers' bounds are check_bounds'."""
    crop = shards.random_resized_crop
    if crop is not None and not (len(crop) == 2 and 0 < float(crop[0]) <= float(crop[1]) <= 1):
        raise ConfigError(
            f"data.shards.random_resized_crop={list(crop)} is not valid; expected [scale_min, scale_max] with "
            "0 < scale_min <= scale_max <= 1 (ImageNet's recipe: [0.08, 1.0]), or null for no crop"
        )
    if shards.url is not None and not str(shards.url).startswith("s3://"):
        raise ConfigError(
            f"data.shards.url={shards.url} is not an s3:// URL; local shards are read from data.prepared_dir"
        )
    if not re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]?B)?", str(shards.cache_limit).strip(), re.IGNORECASE):
        raise ConfigError(f"data.shards.cache_limit={shards.cache_limit} is not a size; expected e.g. 500MB or 10GB")


def validate_config(cfg: DictConfig) -> None:
    """Checks that span keys or need the allowed values named, run before any MLflow run opens; raises ConfigError."""
    for key, allowed in CHOICES.items():
        _check_choice(key, OmegaConf.select(cfg, key), allowed)
    known = [f.name for f in fields(TrainerConfig)]
    for key in cfg.trainer:  # the Trainer's own message would come after the run opened
        if key not in known:
            raise ConfigError(
                f"trainer.{key} is not a Trainer setting cnnlab knows{_did_you_mean(str(key), known, 'trainer.')}"
            )
    check_known_keys(cfg, CnnlabConfig)
    check_bounds(cfg.trainer, TrainerConfig, "trainer.")
    validate_data_config(cfg.data)
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if isinstance(lr, (int, float)) and not lr > 0:
        raise ConfigError(f"optimizer.lr={lr} is not valid; expected a learning rate > 0")
    validate_transfer_config(cfg)
    trainer = cfg.trainer
    if trainer.max_epochs == 0 or trainer.max_epochs < -1:
        raise ConfigError(
            f"trainer.max_epochs={trainer.max_epochs} is not valid; expected at least 1 (or -1 with trainer.max_steps)"
        )
    if trainer.max_epochs == -1 and trainer.max_steps <= 0 and not trainer.max_time:
        raise ConfigError("trainer.max_epochs=-1 trains forever: set trainer.max_steps or trainer.max_time too")
    check_target_arguments(cfg)  # last: it imports the targets (torch, Lightning), seconds


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
