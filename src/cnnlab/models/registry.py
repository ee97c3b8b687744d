"""Name -> architecture registry, and the one function tasks call to get a backbone."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

from cnnlab.config import ConfigError
from cnnlab.models.base import Backbone


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Callable[..., Backbone]
    min_input_size: int  # smallest square input the architecture accepts, in pixels


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, family: str, min_input_size: int = 1):
    """Decorator: make `builder(num_classes, in_channels, image_size, **kwargs)` available as `name`."""

    def decorate(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, family, builder, min_input_size)
        return builder

    return decorate


def _load_families() -> None:
    """Import every module of this package: each family file registers its architectures when imported."""
    import cnnlab.models

    for module in pkgutil.iter_modules(cnnlab.models.__path__):
        importlib.import_module(f"cnnlab.models.{module.name}")


def available_models() -> list[str]:
    """Names accepted by `build_backbone` (and by `model=<name>` on the command line)."""
    _load_families()
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    _load_families()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_backbone(name: str, num_classes: int, in_channels: int = 3, image_size: int = 224, **kwargs) -> Backbone:
    """Build a registered architecture for `num_classes` outputs on `in_channels` x `image_size`^2 inputs."""
    spec = model_spec(name)
    if image_size < spec.min_input_size:
        raise ConfigError(
            f"model={name} needs inputs of at least {spec.min_input_size}x{spec.min_input_size} px, "
            f"but data.image_size={image_size}. Raise data.image_size or pick a model for small "
            f"inputs (its config's small_input option, where it has one)."
        )
    try:
        return spec.builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ConfigError(f"model={name}: {err}; check the keys under `model:` in conf/model/{name}.yaml") from err
        raise
