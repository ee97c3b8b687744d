"""Which parameters of a backbone feed which stage: what freezing, per-group learning rates and
weight loading call "the body" and "the head".

A backbone's stages are the maps of its `forward_features` (stage1 ... stageN, shallow to deep; see
`cnnlab.explain.layers.stage_names`). The parameters a stage depends on are found by autograd on a
small input, not by a per-family list of module names, so every architecture of the zoo (DenseNet's
concatenations, ResNet's shortcuts, Xception's entry flow) answers the same way. The *body* is what the
deepest map depends on; everything else of the backbone (fc, VGG's classifier) is the *head*.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.config import ConfigError


def stage_names(backbone: nn.Module) -> list[str]:
    """stage1 ... stageN, one per feature map of the backbone, shallow to deep."""
    return [f"stage{i + 1}" for i in range(len(backbone.feature_channels))]


def stage_index(backbone: nn.Module, name: str, key: str) -> int:
    """The index of stage `name`; ConfigError naming `key` and listing the valid stages."""
    names = stage_names(backbone)
    if name not in names:
        strides = ", ".join(
            f"{n} (stride {s}, {c} channels)"
            for n, s, c in zip(names, backbone.feature_strides, backbone.feature_channels)
        )
        raise ConfigError(
            f"{key}={name!r} is not a stage of {type(backbone).__name__}; expected none, backbone or one of: {strides}"
        )
    return names.index(name)


def parameters_up_to(backbone: nn.Module, stage: int, example: torch.Tensor) -> set[str]:
    """Names of the backbone's parameters that stage `stage`'s map depends on (-1: the deepest map).

    One forward of `example` (a 1 x C x H x W input of the data's shape) in eval mode, so BatchNorm
    accepts a batch of one; the modules' train/eval flags are restored after.
    """
    named = [(name, p) for name, p in backbone.named_parameters()]
    modes = {m: m.training for m in backbone.modules()}
    flags = [p.requires_grad for _, p in named]
    try:
        backbone.eval()
        for _, p in named:
            p.requires_grad_(True)
        with torch.enable_grad():
            output = backbone.forward_features(example.to(next(backbone.parameters()).device))[stage]
            grads = torch.autograd.grad(output.float().sum(), [p for _, p in named], allow_unused=True)
    finally:
        for (_, p), flag in zip(named, flags):
            p.requires_grad_(flag)
        for module, mode in modes.items():
            module.train(mode)
    return {name for (name, _), grad in zip(named, grads) if grad is not None}


def body_state_keys(backbone: nn.Module, example: torch.Tensor) -> set[str]:
    """state_dict keys of the body: its parameters and the buffers of modules holding them (BN statistics)."""
    body = parameters_up_to(backbone, -1, example)
    keys = set(body)
    for name, module in backbone.named_modules():
        prefix = f"{name}." if name else ""
        if any(f"{prefix}{p}" in body for p, _ in module.named_parameters(recurse=False)):
            keys.update(f"{prefix}{b}" for b, _ in module.named_buffers(recurse=False))
    return keys


def modules_owning(backbone: nn.Module, parameter_names: set[str]) -> list[nn.Module]:
    """The modules whose own parameters are all in `parameter_names` (what BaseFinetuning.freeze takes)."""
    owners = []
    for name, module in backbone.named_modules():
        prefix = f"{name}." if name else ""
        own = [f"{prefix}{p}" for p, _ in module.named_parameters(recurse=False)]
        if own and all(p in parameter_names for p in own):
            owners.append(module)
    return owners
