"""Tasks: one LightningModule per task, each declaring its own facts (see tasks/base.py).

This module finds task classes and builds them from a config. Built-in tasks are found by
importing every module of this package (no hand-kept list); a task defined elsewhere joins the
registry when its module is imported, which `task.module._target_` does.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable, Optional

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from cnnlab.config import ConfigError, backbone_lr
from cnnlab.tasks.base import _TASKS, LABEL_KINDS, CNNTask

__all__ = [
    "CNNTask",
    "available_tasks",
    "build_task",
    "check_data_labels",
    "served_tasks",
    "task_class",
    "task_class_for",
]


def _import_builtin_tasks() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def available_tasks() -> dict[str, type[CNNTask]]:
    """Task name -> class, for the built-in tasks and any other task class imported so far."""
    _import_builtin_tasks()
    return dict(sorted(_TASKS.items()))


def task_class(name: str) -> type[CNNTask]:
    """The task class registered under `name` (ConfigError listing the known tasks)."""
    tasks = available_tasks()
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(tasks)}")
    return tasks[name]


def served_tasks(provided: Iterable[str]) -> list[str]:
    """The tasks whose labels data carrying the label kinds `provided` has: derived, never listed by hand."""
    provided = set(provided)
    return [name for name, cls in available_tasks().items() if set(cls.labels) <= provided]


def task_class_for(cfg: DictConfig, provided: Optional[Iterable[str]] = None) -> type[CNNTask]:
    """The class `task.module._target_` names, checked against the config before anything runs.

    `provided`: the label kinds the configured reader carries, where known before reading (see
    `Source.label_kinds`). Raises ConfigError when the data cannot serve this task, when the target is
    not a cnnlab task, or when `task.name` disagrees with the class's declared name.
    """
    name = cfg.task.name
    if provided is not None:  # first: the cheapest check, and the one a user meets most
        served = served_tasks(provided)
        if name in available_tasks() and name not in served:
            raise ConfigError(
                f"task={name} needs labels that data={cfg.data.name} does not have "
                f"(it serves: {', '.join(served) or 'none'}). Choose one of those tasks, or a dataset that "
                f"serves {name} (data=shapes serves all three)."
            )
    target = OmegaConf.select(cfg, "task.module._target_")
    try:
        cls = get_class(str(target))
    except Exception as err:  # Hydra raises ImportError or ValueError with the cause in the text
        raise ConfigError(f"task.module._target_={target!r} cannot be imported: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, CNNTask) and cls.name):
        raise ConfigError(f"task.module._target_={target!r} is not a cnnlab task (a CNNTask subclass with a name)")
    if name != cls.name:
        raise ConfigError(f"task.name={name!r} but task.module._target_ is the {cls.name!r} task ({target})")
    return cls


def check_data_labels(task: type[CNNTask], provided: Iterable[str], where: str, dataset: str) -> None:
    """ConfigError if `task` needs a label kind the prepared data does not carry.

    `provided`: the label kinds the prepared data carries (`cnnlab.data.prepared.label_kinds`);
    `where` names the data (its reader) in the message.
    """
    missing = [kind for kind in task.labels if kind not in set(provided)]
    if missing:
        what = " and ".join(LABEL_KINDS[kind] for kind in missing)
        raise ConfigError(
            f"task={task.name} needs {what}, but {where} has none as configured (data={dataset}; it serves: "
            f"{', '.join(served_tasks(provided)) or 'none'}); pick one of those tasks or a reader option that "
            f"reads {what}"
        )


def build_task(cfg: DictConfig, meta: dict) -> CNNTask:
    """The configured task's LightningModule for a prepared dataset (raises ConfigError)."""
    cls = task_class_for(cfg)
    classes = cls.output_classes(meta)
    try:
        return instantiate(
            cfg.task.module,
            model=OmegaConf.to_container(cfg.model, resolve=True),
            num_classes=len(classes),
            in_channels=meta["channels"],
            image_size=meta["image_size"],
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
            class_names=list(classes),
            mean=meta["mean"],
            std=meta["std"],
            input_spec=meta.get("input") or {"kind": "image"},
            backbone_lr=backbone_lr(cfg),
            _convert_="all",
            _recursive_=False,  # model/optimizer/scheduler stay configs: the task builds them itself
        )
    except ConfigError:
        raise
    except Exception as err:  # Hydra wraps constructor errors in InstantiationException
        cause = err.__cause__ if isinstance(err.__cause__, ConfigError) else None
        if cause:
            raise cause from err
        raise ConfigError(f"cannot build task={cfg.task.name} with model={cfg.model.name}: {err}") from err
