"""Names for the places inside a backbone that the pictures look at.

A *stage* is one map of the backbone's `forward_features` (shallow to deep), named `stage1` ...
`stageN`; every architecture of the zoo has them, with their strides and channel counts. A *layer*
is any convolution of the backbone by its module name (`layer3.1.conv2`, `features.10`), for a
closer look than a whole stage. Both resolve to a `nn.Module` whose output Captum can hook: a stage
through `stage_probe`, an identity module spliced into `forward_features` for as long as it is open.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

from cnnlab.config import ConfigError
from cnnlab.models.stages import stage_names  # noqa: F401  (re-exported: explain's names for stages)


def conv_layer_names(backbone: nn.Module) -> list[str]:
    """Module names of the backbone's convolutions, in definition order."""
    return [name for name, module in backbone.named_modules() if isinstance(module, nn.Conv2d)]


def describe_stages(backbone: nn.Module) -> str:
    """'stage1 (stride 2, 16 channels), ...' for messages and picture titles."""
    return ", ".join(
        f"{name} (stride {stride}, {channels} channels)"
        for name, stride, channels in zip(stage_names(backbone), backbone.feature_strides, backbone.feature_channels)
    )


def first_conv(backbone: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first convolution the image meets (the first Conv2d defined: every family defines its stem first)."""
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ConfigError(f"{type(backbone).__name__} has no Conv2d layer to show filters of")


@dataclass(frozen=True)
class LayerRef:
    """A resolved name: a stage index, or a convolution module."""

    name: str
    stage: Optional[int] = None
    module: Optional[nn.Module] = None


def resolve_layer(backbone: nn.Module, name: str, key: str) -> LayerRef:
    """The stage or convolution called `name`; ConfigError listing the valid names (config key `key`)."""
    stages = stage_names(backbone)
    if name in stages:
        return LayerRef(name, stage=stages.index(name))
    modules = dict(backbone.named_modules())
    if name in modules and name and isinstance(modules[name], nn.Conv2d):
        return LayerRef(name, module=modules[name])
    convs = conv_layer_names(backbone)
    raise ConfigError(
        f"{key}={name!r} is not a stage or convolution of this {type(backbone).__name__}; "
        f"valid stages: {describe_stages(backbone)}; valid convolution layers: {', '.join(convs)}"
    )


@contextlib.contextmanager
def stage_probe(backbone: nn.Module, stage: int) -> Iterator[nn.Module]:
    """An identity module through which stage `stage`'s map flows while the block runs.

    Tasks call `backbone.forward_features` (directly or through `Backbone.forward`), so an
    instance-level wrapper sees every forward; Captum's layer methods hook the identity's output,
    which is exactly the stage map, whatever module or function made it (DenseNet's concatenations,
    ResNet's residual sums).
    """
    probe = nn.Identity()
    original = backbone.forward_features

    def forward_features(x: torch.Tensor) -> list[torch.Tensor]:
        maps = list(original(x))
        maps[stage] = probe(maps[stage])
        return maps

    backbone.forward_features = forward_features
    try:
        yield probe
    finally:
        del backbone.forward_features  # the class's method again


@contextlib.contextmanager
def hooked_module(backbone: nn.Module, ref: LayerRef) -> Iterator[nn.Module]:
    """The module whose output is `ref`'s map: a stage probe, or the convolution itself."""
    if ref.stage is not None:
        with stage_probe(backbone, ref.stage) as probe:
            yield probe
    else:
        yield ref.module


@contextlib.contextmanager
def capture_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The outputs `module` produces while the block runs (a forward hook, removed after)."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        yield outputs
    finally:
        handle.remove()
