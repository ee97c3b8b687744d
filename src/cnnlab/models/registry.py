"""Name -> architecture registry, and the one function tasks call to get a backbone.

As in torchvision and timm, an architecture registers by its builder function; what the registry
knows about it comes from its definition: the family is the module the builder is defined in
(models/resnet.py: "resnet"), the minimum input size the `MIN_INPUT_SIZE` of the Backbone class
the builder returns (or of the builder itself, where one class serves several configurations).
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Optional

from cnnlab.config import ConfigError
from cnnlab.models.base import Backbone, check_input_size


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., Backbone]

    @property
    def family(self) -> str:
        """The family file the architecture is defined in (models/<family>.py)."""
        return self.builder.__module__.rsplit(".", 1)[-1]

    @cached_property
    def input_minimum(self) -> dict[bool, int]:
        """Smallest square input per `small_input` setting: the builder's MIN_INPUT_SIZE, else its class's."""
        minimum = getattr(self.builder, "MIN_INPUT_SIZE", None)
        if minimum is None:  # the class the builder's return annotation names
            minimum = typing.get_type_hints(self.builder)["return"].MIN_INPUT_SIZE
        return dict(minimum)

    @property
    def min_input_size(self) -> int:
        """Smallest square input the architecture accepts in any setting (the small-input stem's), in pixels."""
        return min(self.input_minimum.values())


_REGISTRY: dict[str, ModelSpec] = {}


def register_architecture(name: Optional[str] = None):
    """Decorator: make `builder(num_classes, in_channels, image_size, **kwargs)` available as `name`
    (default: the builder's own name)."""

    def decorate(builder: Callable[..., Backbone]) -> Callable[..., Backbone]:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        _REGISTRY[key] = ModelSpec(key, builder)
        return builder

    return decorate


def _load_families() -> None:
    """Import every module of this package: each family file registers its architectures when imported."""
    # by path, not through the cnnlab.models package, whose __init__ imports this module
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
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


def check_image_size(name: str, image_size: int, small_input: bool = False) -> None:
    """ConfigError when model `name` (with `small_input`) cannot take data.image_size: checked before any
    data is prepared, not when the network is built."""
    if name in available_models():
        check_input_size(name, image_size, model_spec(name).input_minimum, small_input)


def build_backbone(
    name: str, num_classes: int, in_channels: int = 3, image_size: int = 224, features_only: bool = False, **kwargs
) -> Backbone:
    """Build a registered architecture for `num_classes` outputs on `in_channels` x `image_size`^2 inputs.

    `features_only`: without its classifier (`Backbone.remove_classifier`), for heads that read the feature maps.
    """
    spec = model_spec(name)
    if image_size < spec.min_input_size:
        raise ConfigError(
            f"model={name} needs inputs of at least {spec.min_input_size}x{spec.min_input_size} px, "
            f"but data.image_size={image_size}. Raise data.image_size or pick a model for small "
            f"inputs (its config's small_input option, where it has one)."
        )
    try:
        backbone = spec.builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" in str(err):
            raise ConfigError(f"model={name}: {err}; check the keys under `model:` in conf/model/{name}.yaml") from err
        raise
    return backbone.remove_classifier() if features_only else backbone
